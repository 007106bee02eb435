"""Events, counters and (later) OpenTelemetry export for every tipkit primitive.

* :func:`add_listener` / :func:`remove_listener`: receive the typed events
  primitives publish (built only when someone listens).
* :data:`counters`: the in-process counter registry; exported as observable
  OpenTelemetry instruments, so a guarded call never pays for an SDK call.
"""

from __future__ import annotations

from tipkit.telemetry._counters import REGISTRY as counters
from tipkit.telemetry._counters import Counter, CounterReading, CounterRegistry, GaugeReading
from tipkit.telemetry._events import Event, EventBus, Listener, add_listener, remove_listener

__all__ = [
    "Counter",
    "CounterReading",
    "CounterRegistry",
    "Event",
    "EventBus",
    "GaugeReading",
    "Listener",
    "add_listener",
    "counters",
    "remove_listener",
]
