"""TokenBucket in process: faces, the bound, check, FIFO waiters, give-back, shadow mode."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tests.strategies_ratelimit import (
    EPS,
    bucket_ops,
    counter,
    deadline_in,
    reserve,
    within_bound,
)

from tipkit._core._guard import Wait
from tipkit.errors import DeadlineExceededError, RateLimitedError
from tipkit.ratelimit import KeyedRateLimiter, RateDecision, RateLimited, TokenBucket
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock, capture_events


# -- faces ---------------------------------------------------------------------------------
def test_every_face_admits_capacity_then_rejects(face: Any, clock: FakeClock) -> None:
    """Each face takes one token; with max_wait=0 the call beyond capacity is rejected at once."""
    bucket = TokenBucket("faces", rate=1.0, capacity=2, clock=clock)
    assert face.run(bucket, lambda: "ok") == "ok"
    assert face.run(bucket, lambda: "ok") == "ok"
    with pytest.raises(RateLimitedError, match="rate limit 'faces' exceeded") as info:
        face.run(bucket, lambda: "never")
    assert info.value.retry_after == pytest.approx(1.0)
    assert info.value.limiter == "faces"
    assert clock.sleeps == []
    assert clock.waits == []


def test_every_face_waits_up_to_max_wait(face: Any, clock: FakeClock) -> None:
    """With max_wait, a face waits on the clock for its reserved token, then runs."""
    bucket = TokenBucket("patient", rate=2.0, capacity=1, max_wait=1.0, clock=clock)
    face.run(bucket, lambda: None)
    assert face.run(bucket, lambda: "late") == "late"
    assert clock.monotonic() == pytest.approx(0.5)
    assert bucket.waiting == 0


def test_faces_reject_when_the_wait_exceeds_max_wait(
    face: Any, clock: FakeClock
) -> None:
    """A reservation further away than max_wait is refused without waiting or reserving."""
    bucket = TokenBucket("short", rate=1.0, capacity=1, max_wait=0.5, clock=clock)
    face.run(bucket, lambda: None)
    with pytest.raises(RateLimitedError):
        face.run(bucket, lambda: None)
    assert clock.monotonic() == 0
    assert bucket.tokens == 0


@pytest.mark.parametrize("limiter", [TokenBucket, KeyedRateLimiter])
def test_the_limiters_write_no_face_of_their_own(limiter: type) -> None:
    """Every face comes from the core: neither limiter defines one."""
    faces = {"_wrap_sync", "_wrap_async", "__enter__", "__exit__"}
    faces |= {"__aenter__", "__aexit__", "call", "acall"}
    assert set() == faces & set(vars(limiter))


def test_decorator_refuses_generator_functions() -> None:
    """Decorating a generator function is refused at decoration time."""
    bucket = TokenBucket("gen", rate=1, capacity=1)

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator function"):
        bucket(gen)


def test_faces_refuse_a_passed_deadline(clock: FakeClock) -> None:
    """No face admits a call whose tipkit deadline has already passed."""
    bucket = TokenBucket("late", rate=1, capacity=1, clock=clock)
    with deadline_in(clock, 1.0):
        clock.advance(2)
        with pytest.raises(DeadlineExceededError), bucket:
            pass
        with pytest.raises(DeadlineExceededError):
            bucket.acquire()
    assert bucket.tokens == 1


# -- try_acquire and the bound ---------------------------------------------------------
def test_try_acquire_takes_and_refills(clock: FakeClock) -> None:
    """The bucket starts full, refills at rate, and never holds more than capacity."""
    bucket = TokenBucket("refill", rate=10.0, capacity=5, clock=clock)
    assert [bucket.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    clock.advance(0.25)
    assert bucket.try_acquire(2) is True
    assert bucket.try_acquire(1) is False
    clock.advance(100)
    assert bucket.tokens == 5
    assert bucket.try_acquire(5) is True


@settings(max_examples=150)
@given(
    ops=bucket_ops, rate=st.sampled_from([0.5, 1.0, 3.0]), capacity=st.integers(5, 8)
)
def test_try_acquire_matches_a_reference_model(
    ops: list[tuple[str, float]], rate: float, capacity: int
) -> None:
    """Random takes and clock advances: same decisions as a model bucket, bound never exceeded."""
    clock = FakeClock()
    bucket = TokenBucket("model", rate=rate, capacity=capacity, clock=clock)
    level = float(capacity)
    admits: list[tuple[float, float]] = []
    for op, value in ops:
        if op == "advance":
            clock.advance(value)
            level = min(capacity, level + value * rate)
            continue
        took = bucket.try_acquire(value)
        if abs(level - value) > EPS:  # away from float ties, the decision is exact
            assert (level >= value) == took
        if took:
            level -= value
            admits.append((clock.monotonic(), value))
        assert bucket.tokens == pytest.approx(level, abs=1e-6)
    assert within_bound(admits, rate, capacity)


def test_bad_arguments_are_named() -> None:
    """Every invalid argument gives a clear error naming it."""
    with pytest.raises(ValueError, match=r"TokenBucket 'x': rate must be > 0, got 0"):
        TokenBucket("x", rate=0, capacity=1)
    with pytest.raises(ValueError, match="capacity must be > 0, got -1"):
        TokenBucket("x", rate=1, capacity=-1)
    with pytest.raises(ValueError, match="rate must be finite, got inf"):
        TokenBucket("x", rate=float("inf"), capacity=1)
    with pytest.raises(TypeError, match="capacity must be a number"):
        TokenBucket("x", rate=1, capacity="10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rate must be a number"):
        TokenBucket("x", rate=True, capacity=1)
    with pytest.raises(ValueError, match="max_wait must be >= 0"):
        TokenBucket("x", rate=1, capacity=1, max_wait=-1)
    with pytest.raises(ValueError, match="mode must be 'enforce' or 'shadow'"):
        TokenBucket("x", rate=1, capacity=1, mode="loud")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TokenBucket: name must be a non-empty str"):
        TokenBucket("", rate=1, capacity=1)
    with pytest.raises(TypeError, match="clock must provide"):
        TokenBucket("x", rate=1, capacity=1, clock=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="store must implement"):
        TokenBucket("x", rate=1, capacity=1, store=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="runbook must be a URL"):
        TokenBucket("x", rate=1, capacity=1, runbook=3)  # type: ignore[arg-type]
    bucket = TokenBucket("x", rate=1, capacity=10)
    with pytest.raises(
        ValueError, match=r"tokens=11 can never be served: the capacity is 10"
    ):
        bucket.try_acquire(11)
    with pytest.raises(ValueError, match="tokens=11 can never be served"):
        bucket.acquire(11)
    with pytest.raises(ValueError, match="tokens must be a positive finite number"):
        bucket.try_acquire(0)
    with pytest.raises(ValueError, match="tokens must be a positive finite number"):
        bucket.try_acquire(-2)
    with pytest.raises(TypeError, match="tokens must be a number"):
        bucket.try_acquire("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        bucket.acquire(1, timeout=-1)
    with pytest.raises(ValueError, match="mode must be"):
        bucket.mode = "off"  # type: ignore[assignment]


def test_repr_shows_configuration_and_state(clock: FakeClock) -> None:
    """The repr shows name, rate, capacity, live tokens and shadow mode."""
    bucket = TokenBucket("api", rate=10.0, capacity=20, clock=clock)
    bucket.try_acquire(16.5)
    assert repr(bucket) == "<TokenBucket 'api' rate=10/s capacity=20 tokens=3.5>"
    bucket.mode = "shadow"
    assert repr(bucket).endswith("mode=shadow>")
    assert (bucket.rate, bucket.capacity, bucket.max_wait) == (10.0, 20.0, 0.0)


def test_check_reports_the_decision_for_response_headers(clock: FakeClock) -> None:
    """check() decides as try_acquire does and says retry_after, remaining and limit."""
    bucket = TokenBucket("hdr", rate=2.0, capacity=3, clock=clock)
    assert RateDecision(True, 0.0, 1.0, 3.0) == bucket.check(2)
    assert RateDecision(False, 0.5, 1.0, 3.0) == bucket.check(2)
    clock.advance(0.5)
    assert RateDecision(True, 0.0, 0.0, 3.0) == bucket.check(2)
    assert (counter("hdr", "acquired"), counter("hdr", "rejected")) == (2, 1)
    with pytest.raises(ValueError, match="tokens=4 can never be served"):
        bucket.check(4)


def test_check_behind_a_waiter_reports_no_negative_remaining(clock: FakeClock) -> None:
    """While a waiter holds a reservation, check() refuses and reports 0 remaining."""
    bucket = TokenBucket("hdr-queue", rate=1.0, capacity=1, clock=clock)
    bucket.acquire()
    assert isinstance(reserve(bucket, clock, 1), Wait)
    assert RateDecision(False, 2.0, 0.0, 1.0) == bucket.check()


def test_check_in_shadow_mode_allows_and_counts_what_it_would_refuse(
    clock: FakeClock,
) -> None:
    """In shadow mode check() allows everything and counts would_reject."""
    bucket = TokenBucket("hdr-shadow", rate=1.0, capacity=1, mode="shadow", clock=clock)
    assert RateDecision(True, 0.0, 0.0, 1.0) == bucket.check()
    assert RateDecision(True, 0.0, 0.0, 1.0) == bucket.check()
    assert 1 == bucket.would_reject


# -- acquire with a timeout, FIFO, give-back ------------------------------------------------
def test_acquire_fails_at_once_when_the_reservation_is_beyond_the_timeout(
    clock: FakeClock,
) -> None:
    """acquire(timeout) refuses without waiting or reserving when tokens come too late."""
    bucket = TokenBucket("t", rate=1.0, capacity=4, clock=clock)
    bucket.acquire(4)
    with pytest.raises(RateLimitedError) as info:
        bucket.acquire(3, timeout=2.5)
    assert info.value.retry_after == pytest.approx(3.0)
    assert clock.monotonic() == 0
    assert bucket.tokens == 0
    assert bucket.waiting == 0
    bucket.acquire(3, timeout=3.0)
    assert clock.monotonic() == pytest.approx(3.0)
    assert clock.waits == [pytest.approx(3.0)]


def test_acquire_refuses_a_wait_longer_than_the_outer_deadline(
    clock: FakeClock,
) -> None:
    """A reservation that would end after the current deadline fails at once, reserving nothing."""
    bucket = TokenBucket("d", rate=1.0, capacity=2, clock=clock)
    bucket.acquire(2)
    with (
        deadline_in(clock, 1.0),
        pytest.raises(
            DeadlineExceededError,
            match=r"needs 2.000s for 2 tokens, more than the 1.000s left: .*\(outer\)",
        ),
    ):
        bucket.acquire(2)
    assert bucket.tokens == 0
    assert clock.waits == []


def test_waiters_are_served_first_come_first_served(clock: FakeClock) -> None:
    """A large waiter is not overtaken: later small requests queue behind it."""
    bucket = TokenBucket("fifo", rate=1.0, capacity=5, clock=clock)
    bucket.acquire(5)
    big = reserve(bucket, clock, 5)
    small = reserve(bucket, clock, 1)
    assert isinstance(big, Wait)
    assert isinstance(small, Wait)
    assert (big.seconds, small.seconds) == (5.0, 6.0)
    clock.advance(5.5)
    assert bucket.try_acquire(1) is False  # the tokens belong to the queue
    assert bucket._step(clock.monotonic(), big) is True
    assert isinstance(bucket._step(clock.monotonic(), small), Wait)
    clock.advance(0.5)
    assert bucket._step(clock.monotonic(), small) is True
    assert bucket.waiting == 0


def test_async_waiters_are_admitted_in_arrival_order(clock: FakeClock) -> None:
    """Tasks that wait are admitted in the order they asked, whatever their sizes."""
    bucket = TokenBucket("order", rate=2.0, capacity=4, clock=clock)
    bucket.try_acquire(4)
    order: list[int] = []

    async def ask(i: int, tokens: int) -> None:
        await bucket.acquire_async(tokens)
        order.append(i)

    async def main() -> None:
        await asyncio.gather(*(ask(i, n) for i, n in enumerate([4, 1, 3, 1, 2])))

    asyncio.run(main())
    assert order == [0, 1, 2, 3, 4]


def test_a_cancelled_waiter_gives_back_and_later_waiters_move_forward(
    clock: FakeClock,
) -> None:
    """Giving back moves the waiters behind forward, so the tokens are never spent twice."""
    bucket = TokenBucket("giveback", rate=1.0, capacity=1, clock=clock)
    bucket.acquire(1)
    first = reserve(bucket, clock, 1)
    second = reserve(bucket, clock, 1)
    assert isinstance(first, Wait)
    assert isinstance(second, Wait)
    clock.advance(0.9)
    bucket._abandon(first, clock.monotonic())
    assert second.state.ready == pytest.approx(1.0)
    assert second.state.waiter.notified  # woken to wait the shorter time
    assert bucket.tokens == pytest.approx(-0.1)
    # The naive give-back would let a newcomer take a token at t=2 while the second
    # waiter, still scheduled for t=2, also runs: two tokens at one instant, capacity 1.
    clock.advance(0.1)
    assert bucket._step(clock.monotonic(), second) is True
    admits = [(1.0, 1.0)]
    for _ in range(20):
        clock.advance(0.25)
        if bucket.try_acquire():
            admits.append((clock.monotonic(), 1.0))
    assert within_bound([(0.0, 1.0), *admits], 1.0, 1)
    assert len(admits) >= 5  # t=1 (waiter), then about one per second (float steps)


def test_giving_back_twice_or_after_admission_does_nothing(clock: FakeClock) -> None:
    """An admitted or already returned reservation cannot be returned again."""
    bucket = TokenBucket("once", rate=1.0, capacity=1, clock=clock)
    bucket.acquire(1)
    step = reserve(bucket, clock, 1)
    assert isinstance(step, Wait)
    bucket._abandon(step, 0.0)
    bucket._abandon(step, 0.0)
    assert bucket.tokens == 0
    step = reserve(bucket, clock, 1)
    assert isinstance(step, Wait)
    clock.advance(1)
    assert bucket._step(1.0, step) is True
    bucket._abandon(step, 1.0)
    assert bucket.tokens == 0


def test_async_cancellation_returns_the_reservation(clock: FakeClock) -> None:
    """A cancelled acquire_async gives its tokens back; the next waiter is served sooner."""
    bucket = TokenBucket("cancel", rate=1.0, capacity=2, clock=clock)
    bucket.try_acquire(2)
    admitted: list[float] = []

    async def main() -> None:
        victim = asyncio.create_task(bucket.acquire_async(2))
        await asyncio.sleep(0)  # noqa: TID251  # lets the victim reserve; waits for nothing
        assert bucket.waiting == 1
        victim.cancel()
        await asyncio.wait([victim])
        assert victim.cancelled()
        assert bucket.waiting == 0
        assert bucket.tokens == 0
        await bucket.acquire_async(1)
        admitted.append(clock.monotonic())

    asyncio.run(main())
    assert admitted == [pytest.approx(1.0)]


def test_an_interrupted_sync_waiter_returns_the_reservation() -> None:
    """A sync waiter interrupted while waiting gives its reservation back."""

    class Interrupting(FakeClock):
        def wait_event(self, event: threading.Event, timeout: float) -> bool:
            raise KeyboardInterrupt

    clock = Interrupting()
    bucket = TokenBucket("sync-cancel", rate=1.0, capacity=1, clock=clock)
    bucket.acquire()
    with pytest.raises(KeyboardInterrupt):
        bucket.acquire()
    assert bucket.waiting == 0
    assert bucket.tokens == 0


def test_a_waiter_timed_out_by_the_deadline_returns_the_reservation(
    clock: FakeClock,
) -> None:
    """A waiter woken early keeps waiting; one whose deadline passes gives back its tokens."""
    bucket = TokenBucket("woken", rate=1.0, capacity=1, clock=clock)
    bucket.acquire()
    first = reserve(bucket, clock, 1)
    second = reserve(bucket, clock, 1)
    assert isinstance(first, Wait)
    assert isinstance(second, Wait)
    with deadline_in(clock, 1.5), pytest.raises(DeadlineExceededError):
        bucket._wait_sync(second)
    assert bucket.waiting == 1
    assert bucket.tokens == pytest.approx(-1.0 + 1.5)


# -- concurrency -----------------------------------------------------------------------------
def test_eight_threads_never_lose_or_overdraw_tokens() -> None:
    """8 real threads hammering one bucket get exactly its tokens: none lost to contention."""
    clock = FakeClock()
    bucket = TokenBucket("threads", rate=1.0, capacity=2000, clock=clock)
    barrier = threading.Barrier(8)
    got = [0] * 8

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(500):
            if bucket.try_acquire():
                got[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(got) == 2000
    assert bucket.tokens == 0


def test_eight_threads_with_a_moving_clock_stay_within_the_bound() -> None:
    """Threads taking while another advances the clock never exceed capacity + rate * t."""
    clock = FakeClock()
    bucket = TokenBucket("moving", rate=100.0, capacity=10, clock=clock)
    barrier = threading.Barrier(9)
    stop = threading.Event()
    admits: list[list[float]] = [[] for _ in range(8)]

    def worker(i: int) -> None:
        barrier.wait()
        while not stop.is_set():
            if bucket.try_acquire():
                admits[i].append(clock.monotonic())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    barrier.wait()
    for _ in range(200):
        clock.advance(0.005)
    stop.set()
    for t in threads:
        t.join()
    total = sum(len(a) for a in admits)
    assert total <= 10 + 100.0 * clock.monotonic()


def test_a_hundred_tasks_share_one_bucket_within_the_bound(clock: FakeClock) -> None:
    """100 asyncio tasks waiting on one bucket are all served, in order, within the bound."""
    bucket = TokenBucket("tasks", rate=10.0, capacity=5, clock=clock)
    admits: list[tuple[float, float]] = []
    order: list[int] = []

    async def worker(i: int) -> None:
        await bucket.acquire_async(1)
        admits.append((clock.monotonic(), 1.0))
        order.append(i)

    async def main() -> None:
        await asyncio.gather(*(worker(i) for i in range(100)))

    asyncio.run(main())
    assert order == list(range(100))
    assert within_bound(admits, 10.0, 5)
    assert bucket.waiting == 0


def test_async_with_and_decorator_wait_in_order(clock: FakeClock) -> None:
    """`async with` and async decorator faces wait through the clock and serve everyone."""
    bucket = TokenBucket(
        "async-faces", rate=5.0, capacity=1, max_wait=10.0, clock=clock
    )
    done: list[str] = []

    @bucket
    async def decorated(i: int) -> None:
        done.append(f"d{i}")

    async def block(i: int) -> None:
        async with bucket:
            done.append(f"w{i}")

    async def main() -> None:
        await asyncio.gather(decorated(0), block(1), decorated(2), block(3))

    asyncio.run(main())
    assert done == ["d0", "w1", "d2", "w3"]
    assert clock.monotonic() >= 0.6 - EPS


# -- shadow mode -------------------------------------------------------------------------------
def test_shadow_mode_admits_everything_and_counts_would_reject(
    clock: FakeClock,
) -> None:
    """Shadow mode decides and reports as enforcement would, but admits every call."""
    bucket = TokenBucket("shadowed", rate=1.0, capacity=1, mode="shadow", clock=clock)
    with capture_events(RateLimited) as events:
        assert [bucket.try_acquire() for _ in range(3)] == [True, True, True]
        with bucket:
            pass
    assert bucket.would_reject == 3
    assert bucket.tokens == 0  # tokens follow enforcement: rejected calls took none
    assert [e.shadow for e in events] == [True, True, True]
    assert events[0].retry_after == pytest.approx(1.0)
    assert counter("shadowed", "rejected", "shadow") == 3
    assert counter("shadowed", "acquired", "shadow") == 1
    bucket.mode = "enforce"
    assert bucket.try_acquire() is False
    assert counter("shadowed", "rejected", "enforce") == 1


def test_shadow_mode_reserves_what_enforcement_would_wait_for(clock: FakeClock) -> None:
    """A call enforcement would make wait runs at once in shadow, its tokens reserved."""
    bucket = TokenBucket(
        "shadow-wait", rate=1.0, capacity=1, max_wait=5, mode="shadow", clock=clock
    )
    with bucket:
        pass
    with bucket:
        pass
    assert clock.monotonic() == 0
    assert bucket.tokens == -1
    assert bucket.would_reject == 0
    bucket.acquire(1, timeout=0)  # enforcement would refuse: 2 s away
    assert bucket.would_reject == 1


def test_a_decorated_function_counts_in_the_mode_switched_to(clock: FakeClock) -> None:
    """A function decorated before a mode switch counts under the new mode."""
    bucket = TokenBucket("switch", rate=1.0, capacity=2, clock=clock)
    work = bucket(lambda: None)
    work()
    bucket.mode = "shadow"
    work()
    work()
    assert (counter("switch", "acquired"), counter("switch", "acquired", "shadow")) == (
        1,
        1,
    )
    assert 1 == bucket.would_reject


def test_a_forked_child_admits_with_a_fresh_lock(clock: FakeClock) -> None:
    """After a fork while the lock was held, decorated calls and `with` use the new lock."""
    bucket = TokenBucket("forked", rate=1.0, capacity=3, clock=clock)
    work = bucket(lambda: "ran")
    held = bucket._lock
    held.acquire()  # another thread held it at the moment of the fork
    try:
        bucket._after_fork_in_child()
        assert "ran" == work()
        with bucket:
            pass
        assert bucket.try_acquire() is True
    finally:
        held.release()
    assert 0 == bucket.tokens


# -- telemetry -------------------------------------------------------------------------------
def test_counters_gauge_and_wait_histogram(clock: FakeClock) -> None:
    """Counts acquired/rejected, reports the tokens gauge, records wait only when waiting."""
    bucket = TokenBucket("metrics", rate=1.0, capacity=1, max_wait=3, clock=clock)
    recorded: list[tuple[str, float]] = []
    REGISTRY.histogram_sink = lambda name, value, attrs: recorded.append((name, value))
    try:
        bucket.try_acquire()
        assert recorded == []
        with bucket:
            pass
    finally:
        REGISTRY.histogram_sink = None
    assert recorded == [(names.RATELIMIT_WAIT, pytest.approx(1.0))]
    assert bucket.try_acquire() is False
    assert counter("metrics", "acquired") == 2
    assert counter("metrics", "rejected") == 1
    gauges = [
        g
        for g in REGISTRY.gauges(names.RATELIMIT_TOKENS)
        if g.attributes[names.RATELIMIT_NAME] == "metrics"
    ]
    assert [g.value for g in gauges] == [0.0]


@settings(max_examples=300)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("reserve"), st.integers(1, 2)),
            st.tuples(st.just("try"), st.integers(1, 2)),
            st.tuples(st.just("cancel"), st.integers(0, 5)),
            st.tuples(st.just("advance"), st.sampled_from([0.1, 0.5, 0.9, 1.0, 2.0])),
        ),
        max_size=40,
    ),
    capacity=st.integers(2, 3),
)
# A give-back that just adds the tokens to the bucket fails here: the second waiter,
# still due at t=3, runs alongside a newcomer taking the refilled bucket (3 > 2).
@example(
    ops=[
        ("try", 2),
        ("reserve", 2),
        ("reserve", 1),
        ("cancel", 0),
        ("advance", 2.0),
        ("advance", 1.0),
        ("try", 2),
    ],
    capacity=2,
)
def test_reservations_and_give_backs_never_exceed_the_bound(
    ops: list[tuple[str, float]], capacity: int
) -> None:
    """Random waiters, give-backs and tries: admissions, at their due times, stay bounded."""
    clock = FakeClock()
    rate = 1.0
    bucket = TokenBucket("giveback-model", rate=rate, capacity=capacity, clock=clock)
    admits: list[tuple[float, float]] = []
    pending: list[tuple[Wait, float]] = []

    def poll() -> None:
        now = clock.monotonic()
        for wait, tokens in list(pending):
            due = wait.state.ready
            if bucket._step(now, wait) is True:
                admits.append((due, tokens))
                pending.remove((wait, tokens))

    for op, value in ops:
        if op == "reserve":
            step = reserve(bucket, clock, value)
            if isinstance(step, Wait):
                pending.append((step, value))
            else:
                admits.append((clock.monotonic(), value))
        elif op == "try":
            if bucket.try_acquire(value):
                admits.append((clock.monotonic(), value))
        elif op == "cancel" and pending:
            wait, _ = pending.pop(int(value) % len(pending))
            bucket._abandon(wait, clock.monotonic())
        elif op == "advance":
            clock.advance(value)
        poll()
    clock.advance(100)
    poll()
    assert pending == []
    assert within_bound(admits, rate, capacity)
    assert bucket.tokens == capacity


def test_one_token_from_a_bucket_smaller_than_one_token_is_a_clear_error() -> None:
    """try_acquire() (one token) on a bucket of capacity 0.5 raises instead of failing forever."""
    bucket = TokenBucket("tiny", rate=1.0, capacity=0.5, clock=FakeClock())
    with pytest.raises(ValueError, match="can never be served"):
        bucket.try_acquire()
    assert bucket.try_acquire(0.5) is True
