"""Fallbacks: the fallback guard, and fallback= on every guard through its faces."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.conftest import Face

from tipkit.adaptive import AdaptiveLimit
from tipkit.breaker import CircuitBreaker
from tipkit.bulkhead import Bulkhead
from tipkit.errors import (
    BulkheadFullError,
    CircuitOpenError,
    RateLimitedError,
    RejectedError,
)
from tipkit.fallback import Fallback, FallbackUsed, fallback
from tipkit.ratelimit import TokenBucket
from tipkit.retry import retry
from tipkit.testing import FakeClock, capture_events

WITH_FACES = ("with", "async_with")


def refuse() -> str:
    """Stand in for a guard's refusal."""
    raise CircuitOpenError("down", name="stand-in")


def test_fallback_guard_answers_a_refusal_through_every_face(face: Face) -> None:
    """The fallback returns its value for a RejectedError; `with` has no value."""
    part = fallback("cached", name=f"faces-{face}")
    if face.name in WITH_FACES:
        with pytest.raises(TypeError, match="replaces a result"):
            face.run(part, refuse)
        return
    with capture_events(FallbackUsed) as seen:
        assert "cached" == face.run(part, refuse)
    assert (1, ["CircuitOpenError"]) == (
        part.used,
        [type(e.error).__name__ for e in seen],
    )


def test_dependency_errors_pass_unless_named() -> None:
    """By default only tipkit's refusals are answered; fallback_on= widens it."""

    def broken() -> str:
        raise ConnectionError("reset")

    with pytest.raises(ConnectionError):
        fallback("x").call(broken)

    def name_it(exc: Exception) -> str:
        return f"after {type(exc).__name__}"

    answered: Fallback[str] = fallback(name_it, fallback_on=OSError)
    assert "after ConnectionError" == answered.call(broken)


def test_fallback_arguments_are_checked() -> None:
    """An async function, an empty or non-exception fallback_on, a bad name are refused."""

    async def afn(exc: Exception) -> int:
        return 1

    with pytest.raises(TypeError, match="synchronous"):
        fallback(afn)  # type: ignore[arg-type]  # the error under test
    with pytest.raises(ValueError, match="answer nothing"):
        fallback(1, fallback_on=())
    with pytest.raises(TypeError, match="Exception subclasses"):
        fallback(1, fallback_on=int)  # type: ignore[arg-type]  # the error under test
    with pytest.raises(TypeError, match="name"):
        fallback(1, name="")
    assert "<fallback 'n' on=(RejectedError) value=1>" == repr(fallback(1, name="n"))


def _refusing_guards(clock: FakeClock) -> list[tuple[Any, type[RejectedError]]]:
    """Return one refusing instance of each core guard, built with fallback="fb"."""
    breaker = CircuitBreaker("fb-breaker", fallback="fb", clock=clock)
    breaker.force_open()
    bucket = TokenBucket("fb-bucket", rate=1, capacity=1, fallback="fb", clock=clock)
    assert bucket.try_acquire()
    limit = AdaptiveLimit("fb-adaptive", initial=1, max=1, fallback="fb", clock=clock)
    limit._step(0.0, None)  # one call in flight: the limit is full
    return [
        (breaker, CircuitOpenError),
        (bucket, RateLimitedError),
        (limit, BulkheadFullError),
    ]


def test_every_guard_takes_a_fallback_for_its_refusal(
    face: Face, clock: FakeClock
) -> None:
    """fallback= on a guard answers its own refusal; a `with` block still raises it."""
    for guard, error in _refusing_guards(clock):
        if face.name in WITH_FACES:
            with pytest.raises(error):
                face.run(guard, str)
        else:
            assert "fb" == face.run(guard, lambda: "ran")


def test_bulkhead_fallback_while_full(face: Face, clock: FakeClock) -> None:
    """A full bulkhead built with fallback= answers the call it would reject."""
    bulkhead = Bulkhead(
        "fb-bulkhead", max_concurrent=1, fallback=lambda exc: [], clock=clock
    )
    with bulkhead:
        if face.name in WITH_FACES:
            with pytest.raises(BulkheadFullError):
                face.run(bulkhead, str)
        else:
            assert [] == face.run(bulkhead, lambda: "ran")


def test_guard_fallback_on_widens_after_the_guard_recorded_the_error(
    clock: FakeClock,
) -> None:
    """fallback_on= answers the dependency's error, which the breaker still counts."""
    breaker = CircuitBreaker(
        "fb-widened",
        minimum_calls=2,
        window=None,
        fallback=lambda exc: "stale",
        fallback_on=ConnectionError,
        clock=clock,
    )

    @breaker
    def broken() -> str:
        raise ConnectionError("reset")

    assert ["stale", "stale"] == [broken(), breaker.call(broken.__wrapped__)]  # type: ignore[attr-defined]  # functools.wraps
    assert "OPEN" == breaker.state.name
    with pytest.raises(CircuitOpenError):
        breaker.call(str)  # fallback_on replaced the default: refusals now pass


def test_guard_without_fallback_raises_and_fallback_on_needs_fallback(
    clock: FakeClock,
) -> None:
    """No fallback: the refusal is raised; fallback_on= alone is refused."""
    bucket = TokenBucket("fb-none", rate=1, capacity=1, clock=clock)
    assert bucket.try_acquire()
    with pytest.raises(RateLimitedError):
        bucket.call(str)
    with pytest.raises(TypeError, match="fallback_on= needs fallback="):
        Bulkhead("fb-alone", fallback_on=ValueError)


def test_retry_fallback_answers_a_refusal_without_retrying_it(clock: FakeClock) -> None:
    """retry(fallback=) answers a rejection retry never retries; on= keeps its meaning."""
    bucket = TokenBucket("fb-retry", rate=1, capacity=1, clock=clock)
    assert bucket.try_acquire()
    calls: list[int] = []

    def work() -> int:
        calls.append(1)
        return 1

    guarded = retry(on=Exception, fallback=0, clock=clock)(bucket(work))
    assert (0, [], []) == (guarded(), calls, clock.sleeps)


def test_fallback_function_gets_the_exception_async() -> None:
    """An async call's refusal reaches the fallback function, which picks the value."""
    got: list[BaseException] = []

    def pick(exc: Exception) -> str:
        got.append(exc)
        return "picked"

    part: Fallback[str] = fallback(pick)

    async def main() -> str:
        async def go() -> str:
            return refuse()

        return await part(go)()

    assert "picked" == asyncio.run(main())
    assert [CircuitOpenError] == [type(e) for e in got]
