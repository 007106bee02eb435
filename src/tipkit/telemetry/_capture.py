"""``capture_telemetry()``: real SDK providers with in-memory exporters, for tests.

A test helper: it imports ``opentelemetry-sdk`` (a test dependency of tipkit, not
a runtime one) lazily, when called.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from tipkit.telemetry import _otel

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

__all__ = [
    "CapturedEvent",
    "CapturedLog",
    "CapturedPoint",
    "CapturedSpan",
    "CapturedTelemetry",
    "capture_telemetry",
]

_Attrs = dict[str, Any]


@dataclass(frozen=True)
class CapturedEvent:
    """A span event: its name, attributes and the name of the span it is on."""

    name: str
    attributes: _Attrs
    span: str = ""


@dataclass(frozen=True)
class CapturedSpan:
    """A finished span, reduced to what tests assert on."""

    name: str
    attributes: _Attrs
    events: tuple[CapturedEvent, ...]
    status: str
    """``UNSET``, ``OK`` or ``ERROR``."""
    status_description: str | None
    kind: str
    scope: str | None
    scope_version: str | None
    span_id: int
    parent_id: int | None


@dataclass(frozen=True)
class CapturedLog:
    """A log record (a log-based event when *event_name* is set)."""

    event_name: str | None
    attributes: _Attrs
    severity_text: str | None
    body: Any
    span_id: int
    scope: str | None


@dataclass(frozen=True)
class CapturedPoint:
    """One metric data point.

    *value* is the sum (counters, up-down counters, histograms) or the last value
    (gauges); *count* and *buckets* are set for histograms only.
    """

    name: str
    kind: str
    """``counter``, ``updowncounter``, ``gauge`` or ``histogram``."""
    unit: str
    description: str
    attributes: _Attrs
    value: float
    count: int | None = None
    buckets: tuple[float, ...] = ()
    scope: str | None = None
    scope_version: str | None = None


@dataclass
class CapturedTelemetry:
    """What was exported inside a :func:`capture_telemetry` block.

    ``spans``, ``span_events`` and ``logs`` are read live; ``metrics()`` collects
    now (inside the block) or returns the final collection (after it).
    """

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    _spans: InMemorySpanExporter = field(repr=False)
    _reader: InMemoryMetricReader = field(repr=False)
    _logs: InMemoryLogRecordExporter = field(repr=False)
    _final: list[CapturedPoint] | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (
            f"<CapturedTelemetry spans={len(self.spans)} logs={len(self.logs)} "
            f"closed={self._final is not None}>"
        )

    # -- spans ---------------------------------------------------------------------

    @property
    def spans(self) -> list[CapturedSpan]:
        """Finished spans, in the order they ended."""
        out = []
        for s in self._spans.get_finished_spans():
            scope = s.instrumentation_scope
            out.append(
                CapturedSpan(
                    name=s.name,
                    attributes=dict(s.attributes or {}),
                    events=tuple(
                        CapturedEvent(e.name, dict(e.attributes or {}), s.name)
                        for e in s.events
                    ),
                    status=s.status.status_code.name,
                    status_description=s.status.description,
                    kind=s.kind.name,
                    scope=scope.name if scope else None,
                    scope_version=scope.version if scope else None,
                    span_id=s.context.span_id if s.context else 0,
                    parent_id=s.parent.span_id if s.parent else None,
                )
            )
        return out

    def span(self, name: str) -> CapturedSpan:
        """Return the one finished span called *name*.

        Raises:
            AssertionError: there is not exactly one (the message lists the spans).
        """
        found = [s for s in self.spans if s.name == name]
        if len(found) != 1:
            names = [s.name for s in self.spans]
            raise AssertionError(
                f"expected one span {name!r}, got {len(found)}: {names}"
            )
        return found[0]

    @property
    def span_events(self) -> list[CapturedEvent]:
        """Every event on every finished span."""
        return [e for s in self.spans for e in s.events]

    def events(self, name: str) -> list[CapturedEvent]:
        """Span events called *name*, on every finished span."""
        return [e for e in self.span_events if e.name == name]

    @contextmanager
    def recording_span(self, name: str = "test") -> Iterator[trace.Span]:
        """Run the block inside a recording span of the captured tracer provider."""
        tracer = self.tracer_provider.get_tracer("tipkit.testing")
        with tracer.start_as_current_span(name) as span:
            yield span

    # -- logs ----------------------------------------------------------------------

    @property
    def logs(self) -> list[CapturedLog]:
        """Emitted log records (tipkit's log-based events), in order."""
        out = []
        for item in self._logs.get_finished_logs():
            record = item.log_record
            scope = getattr(item, "instrumentation_scope", None)
            out.append(
                CapturedLog(
                    event_name=getattr(record, "event_name", None),
                    attributes=dict(record.attributes or {}),
                    severity_text=record.severity_text,
                    body=record.body,
                    span_id=record.span_id or 0,
                    scope=scope.name if scope else None,
                )
            )
        return out

    # -- metrics -------------------------------------------------------------------

    def metrics(self) -> list[CapturedPoint]:
        """Every metric point, cumulative since the block started."""
        if self._final is not None:
            return list(self._final)
        return _points(self._reader)

    def points(self, name: str) -> list[CapturedPoint]:
        """The points of metric *name*."""
        return [p for p in self.metrics() if p.name == name]

    def metric(self, name: str, attributes: Mapping[str, Any] | None = None) -> float:
        """Sum the values of *name*'s points whose attributes include *attributes*.

        Returns 0 when there is no such point.
        """
        want = dict(attributes or {})
        return sum(
            p.value
            for p in self.points(name)
            if all(p.attributes.get(k) == v for k, v in want.items())
        )

    def dump(self) -> str:
        """Return every exported name, attribute and value as text (for PII searches)."""
        parts = [repr(s) for s in self.spans]
        parts.extend(repr(log) for log in self.logs)
        parts.extend(repr(p) for p in self.metrics())
        return "\n".join(parts)


def _points(reader: InMemoryMetricReader) -> list[CapturedPoint]:
    from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415  # test dependency, imported lazily
        HistogramDataPoint,
        NumberDataPoint,
        Sum,
    )

    data = reader.get_metrics_data()
    out: list[CapturedPoint] = []
    if data is None:
        return out
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            for metric in scope_metrics.metrics:
                body = metric.data
                kind = "gauge"
                if isinstance(body, Sum):
                    kind = "counter" if body.is_monotonic else "updowncounter"
                for point in body.data_points:
                    common: dict[str, Any] = {
                        "name": metric.name,
                        "unit": metric.unit or "",
                        "description": metric.description or "",
                        "attributes": dict(point.attributes or {}),
                        "scope": scope.name,
                        "scope_version": scope.version,
                    }
                    if isinstance(point, HistogramDataPoint):
                        out.append(
                            CapturedPoint(
                                kind="histogram",
                                value=point.sum,
                                count=point.count,
                                buckets=tuple(point.explicit_bounds),
                                **common,
                            )
                        )
                    elif isinstance(point, NumberDataPoint):
                        out.append(
                            CapturedPoint(kind=kind, value=point.value, **common)
                        )
    return out


@contextmanager
def capture_telemetry(**instrument_options: Any) -> Iterator[CapturedTelemetry]:
    """Instrument tipkit with SDK providers and in-memory exporters for the block.

    Yields a :class:`CapturedTelemetry` to assert on. *instrument_options* go to
    :func:`~tipkit.telemetry.instrument` (``flag_value=True``, say). The global
    providers are never touched; on exit the previous instrumentation (if any) is
    restored and the providers are shut down. Not for concurrent use from
    several tests at once: instrumentation is process-wide.

    Raises:
        ImportError: ``opentelemetry-sdk`` is not installed (``pip install
            opentelemetry-sdk``).
    """
    try:
        from opentelemetry.sdk._logs import LoggerProvider  # noqa: PLC0415  # test dependency, imported lazily
        from opentelemetry.sdk._logs.export import (  # noqa: PLC0415  # same
            InMemoryLogRecordExporter,
            SimpleLogRecordProcessor,
        )
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415  # same
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415  # same
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415  # same
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415  # same
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415  # same
            InMemorySpanExporter,
        )
    except ImportError as exc:  # pragma: no cover - the SDK is a test dependency
        raise ImportError(
            "capture_telemetry() needs the OpenTelemetry SDK: "
            "pip install opentelemetry-sdk"
        ) from exc

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    logs = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]  # SDK leaves it untyped
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    captured = CapturedTelemetry(
        tracer_provider, meter_provider, logger_provider, spans, reader, logs
    )
    previous = _otel.instrumentation()
    _otel.instrument(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        **instrument_options,
    )
    try:
        yield captured
    finally:
        captured._final = _points(reader)
        _otel.uninstrument()
        if previous is not None:
            _otel.restore(previous)
        tracer_provider.shutdown()
        meter_provider.shutdown()
        logger_provider.shutdown()
