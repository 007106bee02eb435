"""OpenTelemetry export of every tipkit event and metric: ``instrument()``.

Depends on ``opentelemetry-api`` only. What is exported, and what it costs:

* **Metrics** are observable instruments (counter, up-down counter, gauge) whose
  callbacks read :data:`tipkit.telemetry.counters` when the SDK collects, so a
  guarded call pays one in-process increment, never an SDK call. The two
  synchronous histograms (``tipkit.ratelimit.wait``, ``tipkit.call.duration``)
  are fed through ``REGISTRY.histogram_sink`` from paths that already wait or
  carry a span. Counter values are exported relative to their value when
  :func:`instrument` was called.
* **Events** become span events on the current recording span (only while a real
  tracer provider is configured: not the no-op one, not the global proxy before
  an SDK is installed) and log events through the logs API (only while a real
  logger provider is configured). With neither, no bus listener is registered, so
  primitives build no event objects at all.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, Literal

from opentelemetry import metrics, trace
from opentelemetry._logs import (
    Logger,
    LoggerProvider,
    NoOpLoggerProvider,
    SeverityNumber,
    get_logger_provider,
)
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER

from tipkit._core._scope import current_synthetic
from tipkit.telemetry import _catalog
from tipkit.telemetry import _names as n
from tipkit.telemetry._counters import REGISTRY, Attributes
from tipkit.telemetry._events import BUS, AttributeValue, Event
from tipkit.telemetry._redact import hash_context_id
from tipkit.telemetry._spans import WhenRecording

try:
    from opentelemetry._logs._internal import ProxyLoggerProvider
except ImportError:  # pragma: no cover - the API moved it; treat none as proxy
    ProxyLoggerProvider = NoOpLoggerProvider  # type: ignore[assignment,misc]  # fallback

__all__ = [
    "ContextIdMode",
    "instrument",
    "instrumentation",
    "is_instrumented",
    "tracer_for",
    "uninstrument",
]

logger = logging.getLogger("tipkit")


def _version() -> str:
    try:
        return version("tipkit")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "0+unknown"


VERSION: Final = _version()

ContextIdMode = Literal["off", "hashed", "raw"]

# Logger.emit(event_name=...) arrived with the logs API that replaced the
# deprecated Events API; older APIs get no log events (documented).
LOG_EVENTS_SUPPORTED: Final = "event_name" in inspect.signature(Logger.emit).parameters

_SEVERITY: Final = {
    "INFO": SeverityNumber.INFO,
    "WARN": SeverityNumber.WARN,
    "ERROR": SeverityNumber.ERROR,
}

_LOCK = threading.RLock()


def _new_lock_in_child() -> None:  # pragma: no cover - runs in forked children only
    global _LOCK  # noqa: PLW0603  # a lock held by another thread at fork is dead
    _LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_new_lock_in_child)


def is_real_tracer_provider(provider: object) -> bool:
    """Return whether *provider* records spans (not the no-op or the proxy one)."""
    return not isinstance(
        provider, trace.NoOpTracerProvider | trace.ProxyTracerProvider
    )


def is_real_logger_provider(provider: object) -> bool:
    """Return whether *provider* emits logs (not the no-op or the proxy one)."""
    return LOG_EVENTS_SUPPORTED and not isinstance(
        provider, NoOpLoggerProvider | ProxyLoggerProvider
    )


# --------------------------------------------------------------------- instruments


class _Instruments:
    """The instruments tipkit created on one meter provider (created once each)."""

    def __init__(self, provider: metrics.MeterProvider) -> None:
        self.meter = provider.get_meter(n.SCOPE, VERSION)
        self.names: set[str] = set()
        self.histograms: dict[str, metrics.Histogram] = {}

    def ensure(self, name: str, spec: _catalog.MetricSpec) -> None:
        """Create the instrument for *name* unless it exists. Call under _LOCK."""
        if name in self.names:
            return
        self.names.add(name)
        if spec.kind == "histogram":
            self.histograms[name] = self.meter.create_histogram(
                name,
                unit=spec.unit,
                description=spec.description,
                explicit_bucket_boundaries_advisory=_catalog.DURATION_BUCKETS,
            )
            return
        create = {
            "counter": self.meter.create_observable_counter,
            "updowncounter": self.meter.create_observable_up_down_counter,
            "gauge": self.meter.create_observable_gauge,
        }[spec.kind]
        create(
            name,
            callbacks=[_observer(self, name, cumulative=spec.kind == "counter")],
            unit=spec.unit,
            description=spec.description,
        )


def _weakrefable(obj: object) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


_INSTRUMENTS: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()


def _instruments_for(provider: metrics.MeterProvider) -> _Instruments:
    if not _weakrefable(provider):  # pragma: no cover - every known provider is
        return _Instruments(provider)
    found = _INSTRUMENTS.get(provider)
    if found is None:
        found = _INSTRUMENTS[provider] = _Instruments(provider)
    return found


def _observer(
    owner: _Instruments, name: str, *, cumulative: bool
) -> Callable[[metrics.CallbackOptions], Iterable[metrics.Observation]]:
    def observe(_options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        inst = _CURRENT
        if inst is None or inst.instruments is not owner:
            return ()
        inst.poll()
        observations: list[metrics.Observation] = []
        if cumulative:
            baselines = inst.baselines
            for reading in REGISTRY.snapshot(name):
                key = (name, tuple(sorted(reading.attributes.items())))
                value = reading.value - baselines.get(key, 0)
                observations.append(metrics.Observation(value, reading.attributes))
        observations.extend(
            metrics.Observation(reading.value, reading.attributes)
            for reading in REGISTRY.gauges(name)
        )
        return observations

    return observe


# --------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class _Config:
    tracer_provider: trace.TracerProvider | None
    meter_provider: metrics.MeterProvider | None
    logger_provider: LoggerProvider | None
    span_events: bool
    log_events: bool
    flag_log_events: bool
    flag_value: bool
    flag_context_id: ContextIdMode
    context_id_key: bytes | None = field(repr=False)


class _Instrumentation:
    """The live state of one ``instrument()`` call, until ``uninstrument()``."""

    def __init__(self, config: _Config) -> None:
        self.config = config
        meter_provider = config.meter_provider or metrics.get_meter_provider()
        self.instruments = _instruments_for(meter_provider)
        self.tracer_provider: trace.TracerProvider = (
            config.tracer_provider or trace.get_tracer_provider()
        )
        self.tracer = (
            config.tracer_provider.get_tracer(n.SCOPE, VERSION)
            if config.tracer_provider is not None
            else trace.get_tracer(n.SCOPE, VERSION)
        )
        self.own_tracer = (
            None
            if config.tracer_provider is None
            else own_tracer(config.tracer_provider)
        )
        self.logger_provider: LoggerProvider = (
            config.logger_provider or get_logger_provider()
        )
        self.logger = self.logger_provider.get_logger(n.SCOPE, VERSION)
        self.tracing = is_real_tracer_provider(self.tracer_provider)
        self.logging = is_real_logger_provider(self.logger_provider)
        self.listening = False
        self.baselines: dict[tuple[str, tuple[tuple[str, Any], ...]], int] = {
            (r.name, tuple(sorted(r.attributes.items()))): r.value
            for r in REGISTRY.snapshot()
        }
        # Injected providers never change; the global ones change once, at most.
        self._settled = (self.tracing or config.tracer_provider is not None) and (
            self.logging or config.logger_provider is not None
        )

    def __repr__(self) -> str:
        return (
            f"<tipkit instrumentation tracing={self.tracing} logging={self.logging} "
            f"listening={self.listening} metrics={len(self.instruments.names)}>"
        )

    # -- lifecycle (under _LOCK) ---------------------------------------------------

    def start(self) -> None:
        self.discover()
        REGISTRY.histogram_sink = self.record
        self._relisten()

    def stop(self) -> None:
        if self.listening:
            BUS.remove_listener(self.on_event)
            self.listening = False
        if REGISTRY.histogram_sink == self.record:
            REGISTRY.histogram_sink = None

    def discover(self) -> None:
        """Create instruments for every catalogued name and every registry name."""
        for name, spec in _catalog.METRICS.items():
            self.instruments.ensure(name, spec)
        for reading in REGISTRY.snapshot():
            self.instruments.ensure(reading.name, _catalog.DEFAULT_COUNTER)
        for gauge in REGISTRY.gauges():
            self.instruments.ensure(gauge.name, _catalog.DEFAULT_GAUGE)

    def _relisten(self) -> None:
        c = self.config
        self.span_state = c.span_events and self.tracing
        self.log_state = c.log_events and self.logging
        self.span_calls = c.span_events and self.tracing
        self.log_calls = c.flag_log_events and self.logging
        if self.listening:
            BUS.remove_listener(self.on_event)
            self.listening = False
        # A type exported to logs (or counted) is wanted always; one exported
        # only as a span event is wanted only while the current span records.
        BUS.add_listener(
            self.on_event,
            when=WhenRecording(
                self.log_calls, self.log_state, self.span_calls, self.span_state
            ),
        )
        self.listening = True

    def poll(self) -> None:
        """Notice a global tracer or logger provider installed since instrument().

        Called from metric collection and from traced(): never on a guard's hot path.
        """
        if self._settled:
            return
        if not _LOCK.acquire(blocking=False):
            return
        try:
            if _CURRENT is not self:
                return
            changed = False
            if not self.tracing and self.config.tracer_provider is None:
                provider = trace.get_tracer_provider()
                if is_real_tracer_provider(provider):
                    self.tracer_provider = provider
                    self.tracing = changed = True
            if not self.logging and self.config.logger_provider is None:
                lprovider = get_logger_provider()
                if is_real_logger_provider(lprovider):
                    self.logger_provider = lprovider
                    self.logger = lprovider.get_logger(n.SCOPE, VERSION)
                    self.logging = changed = True
            if changed:
                self._relisten()
            self._settled = self.tracing and self.logging
        finally:
            _LOCK.release()

    # -- export --------------------------------------------------------------------

    def record(self, name: str, value: float, attributes: Attributes) -> None:
        """Record a histogram point (the registry's histogram sink)."""
        if _CURRENT is not self:  # a caller read the sink before uninstrument()
            return
        histogram = self.instruments.histograms.get(name)
        if histogram is None:
            with _LOCK:
                self.instruments.ensure(
                    name, _catalog.METRICS.get(name, _DEFAULT_HISTOGRAM)
                )
            histogram = self.instruments.histograms.get(name)
            if histogram is None:
                return
        kind = current_synthetic()
        if kind is not None:
            attributes = {**attributes, n.SYNTHETIC_TYPE: kind}
        histogram.record(value, attributes)

    def on_event(self, event: Event) -> None:
        """Export *event* as a span event and/or a log event (the bus listener)."""
        if _CURRENT is not self:  # published from a listener list read before stop()
            return
        counted = _catalog.COUNTED_EVENTS.get(event.otel_name)
        if counted is not None:
            self._count(event, counted)
        spec = _catalog.EVENTS.get(event.otel_name, _catalog.DEFAULT_EVENT)
        span, to_log = self._targets(spec)
        if span is None and not to_log:
            return
        attributes: dict[str, AttributeValue] = dict(event.otel_attributes())
        if event.otel_name == _catalog.FLAG_EVALUATION:
            self._flag_extras(event, attributes)
        kind = current_synthetic()
        if kind is not None:
            attributes[n.SYNTHETIC_TYPE] = kind
        if span is not None:
            span.add_event(event.otel_name, attributes)
        if to_log:
            # A state change is a log record a person reads: severity, a body
            # naming what changed, and the runbook URL among the attributes.
            self.logger.emit(
                event_name=event.otel_name,
                body=f"{event.otel_name}: {event.name}",
                attributes=attributes,
                severity_number=_SEVERITY[spec.severity],
                severity_text=spec.severity,
            )

    def _targets(self, spec: _catalog.EventSpec) -> tuple[trace.Span | None, bool]:
        """Return the recording span to add the event to (or ``None``) and whether to log it."""
        if spec.per_call:
            to_span, to_log = self.span_calls, self.log_calls
        else:
            to_span, to_log = self.span_state, self.log_state
        if to_span:
            span = trace.get_current_span()
            if span.is_recording():
                return span, to_log
        return None, to_log

    @staticmethod
    def _count(event: Event, keys: tuple[str, ...]) -> None:
        """Count *event* in ``tipkit.events`` (by name, subject and *keys*)."""
        attributes: dict[str, AttributeValue] = {
            n.EVENT: event.otel_name,
            n.SUBJECT: event.name,
        }
        if keys:
            exported = event.otel_attributes()
            for key in keys:
                if key in exported:
                    attributes[key] = exported[key]
        kind = current_synthetic()
        if kind is not None:
            attributes[n.SYNTHETIC_TYPE] = kind
        REGISTRY.counter(n.EVENTS, attributes).add(1)

    def _flag_extras(self, event: Event, attributes: dict[str, AttributeValue]) -> None:
        c = self.config
        if c.flag_value:
            value = getattr(event, "value", None)
            if value is not None:
                attributes[n.FEATURE_FLAG_VALUE] = attribute_value(value)
        if c.flag_context_id != "off":
            target = getattr(event, "targeting_key", None) or getattr(
                getattr(event, "context", None), "targeting_key", None
            )
            if target:
                attributes[n.FEATURE_FLAG_CONTEXT_ID] = (
                    str(target)
                    if c.flag_context_id == "raw"
                    else hash_context_id(str(target), c.context_id_key)
                )


_DEFAULT_HISTOGRAM: Final = _catalog.MetricSpec("histogram", "1", "A tipkit histogram.")


def attribute_value(value: object) -> AttributeValue:
    if isinstance(value, str | bool | int | float):
        return value
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


_CURRENT: _Instrumentation | None = None


def instrument(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    logger_provider: LoggerProvider | None = None,
    span_events: bool = True,
    log_events: bool = True,
    flag_log_events: bool = False,
    flag_value: bool = False,
    flag_context_id: ContextIdMode = "off",
    context_id_key: bytes | None = None,
) -> None:
    """Turn on OpenTelemetry export of every tipkit metric and event.

    The one line an app adds. Providers default to the global ones (looked up
    now; a global tracer or logger provider installed later is noticed at the
    next metric collection or ``traced()`` span, or by calling ``instrument()``
    again). Never configures an SDK.

    Args:
        tracer_provider: where ``traced()`` spans go, and whether span events are
            on at all (only a real provider turns them on).
        meter_provider: where the metrics go.
        logger_provider: where log events go (only a real provider turns them on).
        span_events: add events to the current recording span.
        log_events: emit state changes (breaker transitions, rejections, retries,
            reloads) as log events.
        flag_log_events: also emit every flag evaluation as a log event (one per
            evaluation: off by default).
        flag_value: export ``feature_flag.result.value`` (values can be large or
            sensitive: off by default).
        flag_context_id: ``"off"`` (default), ``"hashed"`` or ``"raw"``: export the
            evaluation's targeting key as ``feature_flag.context.id``.
        context_id_key: secret key for hashing the targeting key (HMAC-SHA-256).

    Idempotent: calling again with the same arguments only picks up counters
    created since; different arguments replace the previous configuration.
    Thread-safe.

    Raises:
        ValueError: *flag_context_id* is not one of ``off``, ``hashed``, ``raw``.
    """
    global _CURRENT  # noqa: PLW0603  # the process-wide instrumentation, under _LOCK
    if flag_context_id not in ("off", "hashed", "raw"):
        raise ValueError(
            f"flag_context_id must be 'off', 'hashed' or 'raw', got {flag_context_id!r}"
        )
    config = _Config(
        tracer_provider,
        meter_provider,
        logger_provider,
        bool(span_events),
        bool(log_events),
        bool(flag_log_events),
        bool(flag_value),
        flag_context_id,
        context_id_key,
    )
    with _LOCK:
        current = _CURRENT
        if current is not None and current.config == config:
            current.discover()
            current.poll()
            return
        if current is not None:
            current.stop()
        inst = _Instrumentation(config)
        inst.start()
        _CURRENT = inst


def uninstrument() -> None:
    """Stop exporting: no tipkit metric, event or histogram point leaves after this.

    Idempotent and thread-safe. Spans from ``traced()`` go on to the global
    tracer provider, as any instrumentation library's spans do.
    """
    global _CURRENT  # noqa: PLW0603  # see instrument()
    with _LOCK:
        if _CURRENT is not None:
            _CURRENT.stop()
            _CURRENT = None


def is_instrumented() -> bool:
    """Return whether :func:`instrument` is in effect."""
    return _CURRENT is not None


def instrumentation() -> _Instrumentation | None:
    """Return the live instrumentation state (for tests and debugging)."""
    return _CURRENT


_TRACERS: weakref.WeakKeyDictionary[Any, trace.Tracer] = weakref.WeakKeyDictionary()
_GLOBAL_TRACER: list[trace.Tracer] = []
ENV_TRACER_PROVIDER: Final = OTEL_PYTHON_TRACER_PROVIDER in os.environ
"""Whether the API will load a global tracer provider named in the environment."""


def tracer_for(provider: trace.TracerProvider | None) -> trace.Tracer:
    """Return tipkit's tracer: from *provider*, else instrument()'s, else the global."""
    if provider is not None:
        tracer = _TRACERS.get(provider)
        if tracer is None:
            tracer = _TRACERS[provider] = provider.get_tracer(n.SCOPE, VERSION)
        return tracer
    inst = _CURRENT
    if inst is not None:
        return inst.tracer
    if not _GLOBAL_TRACER:
        _GLOBAL_TRACER.append(trace.get_tracer(n.SCOPE, VERSION))
    return _GLOBAL_TRACER[0]


_LIVE_GLOBAL: list[trace.Tracer] = []


def own_tracer(provider: trace.TracerProvider) -> trace.Tracer | None:
    """Return tipkit's tracer from *provider*, or ``None`` for the API's no-op one."""
    if isinstance(provider, trace.NoOpTracerProvider):
        return None
    return tracer_for(provider)


def live_tracer() -> trace.Tracer | None:
    """Return instrument()'s tracer, else the global one, or ``None`` with no SDK.

    ``None`` means no span could record: instrument() was given the API's no-op
    provider, or was given none and no global provider is set. Callers then
    skip the span and the context attach (a bare install pays only this check).
    """
    inst = _CURRENT
    if inst is not None and inst.config.tracer_provider is not None:
        return inst.own_tracer
    if trace._TRACER_PROVIDER is None:  # the one cheap way to know
        if not ENV_TRACER_PROVIDER:
            return None
        trace.get_tracer_provider()  # loads the provider the environment names
    if not _LIVE_GLOBAL:
        # Made once a global provider is set: the real tracer, not a proxy to it.
        _LIVE_GLOBAL.append(trace.get_tracer(n.SCOPE, VERSION))
    return _LIVE_GLOBAL[0]


def exported_attributes(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """Return *attributes* with the current synthetic marker added, if any."""
    out: dict[str, AttributeValue] = dict(attributes)
    kind = current_synthetic()
    if kind is not None:
        out[n.SYNTHETIC_TYPE] = kind
    return out


def restore(previous: _Instrumentation) -> None:
    """Put back an instrumentation replaced since (counter baselines kept)."""
    global _CURRENT  # noqa: PLW0603  # see instrument()
    with _LOCK:
        if _CURRENT is not None:
            _CURRENT.stop()
        previous.start()
        _CURRENT = previous
