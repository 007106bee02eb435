"""Retry faces: every way of retrying (decorator, call, async twins, retry_context) alike."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tipkit._core._compose import compose
from tipkit.deadline import deadline
from tipkit.errors import (
    BulkheadFullError,
    CircuitOpenError,
    RateLimitedError,
    RejectedError,
)
from tipkit.ratelimit import TokenBucket
from tipkit.retry import (
    RetryGaveUp,
    is_testing,
    retry,
    retry_context,
    set_testing,
)
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock, capture_events

WAYS = ["decorator", "call", "async_decorator", "acall", "context", "async_context"]


class Way:
    """One way of retrying work: decorator, call, their async twins, retry_context."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def run(self, fn: Callable[[], Any], **config: Any) -> Any:
        """Run the synchronous *fn* under a retry built with *config*; return its result."""
        if self.name in ("context", "async_context"):
            return self._context(fn, **config)
        policy = retry(**config)
        if self.name == "decorator":
            return policy(fn)()
        if self.name == "call":
            return policy.call(fn)

        async def afn() -> Any:
            return fn()

        async def main() -> Any:
            if self.name == "async_decorator":
                return await policy(afn)()
            return await policy.acall(afn)

        return asyncio.run(main())

    def _context(self, fn: Callable[[], Any], **config: Any) -> Any:
        block = retry_context(**config)
        if self.name == "context":
            for attempt in block:
                with attempt:
                    return fn()
            return None

        async def main() -> Any:
            async for attempt in block:
                with attempt:
                    return fn()
            return None

        return asyncio.run(main())


@pytest.fixture(params=WAYS)
def way(request: pytest.FixtureRequest) -> Way:
    """Each way of retrying in turn."""
    return Way(request.param)


class Flaky:
    """Fails with the given errors in turn, then returns "ok"; counts calls."""

    def __init__(
        self, *errors: BaseException, clock: FakeClock | None = None, cost: float = 0
    ):
        self.errors = list(errors)
        self.calls = 0
        self.clock = clock
        self.cost = cost

    def __call__(self) -> str:
        self.calls += 1
        if self.clock is not None and self.cost:
            self.clock.advance(self.cost)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


@contextlib.contextmanager
def deadline_in(clock: FakeClock, seconds: float) -> Iterator[None]:
    with deadline(seconds, name="outer", clock=clock):
        yield


NO_JITTER = {"wait_jitter": 0.0}


# -- every way ---------------------------------------------------------------------------------
def test_success_on_the_first_try_never_sleeps(way: Way, clock: FakeClock) -> None:
    """A first-try success returns at once, without sleeping."""
    fn = Flaky()
    assert way.run(fn, on=ValueError, clock=clock) == "ok"
    assert (fn.calls, clock.sleeps) == (1, [])


def test_retries_until_success_with_exponential_waits(
    way: Way, clock: FakeClock
) -> None:
    """Retriable failures are retried after waits that grow exponentially."""
    fn = Flaky(ValueError(1), ValueError(2), ValueError(3))
    result = way.run(
        fn, on=ValueError, wait_initial=0.1, wait_exp_base=3, clock=clock, **NO_JITTER
    )
    assert result == "ok"
    assert fn.calls == 4
    assert clock.sleeps == [pytest.approx(0.1), pytest.approx(0.3), pytest.approx(0.9)]


def test_gives_up_after_attempts_reraising_the_last_error_itself(
    way: Way, clock: FakeClock
) -> None:
    """After the last attempt the last exception itself is raised, without a final sleep."""
    last = ValueError("third")
    fn = Flaky(ValueError("first"), ValueError("second"), last)
    with pytest.raises(ValueError, match="third") as info:
        way.run(fn, on=ValueError, attempts=3, clock=clock)
    assert info.value is last
    assert info.value.__context__ is None  # not chained to the earlier attempts
    assert fn.calls == 3
    assert len(clock.sleeps) == 2


def test_errors_not_named_by_on_pass_at_once(way: Way, clock: FakeClock) -> None:
    """An error *on* does not name is raised from the first attempt, unretried."""
    fn = Flaky(KeyError("k"))
    with pytest.raises(KeyError):
        way.run(fn, on=ValueError, clock=clock)
    assert (fn.calls, clock.sleeps) == (1, [])


def test_rejections_are_not_retried_by_default(way: Way, clock: FakeClock) -> None:
    """A RejectedError is never retried unless asked, even when *on* covers it."""
    for error in (
        CircuitOpenError("open", name="b", retry_after=1.0),
        RateLimitedError("limited", name="r", retry_after=0.1),
        BulkheadFullError("full", name="h"),
    ):
        fn = Flaky(error)
        with pytest.raises(RejectedError):
            way.run(fn, on=Exception, clock=clock)
        assert fn.calls == 1
    assert clock.sleeps == []


def test_asked_for_rejections_honour_retry_after(way: Way, clock: FakeClock) -> None:
    """Naming a rejection in *on* retries it after its retry_after instead of the backoff."""
    fn = Flaky(RateLimitedError("limited", name="r", retry_after=0.75))
    assert way.run(fn, on=RateLimitedError, clock=clock) == "ok"
    assert clock.sleeps == [0.75]


def test_retry_after_beyond_the_deadline_gives_up_without_sleeping(
    way: Way, clock: FakeClock
) -> None:
    """A retry_after that does not fit in the time left ends the retry at once."""
    error = CircuitOpenError("open", name="b", retry_after=30.0)
    fn = Flaky(error)
    with pytest.raises(CircuitOpenError) as info:
        way.run(fn, on=Exception, retry_rejected=True, timeout=10.0, clock=clock)
    assert info.value is error
    assert (fn.calls, clock.sleeps) == (1, [])


def test_gives_up_without_sleeping_when_the_next_wait_reaches_the_timeout(
    way: Way, clock: FakeClock
) -> None:
    """When now plus the next wait reaches the timeout, it gives up instead of sleeping."""
    fn = Flaky(*(ValueError(i) for i in range(10)))
    with pytest.raises(ValueError, match="1"):
        way.run(
            fn, on=ValueError, timeout=1.0, wait_initial=0.4, clock=clock, **NO_JITTER
        )
    assert clock.sleeps == [pytest.approx(0.4)]  # 0.4 + 0.8 would reach 1.0
    assert fn.calls == 2


def test_never_starts_an_attempt_past_the_timeout(way: Way, clock: FakeClock) -> None:
    """Slow attempts count against the timeout, measured from the first attempt's start."""
    fn = Flaky(*(ValueError(i) for i in range(10)), clock=clock, cost=0.3)
    with pytest.raises(ValueError):
        way.run(
            fn, on=ValueError, timeout=1.0, wait_initial=0.1, clock=clock, **NO_JITTER
        )
    # Attempt 1 ends at 0.3, waits 0.1; attempt 2 ends at 0.7, 0.7 + 0.2 < 1: waits;
    # attempt 3 starts at 0.9 and ends at 1.2; no attempt starts at or past 1.0.
    assert fn.calls == 3
    assert clock.sleeps == [pytest.approx(0.1), pytest.approx(0.2)]


def test_an_outer_deadline_ends_retrying(way: Way, clock: FakeClock) -> None:
    """An outer tipkit deadline stops retries that would wait past it."""
    fn = Flaky(*(ValueError(i) for i in range(10)))
    with (
        capture_events(RetryGaveUp) as events,
        deadline_in(clock, 0.5),
        pytest.raises(ValueError),
    ):
        way.run(
            fn, on=ValueError, timeout=30, wait_initial=0.4, clock=clock, **NO_JITTER
        )
    assert clock.sleeps == [pytest.approx(0.4)]
    assert [e.reason for e in events] == ["deadline"]


def test_keyboard_interrupt_and_cancellation_are_never_retried(
    way: Way, clock: FakeClock
) -> None:
    """BaseExceptions that are not Exceptions pass through even with on=BaseException."""
    fn = Flaky(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        way.run(fn, on=BaseException, clock=clock)
    assert fn.calls == 1


def test_a_predicate_decides_what_is_retried(way: Way, clock: FakeClock) -> None:
    """*on* may be a synchronous predicate over the exception."""
    fn = Flaky(OSError(5, "io"), OSError(2, "missing"))
    with pytest.raises(OSError, match="missing"):
        way.run(
            fn, on=lambda exc: isinstance(exc, OSError) and exc.errno == 5, clock=clock
        )
    assert fn.calls == 2


def test_set_testing_makes_retries_instant_and_capped(
    way: Way, clock: FakeClock
) -> None:
    """set_testing: no waits and the given number of attempts, restored afterwards."""
    with set_testing(True, attempts=2):
        assert is_testing()
        fn = Flaky(ValueError(1), ValueError(2), ValueError(3))
        with pytest.raises(ValueError, match="2"):
            way.run(fn, on=ValueError, attempts=10, clock=clock)
        assert fn.calls == 2
        with set_testing(True, attempts=5, cap=True):
            fn = Flaky(*(ValueError(i) for i in range(10)))
            with pytest.raises(ValueError):
                way.run(fn, on=ValueError, attempts=3, clock=clock)
            assert fn.calls == 3
        assert is_testing()
    assert not is_testing()
    assert clock.sleeps == []


def test_every_way_counts_attempts_by_outcome(way: Way, clock: FakeClock) -> None:
    """Each way counts retried per wait, success after a retry, failure if not retriable."""
    name = f"counted-{way.name}"

    def value(outcome: str) -> int:
        return REGISTRY.value(
            names.RETRY_ATTEMPTS, {names.RETRY_NAME: name, names.OUTCOME: outcome}
        )

    way.run(Flaky(ValueError(1), ValueError(2)), on=ValueError, name=name, clock=clock)
    way.run(Flaky(), on=ValueError, name=name, clock=clock)
    with pytest.raises(KeyError):
        way.run(
            Flaky(ValueError(1), KeyError(2)), on=ValueError, name=name, clock=clock
        )
    counted = {o: value(o) for o in ("retried", "success", "failure", "gave_up")}
    assert counted == {"retried": 3, "success": 1, "failure": 1, "gave_up": 0}


# -- shape of the API ---------------------------------------------------------------------------
def test_retry_is_not_a_with_block_and_compose_refuses_it() -> None:
    """`with retry(...)` and `with compose(retry, ...)` raise, pointing to retry_context."""
    policy = retry(on=ValueError)
    with pytest.raises(TypeError, match="retry_context"), policy:
        pass
    bucket = TokenBucket("composed", rate=1, capacity=1)
    with pytest.raises(TypeError, match="retry_context"), compose(policy, bucket):
        pass


def test_retry_composes_outside_a_limiter_without_hammering_it(
    clock: FakeClock,
) -> None:
    """retry(bucket(f)): the limiter's rejection is not retried; calls beyond it never run."""
    bucket = TokenBucket("outer", rate=1, capacity=1, clock=clock)
    calls = Flaky()
    guarded = compose(retry(on=Exception, clock=clock), bucket)(calls)
    assert guarded() == "ok"
    with pytest.raises(RateLimitedError):
        guarded()
    assert calls.calls == 1
    assert clock.sleeps == []


def test_generators_and_coroutine_functions_are_refused_where_they_cannot_work() -> (
    None
):
    """Generator functions cannot be decorated; call() refuses coroutine functions."""
    policy = retry(on=ValueError)

    def gen() -> Iterator[int]:
        yield 1

    async def coro() -> int:
        return 1

    with pytest.raises(TypeError, match="generator function"):
        policy(gen)
    with pytest.raises(TypeError, match="use `await acall"):
        policy.call(coro)  # type: ignore[arg-type]


def test_reprs_show_the_configuration() -> None:
    """Reprs show on, attempts, timeout and backoff."""
    assert repr(retry(on=(ValueError, KeyError), attempts=3, timeout=10, name="x")) == (
        "<retry 'x' on=(ValueError, KeyError) attempts=3 timeout=10.0 "
        "wait=0.1..5s x2 jitter=1s>"
    )
    assert repr(retry_context(on=ValueError)).startswith(
        "<retry_context 'retry_context' on="
    )
    assert repr(next(iter(retry_context(on=ValueError)))) == "<Attempt 1>"
    assert repr(set_testing(False)).startswith("<set_testing")


def test_retry_context_ends_after_a_block_that_did_not_raise(clock: FakeClock) -> None:
    """The loop ends after the first attempt whose block raised nothing."""
    seen = []
    for attempt in retry_context(on=ValueError, clock=clock):
        with attempt:
            seen.append(attempt.num)
            if attempt.num < 3:
                raise ValueError
    assert seen == [1, 2, 3]


def test_the_module_keeps_its_public_names() -> None:
    """`import tipkit.retry` and every name of its __all__ stay where they were."""
    import tipkit.retry  # noqa: F401  # the import statement itself must work

    module = sys.modules["tipkit.retry"]
    assert module.__all__ == [
        "Attempt",
        "Retry",
        "RetryBudget",
        "RetryGaveUp",
        "RetryScheduled",
        "RetryingBlock",
        "is_testing",
        "retry",
        "retry_context",
        "set_testing",
    ]
    assert all(hasattr(module, public) for public in module.__all__)
    assert {getattr(module, public).__module__ for public in module.__all__} == {
        "tipkit.retry"
    }


def test_call_and_acall_with_a_fallback_retry_first_and_count_under_the_retry_name() -> (
    None
):
    """call/acall of a retry with fallback= retry as without it, then the fallback answers."""
    clock = FakeClock()
    policy = retry(
        on=ConnectionError,
        attempts=2,
        clock=clock,
        name="fb-call",
        fallback="answered",
        fallback_on=ConnectionError,
    )
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) % 2:
            raise ConnectionError
        return "ok"

    def down() -> str:
        calls.append(1)
        raise ConnectionError

    async def aflaky() -> str:
        return flaky()

    async def adown() -> str:
        return down()

    async def both() -> tuple[str, str]:
        return await policy.acall(aflaky), await policy.acall(adown)

    results = (policy.call(flaky), policy.call(down), *asyncio.run(both()))
    retried = REGISTRY.value(
        names.RETRY_ATTEMPTS, {names.RETRY_NAME: "fb-call", names.OUTCOME: "retried"}
    )
    assert (("ok", "answered", "ok", "answered"), 8, 4) == (
        results,
        len(calls),
        retried,
    )
