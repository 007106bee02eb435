"""Shadow experiments: the control is always served, whatever the candidates do."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import operator
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipkit.errors import ConfigError
from tipkit.experiment import (
    OUTCOMES,
    Experiment,
    ExperimentCallbackFailed,
    ExperimentCompared,
    ExperimentResult,
    MismatchError,
    Observation,
    irreversible,
    irreversible_reason,
    is_irreversible,
    same_error,
)
from tipkit.flags import bucket
from tipkit.telemetry import _names as n
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock, capture_events

WAIT = 10.0  # real seconds a test waits for a thread before failing, never slept


class Blocker:
    """A callable that blocks its thread until released (a hung candidate or callback)."""

    def __init__(self, result: Any = None) -> None:
        self.result = result
        self.started = threading.Event()
        self.released = threading.Event()
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.started.set()
        assert self.released.wait(WAIT), "blocker never released"
        return self.result

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def blocker() -> Iterator[Blocker]:
    b = Blocker(True)
    try:
        yield b
    finally:
        b.release()


class SeqRandom:
    """An rng that returns the given values in a cycle."""

    def __init__(self, *values: float) -> None:
        self.values = values
        self.i = 0

    def random(self) -> float:
        value = self.values[self.i % len(self.values)]
        self.i += 1
        return value


def double(x: int) -> int:
    return x * 2


def double_v2(x: int) -> int:
    return x * 2 if x < 5 else x * 3


def failing(x: int) -> int:
    raise ValueError(f"bad {x}")


async def adouble(x: int) -> int:
    return x * 2


async def adouble_v2(x: int) -> int:
    return x * 2 if x < 5 else x * 3


async def afailing(x: int) -> int:
    raise ValueError(f"bad {x}")


def make(control: Callable[..., Any] = double, **kw: Any) -> Experiment[Any, Any]:
    kw.setdefault("candidate", double_v2)
    kw.setdefault("clock", FakeClock())
    return Experiment("exp", control=control, **kw)


def call_any(exp: Experiment[Any, Any], *args: Any, **kwargs: Any) -> Any:
    """Call *exp* (sync or async) and, in background mode, wait for its runs."""
    if exp.is_async:

        async def main() -> Any:
            try:
                return await exp(*args, **kwargs)
            finally:
                await exp.adrain()

        return asyncio.run(main())
    try:
        return exp(*args, **kwargs)
    finally:
        assert exp.drain(WAIT)


WAYS = [
    ("inline", double, double_v2, failing),
    ("background", double, double_v2, failing),
    ("inline", adouble, adouble_v2, afailing),
    ("background", adouble, adouble_v2, afailing),
]
WAY_IDS = ["sync-inline", "sync-background", "async-inline", "async-background"]


# ------------------------------------------------------------------ the control wins


@pytest.mark.parametrize(("mode", "control", "candidate", "broken"), WAYS, ids=WAY_IDS)
def test_control_result_is_returned_and_outcomes_counted(
    mode: str, control: Any, candidate: Any, broken: Any
) -> None:
    """Every call returns the control's result; candidates are judged per call."""
    exp = make(control, candidate=candidate, mode=mode)
    assert [call_any(exp, i) for i in range(8)] == [i * 2 for i in range(8)]
    stats = exp.stats()
    assert (5, 3) == (stats["matched"], stats["mismatched"])
    assert 8 == exp.calls == exp.sampled


@pytest.mark.parametrize(("mode", "control", "candidate", "broken"), WAYS, ids=WAY_IDS)
def test_control_exception_is_raised_unchanged(
    mode: str, control: Any, candidate: Any, broken: Any
) -> None:
    """The control's exception object reaches the caller; a matching candidate error matches."""
    seen: list[BaseException] = []

    def remember(result: ExperimentResult) -> None:
        assert result.control.exception is not None
        seen.append(result.control.exception)

    exp = make(broken, candidate=broken, mode=mode, publish=remember)
    with pytest.raises(ValueError, match="bad 3") as info:
        call_any(exp, 3)
    assert [info.value] == seen
    assert exp.stats()["matched"] == 1


@pytest.mark.parametrize(("mode", "control", "candidate", "broken"), WAYS, ids=WAY_IDS)
def test_raising_candidate_never_reaches_the_caller(
    mode: str, control: Any, candidate: Any, broken: Any
) -> None:
    """A candidate that raises is counted candidate_error; the caller gets the control's value."""
    exp = make(control, candidate=broken, mode=mode)
    assert 8 == call_any(exp, 4)
    assert exp.stats()["candidate_error"] == 1
    (mismatch,) = exp.mismatches()
    assert "candidate_error" == mismatch.outcome
    assert isinstance(mismatch.observed.exception, ValueError)


def test_control_raises_and_candidate_returns_is_a_mismatch() -> None:
    """A control error against a candidate value is a mismatch, and the error still propagates."""
    exp = make(failing, candidate=double)
    with pytest.raises(ValueError, match="bad 1"):
        exp(1)
    assert exp.stats()["mismatched"] == 1


def test_errors_of_different_args_mismatch_and_compare_errors_decides() -> None:
    """Errors match by type and args by default; compare_errors= replaces the rule."""

    def other(x: int) -> int:
        raise ValueError("other")

    default = make(failing, candidate=other)
    with pytest.raises(ValueError, match="bad"):
        default(1)
    assert default.stats()["mismatched"] == 1
    by_type = make(
        failing, candidate=other, compare_errors=lambda a, b: type(a) is type(b)
    )
    with pytest.raises(ValueError, match="bad"):
        by_type(1)
    assert by_type.stats()["matched"] == 1
    assert same_error(ValueError("x"), ValueError("x"))
    assert not same_error(ValueError("x"), KeyError("x"))


def test_base_exceptions_of_the_control_pass_through_at_once() -> None:
    """KeyboardInterrupt from the control propagates without a comparison."""

    def interrupted(x: int) -> int:
        raise KeyboardInterrupt

    exp = make(interrupted, rng=SeqRandom(0.99))  # control runs first
    with pytest.raises(KeyboardInterrupt):
        exp(1)
    assert 0 == sum(exp.stats().values())


# ------------------------------------------------------------------ isolation: hanging


def test_hanging_candidate_in_background_does_not_delay_the_control(
    blocker: Blocker,
) -> None:
    """The control returns while a background candidate is still blocked."""
    exp = make(candidate=blocker, mode="background", compare=lambda a, b: True)
    assert 6 == exp(3)
    assert blocker.started.wait(WAIT)
    assert not blocker.released.is_set()  # returned before the candidate could finish
    assert exp.pending == 1
    blocker.release()
    assert exp.drain(WAIT)
    assert exp.stats()["matched"] == 1
    assert 0 == exp.pending


@pytest.mark.parametrize("callback", ["compare", "clean", "publish", "ignore"])
def test_hanging_callbacks_in_background_do_not_delay_the_control(
    callback: str, blocker: Blocker
) -> None:
    """A comparator, cleaner, ignorer or publisher that hangs only holds a worker."""
    options: dict[str, Any] = {callback: [blocker] if callback == "ignore" else blocker}
    if callback == "ignore":
        options["candidate"] = lambda x: -1  # a mismatch, so the ignorer runs
    exp = make(mode="background", **options)
    assert 4 == exp(2)
    assert blocker.started.wait(WAIT)
    assert not blocker.released.is_set()
    blocker.release()
    assert exp.drain(WAIT)
    assert sum(exp.stats().values()) == 1


def test_hanging_sync_candidate_is_reported_as_timeout_while_still_running(
    blocker: Blocker,
) -> None:
    """Past the timeout on the clock, a running candidate is counted timeout at once."""
    clock = FakeClock()
    results: list[ExperimentResult] = []
    exp = make(
        candidate=blocker,
        mode="background",
        timeout=0.5,
        clock=clock,
        publish=results.append,
    )
    with capture_events(ExperimentCompared) as events:
        assert 2 == exp(1)
        assert blocker.started.wait(WAIT)
        clock.advance(0.4)
        assert 0 == exp.stats()["timeout"]
        clock.advance(0.2)
        assert exp.stats()["timeout"] == 1  # reported while the candidate still runs
        assert ["timeout"] == [e.outcome for e in events]
        assert events[0].result is None
        blocker.release()
        assert exp.drain(WAIT)
    assert exp.stats()["timeout"] == 1  # not counted twice
    assert len(events) == 1
    (result,) = results
    assert {"candidate": "timeout"} == dict(result.outcomes)
    assert result.candidates["candidate"].timed_out
    assert 0.6 == pytest.approx(result.candidates["candidate"].duration)


def test_slow_sync_candidate_is_timeout_when_it_returns(blocker: Blocker) -> None:
    """A background candidate that returns after its timeout is counted timeout."""
    clock = FakeClock()
    exp = make(candidate=blocker, mode="background", timeout=1.0, clock=clock)
    exp(1)
    assert blocker.started.wait(WAIT)
    clock.advance(2.0)
    blocker.release()
    assert exp.drain(WAIT)
    assert exp.stats()["timeout"] == 1
    assert 0 == exp.stats()["mismatched"]


def test_inline_sync_timeout_is_measured_not_enforced() -> None:
    """Inline, a sync candidate past its timeout runs to the end and counts as timeout."""
    clock = FakeClock()

    def slow(x: int) -> int:
        clock.advance(0.3)
        return x * 2

    exp = make(candidate=slow, timeout=0.2, clock=clock)
    assert 4 == exp(2)
    assert exp.stats()["timeout"] == 1
    assert 0.3 == pytest.approx(clock.monotonic())  # the caller waited for it


def test_async_inline_candidate_is_cancelled_at_timeout() -> None:
    """An async candidate that hangs inline is cancelled; the control's value returns."""
    cancelled = []

    async def hangs(x: int) -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(x)
            raise
        return x  # pragma: no cover

    exp = make(adouble, candidate=hangs, timeout=0.01)
    assert 6 == asyncio.run(exp(3))
    assert [3] == cancelled
    assert exp.stats()["timeout"] == 1


def test_async_background_candidate_is_cancelled_and_control_returns_first() -> None:
    """The async control returns before its hung background candidate is cancelled."""
    states: list[str] = []

    async def hangs(x: int) -> int:
        states.append("candidate started")
        await asyncio.Event().wait()
        return x  # pragma: no cover

    exp = make(adouble, candidate=hangs, mode="background", timeout=0.01)

    async def main() -> None:
        assert 2 == await exp(1)
        states.append("control returned")
        await exp.adrain()

    asyncio.run(main())
    assert ["control returned", "candidate started"] == states
    assert exp.stats()["timeout"] == 1


def test_async_candidate_raising_timeouterror_itself_is_a_candidate_error() -> None:
    """A TimeoutError of the candidate's own is an error, not the experiment's timeout."""

    async def own_timeout(x: int) -> int:
        raise TimeoutError("upstream")

    exp = make(adouble, candidate=own_timeout, timeout=5.0)
    assert 2 == asyncio.run(exp(1))
    assert exp.stats()["candidate_error"] == 1


# ------------------------------------------------------------------ isolation: raising


def test_sample_key_whose_str_raises_is_isolated() -> None:
    """A sample_key value that cannot be turned into text runs only the control."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    exp = make(candidate=double, sample=50.0, sample_key=lambda x: Unprintable())
    assert 4 == exp(2)
    assert {"sample_key": 1} == exp.errors()
    assert 0 == exp.sampled


@pytest.mark.parametrize(
    ("callback", "outcome"),
    [
        ("compare", "mismatched"),
        ("clean", "matched"),
        ("publish", "matched"),
        ("before_run", None),
        ("run_if", None),
        ("sample_key", None),
        ("call_context", "matched"),
    ],
)
def test_raising_callbacks_are_counted_and_never_reach_the_caller(
    callback: str, outcome: str | None
) -> None:
    """Each callback's error is isolated, logged once, counted and evented."""

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("callback broke")

    options: dict[str, Any] = {callback: boom}
    if callback == "sample_key":
        options["sample"] = 50.0
    exp = make(candidate=double, **options)
    with capture_events(ExperimentCallbackFailed) as events:
        assert 4 == exp(2)
        assert 6 == exp(3)
    failures = 4 if callback == "clean" else 2  # clean runs on control and candidate
    assert {callback: failures} == exp.errors()
    assert [(callback, "RuntimeError")] * failures == [
        (e.callback, e.error_type) for e in events
    ]
    expected = dict.fromkeys(OUTCOMES, 0)
    if outcome is not None:
        expected[outcome] = 2
    assert expected == exp.stats()


def test_raising_ignorer_does_not_ignore() -> None:
    """An ignorer that raises is skipped; the others still decide."""

    def boom(control: Observation, candidate: Observation) -> bool:
        raise RuntimeError("nope")

    exp = make(candidate=lambda x: -x, ignore=[boom])
    exp(1)
    assert exp.stats()["mismatched"] == 1
    assert {"ignore": 1} == exp.errors()
    both = make(candidate=lambda x: -x, ignore=[boom, lambda c, o: True])
    both(1)
    assert both.stats()["ignored"] == 1


def test_raising_comparator_result_truthiness_is_isolated() -> None:
    """A comparator returning something without a truth value counts as a mismatch."""

    class NoTruth:
        def __bool__(self) -> bool:
            raise ValueError("ambiguous")

    exp = make(candidate=double, compare=lambda a, b: NoTruth())
    assert 2 == exp(1)
    assert exp.stats()["mismatched"] == 1
    assert {"compare": 1} == exp.errors()


def test_failing_publisher_in_background_keeps_the_worker_alive() -> None:
    """After a publisher raises in a worker, later runs still complete."""
    calls = []

    def flaky(result: ExperimentResult) -> None:
        calls.append(result)
        raise RuntimeError("publisher down")

    exp = make(candidate=double, mode="background", publish=flaky)
    for i in range(3):
        exp(i)
    assert exp.drain(WAIT)
    assert 3 == len(calls)
    assert 3 == exp.stats()["matched"]


# ------------------------------------------------------------------ bounded queue


def test_full_queue_skips_and_counts(blocker: Blocker) -> None:
    """With every worker busy and the queue full, a run is skipped and counted."""
    exp = make(
        candidate=blocker,
        mode="background",
        max_workers=1,
        queue_size=1,
        compare=lambda a, b: True,
    )
    before = REGISTRY.value(
        n.EXPERIMENT_COMPARISONS, {n.EXPERIMENT_NAME: "exp", n.OUTCOME: "skipped"}
    )
    with capture_events(ExperimentCompared) as events:
        assert [0, 2, 4, 6] == [exp(i) for i in range(4)]
        assert 2 == exp.stats()["skipped"]
        assert ["skipped", "skipped"] == [e.outcome for e in events]
        assert events[0].result is not None
        assert (2,) == events[0].result.args
    after = REGISTRY.value(
        n.EXPERIMENT_COMPARISONS, {n.EXPERIMENT_NAME: "exp", n.OUTCOME: "skipped"}
    )
    assert 2 == after - before
    blocker.release()
    assert exp.drain(WAIT)
    assert 2 == blocker.calls
    assert {"matched": 2, "skipped": 2} == {k: v for k, v in exp.stats().items() if v}


def test_full_async_queue_skips_and_counts() -> None:
    """Async background runs are bounded the same way: the excess is skipped."""
    gate: dict[str, asyncio.Event] = {}

    async def waits(x: int) -> int:
        await gate["open"].wait()
        return x * 2

    exp = make(adouble, candidate=waits, mode="background", max_workers=1, queue_size=1)

    async def main() -> None:
        gate["open"] = asyncio.Event()
        assert [0, 2, 4, 6] == [await exp(i) for i in range(4)]
        assert 2 == exp.stats()["skipped"]
        assert 2 == exp.pending
        gate["open"].set()
        await exp.adrain()

    asyncio.run(main())
    assert {"matched": 2, "skipped": 2} == {k: v for k, v in exp.stats().items() if v}
    assert 0 == exp.pending


# ------------------------------------------------------------------ candidates, options


def test_several_named_candidates_are_judged_separately() -> None:
    """Each named candidate has its own outcome, tallies and counter series."""
    exp = Experiment(
        "multi",
        control=double,
        candidate={"same": double, "off": double_v2, "broken": failing},
        clock=FakeClock(),
    )
    results: list[ExperimentResult] = []
    exp._publish = results.append
    for i in range(6):
        exp(i)
    assert 6 == exp.stats("same")["matched"]
    assert {"matched": 5, "mismatched": 1} == {
        k: v for k, v in exp.stats("off").items() if v
    }
    assert 6 == exp.stats("broken")["candidate_error"]
    assert {
        "same": "matched",
        "off": "mismatched",
        "broken": "candidate_error",
    } == dict(results[-1].outcomes)
    assert ("off", "broken") == results[-1].disagreeing
    assert not results[-1].matched
    attrs = {n.EXPERIMENT_NAME: "multi", n.EXPERIMENT_CANDIDATE: "off"}
    assert (
        REGISTRY.value(n.EXPERIMENT_COMPARISONS, {**attrs, n.OUTCOME: "mismatched"})
        == 1
    )
    with pytest.raises(KeyError, match="no candidate 'nope'"):
        exp.stats("nope")


def test_order_is_randomised_inline() -> None:
    """The rng decides whether control or candidate runs first."""
    order: list[str] = []

    def control(x: int) -> int:
        order.append("control")
        return x

    def candidate(x: int) -> int:
        order.append("candidate")
        return x

    exp = make(control, candidate=candidate, rng=SeqRandom(0.0, 0.99))
    exp(1)
    exp(1)
    assert ["control", "candidate", "candidate", "control"] == order
    seeded = make(control, candidate=candidate, rng=random.Random(7))
    order.clear()
    for _ in range(40):
        seeded(1)
    firsts = order[::2]
    assert 0 < firsts.count("control") < 40


def test_durations_are_measured_on_the_clock() -> None:
    """Control and candidate durations come from the injected clock."""
    clock = FakeClock()

    def control(x: int) -> int:
        clock.advance(0.25)
        return x

    def candidate(x: int) -> int:
        clock.advance(0.5)
        return x

    results: list[ExperimentResult] = []
    exp = make(control, candidate=candidate, clock=clock, publish=results.append)
    exp(1)
    (result,) = results
    assert 0.25 == pytest.approx(result.control.duration)
    assert 0.5 == pytest.approx(result.candidates["candidate"].duration)


def test_ignore_turns_known_differences_into_ignored() -> None:
    """An ignorer that accepts the difference makes the outcome ignored."""

    def rounding(control: Observation, candidate: Observation) -> bool:
        return abs(control.value - candidate.value) <= 1

    exp = make(candidate=lambda x: x * 2 + (x % 3 == 0), ignore=[rounding])
    for i in range(1, 7):
        exp(i)
    assert {"matched": 4, "ignored": 2} == {k: v for k, v in exp.stats().items() if v}


def test_clean_shapes_what_is_kept_but_comparison_uses_raw_values() -> None:
    """clean= is applied to shown values; compare= still sees the raw ones."""
    compared: list[tuple[Any, Any]] = []

    def compare(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return bool(a == b)

    exp = make(
        lambda x: {"user": "alice@example.com", "price": x},
        candidate=lambda x: {"user": "alice@example.com", "price": x + 1},
        compare=compare,
        clean=lambda v: v["price"],
    )
    exp(10)
    assert [
        (
            {"user": "alice@example.com", "price": 10},
            {"user": "alice@example.com", "price": 11},
        )
    ] == compared
    (m,) = exp.mismatches()
    assert (10, 11) == (m.control.cleaned, m.observed.cleaned)
    assert ((10,), {}) == (m.args, dict(m.kwargs))
    assert "exp/candidate mismatched on (10): control 10, candidate 11" == str(m)


def test_run_if_and_before_run_only_when_candidates_run() -> None:
    """run_if gates the candidates; before_run runs only when they will."""
    setups = []
    ran = []

    def candidate(x: int) -> int:
        ran.append(x)
        return x * 2

    exp = make(
        candidate=candidate,
        run_if=lambda x: x % 2 == 0,
        before_run=lambda: setups.append(1),
    )
    assert [0, 2, 4, 6] == [exp(i) for i in range(4)]
    assert [0, 2] == ran
    assert 2 == len(setups)
    assert (4, 2) == (exp.calls, exp.sampled)


def test_failed_before_run_skips_the_candidates() -> None:
    """When the setup fails, the candidates do not run and the control still does."""
    ran = []
    exp = make(candidate=ran.append, before_run=lambda: 1 / 0)
    assert 2 == exp(1)
    assert [] == ran
    assert {"before_run": 1} == exp.errors()


def test_context_static_and_per_call_reach_results_and_mismatches() -> None:
    """context= and call_context= are merged per call and kept with the result."""
    results: list[ExperimentResult] = []
    exp = make(
        context={"service": "pricing", "region": "eu"},
        call_context=lambda x: {"region": "us", "x": x},
        publish=results.append,
    )
    exp(7)
    assert {"service": "pricing", "region": "us", "x": 7} == dict(results[0].context)
    assert {"service": "pricing", "region": "us", "x": 7} == dict(
        exp.mismatches()[0].context
    )


def test_context_variables_follow_the_background_run() -> None:
    """A background candidate sees the caller's context variables."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")
    seen = []

    def candidate(x: int) -> int:
        seen.append(var.get())
        return x * 2

    exp = make(candidate=candidate, mode="background")
    var.set("req-1")
    exp(1)
    assert exp.drain(WAIT)
    assert ["req-1"] == seen


def test_async_experiment_accepts_sync_candidates_and_async_callbacks() -> None:
    """An async control may have sync candidates, async before_run and async compensate."""
    log: list[str] = []

    async def setup() -> None:
        log.append("setup")

    async def undo(obs: Observation, x: int) -> None:
        log.append(f"undo {obs.name} {x}")

    exp = make(
        adouble,
        candidate={"sync": double, "async": adouble_v2},
        before_run=setup,
        compensate=undo,
        rng=SeqRandom(0.0),
    )
    assert 12 == asyncio.run(exp(6))
    assert "setup" == log[0]
    assert {"undo sync 6", "undo async 6"} == set(log[1:])
    assert {"matched": 1, "mismatched": 1} == {
        k: v for k, v in exp.stats().items() if v
    }
    assert 12 == asyncio.run(exp.arun(6))


def test_keep_mismatches_is_bounded() -> None:
    """Only the last keep_mismatches disagreements are kept, oldest first."""
    exp = make(candidate=lambda x: -x, keep_mismatches=3)
    for i in range(1, 11):
        exp(i)
    assert [8, 9, 10] == [m.args[0] for m in exp.mismatches()]
    assert 10 == exp.stats()["mismatched"]
    none_kept = make(candidate=lambda x: -x, keep_mismatches=0)
    none_kept(1)
    assert [] == none_kept.mismatches()


def test_mismatches_can_be_filtered_by_candidate() -> None:
    """mismatches(name) returns one candidate's disagreements."""
    exp = make(candidate={"a": lambda x: -x, "b": double})
    exp(1)
    assert ["a"] == [m.candidate for m in exp.mismatches("a")]
    assert [] == exp.mismatches("b")


# ------------------------------------------------------------------ sampling


def test_sample_zero_never_runs_candidates() -> None:
    """At sample=0 only the control runs."""
    ran: list[int] = []
    exp = make(candidate=ran.append, sample=0)
    assert [0, 2, 4] == [exp(i) for i in range(3)]
    assert [] == ran
    assert (3, 0) == (exp.calls, exp.sampled)


def test_sampling_by_key_is_the_flags_bucketing() -> None:
    """A key is sampled when bucket(name, key) falls below the percent."""
    exp = make(candidate=double, sample=5.0, sample_key=lambda x: f"user-{x}")
    keys = range(20_000)
    for k in keys:
        exp(k)
    expected = sum(bucket("exp", f"user-{k}") < 5_000 for k in keys)
    assert expected == exp.sampled
    assert 0.045 < exp.sampled / 20_000 < 0.055


def test_sampling_by_key_is_deterministic_per_key() -> None:
    """The same key is always in or always out; non-str keys are str()-ed."""
    exp = make(candidate=double, sample=50.0, sample_key=lambda x: x)
    first = []
    for k in range(50):
        before = exp.sampled
        exp(k)
        first.append(exp.sampled - before)
    again = []
    for k in range(50):
        before = exp.sampled
        exp(k)
        again.append(exp.sampled - before)
    assert first == again
    assert [bucket("exp", str(k)) < 50_000 for k in range(50)] == [
        bool(x) for x in first
    ]


@settings(max_examples=30)
@given(
    low=st.floats(0, 100, allow_nan=False),
    high=st.floats(0, 100, allow_nan=False),
    keys=st.lists(st.text(max_size=8), max_size=30),
)
def test_raising_the_sample_only_adds_keys(
    low: float, high: float, keys: list[str]
) -> None:
    """Every key sampled at a lower percent is sampled at a higher one."""
    low, high = sorted((low, high))

    def sampled_keys(percent: float) -> set[str]:
        got: set[str] = set()
        exp = make(candidate=got.add, sample=percent, sample_key=lambda k: k)
        for k in keys:
            exp(k)
        return got

    assert sampled_keys(low) <= sampled_keys(high)


def test_random_sampling_uses_the_injected_rng() -> None:
    """Without a key, calls are sampled by rng.random() below the percent."""
    # A sampled call also draws once for the run order (the second value).
    rng = SeqRandom(0.1, 0.9, 0.5, 0.29, 0.0, 0.31)
    exp = make(candidate=double, sample=30.0, rng=rng)
    for i in range(4):
        exp(i)
    assert 2 == exp.sampled
    assert 6 == rng.i
    seeded = make(candidate=double, sample=10.0, rng=random.Random(42))
    for i in range(5_000):
        seeded(i)
    assert 400 < seeded.sampled < 600


# ------------------------------------------------------------------ irreversible


@irreversible(reason="charges a card")
def charge(x: int) -> int:
    return x


def test_irreversible_candidate_is_refused_with_the_reason() -> None:
    """An irreversible candidate without compensate= is a ConfigError naming everything."""
    with pytest.raises(ConfigError, match="irreversible") as info:
        Experiment("billing-v2", control=double, candidate={"new": charge})
    message = str(info.value)
    for part in ("'billing-v2'", "'new'", "charge", "charges a card", "compensate="):
        assert part in message
    assert "candidate" == info.value.field


def test_irreversible_marks_are_found_through_wrappers() -> None:
    """wraps() chains, partials and bound methods keep the mark visible."""

    @functools.wraps(charge)
    def wrapper(x: int) -> int:
        return charge(x)

    @functools.wraps(wrapper)
    def outer(x: int) -> int:
        return wrapper(x)

    class Payments:
        @irreversible
        def refund(self, x: int) -> int:
            return x

    assert "charges a card" == irreversible_reason(outer)
    assert is_irreversible(functools.partial(charge, 1))
    assert "marked @irreversible" == irreversible_reason(Payments().refund)
    assert not is_irreversible(double)
    with pytest.raises(ConfigError, match="charges a card"):
        Experiment("e", control=double, candidate=outer)


def test_irreversible_call_method_marks_its_instances() -> None:
    """An instance whose class marks __call__ irreversible is refused as a candidate."""

    class Charger:
        @irreversible(reason="charges a card")
        def __call__(self, x: int) -> int:
            return x

    assert "charges a card" == irreversible_reason(Charger())
    with pytest.raises(ConfigError, match="charges a card"):
        Experiment("e", control=double, candidate=Charger())


def test_irreversible_as_a_call_returns_the_function_itself() -> None:
    """irreversible(fn, reason=...) marks fn in place and adds no wrapper."""

    def send(x: int) -> int:
        return x

    assert send is irreversible(send, reason="sends an email")
    assert "sends an email" == irreversible_reason(send)
    with pytest.raises(ValueError, match="non-empty"):
        irreversible(send, reason="  ")
    with pytest.raises(TypeError, match="takes no attributes"):
        irreversible(len)
    with pytest.raises(TypeError, match="marks callables"):
        irreversible(3)  # type: ignore[type-var]  # the error under test


def test_irreversible_control_is_allowed() -> None:
    """Only candidates are refused: the control runs once, as it would anyway."""
    exp = Experiment("e", control=charge, candidate=double, clock=FakeClock())
    assert 3 == exp(3)


def test_compensate_undoes_every_candidate_run() -> None:
    """With compensate=, an irreversible candidate runs and each run is undone."""
    undone: list[tuple[str, Any, Any]] = []

    @irreversible(reason="charges a card")
    def charge_v2(x: int) -> int:
        if x < 0:
            raise ValueError("declined")
        return x

    def refund(obs: Observation, x: int) -> None:
        undone.append((obs.name, obs.value, type(obs.exception)))

    exp = make(lambda x: x, candidate=charge_v2, compensate=refund)
    assert 5 == exp(5)
    assert -1 == exp(-1)
    assert [("candidate", 5, type(None)), ("candidate", None, ValueError)] == undone


def test_failing_compensate_is_isolated_and_counted() -> None:
    """A compensate that raises is counted and evented; the caller is unaffected."""

    def broken_refund(obs: Observation, x: int) -> None:
        raise RuntimeError("refund service down")

    exp = make(lambda x: x, candidate=charge, compensate=broken_refund)
    with capture_events(ExperimentCallbackFailed) as events:
        assert 4 == exp(4)
    assert {"compensate": 1} == exp.errors()
    assert ["compensate"] == [e.callback for e in events]
    assert exp.stats()["matched"] == 1


def test_compensate_runs_in_background_after_a_timed_out_run(blocker: Blocker) -> None:
    """Even a run reported as timeout is compensated when it returns."""
    clock = FakeClock()
    undone: list[bool] = []
    irreversible(blocker, reason="writes")
    exp = make(
        candidate=blocker,
        mode="background",
        timeout=0.1,
        clock=clock,
        compensate=lambda obs, x: undone.append(obs.timed_out),
    )
    exp(1)
    assert blocker.started.wait(WAIT)
    clock.advance(1)
    blocker.release()
    assert exp.drain(WAIT)
    assert [True] == undone


def test_sync_experiment_refuses_awaitable_compensate() -> None:
    """A sync experiment cannot await compensate: it is counted as a failure."""

    async def undo(obs: Observation, x: int) -> None:
        return None

    exp = make(candidate=double, compensate=undo)
    assert 2 == exp(1)
    assert {"compensate": 1} == exp.errors()


# ------------------------------------------------------------------ raise_on_mismatch


def test_raise_on_mismatch_raises_with_the_inputs() -> None:
    """raise_on_mismatch turns a disagreement into a MismatchError (tests only)."""
    exp = make(raise_on_mismatch=True)
    assert 8 == exp(4)
    with pytest.raises(
        MismatchError, match=r"'candidate' mismatched on \(5\): control 10"
    ) as info:
        exp(5)
    assert isinstance(info.value, AssertionError)
    assert 15 == info.value.result.candidates["candidate"].value


def test_raise_on_mismatch_chains_the_control_error_and_works_async() -> None:
    """The control's error is the MismatchError's cause; async experiments raise too."""
    exp = make(failing, candidate=double, raise_on_mismatch=True)
    with pytest.raises(MismatchError) as info:
        exp(1)
    assert isinstance(info.value.__cause__, ValueError)
    aexp = make(adouble, candidate=afailing, raise_on_mismatch=True)
    with pytest.raises(MismatchError, match="candidate_error"):
        asyncio.run(aexp(1))


# ------------------------------------------------------------------ telemetry, PII


def test_events_export_only_name_candidate_and_outcome() -> None:
    """Exported attributes never carry values, arguments, context or messages."""
    exp = make(
        candidate=lambda x: {"card": "4111-1111"},
        context={"email": "alice@example.com"},
        clean=lambda v: v,
    )
    with capture_events(ExperimentCompared) as events:
        exp("secret-arg")
    (event,) = events
    assert {
        n.EXPERIMENT_NAME: "exp",
        n.EXPERIMENT_CANDIDATE: "candidate",
        n.OUTCOME: "mismatched",
    } == event.otel_attributes()
    assert event.result is not None
    assert ("secret-arg",) == event.result.args
    failed = ExperimentCallbackFailed("exp", "publish", "RuntimeError")
    assert {
        n.EXPERIMENT_NAME: "exp",
        n.EXPERIMENT_CALLBACK: "publish",
        n.ERROR_TYPE: "RuntimeError",
    } == failed.otel_attributes()


def test_counters_carry_name_candidate_and_outcome() -> None:
    """tipkit.experiment.comparisons counts by experiment, candidate and outcome."""
    exp = Experiment("counted", control=double, candidate=double_v2, clock=FakeClock())
    for i in range(7):
        exp(i)
    readings = {
        r.attributes[n.OUTCOME]: r.value
        for r in REGISTRY.snapshot(n.EXPERIMENT_COMPARISONS)
        if r.attributes.get(n.EXPERIMENT_NAME) == "counted" and r.value
    }
    assert {"matched": 5, "mismatched": 2} == readings


# ------------------------------------------------------------------ faces


def test_shadow_decorator_makes_the_function_the_control() -> None:
    """@Experiment.shadow keeps the function's name and serves its result."""

    @Experiment.shadow("deco", candidate=double_v2, clock=FakeClock())
    def price(x: int) -> int:
        """Price it."""
        return x * 2

    assert 12 == price(6)
    assert isinstance(price, Experiment)
    assert ("price", "Price it.") == (price.__name__, price.__doc__)  # type: ignore[attr-defined]  # set by update_wrapper
    assert price.stats()["mismatched"] == 1
    assert 6 == price.run(3)


def test_shadow_decorator_on_a_method_binds_the_instance() -> None:
    """Decorating a method passes the instance to control and candidate alike."""

    def price_v2(self: Shop, x: int) -> int:
        return x * self.rate + 1

    class Shop:
        rate = 3

        @Experiment.shadow("method", candidate=price_v2, clock=FakeClock())
        def price(self, x: int) -> int:
            return x * self.rate

    shop = Shop()
    assert 6 == shop.price(2)
    assert Shop.price.stats()["mismatched"] == 1


def test_threads_calling_at_once_lose_no_count() -> None:
    """Many threads through one experiment: every call is judged and counted."""
    exp = make(candidate=double, rng=random.Random(1))
    threads = 8
    per = 200
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        for i in range(per):
            assert i * 2 == exp(i)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(WAIT)
    assert threads * per == exp.stats()["matched"] == exp.calls


def test_repr_shows_config_and_tallies() -> None:
    """The repr names the experiment, its candidates, mode, sample and live counts."""
    exp = make(sample=5.0, sample_key=str, timeout=0.2, mode="background")
    assert (
        "<Experiment 'exp' control=double candidates=['candidate'] mode=background "
        "sample=5% by key timeout=0.2s calls=0 sampled=0>" == repr(exp)
    )
    inline = make()
    inline(7)
    assert repr(inline).endswith("calls=1 sampled=1 mismatched=1>")


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (
            {"sample": 101},
            ValueError,
            r"sample must be a percent in \[0, 100\], got 101",
        ),
        ({"sample": True}, TypeError, "sample must be a number, got True"),
        ({"sample": float("nan")}, ValueError, "sample must be a percent"),
        ({"timeout": 0}, ValueError, "timeout must be > 0"),
        ({"timeout": "1s"}, TypeError, "timeout must be seconds"),
        (
            {"mode": "thread"},
            ValueError,
            "mode must be 'inline' or 'background', got 'thread'",
        ),
        ({"max_workers": 0}, ValueError, "max_workers must be >= 1, got 0"),
        ({"queue_size": 1.5}, TypeError, "queue_size must be an int"),
        ({"keep_mismatches": -1}, ValueError, "keep_mismatches must be >= 0"),
        ({"compare": 3}, TypeError, "compare must be callable, got 3"),
        ({"ignore": [None]}, TypeError, "each ignore entry must be callable"),
        ({"context": [1]}, TypeError, "context must be a mapping"),
        ({"rng": object()}, TypeError, "rng must have a random"),
        ({"candidate": {}}, ValueError, "candidate mapping is empty"),
        ({"candidate": {"control": double}}, ValueError, "other than 'control'"),
        (
            {"candidate": adouble},
            TypeError,
            "'candidate' is async but the control is sync",
        ),
        (
            {"raise_on_mismatch": True, "mode": "background"},
            ValueError,
            "raise_on_mismatch needs mode='inline'",
        ),
    ],
)
def test_bad_options_are_refused_with_the_argument_named(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Each bad option raises at construction, naming the option and the value."""
    with pytest.raises(error, match=match):
        make(**options)


def test_generator_functions_and_bad_names_are_refused() -> None:
    """A generator control or candidate, or an empty name, is refused."""

    def gen(x: int) -> Iterator[int]:
        yield x

    with pytest.raises(TypeError, match="generator function"):
        make(gen)
    with pytest.raises(TypeError, match="generator function"):
        make(candidate=gen)
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        Experiment("", control=double, candidate=double)


def test_callable_object_with_async_call_is_async() -> None:
    """A control object whose __call__ is async makes the experiment async."""

    class Service:
        async def __call__(self, x: int) -> int:
            return x * 2

    exp = Experiment("obj", control=Service(), candidate=adouble, clock=FakeClock())
    assert exp.is_async
    assert 4 == asyncio.run(exp(2))
    assert exp.stats()["matched"] == 1


def test_result_helpers() -> None:
    """Observation and result helpers describe what happened."""
    ok = Observation("control", 1, None, 0.1, 1)
    err = Observation("candidate", None, ValueError("x"), 0.1)
    slow = Observation("candidate", None, None, 2.0, timed_out=True)
    assert (False, True) == (ok.raised, err.raised)
    assert "1" == ok.describe()
    assert "raised ValueError('x')" == err.describe()
    assert "timed out after 2s" == slow.describe()
    result = ExperimentResult("e", ok, {}, {"a": "ignored", "b": "matched"}, {}, (), {})
    assert result.matched
    assert () == result.disagreeing
    assert operator.eq is make().__init__.__kwdefaults__["compare"]
