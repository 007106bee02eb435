"""Limiters sharing buckets through a store: the collaborator, its failure policy, async I/O."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tipkit._core._tokens import TokenTake
from tipkit.errors import RateLimitedError, StoreError
from tipkit.ratelimit import KeyedRateLimiter, RateDecision, TokenBucket
from tipkit.stores import MemoryStore, StoreRecovered, StoreUnavailable
from tipkit.testing import FakeClock, capture_events


class CountingStore(MemoryStore):
    """A MemoryStore that counts its token round trips."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = 0

    def take_tokens(
        self,
        key: str,
        tokens: float,
        *,
        rate: float,
        capacity: float,
        max_wait: float = 0.0,
    ) -> TokenTake:
        self.calls += 1
        return super().take_tokens(
            key, tokens, rate=rate, capacity=capacity, max_wait=max_wait
        )


class AsyncOnlyStore(MemoryStore):
    """A store whose sync token method raises: only the async path may be used."""

    def take_tokens(
        self,
        key: str,
        tokens: float,
        *,
        rate: float,
        capacity: float,
        max_wait: float = 0.0,
    ) -> TokenTake:
        raise AssertionError("a sync store method was called")

    async def atake_tokens(
        self,
        key: str,
        tokens: float,
        *,
        rate: float,
        capacity: float,
        max_wait: float = 0.0,
    ) -> TokenTake:
        return MemoryStore.take_tokens(
            self, key, tokens, rate=rate, capacity=capacity, max_wait=max_wait
        )


class DownStore(MemoryStore):
    """A store whose token methods fail as an unreachable server's would."""

    def take_tokens(
        self,
        key: str,
        tokens: float,
        *,
        rate: float,
        capacity: float,
        max_wait: float = 0.0,
    ) -> TokenTake:
        raise StoreError("down") from ConnectionError("refused")

    async def atake_tokens(
        self,
        key: str,
        tokens: float,
        *,
        rate: float,
        capacity: float,
        max_wait: float = 0.0,
    ) -> TokenTake:
        raise StoreError("down") from ConnectionError("refused")


# -- one class, sharing through a collaborator ------------------------------------------
def test_a_store_backed_bucket_is_a_token_bucket() -> None:
    """TokenBucket(store=...) is exactly a TokenBucket: sharing is a collaborator."""
    bucket = TokenBucket("x", rate=1, capacity=1, store=MemoryStore())
    assert type(bucket) is TokenBucket


def test_store_backed_bucket_shares_tokens(face: Any, clock: FakeClock) -> None:
    """Two buckets on one store share its tokens, through every face."""
    store = MemoryStore(clock=clock)
    one = TokenBucket("shared", rate=1.0, capacity=2, store=store, clock=clock)
    two = TokenBucket("shared", rate=1.0, capacity=2, store=store, clock=clock)
    face.run(one, lambda: None)
    face.run(two, lambda: None)
    with pytest.raises(RateLimitedError, match="rate limit 'shared' exceeded"):
        face.run(one, lambda: None)
    assert two.try_acquire() is False
    assert one.tokens == 0
    assert (
        repr(one)
        == "<TokenBucket 'shared' rate=1/s capacity=2 store=MemoryStore last_seen=0>"
    )


def test_repr_and_argument_errors_never_call_the_store(clock: FakeClock) -> None:
    """repr() and error messages use what the bucket last saw, never a round trip."""
    store = CountingStore(clock=clock)
    bucket = TokenBucket("quiet", rate=1.0, capacity=3, store=store, clock=clock)
    keyed = KeyedRateLimiter("quiet-keys", rate=1, capacity=3, store=store, clock=clock)
    with pytest.raises(ValueError, match="TokenBucket 'quiet': tokens=4 can never"):
        bucket.try_acquire(4)
    with pytest.raises(ValueError, match="TokenBucket 'quiet': timeout must be >= 0"):
        bucket.acquire(1, timeout=-1)
    with pytest.raises(ValueError, match="KeyedRateLimiter 'quiet-keys': tokens=4"):
        keyed.try_acquire("k", 4)
    assert "last_seen=3" in repr(bucket)
    assert "store=CountingStore" in repr(keyed)
    assert 0 == store.calls
    bucket.try_acquire(2)
    assert "last_seen=1" in repr(bucket)
    assert 1 == store.calls


def test_store_backed_bucket_waits_and_shadows(clock: FakeClock) -> None:
    """Through a store, acquire waits on the clock and shadow mode admits everything."""
    store = MemoryStore(clock=clock)
    bucket = TokenBucket(
        "stored", rate=2.0, capacity=1, store=store, max_wait=1, clock=clock
    )
    bucket.acquire()
    bucket.acquire(timeout=1)
    assert clock.sleeps == [0.5]
    with pytest.raises(RateLimitedError):
        bucket.acquire(timeout=0.1)

    async def main() -> None:
        await bucket.acquire_async(1)
        async with bucket:
            pass

    asyncio.run(main())
    assert clock.monotonic() == pytest.approx(1.5)
    bucket.mode = "shadow"
    assert bucket.try_acquire() is True
    assert bucket.would_reject == 1


def test_a_waiter_on_a_store_keeps_its_tokens_when_it_stops(clock: FakeClock) -> None:
    """A shared waiter that gives up returns nothing: other processes may wait behind it."""
    store = MemoryStore(clock=clock)
    bucket = TokenBucket("keep", rate=1.0, capacity=1, store=store, clock=clock)
    bucket.acquire()
    step = bucket._begin(clock.monotonic(), 1.0, 5.0)
    assert step is not True
    bucket._abandon(step, clock.monotonic())  # type: ignore[arg-type]  # a Wait, asserted above
    assert bucket.tokens == -1
    assert bucket.waiting == 0


def test_check_on_a_shared_bucket_reports_what_the_store_said(clock: FakeClock) -> None:
    """check() through a store gives the store's level and retry_after."""
    store = MemoryStore(clock=clock)
    bucket = TokenBucket("hdr", rate=2.0, capacity=3, store=store, clock=clock)
    assert RateDecision(True, 0.0, 1.0, 3.0) == bucket.check(2)
    assert RateDecision(False, 0.5, 1.0, 3.0) == bucket.check(2)


def test_keyed_limiter_shares_keys_through_a_store(clock: FakeClock) -> None:
    """With a store, two keyed limiters share each key's bucket; none is kept in process."""
    store = MemoryStore(clock=clock)
    one = KeyedRateLimiter("fleet", rate=1, capacity=1, store=store, clock=clock)
    two = KeyedRateLimiter("fleet", rate=1, capacity=1, store=store, clock=clock)
    assert one.try_acquire("t") is True
    assert two.try_acquire("t") is False
    assert two.tokens("t") == 0
    assert len(one) == 0
    with pytest.raises(RateLimitedError) as info:
        two.acquire("t")
    assert info.value.retry_after == pytest.approx(1.0)
    assert RateDecision(False, pytest.approx(1.0), 0.0, 1.0) == two.check("t")
    assert RateDecision(True, 0.0, 0.0, 1.0) == two.check("u")


def test_batch_takes_k_tokens_per_round_trip_and_shows_them(clock: FakeClock) -> None:
    """batch=k: one round trip serves k tries; repr shows the batch and what is held."""
    store = CountingStore(clock=clock)
    bucket = TokenBucket("batched", rate=0.001, capacity=7, store=store, batch=3)
    assert [bucket.try_acquire() for _ in range(3)] == [True] * 3
    assert 1 == store.calls
    assert "batch=3 held=0" in repr(bucket)
    assert bucket.try_acquire()  # 3 more: 1 left in the store, 2 held
    assert "batch=3 held=2" in repr(bucket)
    # 2 held, then a batch asked for and the 1 left taken instead: two round trips.
    assert [bucket.try_acquire() for _ in range(3)] == [True] * 3
    assert 4 == store.calls
    assert bucket.try_acquire() is False


# -- the failure policy --------------------------------------------------------------------
def test_a_failing_store_fails_open_and_reports_the_outage_once(
    clock: FakeClock,
) -> None:
    """fail_open: every decision admits and counts a store error; one event per outage."""
    bucket = TokenBucket("open", rate=1, capacity=1, store=DownStore(), clock=clock)
    keyed = KeyedRateLimiter("open-keys", rate=1, capacity=1, store=DownStore())
    with capture_events(StoreUnavailable) as down:
        assert [bucket.try_acquire() for _ in range(3)] == [True] * 3
        bucket.acquire(timeout=1)
        assert keyed.try_acquire("k") is True
        keyed.acquire("k")
    assert (bucket.store_errors, keyed.store_errors) == (4, 2)
    assert [e.name for e in down] == ["open", "open-keys"]
    assert "last_seen=0" in repr(bucket)
    assert RateDecision(True, 0.0, 0.0, 1.0) == bucket.check()


def test_a_failing_store_fails_closed_when_the_store_says_so(clock: FakeClock) -> None:
    """fail_closed: refuse, with the time the tokens would take to refill."""
    store = DownStore(on_error="fail_closed")
    bucket = TokenBucket("closed", rate=2, capacity=4, store=store, clock=clock)
    keyed = KeyedRateLimiter("closed-keys", rate=2, capacity=4, store=store)
    assert bucket.try_acquire() is False
    with pytest.raises(RateLimitedError) as info:
        bucket.acquire(2, timeout=0)
    assert info.value.retry_after == pytest.approx(1.0)
    assert keyed.try_acquire("k") is False
    with pytest.raises(RateLimitedError):
        keyed.acquire("k")
    assert (bucket.store_errors, keyed.store_errors) == (2, 2)


def test_the_first_success_after_an_outage_reports_recovery(clock: FakeClock) -> None:
    """A store answering again publishes StoreRecovered once."""
    store = MemoryStore(clock=clock)
    bucket = TokenBucket("flaky", rate=1, capacity=5, store=store, clock=clock)
    real = store.take_tokens
    store.take_tokens = DownStore.take_tokens.__get__(store)  # type: ignore[method-assign]  # a failing spell
    with capture_events(StoreRecovered) as recovered:
        bucket.try_acquire()
        store.take_tokens = real  # type: ignore[method-assign]  # the store is back
        bucket.try_acquire()
        bucket.try_acquire()
    assert [e.name for e in recovered] == ["flaky"]


# -- async faces reach the store through its async methods ----------------------------------
def test_async_faces_of_a_shared_bucket_never_call_the_sync_store(
    clock: FakeClock,
) -> None:
    """Every async face of a store-backed bucket uses atake_tokens only."""
    store = AsyncOnlyStore(clock=clock)
    bucket = TokenBucket(
        "async-only", rate=1.0, capacity=3, max_wait=5, store=store, clock=clock
    )

    @bucket
    async def decorated() -> str:
        return "d"

    async def work() -> str:
        return "c"

    async def main() -> list[str]:
        got = [await decorated(), await bucket.acall(work)]
        async with bucket:
            got.append("w")
        await bucket.acquire_async(1)  # waits 1 s on the clock: the store reserved
        return got

    assert asyncio.run(main()) == ["d", "c", "w"]
    assert clock.monotonic() == pytest.approx(1.0)


def test_async_faces_of_a_shared_keyed_limiter_never_call_the_sync_store(
    clock: FakeClock,
) -> None:
    """Every async face of a store-backed keyed limiter uses atake_tokens only."""
    store = AsyncOnlyStore(clock=clock)
    limiter = KeyedRateLimiter("async-keys", rate=1, capacity=2, store=store)

    @limiter(key=lambda key: key)
    async def decorated(key: str) -> str:
        return key

    async def work() -> str:
        return "c"

    async def main() -> list[str]:
        got = [await decorated("a"), await limiter.acall("a", work)]
        async with limiter.limit("b"):
            got.append("w")
        with pytest.raises(RateLimitedError):
            await limiter.acall("a", work)
        return got

    assert ["a", "c", "w"] == asyncio.run(main())
