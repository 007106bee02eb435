"""MemoryStore, the narrow store protocols and the count batcher."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Mapping

import pytest
from tests.store_contract import StoreContract

from tipkit.errors import StoreError
from tipkit.stores import (
    CounterStore,
    KeyValueStore,
    MemoryStore,
    Store,
    TokenStore,
    TokenTake,
)
from tipkit.stores._batch import CountBatcher
from tipkit.testing import FakeClock


class TestMemoryStore(StoreContract):
    """MemoryStore passes the Store contract, with its clock driven by a FakeClock."""

    controls_time = True

    @pytest.fixture
    def store(self) -> MemoryStore:
        self._clock = FakeClock()
        return MemoryStore(clock=self._clock)

    def advance(self, seconds: float) -> None:
        self._clock.advance(seconds)


def test_repr_counts_contents() -> None:
    """The repr shows how much the store holds."""
    store = MemoryStore(clock=FakeClock())
    store.set("a", "k", 1)
    store.increment("c", {"x": 1})
    store.take_tokens("b", 1, rate=1, capacity=5)
    assert repr(store) == "<MemoryStore namespaces=1 counters=1 buckets=1>"


def test_full_bucket_is_forgotten() -> None:
    """A bucket refilled to capacity is dropped: memory stays bounded by busy buckets."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.take_tokens("b", 1, rate=1, capacity=5)
    clock.advance(1)
    store.take_tokens("b", 0, rate=1, capacity=5)
    assert "buckets=0" in repr(store)


def test_clock_going_backwards_refills_nothing() -> None:
    """A clock that steps back refills nothing, and does not move the refill origin back."""

    class Jumpy(FakeClock):
        def monotonic(self) -> float:
            return self.value

    clock = Jumpy()
    clock.value = 100.0
    store = MemoryStore(clock=clock)
    store.take_tokens("b", 5, rate=1, capacity=5)
    clock.value = 50.0
    assert not store.take_tokens("b", 1, rate=1, capacity=5).admitted
    clock.value = 101.0
    assert store.take_tokens("b", 1, rate=1, capacity=5).admitted
    assert not store.take_tokens("b", 1, rate=1, capacity=5).admitted


def test_increment_refuses_non_numbers() -> None:
    """A counter amount that is not a number (or is a bool) raises TypeError naming it."""
    store = MemoryStore()
    with pytest.raises(TypeError, match="c/x"):
        store.increment("c", {"x": "1"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="c/y"):
        store.increment("c", {"y": True})


class AsyncCountersOnly(MemoryStore):
    """A MemoryStore whose sync increment raises: only aincrement works."""

    def __init__(self) -> None:
        super().__init__(clock=FakeClock())
        self.down = False

    def increment(self, *args: object, **kwargs: object) -> dict[str, float]:
        raise AssertionError("the sync increment was called")

    async def aincrement(
        self, key: str, amounts: Mapping[str, float], *, ttl: float | None = None
    ) -> dict[str, float]:
        if self.down:
            raise StoreError("down")
        return super().increment(key, amounts, ttl=ttl)


def test_count_batcher_async_faces_flush_through_aincrement() -> None:
    """Async adds flush every N through the async increment, never the sync one."""
    store = AsyncCountersOnly()
    batcher = CountBatcher(store, "c", every=2, interval=3600)

    async def main() -> list[dict[str, float] | None]:
        return [await batcher.aadd({"n": 1}) for _ in range(4)]

    assert [None, {"n": 2}, None, {"n": 4}] == asyncio.run(main())
    assert {"n": 4} == batcher.totals


def test_count_batcher_async_flush_keeps_counts_through_an_outage() -> None:
    """A failed aflush keeps its counts pending; the next one sends them all."""
    store = AsyncCountersOnly()
    batcher = CountBatcher(store, "c", every=100, interval=3600)
    store.down = True

    async def main() -> tuple[object, object]:
        await batcher.aadd({"n": 1, "bad": 1})
        failed = await batcher.aflush()
        await batcher.aadd({"n": 1})
        store.down = False
        return failed, await batcher.aflush()

    assert (None, {"n": 2, "bad": 1}) == asyncio.run(main())
    assert {} == batcher.pending


def test_count_batcher_needs_a_counter_store() -> None:
    """Anything without the counter capability is refused at construction."""
    with pytest.raises(TypeError, match="CounterStore"):
        CountBatcher(object(), "c")  # type: ignore[arg-type]


def test_narrow_protocols_are_separate_capabilities() -> None:
    """A token-only store is a TokenStore, not a KeyValueStore, CounterStore or Store."""

    class Tokens:
        on_error = "fail_closed"

        def take_tokens(self, *args: object, **kwargs: object) -> TokenTake:
            raise NotImplementedError

        async def atake_tokens(self, *args: object, **kwargs: object) -> TokenTake:
            raise NotImplementedError

    tokens = Tokens()
    assert isinstance(tokens, TokenStore)
    assert not isinstance(tokens, KeyValueStore)
    assert not isinstance(tokens, CounterStore)
    assert not isinstance(tokens, Store)


def test_memory_store_on_error_is_carried_and_checked() -> None:
    """MemoryStore carries the policy it is given; a bad one is a clear ValueError."""
    assert "fail_closed" == MemoryStore(on_error="fail_closed").on_error
    assert "fail_open" == MemoryStore().on_error
    with pytest.raises(ValueError, match="on_error must be"):
        MemoryStore(on_error="open")  # type: ignore[arg-type]


def test_memory_store_watch_holds_bound_methods_weakly() -> None:
    """A watched object that goes away is forgotten, not kept alive by the store."""
    store = MemoryStore()

    class Listener:
        calls = 0

        def changed(self) -> None:
            Listener.calls += 1

    listener = Listener()
    watch = store.watch("ns", listener.changed)
    store.set("ns", "k", 1)
    assert 1 == Listener.calls
    assert "live=True" in repr(watch)
    del listener
    gc.collect()
    store.set("ns", "k", 2)
    assert 1 == Listener.calls
    assert "live=False" in repr(watch)


def test_memory_store_without_push_never_calls_back() -> None:
    """push=False makes watches inert: users rely on their refresh interval."""
    store = MemoryStore(push=False)
    heard: list[int] = []
    store.watch("ns", lambda: heard.append(1)).cancel()
    store.watch("ns", lambda: heard.append(2))
    store.set("ns", "k", 1)
    assert [] == heard
