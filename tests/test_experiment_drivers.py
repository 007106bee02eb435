"""The run paths: inline and background, sync and async, timeouts on the clock."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Generator
from typing import Any

import pytest
from tests.experiment_support import (
    WAIT,
    Blocker,
    SeqRandom,
    adouble,
    adouble_v2,
    afailing,
    double,
    failing,
    make,
    released,
)

from tipkit.experiment import (
    ExperimentCompared,
    ExperimentResult,
    MismatchError,
    Observation,
    irreversible,
)
from tipkit.experiment._drivers import _Suspending
from tipkit.testing import FakeClock, capture_events

blocker = pytest.fixture(released)


def test_base_exceptions_of_the_control_pass_through_at_once() -> None:
    """KeyboardInterrupt from the control propagates without a comparison."""

    def interrupted(x: int) -> int:
        raise KeyboardInterrupt

    exp = make(interrupted, rng=SeqRandom(0.99))  # control runs first
    with pytest.raises(KeyboardInterrupt):
        exp(1)
    assert 0 == sum(exp.stats().values())


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


def test_failed_before_run_skips_the_candidates() -> None:
    """When the setup fails, the candidates do not run and the control still does."""
    ran = []
    exp = make(candidate=ran.append, before_run=lambda: 1 / 0)
    assert 2 == exp(1)
    assert [] == ran
    assert {"before_run": 1} == exp.errors()


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


def test_async_candidate_times_out_on_the_injected_clock() -> None:
    """A candidate that sleeps 10s on the fake clock is a timeout at 1s; nothing waits."""
    clock = FakeClock()
    results: list[ExperimentResult] = []

    async def slow(x: int) -> int:
        await clock.asleep(10)
        return x * 2

    exp = make(adouble, candidate=slow, timeout=1, clock=clock, publish=results.append)
    assert 2 == asyncio.run(exp(1))
    assert 1 == exp.stats()["timeout"]
    assert [10] == clock.sleeps  # the candidate's own sleep: the experiment slept none
    (result,) = results
    assert result.candidates["candidate"].timed_out
    assert 10 == result.candidates["candidate"].duration


def test_hung_async_candidate_is_cut_off_on_the_clock_not_in_real_time() -> None:
    """A candidate that never returns is cancelled when the fake clock passes an hour."""
    clock = FakeClock()
    cancelled: list[int] = []

    async def hangs(x: int) -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(x)
            raise
        return x  # pragma: no cover

    exp = make(adouble, candidate=hangs, timeout=3600, clock=clock)
    assert 4 == asyncio.run(exp(2))
    assert [2] == cancelled
    assert [3600] == clock.sleeps  # the alarm slept on the fake clock, at once
    assert 1 == exp.stats()["timeout"]


def test_async_candidate_within_its_timeout_is_judged() -> None:
    """A candidate that finishes before its deadline on the clock is compared, not cut off."""
    clock = FakeClock()

    async def quick(x: int) -> int:
        await clock.asleep(0.5)
        return x * 2

    exp = make(adouble, candidate=quick, timeout=1, clock=clock)
    assert 6 == asyncio.run(exp(3))
    assert {"matched": 1} == {k: v for k, v in exp.stats().items() if v}
    assert [0.5, 0.5] == clock.sleeps  # the candidate's, then the rest of the alarm's


def test_cancelling_the_caller_cancels_the_timed_candidate() -> None:
    """A caller cancelled while its candidate runs under a timeout takes the candidate along."""

    class StoppedClock(FakeClock):
        async def asleep(self, seconds: float) -> None:
            await asyncio.Event().wait()  # time never passes

    cancelled: list[str] = []

    async def hangs(x: int) -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("candidate")
            raise
        return x  # pragma: no cover

    exp = make(adouble, candidate=hangs, timeout=1, clock=StoppedClock())

    async def main() -> None:
        task = asyncio.ensure_future(exp(1))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = asyncio.Event()
    asyncio.run(main())
    assert ["candidate"] == cancelled
    assert 0 == sum(exp.stats().values())


def test_sync_experiment_refuses_awaitable_before_run() -> None:
    """A sync experiment cannot await before_run: counted as its failure, candidates skipped."""
    ran: list[int] = []

    async def setup() -> None:
        return None

    exp = make(candidate=ran.append, before_run=setup)
    assert 2 == exp(1)
    assert [] == ran
    assert {"before_run": 1} == exp.errors()


def test_candidate_that_swallows_the_cut_off_is_a_timeout_and_the_caller_goes_on() -> (
    None
):
    """A candidate ignoring its cancellation is late; the caller's task is not left cancelled."""
    clock = FakeClock()

    async def stubborn(x: int) -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return x * 2  # swallows the cancellation
        return x  # pragma: no cover

    exp = make(adouble, candidate=stubborn, timeout=1, clock=clock)

    async def main() -> int:
        value = await exp(2)
        task = asyncio.current_task()
        assert task is not None
        assert 0 == task.cancelling()
        await clock.asleep(0)  # would raise if a cancellation were still pending
        return value

    assert 4 == asyncio.run(main())
    assert 1 == exp.stats()["timeout"]


class Twice:
    """An awaitable that suspends twice, then returns 5 (drives _Suspending by hand)."""

    def __init__(self) -> None:
        self.closed = False

    def __await__(self) -> Generator[str, None, int]:
        try:
            yield "first"
            yield "second"
        except GeneratorExit:
            self.closed = True
            raise
        return 5


def test_suspending_wrapper_forwards_like_await_and_hooks_the_first_suspension() -> (
    None
):
    """The wrapper yields what the awaitable yields, hooks once, forwards throws and close."""
    hooks: list[int] = []
    run = _Suspending(Twice(), lambda: hooks.append(1)).__await__()
    assert "first" == run.send(None)
    assert "second" == run.send(None)
    with pytest.raises(StopIteration) as done:
        run.send(None)
    assert 5 == done.value.value
    assert [1] == hooks

    inner = Twice()
    thrown = _Suspending(inner, lambda: None).__await__()
    assert "first" == thrown.send(None)
    with pytest.raises(ValueError, match="into the awaitable"):
        thrown.throw(ValueError("into the awaitable"))

    closed = Twice()
    wrapper = _Suspending(closed, lambda: None).__await__()
    wrapper.send(None)
    wrapper.close()
    assert closed.closed
