from __future__ import annotations

import asyncio

import pytest

from tipkit import deadline as dl
from tipkit.bulkhead import Bulkhead
from tipkit.errors import DeadlineExceededError
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock, capture_events
from tipkit.timeout import TimedOut, Timeout


def test_call_within_time_returns_its_result(face, clock):
    """A call that finishes in time returns its result through every face."""
    timeout = Timeout(2.0, clock=clock)

    def work() -> str:
        clock.advance(1.5)
        return "done"

    assert face.run(timeout, work) == "done"


def test_late_return_raises_deadline_exceeded(face, clock):
    """A call returning after its deadline raises DeadlineExceededError, every face."""
    timeout = Timeout(2.0, name="fetch", clock=clock)

    def work() -> str:
        clock.advance(2.0)
        return "too late"

    with (
        capture_events(TimedOut) as events,
        pytest.raises(DeadlineExceededError) as info,
    ):
        face.run(timeout, work)
    assert (info.value.name, info.value.timeout) == ("fetch", 2.0)
    assert isinstance(info.value, TimeoutError)
    assert [(e.name, e.timeout, e.cancelled) for e in events] == [("fetch", 2.0, False)]


def test_the_call_sees_its_deadline(face, clock):
    """Inside the call, tipkit.deadline.remaining() reads the time left."""
    timeout = Timeout(2.0, clock=clock)

    def work() -> float | None:
        clock.advance(0.5)
        return dl.remaining()

    assert face.run(timeout, work) == 1.5
    assert dl.remaining() is None


def test_exceptions_pass_through_unchanged(face, clock):
    """The call's own exception passes through, even after the deadline."""
    timeout = Timeout(1.0, clock=clock)
    err = KeyError("k")

    def work() -> None:
        clock.advance(5)
        raise err

    with pytest.raises(KeyError) as info:
        face.run(timeout, work)
    assert err is info.value


def test_an_expired_outer_deadline_refuses_to_start(face, clock):
    """Inside a passed deadline the call never starts."""
    timeout = Timeout(5.0, clock=clock)
    ran = []
    with dl.deadline(1.0, name="request", clock=clock):
        clock.advance(1)
        with pytest.raises(DeadlineExceededError, match=r"1.0s \(request\) exceeded"):
            face.run(timeout, lambda: ran.append(1))
    assert ran == []


def test_nested_timeouts_take_the_earliest(clock):
    """An inner longer timeout keeps the outer, earlier deadline."""
    outer = Timeout(1.0, name="outer", clock=clock)
    inner = Timeout(10.0, name="inner", clock=clock)

    def work() -> float | None:
        return dl.remaining()

    assert outer.call(inner.call, work) == 1.0

    def slow() -> None:
        clock.advance(2)

    with pytest.raises(DeadlineExceededError) as info:
        outer.call(inner.call, slow)
    assert info.value.name == "outer"


def test_inner_guards_refuse_past_the_deadline(clock):
    """A guard inside a timeout never waits past its deadline."""
    timeout = Timeout(1.0, clock=clock)
    bulkhead = Bulkhead("db", max_concurrent=1, max_wait=30.0, clock=clock)
    with bulkhead, pytest.raises(DeadlineExceededError):
        timeout.call(bulkhead.call, lambda: None)
    assert clock.waits == [1.0]


def test_async_work_is_cancelled_at_the_deadline():
    """Async work still running at the deadline is cancelled (real loop timer)."""
    cancelled = []

    @Timeout(0.01, name="hang")
    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with (
        capture_events(TimedOut) as events,
        pytest.raises(DeadlineExceededError) as info,
    ):
        asyncio.run(hang())
    assert cancelled == [True]
    assert isinstance(info.value.__cause__, TimeoutError)
    assert [e.cancelled for e in events] == [True]


def test_async_with_cancels_the_block():
    """`async with Timeout(...)` cancels the block at the deadline."""

    async def main() -> None:
        async with Timeout(0.01):
            await asyncio.Event().wait()

    with pytest.raises(DeadlineExceededError, match="cancelled"):
        asyncio.run(main())


def test_async_work_raising_its_own_timeout_error_passes_through():
    """A TimeoutError from the work itself (not our timer) is not rewritten."""

    async def main() -> None:
        async def work() -> None:
            raise TimeoutError("downstream")

        await Timeout(10.0).acall(work)

    with pytest.raises(TimeoutError, match="downstream") as info:
        asyncio.run(main())
    assert not isinstance(info.value, DeadlineExceededError)


def test_cancelled_outer_task_is_not_reported_as_timeout():
    """Cancelling the task from outside propagates CancelledError, not a timeout."""

    async def main() -> None:
        task = asyncio.create_task(Timeout(10.0).acall(asyncio.Event().wait))
        await asyncio.sleep(0)  # noqa: TID251  # let the task start waiting
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())


def test_counters_count_outcomes(clock):
    """tipkit.timeout.calls counts success, failure and timeout per name."""
    timeout = Timeout(1.0, name="counted-timeout", clock=clock)
    timeout.call(lambda: None)
    with pytest.raises(ValueError):
        timeout.call(_raise_value_error)
    with pytest.raises(DeadlineExceededError):
        timeout.call(clock.advance, 2)

    def value(outcome: str) -> int:
        return REGISTRY.value(
            names.TIMEOUT_CALLS,
            {names.TIMEOUT_NAME: "counted-timeout", names.OUTCOME: outcome},
        )

    assert (value("success"), value("failure"), value("timeout")) == (1, 1, 1)


def _raise_value_error() -> None:
    raise ValueError


def test_repr_and_otel_attributes(clock):
    """Repr shows name and seconds; the event exports safe attributes."""
    assert repr(Timeout(0.5, clock=clock)) == "<Timeout 'timeout' seconds=0.5>"
    event = TimedOut("t", 0.5, cancelled=True)
    assert event.otel_attributes() == {
        names.TIMEOUT_NAME: "t",
        "tipkit.timeout.seconds": 0.5,
        "tipkit.timeout.cancelled": True,
    }


def test_with_exit_without_enter_is_an_error(clock):
    """Exiting a timeout that was not entered in this context raises RuntimeError."""
    with pytest.raises(RuntimeError, match="without a matching enter"):
        Timeout(1.0, clock=clock).__exit__(None, None, None)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((0,), {}, ValueError, "seconds must be > 0"),
        ((-1,), {}, ValueError, "seconds must be > 0"),
        (("1",), {}, TypeError, "seconds must be seconds"),
        ((float("inf"),), {}, ValueError, "finite"),
        ((1,), {"name": ""}, TypeError, "name must be a non-empty str"),
        ((1,), {"clock": "system"}, TypeError, "clock must provide"),
    ],
)
def test_invalid_arguments_are_named(args, kwargs, error, match):
    """Every invalid argument raises a clear error naming it."""
    with pytest.raises(error, match=match):
        Timeout(*args, **kwargs)


def test_fake_clock_timeout_in_async_code_reports_late_return():
    """Under FakeClock, async work overrunning on the fake clock is reported late."""
    clock = FakeClock()

    async def work() -> None:
        await clock.asleep(3)

    with pytest.raises(DeadlineExceededError, match="returned too late"):
        asyncio.run(Timeout(1.0, clock=clock).acall(work))


def test_compose_accepts_a_timeout_through_every_face(face, clock):
    """A Timeout composes with a guard; every face enforces its deadline."""
    from tipkit import compose

    bulkhead = Bulkhead("db", max_concurrent=1, clock=clock)
    both = compose(bulkhead, Timeout(1.0, name="inner", clock=clock))

    def slow() -> None:
        clock.advance(2.0)

    assert face.run(both, dl.remaining) == 1.0
    with pytest.raises(DeadlineExceededError, match=r"1.0s \(inner\) exceeded"):
        face.run(both, slow)
    assert (bulkhead.active, dl.current()) == (0, None)


def test_timeout_is_a_scope_not_a_guard(clock):
    """Timeout's faces come from the core's Scope; it binds the deadline in force."""
    from tipkit._core._guard import Guard
    from tipkit._core._scope import Scope

    timeout = Timeout(3.0, clock=clock)
    with dl.deadline(1.0, name="outer", clock=clock), timeout as bound:
        assert bound.name == "outer"
    assert (isinstance(timeout, Scope), isinstance(timeout, Guard)) == (True, False)
