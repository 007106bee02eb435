"""See what tipkit decides: events, counters and OpenTelemetry export.

* :func:`instrument` / :func:`uninstrument`: export every tipkit metric and event
  through ``opentelemetry-api`` (the one line an app adds).
* :func:`traced`: a span around a call or block (sync and async), where tipkit's
  events attach.
* :func:`synthetic`: mark test traffic (``user_agent.synthetic.type``) in every
  signal tipkit emits.
* :func:`add_listener` / :func:`remove_listener`: receive the typed events
  primitives publish (built only when someone listens).
* :func:`configure_logging`: tipkit's log records hash exception text (the
  same rule as spans) unless ``log_exception_text=True``.
* :data:`counters`: the in-process counter registry; exported as observable
  OpenTelemetry instruments, so a guarded call never pays for an SDK call.

Test helpers (``capture_telemetry``) live in :mod:`tipkit.testing`.
"""

from __future__ import annotations

from tipkit.telemetry._counters import REGISTRY as counters  # noqa: N811  # public name since the foundation
from tipkit.telemetry._counters import (
    Counter,
    CounterReading,
    CounterRegistry,
    GaugeReading,
)
from tipkit.telemetry._events import (
    Event,
    EventBus,
    Listener,
    add_listener,
    remove_listener,
)
from tipkit.telemetry._otel import instrument, is_instrumented, uninstrument
from tipkit.telemetry._redact import configure_logging, hash_context_id
from tipkit.telemetry._synthetic import current_synthetic, synthetic
from tipkit.telemetry._traced import Traced, traced

__all__ = [
    "Counter",
    "CounterReading",
    "CounterRegistry",
    "Event",
    "EventBus",
    "GaugeReading",
    "Listener",
    "Traced",
    "add_listener",
    "configure_logging",
    "counters",
    "current_synthetic",
    "hash_context_id",
    "instrument",
    "is_instrumented",
    "remove_listener",
    "synthetic",
    "traced",
    "uninstrument",
]
