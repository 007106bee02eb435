"""KeyedRateLimiter in process: one bucket per key, bounded memory, eviction, shadow mode."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.strategies_ratelimit import within_bound

from tipkit.errors import RateLimitedError
from tipkit.ratelimit import KeyedRateLimiter, RateDecision, RateLimited
from tipkit.telemetry import _names as names
from tipkit.testing import FakeClock, capture_events


def test_keyed_limiter_keeps_one_bucket_per_key(clock: FakeClock) -> None:
    """Each key has its own bucket; acquire raises with retry_after for the key."""
    limiter = KeyedRateLimiter("tenants", rate=2, capacity=2, clock=clock)
    assert [limiter.try_acquire("a") for _ in range(3)] == [True, True, False]
    assert limiter.try_acquire("b") is True
    with pytest.raises(RateLimitedError, match="exceeded for a key") as info:
        limiter.acquire("a")
    assert info.value.retry_after == pytest.approx(0.5)
    clock.advance(0.5)
    limiter.acquire("a")
    assert limiter.tokens("b") == pytest.approx(2.0)
    assert limiter.tokens("never-seen") == 2
    assert (
        repr(limiter)
        == "<KeyedRateLimiter 'tenants' rate=2/s capacity=2 keys=2/100000>"
    )


def test_keyed_check_reports_each_keys_decision(clock: FakeClock) -> None:
    """check(key) decides per key; a new key refused for want of room says when it fits."""
    limiter = KeyedRateLimiter("hdr-keys", rate=1, capacity=2, max_keys=1, clock=clock)
    assert RateDecision(True, 0.0, 1.0, 2.0) == limiter.check("a")
    assert RateDecision(True, 0.0, 0.0, 2.0) == limiter.check("a")
    assert RateDecision(False, 1.0, 0.0, 2.0) == limiter.check("a")
    assert RateDecision(False, 2.0, 0.0, 2.0) == limiter.check("b")  # "a" full at t=2
    clock.advance(2)
    assert RateDecision(True, 0.0, 1.0, 2.0) == limiter.check("b")
    with pytest.raises(ValueError, match="tokens=3 can never be served"):
        limiter.check("a", 3)


def test_keyed_limiter_refuses_one_token_above_a_fractional_capacity(
    clock: FakeClock,
) -> None:
    """A new key never gets 1 token from a 0.5 capacity: the request is refused clearly."""
    limiter = KeyedRateLimiter("frac", rate=1, capacity=0.5, clock=clock)
    with pytest.raises(ValueError, match="can never be served"):
        limiter.try_acquire("a")
    with pytest.raises(ValueError, match="can never be served"):
        limiter.acquire("b")
    assert 0 == len(limiter)
    assert limiter.try_acquire("a", 0.5)


def test_keyed_limiter_refuses_new_keys_while_every_bucket_refills(
    clock: FakeClock,
) -> None:
    """At max_keys with no refilled bucket, a new key is refused until one has refilled."""
    limiter = KeyedRateLimiter("full", rate=1, capacity=2, max_keys=2, clock=clock)
    limiter.try_acquire("a", 2)
    clock.advance(0.5)
    limiter.try_acquire("b", 1)
    assert limiter.try_acquire("c") is False
    with pytest.raises(
        RateLimitedError, match="max_keys=2 buckets, all still refilling"
    ) as info:
        limiter.acquire("c")
    assert info.value.retry_after == pytest.approx(1.0)  # "b" is full first, at t=1.5
    clock.advance(1.0)
    assert limiter.try_acquire("c") is True
    assert len(limiter) == 2
    assert limiter.tokens("a") == pytest.approx(1.5)  # "a" kept: it had not refilled


@settings(max_examples=100)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("take"), st.sampled_from("abcde"), st.integers(1, 3)),
            st.tuples(
                st.just("advance"), st.just(""), st.floats(0, 2, allow_nan=False)
            ),
        ),
        max_size=80,
    ),
    max_keys=st.integers(1, 3),
)
def test_keyed_eviction_never_lets_a_key_burst(
    ops: list[tuple[str, str, float]], max_keys: int
) -> None:
    """Whatever the evictions, each key stays within its bound and memory within max_keys."""
    clock = FakeClock()
    limiter = KeyedRateLimiter(
        "evict", rate=1.0, capacity=3, max_keys=max_keys, clock=clock
    )
    admits: dict[str, list[tuple[float, float]]] = {}
    for op, key, value in ops:
        if op == "advance":
            clock.advance(value)
        elif limiter.try_acquire(key, value):
            admits.setdefault(key, []).append((clock.monotonic(), value))
        assert len(limiter) <= max_keys
    for key_admits in admits.values():
        assert within_bound(key_admits, 1.0, 3)


def test_keyed_limiter_shadow_mode(clock: FakeClock) -> None:
    """Keyed shadow mode admits and counts every refusal; switching to enforce refuses."""
    limiter = KeyedRateLimiter(
        "keyed-shadow", rate=1, capacity=1, mode="shadow", clock=clock
    )
    assert [limiter.try_acquire("k") for _ in range(3)] == [True] * 3
    limiter.acquire("k")
    assert limiter.would_reject == 3
    limiter.mode = "enforce"
    assert limiter.try_acquire("k") is False
    assert limiter.mode == "enforce"


def test_keyed_bad_arguments_are_named() -> None:
    """Invalid keyed-limiter arguments give clear errors naming them."""
    with pytest.raises(ValueError, match="max_keys must be >= 1"):
        KeyedRateLimiter("k", rate=1, capacity=1, max_keys=0)
    with pytest.raises(TypeError, match="max_keys must be an int"):
        KeyedRateLimiter("k", rate=1, capacity=1, max_keys=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate must be > 0, got -1"):
        KeyedRateLimiter("k", rate=-1, capacity=1)
    with pytest.raises(TypeError, match="clock must provide"):
        KeyedRateLimiter("k", rate=1, capacity=1, clock=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="store must implement"):
        KeyedRateLimiter("k", rate=1, capacity=1, store=3)  # type: ignore[arg-type]
    limiter = KeyedRateLimiter("k", rate=1, capacity=2)
    with pytest.raises(ValueError, match="can never be served"):
        limiter.try_acquire("a", 3)
    with pytest.raises(ValueError, match="can never be served"):
        limiter.acquire("a", 3)
    assert (limiter.rate, limiter.capacity) == (1.0, 2.0)


def test_rate_limited_event_carries_runbook_but_exports_no_key(
    clock: FakeClock,
) -> None:
    """RateLimited events carry the runbook; their exported attributes never hold the key."""
    limiter = KeyedRateLimiter(
        "tenants", rate=1, capacity=1, runbook="https://rb/x", clock=clock
    )
    with capture_events(RateLimited) as events:
        limiter.try_acquire("acme")
        limiter.try_acquire("acme")
    (event,) = events
    assert (event.key, event.runbook, event.shadow) == ("acme", "https://rb/x", False)
    attrs = event.otel_attributes()
    assert "acme" not in attrs.values()
    assert attrs[names.RUNBOOK] == "https://rb/x"


# -- faces: every face of the core, with the key ---------------------------------------------
def test_every_face_takes_the_keys_token(face: Any, clock: FakeClock) -> None:
    """Through every face, limit(key) takes one token of that key only."""
    limiter = KeyedRateLimiter("faces-keys", rate=1, capacity=1, clock=clock)
    assert "ok" == face.run(limiter.limit("a"), lambda: "ok")
    with pytest.raises(RateLimitedError, match="exceeded for a key") as info:
        face.run(limiter.limit("a"), lambda: "never")
    assert info.value.retry_after == pytest.approx(1.0)
    assert "ok" == face.run(limiter.limit("b"), lambda: "ok")
    assert clock.sleeps == []


def test_faces_refuse_a_new_key_while_every_bucket_refills(
    face: Any, clock: FakeClock
) -> None:
    """A face for a new key is refused with the max_keys error when the table is full."""
    limiter = KeyedRateLimiter(
        "faces-full", rate=1, capacity=1, max_keys=1, clock=clock
    )
    face.run(limiter.limit("a"), lambda: None)
    with pytest.raises(RateLimitedError, match="max_keys=1 buckets, all still"):
        face.run(limiter.limit("b"), lambda: None)


def test_faces_in_shadow_mode_admit_and_count(face: Any, clock: FakeClock) -> None:
    """In shadow mode every face runs the call and counts what it would refuse."""
    limiter = KeyedRateLimiter(
        "faces-shadow", rate=1, capacity=1, mode="shadow", clock=clock
    )
    assert [1, 2] == [face.run(limiter.limit("k"), lambda i=i: i) for i in (1, 2)]
    assert 1 == limiter.would_reject


def test_call_and_acall_take_the_key_first(clock: FakeClock) -> None:
    """limiter.call(key, fn, ...) and acall pass the arguments through, per key."""
    limiter = KeyedRateLimiter("call-keys", rate=1, capacity=1, clock=clock)

    async def adouble(x: int) -> int:
        return 2 * x

    assert 6 == limiter.call("a", lambda x, *, y: x * y, 2, y=3)
    assert 8 == asyncio.run(limiter.acall("b", adouble, 4))
    with pytest.raises(RateLimitedError):
        limiter.call("a", lambda: None)
    with pytest.raises(RateLimitedError):
        asyncio.run(limiter.acall("b", adouble, 1))


def test_the_decorator_takes_the_key_from_the_arguments(clock: FakeClock) -> None:
    """@limiter(key=...) picks each call's key from its arguments, sync and async."""
    limiter = KeyedRateLimiter("deco-keys", rate=1, capacity=1, clock=clock)

    @limiter(key=lambda tenant, **_: tenant)
    def handle(tenant: str, *, body: str) -> str:
        return f"{tenant}:{body}"

    @limiter(key=lambda request: request["tenant"])
    async def ahandle(request: dict[str, str]) -> str:
        return request["tenant"]

    assert "a:x" == handle("a", body="x")
    assert "b:y" == handle("b", body="y")
    with pytest.raises(RateLimitedError):
        handle("a", body="z")
    assert "c" == asyncio.run(ahandle({"tenant": "c"}))
    with pytest.raises(RateLimitedError):
        asyncio.run(ahandle({"tenant": "c"}))
    assert handle.__name__ == "handle"


def test_the_decorator_refuses_generator_functions() -> None:
    """A keyed decorator refuses a generator function at decoration time."""
    limiter = KeyedRateLimiter("gen-keys", rate=1, capacity=1)

    def gen(key: str) -> Iterator[str]:
        yield key

    with pytest.raises(TypeError, match="generator function"):
        limiter(key=lambda key: key)(gen)
