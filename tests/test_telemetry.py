"""OpenTelemetry export, generically: any registry counter, gauge and Event subclass."""

from __future__ import annotations

import asyncio
import contextvars
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry._logs import NoOpLoggerProvider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tipkit.telemetry import (
    _catalog,
    _otel,
    counters,
    current_synthetic,
    hash_context_id,
    instrument,
    is_instrumented,
    synthetic,
    traced,
    uninstrument,
)
from tipkit.telemetry import _names as n
from tipkit.telemetry._capture import capture_telemetry
from tipkit.telemetry._events import BUS, AttributeValue, Event
from tipkit.testing import FakeClock

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class ThingHappened(Event):
    """A test-only state-change event."""

    secret: str = ""

    otel_name: ClassVar[str] = "tipkit.test.thing_happened"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        return {"tipkit.name": self.name, n.RUNBOOK: "https://runbooks.invalid/x"}


@dataclass(frozen=True, slots=True)
class Evaluated(Event):
    """A test-only per-call event, exported like a flag evaluation."""

    value: object = None

    otel_name: ClassVar[str] = _catalog.FLAG_EVALUATION

    def otel_attributes(self) -> dict[str, AttributeValue]:
        return {n.FEATURE_FLAG_KEY: self.name}


def publish(event: Event) -> None:
    if type(event).listened:
        BUS.publish(event)


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    uninstrument()
    yield
    uninstrument()


class Providers:
    """SDK providers with in-memory exporters, injected (globals are never set)."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.logs = InMemoryLogRecordExporter()
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(self.logs)
        )

    def instrument(self, **kwargs: object) -> None:
        instrument(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            logger_provider=self.logger_provider,
            **kwargs,  # type: ignore[arg-type]
        )

    def metric_points(self) -> list[tuple[str, dict[str, object], float]]:
        data = self.reader.get_metrics_data()
        out = []
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        value = getattr(p, "value", None)
                        if value is None:
                            value = p.sum  # type: ignore[union-attr]
                        out.append((m.name, dict(p.attributes or {}), value))
        return out


# catalogue


def test_catalog_lists_every_metric_name_with_ucum_unit() -> None:
    """Every metric name of _names is in the catalogue, with a unit and a kind."""
    source = (ROOT / "src" / "tipkit" / "telemetry" / "_names.py").read_text()
    section = source.split("# -- metrics")[1].split("# -- attribute keys")[0]
    metric_names = set(
        re.findall(r'^[A-Z_]+: Final = "([^"]+)"', section, re.MULTILINE)
    )
    assert metric_names == set(_catalog.METRICS)
    for name, spec in _catalog.METRICS.items():
        assert not name.endswith("_total"), name
        assert re.fullmatch(r"s|1|%|\{[a-z]+\}", spec.unit), (name, spec.unit)
    histograms = {k for k, v in _catalog.METRICS.items() if v.kind == "histogram"}
    assert {n.RATELIMIT_WAIT, n.CALL_DURATION} == histograms


def test_docs_list_every_metric_and_event() -> None:
    """docs/telemetry.md names every metric, its unit, and every exported event."""
    doc = (ROOT / "docs" / "telemetry.md").read_text()
    for name, spec in _catalog.METRICS.items():
        assert f"`{name}`" in doc, name
        assert f"`{spec.unit}`" in doc, (name, spec.unit)
    for event in _catalog.EVENTS:
        assert f"`{event}`" in doc, event
    assert "user_agent.synthetic.type" in doc


# metrics


def test_counters_export_as_observable_counters_with_catalog_metadata() -> None:
    """A registry counter is exported under its name with the catalogue's unit."""
    attrs = {n.BREAKER_NAME: "generic-a", n.OUTCOME: "success", n.MODE: "enforce"}
    counter = counters.counter(n.BREAKER_CALLS, attrs)
    with capture_telemetry() as cap:
        counter.inc()
        counter.inc()
        counter.add(3)
        points = [p for p in cap.points(n.BREAKER_CALLS) if p.attributes == attrs]
    assert len(points) == 1
    point = points[0]
    assert (point.kind, point.unit, point.value) == ("counter", "{call}", 5)
    assert point.description == _catalog.METRICS[n.BREAKER_CALLS].description
    assert (point.scope, point.scope_version) == ("tipkit", _otel.VERSION)


def test_counts_made_before_instrument_are_not_exported() -> None:
    """Counter values are exported relative to their value at instrument()."""
    attrs = {n.RATELIMIT_NAME: "generic-before", n.RESULT: "acquired"}
    counter = counters.counter(n.RATELIMIT_REQUESTS, attrs)
    for _ in range(7):
        counter.inc()
    with capture_telemetry() as cap:
        assert cap.metric(n.RATELIMIT_REQUESTS, attrs) == 0
        counter.inc()
        assert cap.metric(n.RATELIMIT_REQUESTS, attrs) == 1


def test_gauges_export_with_their_kind() -> None:
    """Registry gauges become observable gauges (or up-down counters for active calls)."""

    class Owner:
        level = 3.5

    owner = Owner()
    counters.register_gauge(
        n.RATELIMIT_TOKENS, owner, lambda o: [(o.level, {n.RATELIMIT_NAME: "gauge-a"})]
    )
    counters.register_gauge(
        n.BULKHEAD_ACTIVE, owner, lambda o: [(2, {n.BULKHEAD_NAME: "gauge-a"})]
    )
    with capture_telemetry() as cap:
        tokens = [
            p
            for p in cap.points(n.RATELIMIT_TOKENS)
            if p.attributes == {n.RATELIMIT_NAME: "gauge-a"}
        ]
        active = [
            p
            for p in cap.points(n.BULKHEAD_ACTIVE)
            if p.attributes == {n.BULKHEAD_NAME: "gauge-a"}
        ]
    assert [(p.kind, p.unit, p.value) for p in tokens] == [("gauge", "{token}", 3.5)]
    assert [(p.kind, p.unit, p.value) for p in active] == [
        ("updowncounter", "{call}", 2)
    ]
    del owner


def test_histogram_records_through_the_registry_sink_in_seconds() -> None:
    """REGISTRY.record feeds the synchronous histogram with second-sized buckets."""
    with capture_telemetry() as cap:
        counters.record(n.RATELIMIT_WAIT, 0.25, {n.RATELIMIT_NAME: "hist"})
        counters.record(n.RATELIMIT_WAIT, 0.75, {n.RATELIMIT_NAME: "hist"})
        (point,) = cap.points(n.RATELIMIT_WAIT)
    assert (point.kind, point.unit, point.count, point.value) == (
        "histogram",
        "s",
        2,
        1.0,
    )
    assert point.attributes == {n.RATELIMIT_NAME: "hist"}
    assert point.buckets == _catalog.DURATION_BUCKETS


def test_uncatalogued_names_export_with_default_metadata() -> None:
    """A counter or histogram name the catalogue does not know is still exported."""
    counter = counters.counter("tipkit.test.widgets", {"tipkit.name": "w"})
    with capture_telemetry() as cap:
        counter.inc()
        counters.record("tipkit.test.latency", 2.0, {"tipkit.name": "w"})
        (point,) = cap.points("tipkit.test.widgets")
        (hist,) = cap.points("tipkit.test.latency")
    assert (point.kind, point.unit, point.value) == ("counter", "1", 1)
    assert (hist.kind, hist.count) == ("histogram", 1)


def test_nothing_is_exported_before_instrument_and_after_uninstrument() -> None:
    """Spans events, logs, counter increments and histograms outside instrument() are dropped."""
    p = Providers()
    attrs = {n.RETRY_NAME: "outside", n.OUTCOME: "failure"}
    counter = counters.counter(n.RETRY_ATTEMPTS, attrs)
    tracer = p.tracer_provider.get_tracer("test")

    def work() -> None:
        counter.inc()
        counters.record(n.RATELIMIT_WAIT, 1.0, {n.RATELIMIT_NAME: "outside"})
        with tracer.start_as_current_span("caller"):
            publish(ThingHappened("outside"))

    work()
    assert p.metric_points() == []
    assert [e for s in p.spans.get_finished_spans() for e in s.events] == []
    assert p.logs.get_finished_logs() == ()

    p.instrument()
    work()
    inside = p.metric_points()
    assert (n.RETRY_ATTEMPTS, attrs, 1) in inside
    assert len(p.logs.get_finished_logs()) == 1
    uninstrument()
    p.spans.clear()
    p.logs.clear()

    work()
    after = p.metric_points()
    assert [pt for pt in after if pt[0] == n.RETRY_ATTEMPTS] == []
    # A synchronous histogram keeps reporting its cumulative state: unchanged.
    waits = [pt for pt in after if pt[0] == n.RATELIMIT_WAIT]
    assert waits == [pt for pt in inside if pt[0] == n.RATELIMIT_WAIT]
    assert [e for s in p.spans.get_finished_spans() for e in s.events] == []
    assert p.logs.get_finished_logs() == ()
    assert counters.histogram_sink is None


def test_a_call_in_flight_exports_nothing_once_uninstrumented() -> None:
    """A sink or listener read before uninstrument() exports nothing after it."""
    p = Providers()
    p.instrument()
    # What a thread mid-call holds: the sink it read and the listeners it iterates.
    sink = counters.histogram_sink
    listeners = BUS.listeners()
    tracer = p.tracer_provider.get_tracer("test")
    uninstrument()
    assert sink is not None
    sink(n.RATELIMIT_WAIT, 1.0, {n.RATELIMIT_NAME: "in-flight"})
    with tracer.start_as_current_span("caller"):
        for listener in listeners:
            listener(ThingHappened("in-flight"))
    assert [pt for pt in p.metric_points() if pt[0] == n.RATELIMIT_WAIT] == []
    assert [e for s in p.spans.get_finished_spans() for e in s.events] == []
    assert p.logs.get_finished_logs() == ()


# events


def test_state_events_become_span_events_and_log_events() -> None:
    """A state change lands on the caller's recording span and in the logs."""
    with capture_telemetry() as cap:
        with cap.recording_span("caller"):
            publish(ThingHappened("svc"))
        (event,) = cap.span("caller").events
        (log,) = cap.logs
    expected = {"tipkit.name": "svc", n.RUNBOOK: "https://runbooks.invalid/x"}
    assert (event.name, event.attributes) == ("tipkit.test.thing_happened", expected)
    assert (log.event_name, log.attributes, log.severity_text) == (
        "tipkit.test.thing_happened",
        expected,
        "INFO",
    )
    assert log.span_id == cap.span("caller").span_id
    assert log.scope == "tipkit"


def test_events_outside_a_recording_span_go_to_logs_only() -> None:
    """With no current recording span, no span event is attempted; the log event stays."""
    with capture_telemetry() as cap:
        publish(ThingHappened("nospan"))
        assert len(cap.logs) == 1
        assert cap.span_events == []


def test_per_call_events_are_span_events_and_logged_only_when_asked() -> None:
    """Flag-evaluation-like events are not log events unless flag_log_events=True."""
    with capture_telemetry() as cap:
        with cap.recording_span("caller"):
            publish(Evaluated("f"))
        assert [e.name for e in cap.span("caller").events] == [_catalog.FLAG_EVALUATION]
        assert cap.logs == []
    with capture_telemetry(flag_log_events=True) as cap:
        publish(Evaluated("f"))
        assert [log.event_name for log in cap.logs] == [_catalog.FLAG_EVALUATION]


def test_log_events_can_be_turned_off() -> None:
    """log_events=False keeps state changes out of the logs, on the span only."""
    with capture_telemetry(log_events=False) as cap:
        with cap.recording_span("caller"):
            publish(ThingHappened("quiet"))
        assert cap.logs == []
        assert len(cap.span("caller").events) == 1


def test_flag_value_and_context_id_only_when_opted_in() -> None:
    """feature_flag.result.value and feature_flag.context.id (hashed) are opt-in."""

    @dataclass(frozen=True, slots=True)
    class Ctx:
        targeting_key: str

    @dataclass(frozen=True, slots=True)
    class FlagLike(Event):
        value: object = None
        context: Ctx | None = None
        otel_name: ClassVar[str] = _catalog.FLAG_EVALUATION

        def otel_attributes(self) -> dict[str, AttributeValue]:
            return {n.FEATURE_FLAG_KEY: self.name}

    event = FlagLike("f", {"b": 1, "a": [2]}, Ctx("user-42"))
    with capture_telemetry() as cap, cap.recording_span("c"):
        publish(event)
    assert cap.span_events[0].attributes == {n.FEATURE_FLAG_KEY: "f"}
    with (
        capture_telemetry(flag_value=True, flag_context_id="hashed") as cap,
        cap.recording_span("c"),
    ):
        publish(event)
    assert cap.span_events[0].attributes == {
        n.FEATURE_FLAG_KEY: "f",
        n.FEATURE_FLAG_VALUE: '{"a":[2],"b":1}',
        n.FEATURE_FLAG_CONTEXT_ID: hash_context_id("user-42"),
    }
    with capture_telemetry(flag_context_id="raw") as cap, cap.recording_span("c"):
        publish(event)
    assert cap.span_events[0].attributes[n.FEATURE_FLAG_CONTEXT_ID] == "user-42"
    with pytest.raises(ValueError, match="flag_context_id must be"):
        instrument(flag_context_id="plain")  # type: ignore[arg-type]


def test_hash_context_id_is_stable_and_keyed() -> None:
    """The hash is 32 hex digits, deterministic, and differs with a key."""
    plain = hash_context_id("user-42")
    assert re.fullmatch(r"[0-9a-f]{32}", plain)
    assert plain == hash_context_id("user-42")
    assert plain != hash_context_id("user-42", b"k")
    assert hash_context_id("user-42", b"k") == hash_context_id("user-42", b"k")


def test_no_real_tracer_or_logger_means_no_listener_and_no_events_built() -> None:
    """With no-op providers, instrument() subscribes nothing: events are not even built."""
    instrument(
        tracer_provider=trace.NoOpTracerProvider(),
        logger_provider=NoOpLoggerProvider(),
        meter_provider=MeterProvider(),
    )
    assert is_instrumented()
    assert not ThingHappened.listened
    assert not Evaluated.listened
    publish(ThingHappened("x"))


def test_global_proxy_providers_are_not_real_and_get_rechecked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A global SDK provider installed after instrument() is noticed at collection."""
    if _otel.is_real_tracer_provider(trace.get_tracer_provider()):  # pragma: no cover
        pytest.skip("a global tracer provider is set in this process")
    p = Providers()
    instrument(meter_provider=p.meter_provider, logger_provider=NoOpLoggerProvider())
    assert not ThingHappened.listened
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: p.tracer_provider)
    p.reader.get_metrics_data()  # a collection runs the callbacks, which re-check
    assert ThingHappened.listened is not False
    assert not ThingHappened.listened  # span events only, and no span is current
    with p.tracer_provider.get_tracer("t").start_as_current_span("caller"):
        assert ThingHappened.listened
        publish(ThingHappened("late"))
    (span,) = p.spans.get_finished_spans()
    assert [e.name for e in span.events] == ["tipkit.test.thing_happened"]


def test_no_sdk_path_changes_nothing_and_raises_nothing() -> None:
    """With the API alone, instrument(), counting, events and traced() work as before."""
    instrument()
    instrument()
    counter = counters.counter(
        n.TIMEOUT_CALLS, {n.TIMEOUT_NAME: "nosdk", n.OUTCOME: "success"}
    )
    counter.inc()
    counters.record(n.CALL_DURATION, 0.1, {n.CALL_NAME: "nosdk"})

    @traced("nosdk")
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    with traced("block") as span:
        assert not span.is_recording()
    assert counter.value == 1
    uninstrument()
    uninstrument()
    assert not is_instrumented()


def test_instrument_is_idempotent_and_thread_safe() -> None:
    """Many threads instrumenting and uninstrumenting leave one consistent state."""
    p = Providers()
    before = len(BUS.listeners())
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            for _ in range(20):
                p.instrument()
                uninstrument()
                p.instrument()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(BUS.listeners()) == before + 1
    p.instrument()
    assert len(BUS.listeners()) == before + 1
    uninstrument()
    assert len(BUS.listeners()) == before


def test_a_second_configuration_replaces_the_first() -> None:
    """instrument() with other providers moves export to them."""
    first, second = Providers(), Providers()
    counter = counters.counter(n.EXPERIMENT_COMPARISONS, {n.EXPERIMENT_NAME: "swap"})
    first.instrument()
    counter.inc()
    second.instrument()
    counter.inc()

    def swap_points(providers: Providers) -> list[Any]:
        return [
            pt[2]
            for pt in providers.metric_points()
            if pt[0] == n.EXPERIMENT_COMPARISONS
            and pt[1].get(n.EXPERIMENT_NAME) == "swap"
        ]

    assert swap_points(first) == []
    assert swap_points(second) == [1]


def test_capture_restores_the_previous_instrumentation() -> None:
    """capture_telemetry() puts back what was instrumented before it."""
    p = Providers()
    p.instrument()
    before = _otel.instrumentation()
    with capture_telemetry():
        assert _otel.instrumentation() is not before
    assert _otel.instrumentation() is before


# traced


def test_traced_sync_success_records_span_and_duration() -> None:
    """A traced call makes a span with static attributes and a duration point."""
    clock = FakeClock()

    @traced("checkout", attributes={"app.step": "pay"}, clock=clock)
    def checkout(amount: int) -> int:
        clock.advance(0.2)
        return amount * 2

    with capture_telemetry() as cap:
        assert checkout(21) == 42
        span = cap.span("checkout")
        (point,) = cap.points(n.CALL_DURATION)
    assert (span.status, span.attributes, span.events) == (
        "UNSET",
        {"app.step": "pay"},
        (),
    )
    assert (span.scope, span.scope_version) == ("tipkit", _otel.VERSION)
    assert (point.unit, point.count, point.attributes) == (
        "s",
        1,
        {n.CALL_NAME: "checkout"},
    )
    assert point.value == pytest.approx(0.2)


def test_traced_sync_error_sets_status_and_type_but_not_message() -> None:
    """An exception sets ERROR, error.type and an exception event with the type only."""

    class PaymentError(Exception):
        pass

    @traced("pay")
    def pay() -> None:
        raise PaymentError("card 4111 1111 1111 1111 declined")

    with capture_telemetry() as cap:
        with pytest.raises(PaymentError, match="declined"):
            pay()
        span = cap.span("pay")
        (point,) = cap.points(n.CALL_DURATION)
    etype = (
        f"{__name__}.test_traced_sync_error_sets_status_and_type_but_not_message"
        ".<locals>.PaymentError"
    )
    assert (span.status, span.status_description) == ("ERROR", None)
    assert span.attributes == {n.ERROR_TYPE: etype}
    assert [(e.name, e.attributes) for e in span.events] == [
        ("exception", {n.EXCEPTION_TYPE: etype})
    ]
    assert point.attributes == {n.CALL_NAME: "pay", n.ERROR_TYPE: etype}
    assert "4111" not in cap.dump()


def test_traced_exception_messages_when_allow_listed() -> None:
    """exception_messages=True exports the message and the standard exception event."""

    @traced("allowed", exception_messages=True)
    def fail() -> None:
        raise ValueError("boom")

    @traced("no-event", record_exception=False)
    def fail_quietly() -> None:
        raise ValueError("boom")

    with capture_telemetry() as cap:
        with pytest.raises(ValueError, match="boom"):
            fail()
        with pytest.raises(ValueError, match="boom"):
            fail_quietly()
        span = cap.span("allowed")
        quiet = cap.span("no-event")
    assert span.status_description == "ValueError: boom"
    (event,) = span.events
    assert (event.name, event.attributes["exception.message"]) == ("exception", "boom")
    assert (quiet.status, quiet.events) == ("ERROR", ())


def test_traced_async_success_and_error() -> None:
    """Traced wraps async def functions: span per await, errors recorded."""

    @traced("fetch")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)  # noqa: TID251  # a real suspension point, no waiting
        if x < 0:
            raise KeyError(x)
        return x

    async def main() -> int:
        with pytest.raises(KeyError):
            await fetch(-1)
        return await fetch(3)

    with capture_telemetry() as cap:
        assert asyncio.run(main()) == 3
        statuses = [
            (s.name, s.status, s.attributes.get(n.ERROR_TYPE)) for s in cap.spans
        ]
    assert statuses == [("fetch", "ERROR", "KeyError"), ("fetch", "UNSET", None)]


def test_traced_context_managers_nest_and_become_current() -> None:
    """With / async with traced(...) make the current span; children link to it."""

    async def amain() -> None:
        async with traced("outer-async") as outer:
            assert trace.get_current_span() is outer
            with traced("inner"):
                publish(ThingHappened("nested"))

    with capture_telemetry() as cap:
        asyncio.run(amain())
        inner, outer = cap.span("inner"), cap.span("outer-async")
    assert inner.parent_id == outer.span_id
    assert [e.name for e in inner.events] == ["tipkit.test.thing_happened"]


def test_traced_records_only_allow_listed_arguments() -> None:
    """Arguments are recorded only when named in record_args."""

    @traced(record_args=["region"])
    def lookup(user_email: str, region: str, *, limit: int = 3) -> str:
        return user_email

    with capture_telemetry() as cap:
        lookup("alice@example.com", "eu")
        (span,) = cap.spans
    assert span.name.endswith("lookup")
    assert span.attributes == {"tipkit.arg.region": "eu"}
    assert "alice@example.com" not in cap.dump()


def test_traced_argument_that_cannot_be_exported_never_breaks_the_call() -> None:
    """An allow-listed argument that cannot be serialised is dropped, not raised."""

    @traced("loop", record_args=("items",))
    def count(items: list[Any]) -> int:
        return len(items)

    looped: list[Any] = []
    looped.append(looped)
    with capture_telemetry() as cap:
        assert count(looped) == 1
        span = cap.span("loop")
    assert "tipkit.arg.items" not in span.attributes


def test_traced_refuses_bad_input() -> None:
    """Bad names, attribute values, generators and unknown args raise clearly."""
    with pytest.raises(TypeError, match="non-empty str"):
        traced("")
    with pytest.raises(TypeError, match="'x' must be str, bool, int or float"):
        traced("a", attributes={"x": [1]})  # type: ignore[dict-item]

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator function"):
        traced("g")(gen)
    with pytest.raises(ValueError, match=r"\['nope'\] not parameters"):
        traced("a", record_args=("nope",))(lambda x: x)
    with pytest.raises(TypeError, match="needs a name"), traced():
        pass  # pragma: no cover
    with pytest.raises(TypeError, match="decorates callables"):
        traced("a")(3)  # type: ignore[call-overload]


def test_traced_injected_providers_work_without_instrument() -> None:
    """tracer_provider= and meter_provider= on traced() need no instrument() call."""
    p = Providers()

    @traced(
        "direct", tracer_provider=p.tracer_provider, meter_provider=p.meter_provider
    )
    def work() -> int:
        return 1

    assert work() == 1
    assert [s.name for s in p.spans.get_finished_spans()] == ["direct"]
    assert [pt[1] for pt in p.metric_points() if pt[0] == n.CALL_DURATION] == [
        {n.CALL_NAME: "direct"}
    ]
    assert "traced 'direct'" in repr(traced("direct"))


# synthetic


def test_synthetic_marks_spans_events_logs_and_metrics() -> None:
    """Inside synthetic(), every signal carries user_agent.synthetic.type."""
    attrs = {n.BREAKER_NAME: "syn", n.OUTCOME: "success"}
    counter = counters.counter(n.BREAKER_CALLS, attrs)
    fast = counter.inc
    with capture_telemetry() as cap:
        counter.inc()
        with synthetic() as kind, traced("probe"):
            assert kind == "test"
            counter.inc()
            counter.inc()
            publish(ThingHappened("syn"))
            counters.record(n.RATELIMIT_WAIT, 0.1, {n.RATELIMIT_NAME: "syn"})
        span = cap.span("probe")
        (log,) = cap.logs
        real = cap.metric(n.BREAKER_CALLS, attrs) - cap.metric(
            n.BREAKER_CALLS, {**attrs, n.SYNTHETIC_TYPE: "test"}
        )
        probe = cap.metric(n.BREAKER_CALLS, {**attrs, n.SYNTHETIC_TYPE: "test"})
        (wait,) = cap.points(n.RATELIMIT_WAIT)
        (duration,) = cap.points(n.CALL_DURATION)
    syn = {n.SYNTHETIC_TYPE: "test"}
    assert span.attributes == syn
    assert span.events[0].attributes[n.SYNTHETIC_TYPE] == "test"
    assert log.attributes[n.SYNTHETIC_TYPE] == "test"
    assert (real, probe) == (1, 2)
    assert wait.attributes == {n.RATELIMIT_NAME: "syn", **syn}
    assert duration.attributes == {n.CALL_NAME: "probe", **syn}
    assert counter.value == 1
    assert counters.value(n.BREAKER_CALLS, attrs) == 3
    assert counter.inc == fast


def test_synthetic_follows_asyncio_tasks() -> None:
    """Tasks created inside synthetic() are marked; tasks outside are not."""
    attrs = {n.RETRY_NAME: "syn-async", n.OUTCOME: "success"}
    counter = counters.counter(n.RETRY_ATTEMPTS, attrs)

    async def job() -> str | None:
        await asyncio.sleep(0)  # noqa: TID251  # let the tasks interleave
        counter.inc()
        return current_synthetic()

    async def main() -> list[str | None]:
        outside = asyncio.create_task(job())
        async with synthetic("bot"):
            inside = [asyncio.create_task(job()) for _ in range(3)]
            return [*await asyncio.gather(*inside), await outside]

    assert asyncio.run(main()) == ["bot", "bot", "bot", None]
    assert counters.value(n.RETRY_ATTEMPTS, {**attrs, n.SYNTHETIC_TYPE: "bot"}) == 3
    assert counter.value == 1


def test_synthetic_does_not_follow_plain_threads_but_copy_context_does() -> None:
    """A thread started inside synthetic() is unmarked unless it runs in a copied context."""
    seen: list[str | None] = []
    with synthetic():
        plain = threading.Thread(target=lambda: seen.append(current_synthetic()))
        ctx = contextvars.copy_context()
        copied = threading.Thread(
            target=ctx.run, args=(lambda: seen.append(current_synthetic()),)
        )
        plain.start()
        plain.join()
        copied.start()
        copied.join()
    assert seen == [None, "test"]


def test_synthetic_routes_counters_created_inside_an_open_block() -> None:
    """A counter first created inside a synthetic block counts probe traffic apart."""
    attrs = {"tipkit.test": "late-counter"}
    with synthetic():
        late = counters.counter("tipkit.test.late", attrs)
        late.inc()
    late.inc()
    assert counters.value("tipkit.test.late", {**attrs, n.SYNTHETIC_TYPE: "test"}) == 1
    assert late.value == 1


def test_synthetic_decorates_nests_and_validates() -> None:
    """Synthetic works as a decorator (sync and async), nests, and refuses unknown kinds."""

    @synthetic("bot")
    def sync() -> str | None:
        with synthetic("test"):
            inner = current_synthetic()
        return f"{inner}/{current_synthetic()}"

    @synthetic()
    async def asynchronous() -> str | None:
        return current_synthetic()

    assert sync() == "test/bot"
    assert asyncio.run(asynchronous()) == "test"
    assert current_synthetic() is None
    with pytest.raises(ValueError, match="must be one of"):
        synthetic("probe")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator function"):
        synthetic()(lambda: (yield))
    with pytest.raises(TypeError, match="decorates callables"):
        synthetic()(1)  # type: ignore[call-overload]
    assert "synthetic kind='bot'" in repr(synthetic("bot"))


# PII


def test_planted_secrets_never_leave_through_generic_paths() -> None:
    """Secrets in arguments, exception messages and event fields are never exported."""
    secret = "s3cr3t-planted-value"  # noqa: S105  # the planted secret, not a credential

    @traced("pii")
    def handler(password: str) -> None:
        publish(ThingHappened("pii", secret=password))
        raise RuntimeError(f"login failed for {password}")

    with capture_telemetry(flag_log_events=True) as cap:
        with pytest.raises(RuntimeError):
            handler(secret)
        with synthetic():
            publish(Evaluated("pii-flag", value=secret))
        dump = cap.dump()
    assert "tipkit.test.thing_happened" in dump
    assert secret not in dump


def test_a_global_logger_provider_installed_later_turns_log_events_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """poll() notices a real global logger provider at the next collection."""
    p = Providers()
    instrument(
        meter_provider=p.meter_provider, tracer_provider=trace.NoOpTracerProvider()
    )
    assert not ThingHappened.listened
    monkeypatch.setattr(_otel, "get_logger_provider", lambda: p.logger_provider)
    p.reader.get_metrics_data()
    assert ThingHappened.listened
    publish(ThingHappened("late-logs"))
    assert [r.log_record.event_name for r in p.logs.get_finished_logs()] == [
        "tipkit.test.thing_happened"
    ]
    assert "logging=True" in repr(_otel.instrumentation())


def test_counter_value_is_exact_under_threads_and_repeated_reads() -> None:
    """Counter.value counts every inc() from 8 threads, however often it is read."""
    from tipkit.telemetry._counters import Counter

    counter = Counter("tipkit.test.exact", {})
    barrier = threading.Barrier(9)
    seen: list[int] = []

    def work() -> None:
        barrier.wait()
        for _ in range(1_000):
            counter.inc()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    barrier.wait()
    seen.extend(counter.value for _ in range(50))  # reads race the increments
    for t in threads:
        t.join()
    counter.add(5)
    assert sorted(seen) == seen
    assert (8_005, 8_005) == (counter.value, counter.value)


def test_counter_divert_and_restore() -> None:
    """divert() sends inc() elsewhere until restore(); fast_inc always counts here."""
    from tipkit.telemetry._counters import Counter

    counter, other = Counter("a", {}), Counter("b", {})
    counter.divert(other.fast_inc)
    assert counter.diverted
    counter.inc()
    counter.fast_inc()
    counter.restore()
    counter.inc()
    assert (False, 2, 1) == (counter.diverted, counter.value, other.value)


def test_synthetic_diverts_counters_only_while_a_block_is_open() -> None:
    """Inside any synthetic block counters are diverted; after the last one, restored."""
    counter = counters.counter("tipkit.test.diverted", {"tipkit.test": "d"})
    with synthetic():
        assert counter.diverted
        with synthetic("bot"):
            assert counter.diverted
        assert counter.diverted
    assert not counter.diverted
    assert counter in counters.counters()
