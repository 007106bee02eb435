"""Every async face of every store-backed primitive uses the store's async methods.

The store under test is a :class:`~tipkit.stores.MemoryStore` behind a wrapper
whose synchronous methods raise :class:`~tipkit.errors.StoreError` when they
are called on a thread that runs an event loop (a blocking call there would
stall every task for up to the store's timeout), and record that they were.
Construction and sync setup outside the loop go through as usual. Each test
checks three things: the face works, it saw the shared state (so the store
was really read or written, through the async method), and no sync method was
called on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from tipkit.breaker import BreakerState, CircuitBreaker, CountWindow
from tipkit.errors import CircuitOpenError, RateLimitedError, StoreError
from tipkit.flags import Flags, InMemoryProvider
from tipkit.ratelimit import KeyedRateLimiter, TokenBucket
from tipkit.rollout import Rollout
from tipkit.stores import JSON, Entry, MemoryStore, OnError, Snapshot, Store, TokenTake
from tipkit.stores._watch import Callback, Watch
from tipkit.testing import FakeClock


def on_loop() -> bool:
    """Whether the calling thread is running an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class AsyncOnlyStore:
    """A MemoryStore whose sync methods raise on the event loop; async ones work."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.sync_on_loop: list[str] = []
        self.async_calls: list[str] = []

    @property
    def on_error(self) -> OnError:
        return self.inner.on_error

    def _sync(self, name: str) -> None:
        if on_loop():
            self.sync_on_loop.append(name)
            raise StoreError(f"the sync {name} was called on the event loop")

    # -- sync: refused on the loop -------------------------------------------------
    def get(self, namespace: str, key: str) -> Entry | None:
        self._sync("get")
        return self.inner.get(namespace, key)

    def set(
        self, namespace: str, key: str, value: JSON, *, ttl: float | None = None
    ) -> int:
        self._sync("set")
        return self.inner.set(namespace, key, value, ttl=ttl)

    def compare_and_set(
        self,
        namespace: str,
        key: str,
        value: JSON,
        *,
        version: int,
        ttl: float | None = None,
    ) -> int | None:
        self._sync("compare_and_set")
        return self.inner.compare_and_set(
            namespace, key, value, version=version, ttl=ttl
        )

    def delete(self, namespace: str, key: str) -> bool:
        self._sync("delete")
        return self.inner.delete(namespace, key)

    def snapshot(self, namespace: str) -> Snapshot:
        self._sync("snapshot")
        return self.inner.snapshot(namespace)

    def version(self, namespace: str) -> int:
        self._sync("version")
        return self.inner.version(namespace)

    def increment(
        self, key: str, amounts: Mapping[str, float], *, ttl: float | None = None
    ) -> dict[str, float]:
        self._sync("increment")
        return self.inner.increment(key, amounts, ttl=ttl)

    def counters(self, key: str) -> dict[str, float]:
        self._sync("counters")
        return self.inner.counters(key)

    def take_tokens(
        self,
        key: str,
        tokens: float,
        *,
        rate: float,
        capacity: float,
        max_wait: float = 0.0,
    ) -> TokenTake:
        self._sync("take_tokens")
        return self.inner.take_tokens(
            key, tokens, rate=rate, capacity=capacity, max_wait=max_wait
        )

    def watch(self, namespace: str, callback: Callback) -> Watch:
        # Registration, not I/O: RedisStore's listener runs on a thread of its own.
        return self.inner.watch(namespace, callback)

    def close(self) -> None:
        self.inner.close()

    # -- async: what the async faces must use ------------------------------------------
    async def aget(self, namespace: str, key: str) -> Entry | None:
        self.async_calls.append("aget")
        return await self.inner.aget(namespace, key)

    async def aset(
        self, namespace: str, key: str, value: JSON, *, ttl: float | None = None
    ) -> int:
        self.async_calls.append("aset")
        return await self.inner.aset(namespace, key, value, ttl=ttl)

    async def acompare_and_set(
        self,
        namespace: str,
        key: str,
        value: JSON,
        *,
        version: int,
        ttl: float | None = None,
    ) -> int | None:
        self.async_calls.append("acompare_and_set")
        return await self.inner.acompare_and_set(
            namespace, key, value, version=version, ttl=ttl
        )

    async def adelete(self, namespace: str, key: str) -> bool:
        self.async_calls.append("adelete")
        return await self.inner.adelete(namespace, key)

    async def asnapshot(self, namespace: str) -> Snapshot:
        self.async_calls.append("asnapshot")
        return await self.inner.asnapshot(namespace)

    async def aversion(self, namespace: str) -> int:
        self.async_calls.append("aversion")
        return await self.inner.aversion(namespace)

    async def aincrement(
        self, key: str, amounts: Mapping[str, float], *, ttl: float | None = None
    ) -> dict[str, float]:
        self.async_calls.append("aincrement")
        return await self.inner.aincrement(key, amounts, ttl=ttl)

    async def acounters(self, key: str) -> dict[str, float]:
        self.async_calls.append("acounters")
        return await self.inner.acounters(key)

    async def atake_tokens(
        self,
        key: str,
        tokens: float,
        *,
        rate: float,
        capacity: float,
        max_wait: float = 0.0,
    ) -> TokenTake:
        self.async_calls.append("atake_tokens")
        return await self.inner.atake_tokens(
            key, tokens, rate=rate, capacity=capacity, max_wait=max_wait
        )


@pytest.fixture
def inner(clock: FakeClock) -> MemoryStore:
    """The shared state: what another process would see."""
    return MemoryStore(clock=clock)


@pytest.fixture
def store(inner: MemoryStore) -> AsyncOnlyStore:
    """The store the primitive under test is given."""
    return AsyncOnlyStore(inner)


def test_the_wrapper_is_a_store_that_refuses_sync_calls_on_the_loop(
    store: AsyncOnlyStore,
) -> None:
    """The harness itself: a full Store; sync calls raise on the loop only."""
    assert isinstance(store, Store)
    store.set("ns", "k", 1)  # no loop here: allowed

    async def main() -> None:
        with pytest.raises(StoreError, match="sync get"):
            store.get("ns", "k")
        assert (await store.aget("ns", "k")) is not None

    asyncio.run(main())
    assert ["get"] == store.sync_on_loop
    assert ["aget"] == store.async_calls


# -- flags ------------------------------------------------------------------------
DOC = {
    "version": 1,
    "flags": {
        "checkout": {
            "variants": {"on": True, "off": False},
            "default_variant": "on",
            "off_variant": "off",
        }
    },
}


async def gated(flags: Flags) -> bool:
    @flags.gate("checkout", fallback=lambda: False)
    async def checkout() -> bool:
        return True

    return await checkout()


FLAG_FACES: dict[str, Callable[[Flags], Awaitable[Any]]] = {
    "aevaluate": lambda f: _value(f.aevaluate("checkout", "user-1", True)),
    "ais_enabled": lambda f: f.ais_enabled("checkout", "user-1"),
    "aget": lambda f: f.aget("checkout", "user-1", True),
    "aassign": lambda f: _value(f.aassign("checkout", "user-1")),
    "async_gate": gated,
}


async def _value(detail: Awaitable[Any]) -> Any:
    return (await detail).value


@pytest.mark.parametrize("face", FLAG_FACES)
def test_flags_async_evaluation_reads_kills_through_the_async_path(
    face: str, clock: FakeClock, inner: MemoryStore, store: AsyncOnlyStore
) -> None:
    """A kill written by another process is seen by async evaluation, via asnapshot."""
    writer = Flags(InMemoryProvider(DOC), store=inner, clock=clock)
    flags = Flags(InMemoryProvider(DOC), store=store, clock=clock, refresh_interval=5)
    run = FLAG_FACES[face]

    async def main() -> tuple[Any, Any]:
        before = await run(flags)
        writer.kill("checkout")
        clock.advance(5)
        return before, await run(flags)

    assert (True, False) == asyncio.run(main())
    assert [] == store.sync_on_loop
    assert "asnapshot" in store.async_calls


# -- token bucket -------------------------------------------------------------------
async def bucket_face(bucket: TokenBucket, face: str) -> str:
    """Take one token from *bucket* through *face*; say whether it was admitted."""

    async def work() -> str:
        return "ran"

    try:
        if face == "acquire_async":
            await bucket.acquire_async(timeout=0)
            return "ran"
        if face == "async_with":
            async with bucket:
                return await work()
        if face == "async_decorator":
            return await bucket(work)()
        return await bucket.acall(work)
    except RateLimitedError:
        return "refused"


BUCKET_FACES = ["acquire_async", "async_with", "async_decorator", "acall"]


@pytest.mark.parametrize("face", BUCKET_FACES)
def test_token_bucket_async_faces_take_through_atake_tokens(
    face: str, clock: FakeClock, store: AsyncOnlyStore
) -> None:
    """A shared bucket of 2 admits 2 then refuses, every take awaited on the store."""
    bucket = TokenBucket("api", rate=0.001, capacity=2, store=store, clock=clock)

    async def main() -> list[str]:
        return [await bucket_face(bucket, face) for _ in range(3)]

    assert ["ran", "ran", "refused"] == asyncio.run(main())
    assert [] == store.sync_on_loop
    assert ["atake_tokens"] * 3 == store.async_calls


def test_token_bucket_async_faces_fail_closed_through_the_async_path(
    clock: FakeClock,
) -> None:
    """A failing async take follows on_error="fail_closed": refused, never a sync call."""

    class Down(AsyncOnlyStore):
        async def atake_tokens(self, *args: Any, **kwargs: Any) -> TokenTake:
            self.async_calls.append("atake_tokens")
            raise StoreError("down")

    store = Down(MemoryStore(clock=clock, on_error="fail_closed"))
    bucket = TokenBucket("down", rate=1, capacity=2, store=store, clock=clock)

    async def main() -> list[str]:
        return [await bucket_face(bucket, face) for face in BUCKET_FACES]

    assert ["refused"] * 4 == asyncio.run(main())
    assert [] == store.sync_on_loop


# -- keyed rate limiter ---------------------------------------------------------------
async def keyed_face(limiter: KeyedRateLimiter, face: str) -> bool:
    """Take one token for "user-1" through *face*; say whether it was admitted."""

    async def work() -> bool:
        return True

    try:
        if face == "async_with":
            async with limiter.limit("user-1"):
                return await work()
        return bool(await limiter.acall("user-1", work))
    except RateLimitedError:
        return False


@pytest.mark.parametrize("face", ["async_with", "acall"])
def test_keyed_limiter_async_faces_take_through_atake_tokens(
    face: str, clock: FakeClock, store: AsyncOnlyStore
) -> None:
    """A shared per-key limit of 2 admits 2 then refuses, awaited on the store."""
    limiter = KeyedRateLimiter(
        "login", rate=0.001, capacity=2, store=store, clock=clock
    )

    async def main() -> list[bool]:
        return [await keyed_face(limiter, face) for _ in range(3)]

    assert [True, True, False] == asyncio.run(main())
    assert [] == store.sync_on_loop
    assert ["atake_tokens"] * 3 == store.async_calls


# -- shared circuit breaker --------------------------------------------------------------
def shared_breaker(store: Store, clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(
        "payments",
        store=store,
        share="state",
        window=CountWindow(2),
        minimum_calls=2,
        open_duration=30,
        refresh_interval=1.0,
        clock=clock,
    )


async def breaker_face(breaker: CircuitBreaker, face: str, fail: bool) -> str:
    """Run one call under *breaker* through *face*; say how it ended."""

    async def work() -> str:
        if fail:
            raise ConnectionError("dependency down")
        return "ran"

    try:
        if face == "async_with":
            async with breaker:
                return await work()
        if face == "async_decorator":
            return await breaker(work)()
        return await breaker.acall(work)
    except CircuitOpenError:
        return "open"
    except ConnectionError:
        return "failed"


BREAKER_FACES = ["async_with", "async_decorator", "acall"]


@pytest.mark.parametrize("face", BREAKER_FACES)
def test_shared_breaker_async_faces_adopt_a_peers_opening_through_aget(
    face: str, clock: FakeClock, inner: MemoryStore, store: AsyncOnlyStore
) -> None:
    """An opening written by a peer is adopted on the next async call, read via aget."""
    peer = shared_breaker(inner, clock)
    breaker = shared_breaker(store, clock)

    async def main() -> list[str]:
        seen = [await breaker_face(breaker, face, fail=False)]
        for _ in range(2):  # the peer opens and writes it to the shared store
            with pytest.raises(ConnectionError):
                peer.call(failing)
        clock.advance(1.0)
        seen.append(await breaker_face(breaker, face, fail=False))
        return seen

    assert ["ran", "open"] == asyncio.run(main())
    assert BreakerState.OPEN is breaker.state
    assert [] == store.sync_on_loop
    assert "aget" in store.async_calls


@pytest.mark.parametrize("face", BREAKER_FACES)
def test_shared_breaker_async_faces_publish_an_opening_through_aset(
    face: str, clock: FakeClock, inner: MemoryStore, store: AsyncOnlyStore
) -> None:
    """This breaker's own opening reaches the shared store via aset; a peer adopts it."""
    breaker = shared_breaker(store, clock)
    peer = shared_breaker(inner, clock)

    async def main() -> list[str]:
        return [await breaker_face(breaker, face, fail=True) for _ in range(2)]

    assert ["failed", "failed"] == asyncio.run(main())
    assert BreakerState.OPEN is breaker.state
    assert [] == store.sync_on_loop
    assert "aset" in store.async_calls
    clock.advance(1.0)
    with pytest.raises(CircuitOpenError):
        peer.call(lambda: None)


def failing() -> None:
    raise ConnectionError("dependency down")


# -- rollout ---------------------------------------------------------------------------
SPLIT_DOC = {
    "version": 1,
    "flags": {
        "pricing": {
            "variants": {"new": True, "old": False},
            "off_variant": "old",
            "fallthrough": {"split": {"new": 50, "old": 50}},
        }
    },
}


def test_rollout_async_observe_refreshes_and_counts_through_the_async_path(
    clock: FakeClock, inner: MemoryStore, store: AsyncOnlyStore
) -> None:
    """An async observe reads state via aget and counts via aincrement; sees a rollback."""
    flags = Flags(InMemoryProvider(SPLIT_DOC), store=store, clock=clock)
    rollout = Rollout(
        "pricing-rollout",
        flags=flags,
        flag="pricing",
        stages=[50, 100],
        min_samples=1_000,
        clock=clock,
        fleet_counts=True,
        flush_every=1,
        refresh_interval=1.0,
    )
    peer_flags = Flags(InMemoryProvider(SPLIT_DOC), store=inner, clock=clock)
    peer = Rollout(
        "pricing-rollout",
        flags=peer_flags,
        flag="pricing",
        stages=[50, 100],
        min_samples=1_000,
        clock=clock,
        fleet_counts=True,
        refresh_interval=1.0,
    )

    async def main() -> tuple[int, int]:
        canaries = 0
        for i in range(20):
            async with rollout.observe(f"user-{i}") as arm:
                canaries += arm.is_canary
        peer.rollback()  # another process rolls back
        clock.advance(1.0)
        after = 0
        for i in range(20):
            async with rollout.observe(f"user-{i}") as arm:
                after += arm.is_canary
        return canaries, after

    canaries, after = asyncio.run(main())
    assert canaries > 0
    assert 0 == after
    assert [] == store.sync_on_loop
    assert {"aget", "acompare_and_set"} <= set(store.async_calls)
