"""Async flag evaluation: the store is read through its async methods only."""

# CONVENTIONS.md asks for `expected == actual` asserts
import asyncio
from typing import Any

import pytest

from tipkit.flags import Flags, InMemoryProvider, Reason
from tipkit.stores import MemoryStore, Snapshot, StoreRecovered, StoreUnavailable
from tipkit.testing import FakeClock, capture_events

DOC: dict[str, Any] = {
    "flags": {
        "new": {
            "variants": {"on": True, "off": False},
            "default_variant": "on",
            "off_variant": "off",
        },
        "algo": {"variants": {"v1": "v1", "v2": "v2"}, "default_variant": "v1"},
    }
}

SYNC_READS = ("get", "snapshot", "version", "counters", "take_tokens", "increment")


class AsyncOnlyStore(MemoryStore):
    """A MemoryStore whose sync reads raise once ``sync_broken`` is set.

    Its async reads stay served (as a networked store's are, on their own).
    """

    sync_broken = False
    async_broken = False
    async_calls = 0

    def __getattribute__(self, name: str) -> Any:
        if name in SYNC_READS and object.__getattribute__(self, "sync_broken"):
            raise AssertionError(f"sync store method {name}() called")
        return object.__getattribute__(self, name)

    async def aversion(self, namespace: str) -> int:
        self.async_calls += 1
        if self.async_broken:
            raise ConnectionError("down")
        return MemoryStore.version(self, namespace)

    async def asnapshot(self, namespace: str) -> Snapshot:
        self.async_calls += 1
        if self.async_broken:
            raise ConnectionError("down")
        return MemoryStore.snapshot(self, namespace)


def make(store: MemoryStore, clock: FakeClock, interval: float = 5) -> Flags:
    return Flags(
        InMemoryProvider(DOC), store=store, clock=clock, refresh_interval=interval
    )


def test_every_async_face_reads_kills_through_async_methods_only():
    """With sync store reads broken, every async evaluation and an async gate see a kill."""
    clock = FakeClock()
    store = AsyncOnlyStore(clock=clock, push=False)
    store.set("flags", "kill/new", True)
    store.set("flags", "override/algo", {"value": "v2"})
    store.sync_broken = True
    flags = make(store, clock)

    @flags.gate("new", fallback=lambda: "fallback")
    async def gated() -> str:
        return "ran"

    async def main() -> list[Any]:
        return [
            (await flags.aevaluate("new", "u", default=True)).reason,
            await flags.ais_enabled("new", "u", default=True),
            await flags.aget("algo", "u"),
            (await flags.aassign("new", "u")).variant,
            await gated(),
        ]

    assert [Reason.DISABLED, False, "v2", "off", "fallback"] == asyncio.run(main())
    assert store.async_calls >= 2


def test_async_refresh_follows_the_store_after_refresh_interval():
    """An async evaluation re-reads the store when due, with the store's async methods."""
    clock = FakeClock()
    store = AsyncOnlyStore(clock=clock, push=False)
    flags = make(store, clock, interval=5)

    async def on() -> bool:
        return await flags.ais_enabled("new", "u")

    assert asyncio.run(on()) is True
    store.set("flags", "kill/new", True)  # as another process would
    store.sync_broken = True
    assert asyncio.run(on()) is True  # not due yet
    clock.advance(5)
    assert asyncio.run(on()) is False


def test_a_failing_async_store_keeps_the_last_state_and_reports_once():
    """Async reads that fail keep the last kills; one StoreUnavailable, then StoreRecovered."""
    clock = FakeClock()
    store = AsyncOnlyStore(clock=clock, push=False)
    store.set("flags", "kill/new", True)
    flags = make(store, clock, interval=1)

    async def on() -> bool:
        return await flags.ais_enabled("new", "u", default=True)

    assert asyncio.run(on()) is False
    store.async_broken = True
    with capture_events(StoreUnavailable, StoreRecovered) as events:
        for _ in range(3):
            clock.advance(1)
            assert asyncio.run(on()) is False
        store.async_broken = False
        store.delete("flags", "kill/new")
        clock.advance(1)
        assert asyncio.run(on()) is True
    assert [StoreUnavailable, StoreRecovered] == [type(e) for e in events]


class SlowStore(AsyncOnlyStore):
    """An AsyncOnlyStore whose aversion() waits for ``gate`` to be set."""

    gate: asyncio.Event | None = None

    async def aversion(self, namespace: str) -> int:
        assert self.gate is not None
        await self.gate.wait()
        return await super().aversion(namespace)


def test_a_cancelled_async_refresh_is_due_again():
    """A refresh cancelled while awaiting the store runs again on the next evaluation."""
    clock = FakeClock()
    store = SlowStore(clock=clock, push=False)
    store.set("flags", "kill/new", True)
    flags = make(store, clock, interval=3600)

    async def main() -> bool:
        store.gate = asyncio.Event()
        task = asyncio.ensure_future(flags.ais_enabled("new", "u", default=True))
        await asyncio.sleep(0)  # noqa: TID251  # lets the task reach the store; no time passes
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        store.gate.set()
        return await flags.ais_enabled("new", "u", default=True)

    assert asyncio.run(main()) is False


def test_sync_evaluation_still_uses_the_sync_store():
    """The sync faces read the store with its sync methods (due at the first use)."""
    clock = FakeClock()
    store = AsyncOnlyStore(clock=clock, push=False)
    store.set("flags", "kill/new", True)
    flags = make(store, clock)
    assert flags.is_enabled("new", "u", default=True) is False
    assert 0 == store.async_calls


def test_async_evaluation_over_redis_uses_the_async_client(redis_store, monkeypatch):
    """Over a real Redis, the async faces see another process's kill with sync reads broken."""
    flags = Flags(InMemoryProvider(DOC), store=redis_store, refresh_interval=0)

    async def on() -> bool:
        return await flags.ais_enabled("new", "u", default=True)

    assert asyncio.run(on()) is True
    redis_store.set("flags", "kill/new", True)

    def broken(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("sync store method on the event loop")

    for name in ("version", "snapshot", "get"):
        monkeypatch.setattr(redis_store, name, broken)
    assert asyncio.run(on()) is False
