"""CircuitBreaker through its faces: rates, windows, half-open, operators, shadow, telemetry."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import traceback
from datetime import timedelta
from typing import Any

import pytest

from tipkit import compose
from tipkit.breaker import (
    BreakerMetrics,
    BreakerState,
    BreakerStateChanged,
    CallRejected,
    CircuitBreaker,
    CountWindow,
    TimeWindow,
)
from tipkit.bulkhead import Bulkhead
from tipkit.clock import SYSTEM_CLOCK
from tipkit.deadline import deadline
from tipkit.errors import (
    BulkheadFullError,
    CircuitOpenError,
    DeadlineExceededError,
    RateLimitedError,
)
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock, capture_events

from .strategies_breaker import BoomError, IgnoredError, boom, fail, make, ok, trip


# -- through every face --------------------------------------------------------------
def test_closed_breaker_passes_results_through_every_face(face, clock):
    """A closed breaker returns the call's result through every face."""
    breaker = make(clock)
    assert face.run(breaker, ok) == "ok"
    assert breaker.metrics.calls == 1


def test_open_breaker_rejects_through_every_face(face, clock):
    """Failures trip the breaker through every face; then every face rejects."""
    breaker = make(clock)
    for _ in range(4):
        with pytest.raises(BoomError):
            face.run(breaker, boom)
    assert BreakerState.OPEN is breaker.state
    ran = []
    with pytest.raises(
        CircuitOpenError, match=r"'svc' is open; retry after 10\.000s"
    ) as info:
        face.run(breaker, lambda: ran.append(1))
    assert ran == []
    assert info.value.retry_after == 10.0
    assert info.value.breaker == "svc"


def test_half_open_trials_close_the_breaker_through_every_face(face, clock):
    """After open_duration the next calls are trials; passing trials close it."""
    breaker = make(clock)
    trip(breaker)
    clock.advance(10)
    assert face.run(breaker, ok) == "ok"
    assert BreakerState.HALF_OPEN is breaker.state
    assert face.run(breaker, ok) == "ok"
    assert BreakerState.CLOSED is breaker.state


def test_exceptions_pass_through_unchanged(face, clock):
    """The call's exception reaches the caller with its type, cause and traceback."""
    breaker = make(clock)
    cause = KeyError("root")

    def raiser() -> None:
        raise BoomError("x") from cause

    with pytest.raises(BoomError) as info:
        face.run(breaker, raiser)
    assert cause is info.value.__cause__
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "raiser"


def test_deadline_passed_refuses_admission(face, clock):
    """No face admits a call once the current deadline has passed."""
    breaker = make(clock)
    with deadline(1.0, clock=clock):
        clock.advance(2)
        with pytest.raises(DeadlineExceededError):
            face.run(breaker, ok)
    assert breaker.metrics.calls == 0


def test_generator_functions_are_refused(clock):
    """Decorating a generator function fails at decoration time."""
    breaker = make(clock)

    def gen():  # type: ignore[no-untyped-def]
        yield 1

    with pytest.raises(TypeError, match="generator function"):
        breaker(gen)


# -- rates, windows, thresholds ----------------------------------------------------------
def test_no_verdict_before_minimum_calls(clock):
    """Failures below minimum_calls never trip, whatever the rate."""
    breaker = make(clock, minimum_calls=5)
    fail(breaker, 4)
    assert BreakerState.CLOSED is breaker.state
    assert breaker.metrics.failure_rate is None
    fail(breaker)
    assert BreakerState.OPEN is breaker.state


def test_failure_rate_threshold_is_inclusive(clock):
    """A failure rate exactly equal to the threshold trips the breaker."""
    breaker = make(clock, minimum_calls=10, failure_rate_threshold=0.3)
    for _ in range(7):
        breaker.call(ok)
    fail(breaker, 2)
    assert BreakerState.CLOSED is breaker.state
    fail(breaker)  # 3/10 == 0.3
    assert BreakerState.OPEN is breaker.state


def test_a_success_reaching_minimum_calls_can_trip(clock):
    """The verdict is taken when a success brings the window to minimum_calls."""
    breaker = make(clock, minimum_calls=4)
    fail(breaker, 2)
    breaker.call(ok)
    assert BreakerState.CLOSED is breaker.state
    with capture_events(BreakerStateChanged) as events:
        breaker.call(ok)  # 2/4 == 0.5
    assert BreakerState.OPEN is breaker.state
    assert events[0].reason == "failure_rate"


def test_count_window_forgets_old_outcomes(clock):
    """Only the last n outcomes count."""
    breaker = make(
        clock, window=CountWindow(4), minimum_calls=4, failure_rate_threshold=0.75
    )
    fail(breaker, 2)
    for _ in range(6):
        breaker.call(ok)
    m = breaker.metrics
    assert (m.calls, m.successes, m.failures) == (4, 4, 0)
    fail(breaker, 2)
    assert BreakerState.CLOSED is breaker.state
    fail(breaker)
    assert BreakerState.OPEN is breaker.state


def test_many_successes_fold_into_the_window_exactly(clock):
    """Successes counted lock-free are folded into the count window before it is read."""
    breaker = make(clock, window=CountWindow(50), minimum_calls=5)
    for _ in range(5):
        breaker.call(ok)
    wrapped = breaker(ok)
    for _ in range(30):
        wrapped()
    fail(breaker, 3)
    m = breaker.metrics
    assert (m.calls, m.successes, m.failures) == (38, 35, 3)
    for _ in range(200):
        wrapped()
    m = breaker.metrics
    assert (m.calls, m.successes, m.failures) == (50, 50, 0)
    fail(breaker, 24)
    assert BreakerState.CLOSED is breaker.state
    fail(breaker)
    assert BreakerState.OPEN is breaker.state
    assert breaker.metrics.failures == 25


def test_minimum_calls_is_capped_at_the_count_window_size(clock):
    """A count window smaller than minimum_calls gives its verdict when full."""
    breaker = make(clock, window=CountWindow(3), minimum_calls=20)
    fail(breaker, 3)
    assert BreakerState.OPEN is breaker.state
    assert "minimum_calls=3" in repr(breaker)


def test_time_window_drops_outcomes_older_than_its_seconds(clock):
    """A time window forgets whole seconds as they fall out of it."""
    breaker = make(clock, window=TimeWindow(seconds=10), minimum_calls=4)
    fail(breaker, 3)
    clock.advance(9.5)
    assert breaker.metrics.calls == 3
    clock.advance(0.5)  # now 10.0: second 0 has left the window
    assert breaker.metrics.calls == 0
    fail(breaker, 3)
    assert BreakerState.CLOSED is breaker.state
    fail(breaker)
    assert BreakerState.OPEN is breaker.state


def test_time_window_expiry_can_trip_on_a_success(clock):
    """When old successes expire, a new success finds the failure rate over the threshold."""
    breaker = make(
        clock, window=TimeWindow(seconds=5), minimum_calls=4, failure_rate_threshold=0.6
    )
    for _ in range(4):
        breaker.call(ok)
    clock.advance(4)
    fail(breaker, 4)  # 4/8 = 0.5
    assert BreakerState.CLOSED is breaker.state
    clock.advance(1)  # the 4 successes expire
    breaker.call(ok)  # 4/5 = 0.8
    assert BreakerState.OPEN is breaker.state


def test_time_window_jump_longer_than_the_window_clears_it(clock):
    """A pause longer than the window empties it."""
    breaker = make(clock, window=TimeWindow(timedelta(seconds=3)), minimum_calls=2)
    breaker.call(ok)
    clock.advance(1000)
    fail(breaker)
    assert (breaker.metrics.calls, breaker.metrics.failures) == (1, 1)


def test_slow_calls_trip_on_the_slow_call_rate(clock):
    """Calls longer than slow_call_duration count as slow; the slow rate trips it."""
    breaker = make(clock, slow_call_duration=1.0, slow_call_rate_threshold=0.5)

    def slow() -> str:
        clock.advance(1.5)
        return "late"

    def quick() -> str:
        clock.advance(1.0)  # exactly the duration: not slow
        return "ok"

    breaker.call(quick)
    breaker.call(quick)
    assert breaker.call(slow) == "late"
    assert breaker.metrics.failures == 0.0
    with capture_events(BreakerStateChanged) as events:
        breaker(slow)()
    assert BreakerState.OPEN is breaker.state
    assert events[0].reason == "slow_call_rate"
    assert events[0].metrics.slow_call_rate == 0.5


def test_slow_calls_are_timed_through_every_face(face, clock):
    """Every face times a closed breaker's call from its own start: slow, or exactly not."""
    breaker = make(clock, slow_call_duration=1.0, minimum_calls=10)
    clock.advance(100.0)  # a start time of 0 would make every call look slow

    def taking(seconds: float) -> str:
        clock.advance(seconds)
        return "ok"

    assert "ok" == face.run(breaker, taking, 1.0)
    assert "ok" == face.run(breaker, taking, 1.5)
    m = breaker.metrics
    assert (2, 1, 0.0) == (m.calls, m.slow_calls, m.failures)


def test_slow_failures_count_as_both(clock):
    """A slow failure counts as a failure and as a slow call."""
    breaker = make(clock, slow_call_duration=1.0, minimum_calls=10)

    def slow_boom() -> None:
        clock.advance(2)
        raise BoomError

    with pytest.raises(BoomError):
        breaker.call(slow_boom)
    m = breaker.metrics
    assert (m.calls, m.failures, m.slow_calls) == (1, 1, 1)


# -- record / ignore ------------------------------------------------------------------
def test_ignored_exceptions_count_as_neither(clock):
    """An ignored exception passes through and leaves the window alone."""
    breaker = make(clock, ignore=IgnoredError)

    def ignored() -> None:
        raise IgnoredError

    for _ in range(10):
        with pytest.raises(IgnoredError):
            breaker.call(ignored)
    m = breaker.metrics
    assert (m.calls, m.ignored) == (0, 10)
    assert BreakerState.CLOSED is breaker.state


def test_unrecorded_exceptions_count_as_successes(clock):
    """An exception outside `record` means the dependency answered: a success."""
    breaker = make(clock, record=(OSError,))
    for _ in range(5):
        with pytest.raises(BoomError):
            breaker.call(boom)
    assert (breaker.metrics.successes, breaker.metrics.failures) == (5, 0)


def test_record_callable_decides(clock):
    """record=callable(exc) -> bool decides what is a failure."""
    breaker = make(clock, record=lambda exc: "fatal" in str(exc))

    def raise_(msg: str) -> None:
        raise BoomError(msg)

    for msg in ("fatal", "fine", "fatal"):
        with pytest.raises(BoomError):
            breaker.call(raise_, msg)
    assert (breaker.metrics.calls, breaker.metrics.failures) == (3, 2)


def test_record_callable_that_raises_counts_a_failure(clock, caplog):
    """A record callable that raises is logged and the call counts as a failure."""

    def bad_record(exc: BaseException) -> bool:
        raise RuntimeError("bug")

    breaker = make(clock, record=bad_record)
    fail(breaker)
    assert breaker.metrics.failures == 1
    assert "record callable" in caplog.text


def test_inner_rejection_is_not_a_failure(clock):
    """An outer breaker does not count an inner guard's rejection as a failure."""
    breaker = make(clock)
    bulkhead = Bulkhead("db", max_concurrent=1, clock=clock)
    guarded = compose(breaker, bulkhead)
    with bulkhead:
        for _ in range(10):
            with pytest.raises(BulkheadFullError):
                guarded(ok)()

    def limited() -> None:
        raise RateLimitedError("slow down", name="api")

    with pytest.raises(RateLimitedError):
        breaker.call(limited)
    m = breaker.metrics
    assert (m.calls, m.failures, m.ignored) == (0, 0, 11)
    assert BreakerState.CLOSED is breaker.state


# -- open duration and half-open ----------------------------------------------------------
def test_open_to_half_open_is_lazy(clock):
    """The breaker reads OPEN until the first call after open_duration."""
    breaker = make(clock)
    trip(breaker)
    clock.advance(100)
    assert BreakerState.OPEN is breaker.state
    assert breaker.metrics.retry_after == 0.0
    breaker.call(ok)
    assert BreakerState.HALF_OPEN is breaker.state


def test_retry_after_counts_down(clock):
    """retry_after is the time left in the open state."""
    breaker = make(clock)
    trip(breaker)
    clock.advance(4)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.retry_after == 6.0


def test_open_duration_callable_backs_off_and_resets_on_close(clock):
    """open_duration(times_opened) grows per consecutive opening; closing resets it."""
    seen: list[int] = []

    def backoff(times_opened: int) -> float:
        seen.append(times_opened)
        return 10.0 * 2 ** (times_opened - 1)

    breaker = make(clock, open_duration=backoff, half_open_calls=1)
    trip(breaker)
    assert breaker.metrics.retry_after == 10.0
    clock.advance(10)
    fail(breaker)  # the trial fails
    assert breaker.metrics.retry_after == 20.0
    assert breaker.metrics.times_opened == 2
    clock.advance(20)
    breaker.call(ok)
    assert BreakerState.CLOSED is breaker.state
    trip(breaker)
    assert breaker.metrics.retry_after == 10.0
    assert seen == [1, 1, 2, 1]  # 1 first: checked at construction


def test_open_duration_callable_failing_later_keeps_the_first_duration(clock, caplog):
    """A backoff callable that fails at run time is logged; the first duration is used."""

    def backoff(times_opened: int) -> float:
        if times_opened > 1:
            raise RuntimeError("bug")
        return 5.0

    breaker = make(clock, open_duration=backoff, half_open_calls=1)
    trip(breaker)
    clock.advance(5)
    fail(breaker)
    assert breaker.metrics.retry_after == 5.0
    assert "open_duration(2) failed" in caplog.text


def test_half_open_is_decided_by_the_trials_alone(clock):
    """One failed trial of two (0.5 >= 0.5) re-opens; the old window plays no part."""
    breaker = make(clock)
    trip(breaker)
    clock.advance(10)
    breaker.call(ok)
    with capture_events(BreakerStateChanged) as events:
        fail(breaker)
    assert BreakerState.OPEN is breaker.state
    assert events[0].reason == "trial_failure_rate"
    assert events[0].metrics.calls == 2


def test_trial_verdict_through_the_fast_decorator_opens_from_now(clock):
    """A half-open verdict reached on a success through the clock-free decorator opens from now."""
    breaker = make(clock, half_open_calls=2, minimum_calls=1)
    failing, passing = breaker(boom), breaker(ok)
    with pytest.raises(BoomError):
        failing()
    clock.advance(10)
    with pytest.raises(BoomError):
        failing()  # trial 1 fails
    passing()  # trial 2 passes: 1/2 >= 0.5, open again for 10 s from t=10
    assert breaker.state is BreakerState.OPEN
    assert breaker.metrics.retry_after == 10.0


def test_half_open_rejects_beyond_the_trial_permits(clock):
    """While all trial permits are taken, other calls are rejected at once."""
    breaker = make(clock, half_open_calls=2)
    trip(breaker)
    clock.advance(10)
    t1 = breaker._step(clock.monotonic(), None)
    t2 = breaker._step(clock.monotonic(), None)
    with pytest.raises(CircuitOpenError, match="all 2 trial calls are running") as info:
        breaker.call(ok)
    assert info.value.retry_after is None
    breaker._release(t1, None, clock.monotonic())
    breaker._release(t2, None, clock.monotonic())
    assert BreakerState.CLOSED is breaker.state


@pytest.mark.parametrize(
    "error",
    [
        IgnoredError(),
        asyncio.CancelledError(),
        KeyboardInterrupt(),
        SystemExit(),
        GeneratorExit(),
    ],
)
def test_trial_permits_are_never_lost(clock, error):
    """A trial ending in an ignored error, a cancellation or a BaseException returns its permit."""
    breaker = make(clock, half_open_calls=1, ignore=IgnoredError)
    trip(breaker)
    clock.advance(10)

    def raiser() -> None:
        raise error

    with pytest.raises(type(error)):
        breaker.call(raiser)
    assert BreakerState.HALF_OPEN is breaker.state
    breaker.call(ok)  # the permit came back
    assert BreakerState.CLOSED is breaker.state


def test_cancelled_async_trial_returns_its_permit(clock):
    """An asyncio task cancelled during its trial call gives the permit back."""
    breaker = make(clock, half_open_calls=1)
    trip(breaker)
    clock.advance(10)
    started = None

    @breaker
    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    async def main() -> None:
        nonlocal started
        started = asyncio.Event()
        task = asyncio.create_task(hang())
        await started.wait()
        with pytest.raises(CircuitOpenError):
            await breaker.acall(asyncio.sleep, 0)  # noqa: TID251  # never runs: rejected
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await breaker.acall(asyncio.sleep, 0)  # noqa: TID251  # the permit is back

    asyncio.run(main())
    assert BreakerState.CLOSED is breaker.state


def test_hung_trials_re_open_after_max_half_open_wait(clock):
    """A trial that never finishes cannot wedge the breaker: it re-opens and re-arms."""
    breaker = make(clock, half_open_calls=1, max_half_open_wait=30.0)
    trip(breaker)
    clock.advance(10)
    hung = breaker._step(clock.monotonic(), None)
    clock.advance(29)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(1)
    with capture_events(BreakerStateChanged) as events, pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert [e.reason for e in events] == ["half_open_timeout"]
    clock.advance(10)
    breaker.call(ok)  # a fresh trial permit
    assert BreakerState.CLOSED is breaker.state
    breaker._release(hung, BoomError(), clock.monotonic())  # stale: decides nothing
    assert (breaker.state, breaker.metrics.calls) == (BreakerState.CLOSED, 0)


def test_stale_outcomes_do_not_decide_the_current_state(clock):
    """A call admitted before the breaker opened, finishing later, is ignored."""
    breaker = make(clock)
    early = breaker._step(clock.monotonic(), None)
    trip(breaker)
    clock.advance(10)
    breaker.call(ok)
    breaker._release(early, BoomError(), clock.monotonic())  # would fail the half-open
    assert BreakerState.HALF_OPEN is breaker.state
    breaker.call(ok)
    assert BreakerState.CLOSED is breaker.state
    late = breaker._step(clock.monotonic(), None)
    breaker.reset()
    breaker._release(late, BoomError(), clock.monotonic())
    assert breaker.metrics.calls == 0


# -- operator states -----------------------------------------------------------------------
def test_force_open_rejects_until_reset(clock):
    """force_open rejects every call (retry_after unknown) until reset."""
    breaker = make(clock, runbook="https://runbooks.invalid/svc")
    breaker.force_open()
    breaker.force_open()  # idempotent
    clock.advance(1000)
    with pytest.raises(
        CircuitOpenError, match=r"forced open.*runbooks\.invalid"
    ) as info:
        breaker.call(ok)
    assert (
        info.value.retry_after,
        info.value.runbook,
    ) == (None, "https://runbooks.invalid/svc")
    breaker.reset()
    assert breaker.call(ok) == "ok"


def test_disable_lets_everything_through_and_records_nothing(clock):
    """A disabled breaker never opens and keeps no window."""
    breaker = make(clock)
    breaker.disable()
    fail(breaker, 20)
    assert BreakerState.DISABLED is breaker.state
    assert breaker.metrics.calls == 0
    breaker.reset()
    assert BreakerState.CLOSED is breaker.state


def test_reset_clears_the_window_and_backoff(clock):
    """reset() closes with an empty window and times_opened back at 0."""
    breaker = make(clock)
    trip(breaker)
    with capture_events(BreakerStateChanged) as events:
        breaker.reset()
    assert (
        breaker.state,
        breaker.metrics.calls,
        breaker.metrics.times_opened,
    ) == (BreakerState.CLOSED, 0, 0)
    assert [(e.from_state.value, e.to_state.value, e.reason) for e in events] == [
        ("open", "closed", "reset")
    ]


# -- shadow mode ---------------------------------------------------------------------------
def test_shadow_mode_lets_calls_through_and_reports_would_reject(clock):
    """In shadow mode an open breaker runs the call, counts and reports it."""
    breaker = make(clock, mode="shadow", runbook="https://rb.invalid")
    with capture_events(BreakerStateChanged, CallRejected) as events:
        trip(breaker)
        assert breaker.call(ok) == "ok"
    changed, rejected = events
    assert isinstance(changed, BreakerStateChanged)
    assert (changed.shadow, changed.runbook) == (True, "https://rb.invalid")
    assert isinstance(rejected, CallRejected)
    assert (
        rejected.shadow,
        rejected.retry_after,
        rejected.runbook,
    ) == (True, 10.0, "https://rb.invalid")
    m = breaker.metrics
    assert (m.would_reject, m.rejected) == (1, 0)


def test_shadow_states_equal_enforced_states(clock):
    """Would-be-rejected calls stay out of the window: shadow follows enforcement."""
    shadow = make(clock, name="shadow", mode="shadow")
    enforce = make(clock, name="enforce")
    for breaker in (shadow, enforce):
        trip(breaker)
        for _ in range(5):
            with contextlib.suppress(BoomError, CircuitOpenError):
                breaker.call(boom)
    clock.advance(10)
    for breaker in (shadow, enforce):
        breaker.call(ok)
        breaker.call(ok)
    assert BreakerState.CLOSED is shadow.state is enforce.state
    assert shadow.metrics.calls == enforce.metrics.calls == 0
    assert 5 == shadow.metrics.would_reject == enforce.metrics.rejected


def test_mode_switches_live(clock):
    """Assigning mode (or set_mode) switches enforcement without touching the state."""
    breaker = make(clock)
    trip(breaker)
    breaker.mode = "shadow"
    assert breaker.call(ok) == "ok"
    breaker.set_mode("enforce")
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert BreakerState.OPEN is breaker.state
    with pytest.raises(
        ValueError, match="mode must be 'enforce' or 'shadow', got 'off'"
    ):
        breaker.mode = "off"  # type: ignore[assignment]  # the bad value under test


# -- telemetry --------------------------------------------------------------------------
def test_counters_count_outcomes_by_mode(clock):
    """tipkit.breaker.calls counts each outcome with the breaker name and mode."""
    breaker = make(clock, name="counted", ignore=IgnoredError)

    def ignored() -> None:
        raise IgnoredError

    breaker.call(ok)
    breaker(ok)()
    with pytest.raises(IgnoredError):
        breaker.call(ignored)
    fail(breaker, 2)  # 2 of 4: open
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    breaker.mode = "shadow"
    breaker.call(ok)

    def value(outcome: str, mode: str = "enforce") -> int:
        return REGISTRY.value(
            names.BREAKER_CALLS,
            {names.BREAKER_NAME: "counted", names.OUTCOME: outcome, names.MODE: mode},
        )

    assert (
        value("success"),
        value("failure"),
        value("ignored"),
        value("rejected"),
        value("rejected", "shadow"),
    ) == (2, 2, 1, 1, 1)
    transitions = REGISTRY.value(
        names.BREAKER_TRANSITIONS, {names.BREAKER_NAME: "counted", names.STATE: "open"}
    )
    assert transitions == 1


@pytest.mark.parametrize("is_async", [False, True])
def test_lock_free_successes_count_in_the_mode_in_force(is_async: bool) -> None:
    """The decorators' ticked successes follow a mode switch and synthetic()'s diversion."""
    from tipkit.telemetry import synthetic

    name = f"ticked-{is_async}"
    breaker = CircuitBreaker(name, window=CountWindow(10), minimum_calls=100)

    async def aok() -> int:
        return 1

    guarded = breaker(aok) if is_async else breaker(ok)

    def run(times: int) -> None:
        for _ in range(times):
            if is_async:
                asyncio.run(guarded())  # type: ignore[arg-type]
            else:
                guarded()

    def value(mode: str, **extra: str) -> int:
        return REGISTRY.value(
            names.BREAKER_CALLS,
            {names.BREAKER_NAME: name, names.OUTCOME: "success", names.MODE: mode}
            | extra,
        )

    run(12)  # warms the closed phase: later successes are ticked lock-free
    breaker.mode = "shadow"
    run(3)
    breaker.mode = "enforce"
    with synthetic("test"):
        run(2)
    marked = value("enforce", **{names.SYNTHETIC_TYPE: "test"})
    assert (12, 3, 2) == (value("enforce") - marked, value("shadow"), marked)


def test_state_gauge_reports_one_for_the_current_state(clock):
    """The tipkit.breaker.state gauge is 1 for the current state, 0 for the others."""
    breaker = make(clock, name="gauged")
    trip(breaker)
    readings = {
        r.attributes[names.STATE]: r.value
        for r in REGISTRY.gauges(names.BREAKER_STATE)
        if r.attributes[names.BREAKER_NAME] == "gauged"
    }
    assert readings == {
        "closed": 0,
        "open": 1,
        "half_open": 0,
        "forced_open": 0,
        "disabled": 0,
    }


def test_events_carry_metrics_and_safe_attributes(clock):
    """BreakerStateChanged carries a metrics snapshot; otel attributes are low-cardinality."""
    breaker = make(clock, runbook="https://rb.invalid/x")
    with capture_events(BreakerStateChanged) as events:
        trip(breaker)
    event = events[0]
    assert isinstance(event.metrics, BreakerMetrics)
    assert (event.metrics.calls, event.metrics.failure_rate) == (4, 1.0)
    assert event.otel_attributes() == {
        names.BREAKER_NAME: "svc",
        "tipkit.breaker.from_state": "closed",
        names.STATE: "open",
        "tipkit.breaker.reason": "failure_rate",
        names.MODE: "enforce",
        names.RUNBOOK: "https://rb.invalid/x",
    }
    assert event.otel_name == "tipkit.breaker.state_changed"
    with capture_events(CallRejected) as rejected, pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert rejected[0].otel_attributes() == {
        names.BREAKER_NAME: "svc",
        names.STATE: "open",
        names.MODE: "enforce",
        "tipkit.retry_after": 10.0,
        names.RUNBOOK: "https://rb.invalid/x",
    }


def test_repr_shows_config_and_live_state(clock):
    """Repr shows the name, state, mode, rates and configuration."""
    breaker = make(clock, slow_call_duration=2.0)
    fail(breaker, 2)
    assert repr(breaker) == (
        "<CircuitBreaker 'svc' state=closed mode=enforce failure_rate=-/0.5 "
        "slow_call_rate=-/1.0 slow_call_duration=2.0 calls=2 window=CountWindow(10) "
        "minimum_calls=4 open_duration=10.0 half_open_calls=2>"
    )
    fail(breaker, 2)
    assert "state=open retry_after=10.000" in repr(breaker)
    clock.advance(10)
    breaker.call(ok)
    assert "state=half_open trial_permits_left=1" in repr(breaker)


# -- concurrency -------------------------------------------------------------------------
@pytest.mark.parametrize("half_open_calls", [1, 3])
def test_half_open_lets_exactly_the_permitted_trials_through_threads(half_open_calls):
    """Many threads arriving together at half-open: exactly half_open_calls run."""
    clock = FakeClock()
    breaker = make(clock, half_open_calls=half_open_calls)
    trip(breaker)
    clock.advance(10)
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    release = threading.Event()
    admitted: list[int] = []
    rejected: list[int] = []

    def trial(i: int) -> None:
        admitted.append(i)
        SYSTEM_CLOCK.wait_event(release, 10)  # type: ignore[attr-defined]  # SystemClock has it

    def worker(i: int) -> None:
        barrier.wait()
        try:
            breaker.call(trial, i)
        except CircuitOpenError:
            rejected.append(i)
            if len(rejected) == threads_n - half_open_calls:
                release.set()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (half_open_calls, threads_n - half_open_calls) == (
        len(admitted),
        len(rejected),
    )
    assert BreakerState.CLOSED is breaker.state


def test_half_open_lets_exactly_the_permitted_trials_through_tasks(clock):
    """Many asyncio tasks arriving together at half-open: exactly half_open_calls run."""
    breaker = make(clock, half_open_calls=2)
    trip(breaker)
    clock.advance(10)
    admitted = 0

    async def main() -> list[Any]:
        release = asyncio.Event()

        @breaker
        async def trial() -> None:
            nonlocal admitted
            admitted += 1
            await release.wait()

        async def attempt() -> Any:
            try:
                await trial()
            except CircuitOpenError as exc:
                return exc
            return "ran"

        tasks = [asyncio.create_task(attempt()) for _ in range(10)]
        await asyncio.sleep(0)  # noqa: TID251  # let every task reach the breaker
        release.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    assert (admitted, sum(isinstance(r, CircuitOpenError) for r in results)) == (2, 8)


def test_closed_calls_run_concurrently():
    """The closed breaker never holds its lock while calls run: they overlap."""
    breaker = CircuitBreaker("parallel", clock=FakeClock())
    n = 4
    inside = threading.Barrier(n, timeout=10)  # breaks if calls were serialised
    results: list[str] = []

    @breaker
    def call() -> str:
        inside.wait()
        return "ok"

    def worker() -> None:
        results.append(call())

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ["ok"] * n == results
    assert n == breaker.metrics.calls


def test_many_threads_lose_no_outcome():
    """Outcomes recorded from many threads at once all land in the window."""
    breaker = CircuitBreaker(
        "many", window=CountWindow(10_000), minimum_calls=10_000, clock=FakeClock()
    )
    barrier = threading.Barrier(4)
    wrapped = breaker(ok)

    def worker() -> None:
        barrier.wait()
        for _ in range(500):
            wrapped()
        for _ in range(100):
            with pytest.raises(BoomError):
                breaker.call(boom)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m = breaker.metrics
    assert (m.calls, m.successes, m.failures) == (2400, 2000, 400)
