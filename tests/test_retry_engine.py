"""The retry engine: one iterator of attempts, a sync and an async driver over it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tipkit.deadline import deadline
from tipkit.retry import RetryGaveUp, RetryScheduled, retry
from tipkit.retry._engine import Attempt, Attempts, Counters
from tipkit.testing import FakeClock, capture_events

NO_JITTER = {"wait_jitter": 0.0}


class DriverClock(FakeClock):
    """A fake clock that records which driver waited: 'sleep' or 'asleep'."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[str] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append("sleep")
        super().sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        self.waits.append("asleep")  # FakeClock.asleep then records through sleep()
        await super().asleep(seconds)


def loop_of(
    clock: FakeClock, error: Exception | None = None, **config: Any
) -> Attempts:
    """Return a fresh engine for a retry built with *config* on *clock*."""
    policy = retry(on=ValueError, clock=clock, **NO_JITTER, **config)._policy
    if error is None:
        return Attempts(policy, "engine", Counters("engine"), clock.monotonic())
    loop = Attempts.after(policy, "engine", Counters("engine"), 0.0, error)
    assert loop is not None
    return loop


def failing_until(success_at: int) -> Callable[[Attempt], None]:
    """Return a block body that raises ValueError before attempt *success_at*."""

    def body(attempt: Attempt) -> None:
        if attempt.num < success_at:
            raise ValueError(attempt.num)

    return body


def test_the_first_attempt_does_not_enter_tenacity(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """A success on the first try never asks tenacity anything, in any face."""

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tenacity entered")

    monkeypatch.setattr(Attempts, "_schedule", boom)
    assert retry(on=ValueError, clock=clock)(lambda: 3)() == 3
    assert retry(on=ValueError, clock=clock).call(lambda: 4) == 4
    loop = loop_of(clock)
    for attempt in loop:
        with attempt:
            pass
    assert clock.sleeps == []


def test_the_sync_driver_sleeps_and_the_async_driver_awaits() -> None:
    """A for loop sleeps on clock.sleep, async for awaits asleep; both take the same steps."""
    sync_clock, async_clock = DriverClock(), DriverClock()
    body = failing_until(3)
    seen_sync = []
    for attempt in loop_of(sync_clock):
        with attempt:
            seen_sync.append(attempt.num)
            body(attempt)

    async def main() -> list[int]:
        seen = []
        async for attempt in loop_of(async_clock):
            with attempt:
                seen.append(attempt.num)
                body(attempt)
        return seen

    assert asyncio.run(main()) == seen_sync == [1, 2, 3]
    assert (sync_clock.waits, async_clock.waits) == (
        ["sleep", "sleep"],
        ["asleep", "sleep", "asleep", "sleep"],
    )
    assert sync_clock.sleeps == async_clock.sleeps == [0.1, 0.2]


def test_a_loop_that_is_over_stays_over(clock: FakeClock) -> None:
    """After success or giving up, the iterator is exhausted for good."""
    loop = loop_of(clock)
    attempt = next(loop)
    with attempt:
        pass
    assert next(loop, None) is None
    assert next(loop, None) is None
    gave_up = loop_of(clock, attempts=1)
    with next(gave_up):
        raise ValueError("only")
    with pytest.raises(ValueError, match="only"):
        next(gave_up)
    assert next(gave_up, None) is None


def test_a_block_never_entered_ends_the_loop(clock: FakeClock) -> None:
    """An attempt whose block was never entered counts as one that raised nothing."""
    assert [a.num for a in loop_of(clock)] == [1]


def test_a_loop_begun_with_a_failure_schedules_attempt_two(clock: FakeClock) -> None:
    """Given the first attempt's error (the decorator's fast path), it waits, then yields 2."""
    with capture_events(RetryScheduled) as events:
        attempt = next(loop_of(clock, error=ValueError("first")))
    assert attempt.num == 2
    assert clock.sleeps == [0.1]
    assert [(e.attempt, e.wait) for e in events] == [(2, 0.1)]


def test_errors_outside_exception_end_the_loop(clock: FakeClock) -> None:
    """A KeyboardInterrupt passes the attempt and the loop stops."""
    loop = loop_of(clock)
    with pytest.raises(KeyboardInterrupt), next(loop):
        raise KeyboardInterrupt
    assert next(loop, None) is None


def test_threads_sharing_one_retry_each_get_their_own_loop() -> None:
    """Real threads retrying through one policy at once: every call makes its attempts."""
    threads_n = 8
    clock = FakeClock()
    barrier = threading.Barrier(threads_n)
    calls = [0] * threads_n
    policy = retry(on=ValueError, attempts=3, clock=clock, **NO_JITTER)
    results: list[object] = [None] * threads_n

    def work(i: int) -> str:
        calls[i] += 1
        barrier.wait(timeout=10)
        if calls[i] < 3:
            raise ValueError(i)
        return f"ok {i}"

    def run(i: int) -> None:
        results[i] = policy.call(work, i)

    with capture_events(RetryGaveUp) as gave_up:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert results == [f"ok {i}" for i in range(threads_n)]
    assert calls == [3] * threads_n
    assert gave_up == []


def test_tasks_interleaving_their_retries_each_count_their_own_attempts() -> None:
    """Async tasks that fail and retry in lockstep keep separate attempt counts."""
    tasks_n = 5
    clock = FakeClock()
    policy = retry(on=ValueError, attempts=3, name="lockstep", clock=clock, **NO_JITTER)

    async def main() -> tuple[list[object], list[RetryGaveUp]]:
        barrier = asyncio.Barrier(tasks_n)
        calls = [0] * tasks_n

        async def work(i: int) -> str:
            calls[i] += 1
            await barrier.wait()
            if i % 2 or calls[i] < 3:  # odd tasks never succeed
                raise ValueError(i)
            return f"ok {i}"

        with capture_events(RetryGaveUp) as gave_up:
            results = await asyncio.gather(
                *(policy.acall(work, i) for i in range(tasks_n)),
                return_exceptions=True,
            )
        return results, gave_up

    results, gave_up = asyncio.run(main())
    assert [r if isinstance(r, str) else repr(r) for r in results] == [
        "ok 0",
        "ValueError(1)",
        "ok 2",
        "ValueError(3)",
        "ok 4",
    ]
    assert [(e.attempts, e.reason) for e in gave_up] == [(3, "attempts")] * 2


class OversleepingClock(FakeClock):
    """A fake clock whose every sleep overruns by *extra* seconds."""

    def __init__(self, extra: float) -> None:
        super().__init__()
        self.extra = extra

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.advance(self.extra)


def always_failing(loop: Attempts, driver: str) -> list[int]:
    """Drive *loop* with *driver* ("for" or "async for"), every block failing."""
    seen: list[int] = []

    async def drive_async() -> None:
        async for attempt in loop:
            with attempt:
                seen.append(attempt.num)
                raise ValueError(attempt.num)

    def drive_sync() -> None:
        for attempt in loop:
            with attempt:
                seen.append(attempt.num)
                raise ValueError(attempt.num)

    with pytest.raises(ValueError, match="1"):
        drive_sync() if driver == "for" else asyncio.run(drive_async())
    return seen


@pytest.mark.parametrize("driver", ["for", "async for"])
def test_a_wait_that_overran_the_timeout_starts_no_attempt(driver: str) -> None:
    """A sleep that ends past the timeout gives up with reason timeout, attempt unstarted."""
    loop = loop_of(OversleepingClock(extra=1.0), timeout=0.5)
    with capture_events(RetryGaveUp) as gave_up:
        assert always_failing(loop, driver) == [1]
    assert [(e.attempts, e.reason) for e in gave_up] == [(1, "timeout")]


@pytest.mark.parametrize("driver", ["for", "async for"])
def test_a_wait_that_overran_an_outer_deadline_starts_no_attempt(driver: str) -> None:
    """A sleep that ends past the current tipkit deadline gives up with reason deadline."""
    clock = OversleepingClock(extra=1.0)
    loop = loop_of(clock, timeout=30)
    with (
        deadline(0.5 - clock.monotonic(), clock=clock),
        capture_events(RetryGaveUp) as gave_up,
    ):
        assert always_failing(loop, driver) == [1]
    assert [(e.attempts, e.reason) for e in gave_up] == [(1, "deadline")]


def test_the_loop_is_its_own_first_attempt(clock: FakeClock) -> None:
    """The first attempt is the loop itself (one allocation); later ones are fresh."""
    loop = loop_of(clock)
    first = next(loop)
    with first:
        raise ValueError
    second = next(loop)
    with second:
        pass
    assert (True, "<Attempt 1>", 1, False, 2, "<Attempt 2>") == (
        first is loop,
        repr(first),
        first.num,
        second is loop,
        second.num,
        repr(second),
    )
    assert [] == list(loop)
