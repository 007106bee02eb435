"""The Store contract: one suite every Store implementation must pass.

Subclass :class:`StoreContract` and provide a ``store`` fixture (and, for
implementations whose clock can be driven, ``advance(seconds)``); see
``tests/test_stores.py`` for MemoryStore and ``tests/test_redis_store.py`` for
Redis. Tests that need time to pass call ``self.advance``; implementations on a
real server clock may skip those by leaving ``controls_time = False``. A store
whose watches subscribe in the background overrides ``watch_ready`` to return
once they are live.

The suite is grouped by capability (:class:`~tipkit.stores.KeyValueStore`,
:class:`~tipkit.stores.CounterStore`, :class:`~tipkit.stores.TokenStore`):
each group uses only the methods its protocol declares.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, ClassVar

import pytest

from tipkit.stores import (
    CounterStore,
    Entry,
    KeyValueStore,
    Snapshot,
    Store,
    TokenStore,
    TokenTake,
)

# Long enough for a pub/sub delivery on a loaded machine; a watch that works
# fires within milliseconds, so only a failing test waits this long.
WATCH_DELIVERY = 5.0


class StoreContract:
    """Behaviour every Store must have. Subclasses provide the ``store`` fixture."""

    controls_time: ClassVar[bool] = False

    def advance(self, seconds: float) -> None:
        """Move the store's clock forward (only when ``controls_time``)."""
        raise NotImplementedError

    def watch_ready(self, store: Store) -> None:
        """Return once the store's watches receive writes (at once, by default)."""

    # -- every capability ------------------------------------------------------
    def test_is_a_store(self, store: Store) -> None:
        """The implementation satisfies the full protocol and every capability."""
        assert isinstance(store, Store)
        assert isinstance(store, KeyValueStore)
        assert isinstance(store, CounterStore)
        assert isinstance(store, TokenStore)

    def test_on_error_is_a_declared_policy(self, store: Store) -> None:
        """Every store carries a failure policy its primitives read directly."""
        assert store.on_error in {"fail_open", "fail_closed"}

    # -- entries ---------------------------------------------------------------

    def test_get_missing_is_none(self, store: Store) -> None:
        """Reading a key never written returns None."""
        assert store.get("ns", "missing") is None

    def test_set_then_get_round_trips_json(self, store: Store) -> None:
        """Every JSON type round-trips, including falsy values and big ints."""
        values: list[Any] = [
            0,
            False,
            "",
            None,
            2**53 + 1,
            1.5,
            [1, "a"],
            {"k": {"n": [True]}},
        ]
        for i, value in enumerate(values):
            version = store.set("ns", f"k{i}", value)
            entry = store.get("ns", f"k{i}")
            assert entry == Entry(value, version)

    def test_versions_increase_per_namespace(self, store: Store) -> None:
        """Each write bumps the namespace version and stamps the entry with it."""
        v1 = store.set("ns", "a", 1)
        v2 = store.set("ns", "b", 2)
        v3 = store.set("ns", "a", 3)
        assert v1 < v2 < v3
        assert store.version("ns") == v3
        assert store.get("ns", "a") == Entry(3, v3)
        assert store.get("ns", "b") == Entry(2, v2)

    def test_namespaces_are_separate(self, store: Store) -> None:
        """A key in one namespace is invisible in another."""
        store.set("one", "k", "x")
        assert store.get("two", "k") is None
        assert store.version("two") == 0

    def test_values_are_copies(self, store: Store) -> None:
        """Mutating a value read from the store changes nothing stored."""
        store.set("ns", "k", {"list": [1]})
        entry = store.get("ns", "k")
        assert entry is not None
        entry.value["list"].append(2)
        again = store.get("ns", "k")
        assert again is not None
        assert again.value == {"list": [1]}

    def test_compare_and_set_on_absent_key(self, store: Store) -> None:
        """Version 0 means 'must not exist': the first writer wins, the second loses."""
        first = store.compare_and_set("ns", "k", "a", version=0)
        assert first is not None
        assert store.compare_and_set("ns", "k", "b", version=0) is None
        assert store.get("ns", "k") == Entry("a", first)

    def test_compare_and_set_with_stale_version_fails(self, store: Store) -> None:
        """A writer holding an old version cannot overwrite a newer value."""
        v1 = store.set("ns", "k", 1)
        v2 = store.compare_and_set("ns", "k", 2, version=v1)
        assert v2 is not None
        assert store.compare_and_set("ns", "k", 3, version=v1) is None
        assert store.get("ns", "k") == Entry(2, v2)

    def test_delete(self, store: Store) -> None:
        """Delete says whether the key existed and bumps the version."""
        store.set("ns", "k", 1)
        before = store.version("ns")
        assert store.delete("ns", "k") is True
        assert store.delete("ns", "k") is False
        assert store.get("ns", "k") is None
        assert store.version("ns") > before

    def test_snapshot_reads_whole_namespace(self, store: Store) -> None:
        """A snapshot holds every live entry with its version, and the namespace version."""
        va = store.set("ns", "a", {"x": 1})
        vb = store.set("ns", "b", [2])
        store.set("other", "c", 3)
        snap = store.snapshot("ns")
        assert snap == Snapshot(vb, {"a": Entry({"x": 1}, va), "b": Entry([2], vb)})
        assert snap.values() == {"a": {"x": 1}, "b": [2]}

    def test_snapshot_of_empty_namespace(self, store: Store) -> None:
        """An unknown namespace is an empty snapshot at version 0."""
        assert store.snapshot("nothing") == Snapshot(0, {})

    def test_non_json_value_is_refused(self, store: Store) -> None:
        """A value that is not JSON-compatible raises TypeError naming the key."""
        with pytest.raises(TypeError, match="k"):
            store.set("ns", "k", object())

    def test_ttl_expires_entries(self, store: Store) -> None:
        """An entry written with a TTL disappears once it has passed."""
        if not self.controls_time:
            pytest.skip("this store's clock cannot be driven")
        store.set("ns", "k", 1, ttl=5)
        self.advance(4.9)
        assert store.get("ns", "k") is not None
        self.advance(0.2)
        assert store.get("ns", "k") is None
        assert "k" not in store.snapshot("ns").entries

    # -- watches ---------------------------------------------------------------
    def test_watch_fires_after_a_write_to_its_namespace(self, store: Store) -> None:
        """set, compare_and_set and delete each call back the namespace's watches."""
        fired = threading.Event()
        watch = store.watch("wns", fired.set)
        self.watch_ready(store)
        writes = [
            lambda: store.set("wns", "k", 1),
            lambda: store.compare_and_set("wns", "k", 2, version=store.version("wns")),
            lambda: store.delete("wns", "k"),
        ]
        for write in writes:
            fired.clear()
            write()
            assert fired.wait(WATCH_DELIVERY)
        watch.cancel()

    def test_watch_ignores_other_namespaces_and_ends_on_cancel(
        self, store: Store
    ) -> None:
        """A watch hears only its namespace, and nothing once cancelled."""
        heard: list[str] = []
        last = threading.Event()
        gone = store.watch("wa", lambda: heard.append("gone"))
        store.watch("wa", lambda: (heard.append("a"), last.set()))
        store.watch("wb", lambda: heard.append("b"))
        self.watch_ready(store)
        heard.clear()  # a store may call every watch when it (re)connects
        last.clear()
        gone.cancel()
        gone.cancel()  # idempotent
        store.set("wc", "k", 1)  # nobody watches it
        store.set("wa", "k", 1)
        # One listener delivers in write order, so "a" is heard last.
        assert last.wait(WATCH_DELIVERY)
        assert ["a"] == heard

    def test_watch_callback_that_raises_does_not_fail_the_write(
        self, store: Store
    ) -> None:
        """A raising callback is logged; the write and the other callbacks go on."""
        fired = threading.Event()

        def broken() -> None:
            raise RuntimeError("callback bug")

        store.watch("wr", broken)
        store.watch("wr", fired.set)
        self.watch_ready(store)
        fired.clear()
        version = store.set("wr", "k", 1)
        assert fired.wait(WATCH_DELIVERY)
        assert store.get("wr", "k") == Entry(1, version)

    # -- counters --------------------------------------------------------------
    def test_increment_several_fields_at_once(self, store: Store) -> None:
        """Increment adds to each field and returns every field's total."""
        assert store.increment("c", {"a": 1, "b": 2}) == {"a": 1, "b": 2}
        assert store.increment("c", {"a": 3}) == {"a": 4, "b": 2}
        assert store.counters("c") == {"a": 4, "b": 2}
        assert store.counters("none") == {}

    def test_increment_accepts_floats(self, store: Store) -> None:
        """Amounts may be floats (latency sums)."""
        store.increment("f", {"s": 0.25})
        assert store.increment("f", {"s": 0.5}) == {"s": pytest.approx(0.75)}

    def test_increment_ttl(self, store: Store) -> None:
        """Counters written with a TTL expire as a whole."""
        if not self.controls_time:
            pytest.skip("this store's clock cannot be driven")
        store.increment("t", {"a": 1}, ttl=10)
        self.advance(11)
        assert store.counters("t") == {}

    def test_concurrent_increments_lose_nothing(self, store: Store) -> None:
        """8 threads incrementing at once lose no update."""
        barrier = threading.Barrier(8)

        def work() -> None:
            barrier.wait()
            for _ in range(200):
                store.increment("race", {"n": 1, "m": 2})

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.counters("race") == {"n": 1600, "m": 3200}

    def test_concurrent_compare_and_set_loses_no_update(self, store: Store) -> None:
        """Read-modify-write through compare-and-set from 8 threads loses no update."""
        store.set("cas", "n", 0)
        barrier = threading.Barrier(8)

        def work() -> None:
            barrier.wait()
            for _ in range(50):
                while True:
                    entry = store.get("cas", "n")
                    assert entry is not None
                    if store.compare_and_set(
                        "cas", "n", entry.value + 1, version=entry.version
                    ):
                        break

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = store.get("cas", "n")
        assert final is not None
        assert final.value == 400

    # -- token buckets -----------------------------------------------------------
    def test_new_bucket_is_full(self, store: Store) -> None:
        """A bucket that does not exist holds capacity tokens."""
        take = store.take_tokens("b", 10, rate=1, capacity=10)
        assert take.admitted
        assert take.wait == 0
        assert take.tokens == pytest.approx(0, abs=1e-3)

    def test_empty_bucket_refuses_with_retry_after(self, store: Store) -> None:
        """When tokens are missing, the answer says when they will be there."""
        store.take_tokens("b", 10, rate=1, capacity=10)
        take = store.take_tokens("b", 2, rate=1, capacity=10)
        assert take.admitted is False
        assert take.retry_after == pytest.approx(2, abs=0.05)

    def test_reservation_within_max_wait(self, store: Store) -> None:
        """Tokens due within max_wait are reserved and the wait is returned."""
        store.take_tokens("r", 10, rate=10, capacity=10)
        take = store.take_tokens("r", 5, rate=10, capacity=10, max_wait=1.0)
        assert take.admitted
        assert take.wait == pytest.approx(0.5, abs=0.05)
        assert take.tokens < 0

    def test_give_back_never_exceeds_capacity(self, store: Store) -> None:
        """Negative tokens return a reservation, capped at capacity."""
        store.take_tokens("g", 4, rate=1, capacity=10)
        back = store.take_tokens("g", -100, rate=1, capacity=10)
        assert back.admitted
        assert back.tokens == pytest.approx(10)

    def test_refill_follows_store_clock(self, store: Store) -> None:
        """Tokens come back at `rate` per second of the store's clock, up to capacity."""
        if not self.controls_time:
            pytest.skip("this store's clock cannot be driven")
        store.take_tokens("f", 10, rate=2, capacity=10)
        self.advance(2)
        assert store.take_tokens("f", 4, rate=2, capacity=10).admitted
        assert not store.take_tokens("f", 1, rate=2, capacity=10).admitted
        self.advance(1000)
        take = store.take_tokens("f", 10, rate=2, capacity=10)
        assert take.admitted
        assert not store.take_tokens("f", 1, rate=2, capacity=10).admitted

    def test_take_more_than_capacity_is_refused(self, store: Store) -> None:
        """Asking for more tokens than the capacity can never succeed: ValueError."""
        with pytest.raises(ValueError, match="capacity"):
            store.take_tokens("x", 11, rate=1, capacity=10)

    def test_bad_rate_is_refused(self, store: Store) -> None:
        """A non-positive rate is a clear ValueError."""
        with pytest.raises(ValueError, match="rate"):
            store.take_tokens("x", 1, rate=0, capacity=10)

    def test_concurrent_takes_never_over_admit(self, store: Store) -> None:
        """8 threads taking from one bucket never get more than it holds (plus refill)."""
        rate, capacity = 0.001, 100
        barrier = threading.Barrier(8)
        admitted = []

        def work() -> None:
            barrier.wait()
            got = sum(
                store.take_tokens("hot", 1, rate=rate, capacity=capacity).admitted
                for _ in range(50)
            )
            admitted.append(got)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(admitted) == capacity

    # -- async methods -------------------------------------------------------------
    def test_async_methods_match_sync(self, store: Store) -> None:
        """Every async method does what its sync operation does."""

        async def main() -> None:
            v = await store.aset("ans", "k", {"a": 1})
            assert await store.aget("ans", "k") == Entry({"a": 1}, v)
            assert await store.aversion("ans") == v
            v2 = await store.acompare_and_set("ans", "k", 2, version=v)
            assert v2 is not None
            assert await store.acompare_and_set("ans", "k", 3, version=v) is None
            assert (await store.asnapshot("ans")).values() == {"k": 2}
            assert await store.aincrement("ac", {"x": 1}) == {"x": 1}
            assert await store.acounters("ac") == {"x": 1}
            take = await store.atake_tokens("ab", 1, rate=1, capacity=1)
            assert isinstance(take, TokenTake)
            assert take.admitted
            assert await store.adelete("ans", "k") is True

        asyncio.run(main())

    def test_async_compare_and_set_from_many_tasks_loses_no_update(
        self, store: Store
    ) -> None:
        """Read-modify-write through the async key-value methods from 50 tasks."""

        async def bump() -> None:
            while True:
                entry = await store.aget("acas", "n")
                assert entry is not None
                new = entry.value + 1
                if await store.acompare_and_set(
                    "acas", "n", new, version=entry.version
                ):
                    return

        async def main() -> None:
            await store.aset("acas", "n", 0)
            await asyncio.gather(*(bump() for _ in range(50)))

        asyncio.run(main())
        assert store.get("acas", "n") == Entry(50, store.version("acas"))

    def test_async_take_tokens_never_over_admits(self, store: Store) -> None:
        """100 tasks taking from one bucket through atake_tokens get its capacity."""

        async def main() -> list[TokenTake]:
            return await asyncio.gather(
                *(
                    store.atake_tokens("atb", 1, rate=0.001, capacity=30)
                    for _ in range(100)
                )
            )

        takes = asyncio.run(main())
        assert 30 == sum(take.admitted for take in takes)

    def test_async_increment_from_many_tasks(self, store: Store) -> None:
        """100 tasks adding through aincrement lose no update."""

        async def main() -> None:
            await asyncio.gather(
                *(store.aincrement("aic", {"n": 1}) for _ in range(100))
            )

        asyncio.run(main())
        assert store.counters("aic") == {"n": 100}
