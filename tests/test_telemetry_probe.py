"""The flag evaluation's cheap check under an SDK: ``FlagEvaluated.probe`` and its exact follow-up.

``probe()`` is the current OpenTelemetry context read by one C call: falsy only
when the context is empty. Whatever it answers, a flag evaluation must record a
``feature_flag.evaluation`` span event exactly when the current span records:
checked against the API's own answer (``get_current_span().is_recording()``)
over random attach/detach sequences, in threads, in asyncio tasks and across a
tracer provider installed later.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import baggage, context, trace
from opentelemetry._logs import NoOpLoggerProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.util._once import Once

from tipkit.flags import FlagEvaluated, Flags, _outcomes
from tipkit.telemetry import _names as n
from tipkit.telemetry import (
    add_listener,
    instrument,
    remove_listener,
    traced,
    uninstrument,
)
from tipkit.telemetry._events import Event
from tipkit.telemetry._spans import WhenRecording

FLAGS = {
    "flags": {"f": {"variants": {"on": True, "off": False}, "default_variant": "on"}}
}


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    uninstrument()
    yield
    uninstrument()


def _tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider, spans


def _targets(span: ReadableSpan) -> list[str]:
    """Return the targeting keys of *span*'s flag events (hashed ids are off here)."""
    return [
        str((e.attributes or {})[n.FEATURE_FLAG_CONTEXT_ID])
        for e in span.events
        if e.name == "feature_flag.evaluation"
    ]


def _instrument(provider: TracerProvider) -> None:
    instrument(
        tracer_provider=provider,
        logger_provider=NoOpLoggerProvider(),
        flag_context_id="raw",
    )


# ------------------------------------------------------------- what probe is


def test_probe_is_none_with_no_listener_and_a_c_call_under_the_export() -> None:
    """No listener: probe is None (one attribute read); the export: the context's C getter."""
    assert FlagEvaluated.probe is None
    provider, _ = _tracing()
    _instrument(provider)
    assert isinstance(FlagEvaluated.listened, WhenRecording)
    probe = FlagEvaluated.probe
    assert probe is not None
    assert type(probe).__name__ == "builtin_function_or_method"
    assert not probe()  # no span, no baggage: an empty context
    with provider.get_tracer("t").start_as_current_span("request"):
        assert probe()
    seen: list[Event] = []
    listener = add_listener(seen.append, types=FlagEvaluated)
    try:
        assert FlagEvaluated.listened is True
        assert FlagEvaluated.probe is not None
        assert FlagEvaluated.probe() is True  # wanted everywhere
    finally:
        remove_listener(listener)
    uninstrument()
    assert (False, None) == (FlagEvaluated.listened, FlagEvaluated.probe)


class _CountingBus:
    """The real bus, counting what the flags publish through it."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.published: list[Event] = []

    def publish(self, event: Event) -> None:
        self.published.append(event)
        self.bus.publish(event)


def test_no_event_in_an_unsampled_span_an_ended_span_or_with_baggage_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A non-empty context without a recording span passes the probe; nothing is built."""
    provider, spans = _tracing()
    _instrument(provider)
    flags = Flags.from_dict(FLAGS)
    bus = _CountingBus(_outcomes.BUS)
    monkeypatch.setattr(_outcomes, "BUS", bus)
    seen: list[bool] = []
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")
    with unsampled.start_as_current_span("sampled-out"):
        seen.append(bool(FlagEvaluated.probe and FlagEvaluated.probe()))
        flags.get("f", "in-unsampled", default=False)
    token = context.attach(baggage.set_baggage("k", "v"))
    try:
        seen.append(bool(FlagEvaluated.probe and FlagEvaluated.probe()))
        flags.get("f", "baggage-only", default=False)
    finally:
        context.detach(token)
    with provider.get_tracer("t").start_as_current_span("ended-early") as span:
        flags.get("f", "before-end", default=False)
        span.end()  # still current, no longer recording
        flags.get("f", "after-end", default=False)
    assert [True, True] == seen
    (ended,) = spans.get_finished_spans()
    assert ["before-end"] == _targets(ended)
    assert ["before-end"] == [e.context.targeting_key for e in bus.published]  # type: ignore[attr-defined]


# ------------------------------------------- random attach/detach sequences

_KINDS = ("recording", "ended", "unsampled", "invalid", "baggage", "empty")


def _context_of(
    kind: str, on: trace.Tracer, off: trace.Tracer, opened: list[trace.Span]
) -> Any:
    if kind == "recording":
        span = on.start_span("recording")
        opened.append(span)
        return trace.set_span_in_context(span)
    if kind == "ended":
        span = on.start_span("ended")
        span.end()
        return trace.set_span_in_context(span)
    if kind == "unsampled":
        return trace.set_span_in_context(off.start_span("unsampled"))
    if kind == "invalid":
        return trace.set_span_in_context(trace.INVALID_SPAN)
    if kind == "baggage":
        return baggage.set_baggage("k", "v")
    return context.Context()


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("attach"), st.sampled_from(_KINDS)),
            st.tuples(st.just("detach"), st.integers(min_value=0, max_value=50)),
        ),
        max_size=30,
    )
)
def test_the_probe_and_publish_agree_with_the_api_over_attach_detach_sequences(
    steps: list[tuple[str, Any]],
) -> None:
    """After each attach/detach, a flag records in the current span iff the API says it records."""
    # Detaching out of order can leave any attached context current: run in a copy.
    contextvars.copy_context().run(_attach_detach, steps)


def _attach_detach(steps: list[tuple[str, Any]]) -> None:
    provider, spans = _tracing()
    _instrument(provider)
    on = provider.get_tracer("t")
    off = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")
    flags = Flags.from_dict(FLAGS)
    tokens: list[object] = []
    opened: list[trace.Span] = []
    expected: dict[int, list[str]] = {}
    try:
        for i, (op, arg) in enumerate(steps):
            if op == "attach":
                tokens.append(context.attach(_context_of(arg, on, off, opened)))
            elif tokens:
                context.detach(tokens.pop(arg % len(tokens)))  # any order
            current = trace.get_current_span()
            recording = current.is_recording()
            probe = FlagEvaluated.probe
            assert probe is not None
            assert recording == bool(FlagEvaluated.listened)
            assert not recording or probe()  # falsy only where nothing records
            flags.get("f", f"step-{i}", default=False)
            if recording:
                span_id = current.get_span_context().span_id
                expected.setdefault(span_id, []).append(f"step-{i}")
    finally:
        for span in opened:
            span.end()
    recorded = {
        s.context.span_id: _targets(s)
        for s in spans.get_finished_spans()
        if s.context is not None and _targets(s)
    }
    assert expected == recorded


# ---------------------------------------------------------- threads and tasks


def test_threads_see_their_own_context_and_a_copied_one() -> None:
    """A new thread starts outside any span; one running a copied context records in its span."""
    provider, spans = _tracing()
    _instrument(provider)
    flags = Flags.from_dict(FLAGS)
    tracer = provider.get_tracer("t")

    def own_span() -> None:
        flags.get("f", "thread-outside", default=False)  # not the main thread's span
        with tracer.start_as_current_span("thread-request"):
            flags.get("f", "thread-own", default=False)

    with tracer.start_as_current_span("main-request"):
        flags.get("f", "main", default=False)
        plain = threading.Thread(target=own_span)
        copied = threading.Thread(
            target=contextvars.copy_context().run,
            args=(flags.get, "f", "thread-copied", False),
        )
        for thread in (plain, copied):
            thread.start()
        for thread in (plain, copied):
            thread.join()
    by_name = {s.name: sorted(_targets(s)) for s in spans.get_finished_spans()}
    assert {
        "main-request": ["main", "thread-copied"],
        "thread-request": ["thread-own"],
    } == by_name


def test_asyncio_tasks_record_in_the_span_current_where_they_run() -> None:
    """Tasks copy the context: each records in its own span, a task outside records nothing."""
    provider, spans = _tracing()
    _instrument(provider)
    flags = Flags.from_dict(FLAGS)
    tracer = provider.get_tracer("t")

    async def evaluate(key: str) -> None:
        flags.get("f", key, default=False)

    async def request(name: str, gate: asyncio.Event, other: asyncio.Event) -> None:
        with tracer.start_as_current_span(name):
            flags.get("f", f"{name}-1", default=False)
            gate.set()
            await other.wait()  # the other task's span is open meanwhile
            await asyncio.create_task(evaluate(f"{name}-child"))  # copies this context
            flags.get("f", f"{name}-2", default=False)

    async def main() -> bool:
        await asyncio.create_task(evaluate("task-outside"))
        a_in, b_in = asyncio.Event(), asyncio.Event()
        await asyncio.gather(request("a", a_in, b_in), request("b", b_in, a_in))
        with tracer.start_as_current_span("ended"):
            late = asyncio.create_task(evaluate("after-its-span-ended"))
        await late  # runs once the span it copied has ended
        flags.get("f", "after", default=False)
        return bool(FlagEvaluated.probe and FlagEvaluated.probe())

    assert asyncio.run(main()) is False  # back to an empty context
    by_name = {s.name: _targets(s) for s in spans.get_finished_spans()}
    assert {
        "a": ["a-1", "a-child", "a-2"],
        "b": ["b-1", "b-child", "b-2"],
        "ended": [],
    } == by_name


# -------------------------------------------- a tracer provider set later


@pytest.fixture
def _global_tracer_provider() -> Iterator[None]:
    """Let a test set the process-wide tracer provider once; restore it afterwards."""
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    try:
        yield
    finally:
        uninstrument()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


@pytest.mark.usefixtures("_global_tracer_provider")
def test_a_global_provider_set_later_and_another_injected_one_are_noticed() -> None:
    """Before an SDK nothing is built; a global SDK set later, then another provider, record."""
    instrument(logger_provider=NoOpLoggerProvider(), flag_context_id="raw")
    flags = Flags.from_dict(FLAGS)
    assert (False, None) == (FlagEvaluated.listened, FlagEvaluated.probe)
    first, first_spans = _tracing()
    trace.set_tracer_provider(first)
    traced("poll")(lambda: None)()  # traced() notices a global provider set since
    with first.get_tracer("t").start_as_current_span("global"):
        flags.get("f", "global", default=False)
    second, second_spans = _tracing()
    _instrument(second)
    with second.get_tracer("t").start_as_current_span("injected"):
        flags.get("f", "injected", default=False)
    flags.get("f", "outside", default=False)
    assert {"poll": [], "global": ["global"]} == {
        s.name: _targets(s) for s in first_spans.get_finished_spans()
    }
    assert [["injected"]] == [_targets(s) for s in second_spans.get_finished_spans()]
