"""Observability II: cheap spans, conditional events, redaction, exemplars, state logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry._logs import NoOpLoggerProvider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from tipkit.breaker import CircuitBreaker
from tipkit.deadline import deadline
from tipkit.errors import CircuitOpenError
from tipkit.flags import FlagEvaluated, Flags
from tipkit.telemetry import _names as n
from tipkit.telemetry import (
    _propagation,
    _redact,
    add_listener,
    configure_logging,
    counters,
    instrument,
    remove_listener,
    synthetic,
    traced,
    uninstrument,
)
from tipkit.telemetry._events import Event
from tipkit.testing import FakeClock

FLAGS = {
    "flags": {"f": {"variants": {"on": True, "off": False}, "default_variant": "on"}}
}


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    uninstrument()
    configure_logging(log_exception_text=False)
    yield
    uninstrument()
    configure_logging(log_exception_text=False)


def _tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider, spans


# ---------------------------------------------------------------- flag events


def test_flag_event_is_built_only_inside_a_recording_span() -> None:
    """Under an SDK, FlagEvaluated is wanted only while the current span records."""
    provider, spans = _tracing()
    instrument(tracer_provider=provider, logger_provider=NoOpLoggerProvider())
    flags = Flags.from_dict(FLAGS)
    assert not FlagEvaluated.listened
    flags.get("f", "u", default=False)
    with provider.get_tracer("t").start_as_current_span("request"):
        assert FlagEvaluated.listened
        flags.get("f", "u", default=False)
    unsampled = TracerProvider(sampler=ALWAYS_OFF)
    with unsampled.get_tracer("t").start_as_current_span("sampled-out"):
        assert not FlagEvaluated.listened
    (span,) = spans.get_finished_spans()
    assert ["feature_flag.evaluation"] == [e.name for e in span.events]


def test_a_span_records_each_distinct_flag_result_once() -> None:
    """Repeated evaluations with the same result add one event per span; a new result adds one."""
    provider, spans = _tracing()
    instrument(tracer_provider=provider, logger_provider=NoOpLoggerProvider())
    flags = Flags.from_dict(FLAGS)
    tracer = provider.get_tracer("t")
    counted = {n.FEATURE_FLAG_KEY: "f"}
    before = counters.value(n.FLAG_EVALUATIONS, counted)
    with tracer.start_as_current_span("request"):
        for _ in range(5):
            flags.get("f", {"targeting_key": "u"}, default=False)
        flags.get("f", "someone-else", default=False)  # another user: recorded
        with flags.override("f", False):  # another result: recorded
            flags.get("f", {"targeting_key": "u"}, default=False)
        flags.get("f", {"targeting_key": "u"}, default=False)  # seen: not again
        counted_in_span = counters.value(n.FLAG_EVALUATIONS, counted) - before
        with synthetic("test"):  # marked synthetic: recorded
            flags.get("f", {"targeting_key": "u"}, default=False)
    with tracer.start_as_current_span("next-request"):
        flags.get("f", {"targeting_key": "u"}, default=False)  # a new span: recorded
    first, second = sorted(
        spans.get_finished_spans(), key=lambda s: s.name != "request"
    )
    events = [dict(e.attributes or {}) for e in first.events]
    assert 4 == len(events)
    assert [True, True, False, True] == [
        e[n.FEATURE_FLAG_VARIANT] == "on" for e in events
    ]
    assert "test" == events[-1][n.SYNTHETIC_TYPE]
    assert 1 == len(second.events)
    assert 8 == counted_in_span  # every evaluation counted, recorded or not


def test_every_evaluation_is_recorded_while_another_listener_wants_them() -> None:
    """With an unconditional listener the event is built anyway, and the span gets each one."""
    provider, spans = _tracing()
    instrument(tracer_provider=provider, logger_provider=NoOpLoggerProvider())
    flags = Flags.from_dict(FLAGS)
    seen: list[Event] = []
    listener = add_listener(seen.append, types=FlagEvaluated)
    try:
        with provider.get_tracer("t").start_as_current_span("request"):
            for _ in range(3):
                flags.get("f", "u", default=False)
    finally:
        remove_listener(listener)
    (span,) = spans.get_finished_spans()
    assert (3, 3) == (len(seen), len(span.events))


def test_a_user_listener_or_flag_log_events_want_every_evaluation() -> None:
    """A listener of the type, or flag_log_events with a real logger, is unconditional."""
    provider, _ = _tracing()
    instrument(tracer_provider=provider, logger_provider=NoOpLoggerProvider())
    seen: list[Event] = []
    listener = add_listener(seen.append, types=FlagEvaluated)
    try:
        assert FlagEvaluated.listened is True
        Flags.from_dict(FLAGS).get("f", "u", default=False)
    finally:
        remove_listener(listener)
    assert 1 == len(seen)
    logs = LoggerProvider()
    instrument(tracer_provider=provider, logger_provider=logs, flag_log_events=True)
    assert FlagEvaluated.listened is True


# ---------------------------------------------------------------------- spans


def test_traced_with_no_sdk_makes_no_span_and_reads_no_clock() -> None:
    """No provider anywhere: the call runs bare, the clock is never read."""
    if trace._TRACER_PROVIDER is not None:  # pragma: no cover - a global SDK is set
        pytest.skip("a global tracer provider is set in this process")
    clock = FakeClock()
    reads: list[float] = []
    original = clock.monotonic

    def counting() -> float:
        reads.append(original())
        return reads[-1]

    clock.monotonic = counting  # type: ignore[method-assign]
    seen: list[object] = []

    @traced("bare", clock=clock)
    def fn(x: int) -> int:
        seen.append(trace.get_current_span())
        return x + 1

    assert 3 == fn(2)
    assert [trace.INVALID_SPAN] == seen
    assert [] == reads


def test_traced_unsampled_span_is_current_but_gets_no_attributes() -> None:
    """A sampled-out span still becomes current (children follow the decision)."""
    provider = TracerProvider(sampler=ALWAYS_OFF)
    seen: list[trace.Span] = []

    @traced("unsampled", tracer_provider=provider, record_args=("x",))
    def fn(x: int) -> int:
        seen.append(trace.get_current_span())
        return x

    fn(1)
    assert 1 == len(seen)
    assert not seen[0].is_recording()
    assert seen[0].get_span_context().is_valid
    assert trace.INVALID_SPAN == trace.get_current_span()


def test_traced_records_duration_with_an_exemplar_of_its_span() -> None:
    """tipkit.call.duration points carry the trace id of the traced span."""
    provider, spans = _tracing()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    clock = FakeClock()

    @traced("exemplar", tracer_provider=provider, meter_provider=meters, clock=clock)
    def fn() -> None:
        clock.advance(0.2)

    fn()
    (span,) = spans.get_finished_spans()
    data = reader.get_metrics_data()
    assert data is not None
    points = [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == n.CALL_DURATION
        for p in m.data.data_points
    ]
    (point,) = points
    assert isinstance(point, HistogramDataPoint)
    assert 0.2 == point.sum
    assert [span.context.trace_id] == [e.trace_id for e in point.exemplars]


def test_record_args_warns_at_decoration_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In production mode record_args warns, pointing at the decorating line."""
    monkeypatch.setenv("TIPKIT_ENV", "production")
    with pytest.warns(UserWarning, match="exports these argument values") as record:
        traced("a", record_args=("x",))(lambda x: x)
    assert __file__ == record[0].filename
    monkeypatch.setenv("TIPKIT_ENV", "staging")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod")
    assert _redact.in_production()
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES")
    assert not _redact.in_production()


# ------------------------------------------------------------------- redaction


def _raise_with_secret() -> None:
    try:
        raise KeyError("alice@example.com")
    except KeyError as exc:
        raise ValueError("card 4111 1111 1111 1111") from exc


def test_log_records_hash_exception_text_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Traceback locations and types stay; messages become hashes; args are summarised."""
    logger = logging.getLogger("tipkit")
    try:
        _raise_with_secret()
    except ValueError as exc:
        expected = _redact.summary(exc)
        with caplog.at_level(logging.ERROR, logger="tipkit"):
            logger.error("comparator raised %s", exc, exc_info=exc)  # noqa: TRY400  # the shape tipkit's own records have
    text = caplog.text
    assert "4111" not in text
    assert "alice@example.com" not in text
    assert "ValueError: <redacted sha256:" in text
    assert "KeyError: <redacted sha256:" in text
    assert "direct cause" in text
    assert "_raise_with_secret" in text
    assert f"comparator raised {expected}" in text
    assert expected.startswith("ValueError#")


def test_log_exception_text_lets_the_message_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """configure_logging(log_exception_text=True) keeps the exception text."""
    configure_logging(log_exception_text=True)
    logger = logging.getLogger("tipkit")
    with caplog.at_level(logging.ERROR, logger="tipkit"):
        try:
            _raise_with_secret()
        except ValueError:
            logger.exception("boom")
    assert "4111 1111 1111 1111" in caplog.text


def test_experiment_comparator_error_text_never_reaches_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A comparator's exception message is hashed in tipkit's log record."""
    from tipkit.experiment import Experiment

    def compare(a: object, b: object) -> bool:
        raise RuntimeError("ssn 078-05-1120")

    experiment = Experiment(
        "redact", control=lambda: 1, candidate=lambda: 2, compare=compare
    )
    with caplog.at_level(logging.ERROR, logger="tipkit"):
        assert 1 == experiment.run()
    assert "078-05-1120" not in caplog.text
    assert "RuntimeError" in caplog.text


# ------------------------------------------------------- state-change log records


def test_breaker_opening_is_a_log_record_with_severity_and_runbook() -> None:
    """A breaker transition is an OTel log record: WARN, a body, the runbook URL."""
    exporter = InMemoryLogRecordExporter()
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    instrument(tracer_provider=trace.NoOpTracerProvider(), logger_provider=logs)
    breaker = CircuitBreaker(
        "pay-logs", minimum_calls=1, runbook="https://runbooks.invalid/pay"
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: 1)
    records = [d.log_record for d in exporter.get_finished_logs()]
    changed = [r for r in records if r.event_name == "tipkit.breaker.state_changed"]
    assert 1 == len(changed)
    assert "WARN" == changed[0].severity_text
    assert "https://runbooks.invalid/pay" == changed[0].attributes[n.RUNBOOK]
    assert "tipkit.breaker.state_changed: pay-logs" == changed[0].body


def test_counted_events_feed_tipkit_events_while_instrumented() -> None:
    """A store outage event is counted in tipkit.events (what the alerts read)."""
    from tipkit.stores._events import StoreUnavailable
    from tipkit.telemetry._events import BUS

    instrument(
        tracer_provider=trace.NoOpTracerProvider(), logger_provider=NoOpLoggerProvider()
    )
    before = counters.value(n.EVENTS, {n.EVENT: "tipkit.store.unavailable"})
    assert StoreUnavailable.listened is True
    BUS.publish(StoreUnavailable("flags-ns", "flags", "fail_open", "ConnectionError"))
    after = counters.value(n.EVENTS, {n.EVENT: "tipkit.store.unavailable"})
    assert 1 == after - before


# ------------------------------------------------------------------ propagation


@given(st.text(max_size=300))
def test_baggage_parse_never_raises(value: str) -> None:
    """Any incoming baggage text parses to marks (malformed entries are ignored)."""
    marks = _propagation.parse(value)
    assert isinstance(marks.synthetic, bool)


@given(
    st.booleans(),
    st.one_of(st.none(), st.integers(0, _propagation.MAX_DEADLINE_MS)),
    st.lists(st.from_regex(r"[a-z]{1,8}=[a-z0-9]{1,8}", fullmatch=True), max_size=4),
)
def test_baggage_merge_then_parse_round_trips(
    synthetic_mark: bool, deadline_ms: int | None, others: list[str]
) -> None:
    """What a sender writes, a receiver reads back; other entries are kept."""
    value = _propagation.merge(
        ",".join([*others, "tipkit.synthetic=1"]),
        synthetic=synthetic_mark,
        deadline_ms=deadline_ms,
    )
    assert _propagation.Marks(synthetic_mark, deadline_ms) == _propagation.parse(value)
    for entry in others:
        assert entry in value.split(",")


def test_outgoing_states_this_context_mark_and_remaining_deadline() -> None:
    """Inside synthetic() and a deadline, outgoing baggage carries both, rounded down."""
    clock = FakeClock()
    assert "a=1" == _propagation.outgoing("a=1,tipkit.synthetic=1")
    with synthetic(), deadline(2.0, clock=clock):
        clock.advance(0.5004)
        value = _propagation.outgoing("a=1")
    assert "a=1,tipkit.synthetic=1,tipkit.deadline_ms=1499" == value
