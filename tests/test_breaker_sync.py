"""Breakers sharing their state through a store: the FleetSync collaborator, in process.

The same behaviour on a real Redis server, across connections and processes, is
in test_fleet.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tipkit.breaker import (
    BreakerState,
    BreakerStateChanged,
    CircuitBreaker,
    CountWindow,
)
from tipkit.breaker._sync import NAMESPACE, SKEW, adoptable
from tipkit.errors import CircuitOpenError, StoreError
from tipkit.stores import (
    Entry,
    MemoryStore,
    StoreRecovered,
    StoreStateLost,
    StoreUnavailable,
)
from tipkit.stores._durable import flush_all
from tipkit.testing import FakeClock, capture_events

from .strategies_breaker import BoomError, boom, ok

CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, DISABLED = BreakerState


class AsyncOnlyStore(MemoryStore):
    """A store whose sync entry methods raise: only the async path may be used."""

    def get(self, namespace: str, key: str) -> Entry | None:
        raise AssertionError("a sync store method was called")

    def set(
        self, namespace: str, key: str, value: Any, *, ttl: float | None = None
    ) -> int:
        raise AssertionError("a sync store method was called")

    async def aget(self, namespace: str, key: str) -> Entry | None:
        return MemoryStore.get(self, namespace, key)

    async def aset(
        self, namespace: str, key: str, value: Any, *, ttl: float | None = None
    ) -> int:
        return MemoryStore.set(self, namespace, key, value, ttl=ttl)


class DownStore(MemoryStore):
    """A store whose entry methods fail as an unreachable server's would."""

    def get(self, namespace: str, key: str) -> Entry | None:
        raise StoreError("down") from ConnectionError("refused")

    def set(
        self, namespace: str, key: str, value: Any, *, ttl: float | None = None
    ) -> int:
        raise StoreError("down") from ConnectionError("refused")

    async def aget(self, namespace: str, key: str) -> Entry | None:
        raise StoreError("down") from ConnectionError("refused")

    async def aset(
        self, namespace: str, key: str, value: Any, *, ttl: float | None = None
    ) -> int:
        raise StoreError("down") from ConnectionError("refused")


def shared(store: MemoryStore, clock: FakeClock, **kwargs: Any) -> CircuitBreaker:
    """Return a breaker 'svc' sharing its state through *store*."""
    options: dict[str, Any] = {
        "window": CountWindow(2),
        "minimum_calls": 2,
        "open_duration": 10.0,
        "half_open_calls": 1,
        "refresh_interval": 1.0,
    }
    options.update(kwargs)
    return CircuitBreaker("svc", store=store, share="state", clock=clock, **options)


def test_a_shared_breaker_is_a_circuit_breaker(clock):
    """store= gives a CircuitBreaker with a collaborator, not another class."""
    store = MemoryStore(clock=clock)
    breaker = shared(store, clock)
    assert (type(breaker), breaker.store) == (CircuitBreaker, store)
    assert CircuitBreaker("plain").store is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"share": "state"}, ValueError, "needs store="),
        ({"store": MemoryStore()}, ValueError, "needs share='state'"),
        ({"store": object(), "share": "state"}, TypeError, "must implement"),
        (
            {"store": MemoryStore(), "share": "state", "refresh_interval": -1},
            ValueError,
            "refresh_interval must be >= 0",
        ),
    ],
)
def test_sharing_options_are_checked(kwargs, error, match):
    """store= needs share='state' and a KeyValueStore, and vice versa."""
    with pytest.raises(error, match=match):
        CircuitBreaker("x", **kwargs)


def test_a_transition_is_written_for_the_fleet(clock):
    """Opening writes {'state': 'open', 'until': ...} that expires with the open duration."""
    store = MemoryStore(clock=clock)
    breaker = shared(store, clock)
    for _ in range(2):
        with pytest.raises(BoomError):
            breaker.call(boom)
    entry = store.get(NAMESPACE, "svc")
    assert entry is not None
    assert entry.value == {"state": "open", "until": round(clock.time() + 10, 3)}
    clock.advance(10)
    assert store.get(NAMESPACE, "svc") is None


def opened_elsewhere(store: MemoryStore, clock: FakeClock, seconds: float) -> None:
    """Write an opening as another process's breaker does (that process then gone)."""
    until = round(clock.time() + seconds, 3)
    store.set(NAMESPACE, "svc", {"state": "open", "until": until}, ttl=seconds)


def test_a_process_that_only_adopted_an_opening_writes_it_back_when_lost(clock):
    """Anti-entropy: every process that knows an opening restores it, not only its writer."""
    store = MemoryStore(clock=clock, push=False)
    peer = shared(store, clock)
    opened_elsewhere(store, clock, 10.0)
    peer.sync()
    assert OPEN == peer.state
    clock.advance(2)
    store.delete(NAMESPACE, "svc")  # the store lost it (an empty restart, a flush)
    with capture_events(StoreStateLost) as lost:
        peer.sync()
        assert flush_all()
    entry = store.get(NAMESPACE, "svc")
    assert entry is not None
    assert "open" == entry.value["state"]  # type: ignore[index, call-overload]  # a breaker entry
    assert ["breaker"] == [e.component for e in lost]
    clock.advance(8 - SKEW / 2)  # written back for what was left of it, no longer
    assert store.get(NAMESPACE, "svc") is None


def test_an_adopted_opening_that_ran_out_is_not_written_back(clock):
    """An opening that expired on the store is gone: no process opens the fleet again."""
    store = MemoryStore(clock=clock, push=False)
    peer = shared(store, clock, open_duration=30.0)  # its own opening lasts longer
    opened_elsewhere(store, clock, 10.0)
    peer.sync()
    clock.advance(10)  # the store's entry expired: an ordinary end
    with capture_events(StoreStateLost) as lost:
        peer.sync()
        assert flush_all()
    assert (None, []) == (store.get(NAMESPACE, "svc"), lost)


def test_an_adopted_opening_without_its_end_is_not_learnt(clock):
    """An opening written without ``until`` (an older tipkit) is adopted, not restored."""
    store = MemoryStore(clock=clock, push=False)
    peer = shared(store, clock)
    store.set(NAMESPACE, "svc", {"state": "open"}, ttl=10.0)
    peer.sync()
    assert OPEN == peer.state
    store.delete(NAMESPACE, "svc")
    peer.sync()
    assert flush_all()
    assert store.get(NAMESPACE, "svc") is None


def test_a_peer_adopts_an_opening_at_once_when_pushed(clock):
    """With a store that pushes, a peer's next call is refused, without waiting."""
    store = MemoryStore(clock=clock)
    one, two = shared(store, clock), shared(store, clock)
    assert two.call(ok) == "ok"
    with capture_events(BreakerStateChanged) as events:
        for _ in range(2):
            with pytest.raises(BoomError):
                one.call(boom)
        with pytest.raises(CircuitOpenError):
            two.call(ok)
    assert [(e.name, e.to_state, e.reason) for e in events] == [
        ("svc", OPEN, "failure_rate"),
        ("svc", OPEN, "shared_state"),
    ]


def test_an_adopted_state_is_not_written_back(clock):
    """A peer adopting an opening writes nothing: the store version stays."""
    store = MemoryStore(clock=clock, push=False)
    one, two = shared(store, clock), shared(store, clock)
    for _ in range(2):
        with pytest.raises(BoomError):
            one.call(boom)
    version = store.version(NAMESPACE)
    two.sync()
    assert (two.state, store.version(NAMESPACE)) == (OPEN, version)


def test_reset_and_force_open_reach_the_peers(clock):
    """Operator transitions are shared too: reset closes peers, force_open forces them."""
    store = MemoryStore(clock=clock)
    one, two = shared(store, clock), shared(store, clock)
    one.force_open()
    two.sync()
    assert two.state is FORCED_OPEN
    two.reset()
    one.sync()
    assert (one.state, two.state) == (CLOSED, CLOSED)


def test_a_store_failure_keeps_the_local_state(clock):
    """A store that is down: the breaker decides alone; one outage, then recovery."""
    store = DownStore(clock=clock)
    breaker = shared(store, clock, refresh_interval=0)
    with capture_events(StoreUnavailable, StoreRecovered) as events:
        assert breaker.call(ok) == "ok"
        with pytest.raises(BoomError):
            breaker.call(boom)
        with pytest.raises(CircuitOpenError):
            breaker.call(ok)
    assert breaker.state is OPEN
    assert [(type(e).__name__, e.component) for e in events] == [
        ("StoreUnavailable", "breaker")
    ]


def test_the_shared_state_is_read_once_per_refresh_interval(clock):
    """Without pushes, reads happen on calls at most every refresh_interval."""
    reads = []

    class CountingStore(MemoryStore):
        def get(self, namespace: str, key: str) -> Entry | None:
            reads.append(clock.monotonic())
            return super().get(namespace, key)

    breaker = shared(CountingStore(clock=clock, push=False), clock)
    for _ in range(4):  # calls at 0.0, 0.4, 0.8 and 1.2
        breaker.call(ok)
        clock.advance(0.4)
    assert reads == [0.0, pytest.approx(1.2)]


@pytest.mark.parametrize(
    ("shared_state", "current", "adopted"),
    [
        (OPEN, CLOSED, True),
        (OPEN, HALF_OPEN, True),
        (OPEN, OPEN, False),
        (OPEN, FORCED_OPEN, False),
        (OPEN, DISABLED, False),
        (FORCED_OPEN, CLOSED, True),
        (FORCED_OPEN, OPEN, True),
        (FORCED_OPEN, FORCED_OPEN, False),
        (FORCED_OPEN, DISABLED, True),  # disabled is shared: the operator's next word
        (CLOSED, OPEN, True),
        (CLOSED, HALF_OPEN, True),
        (CLOSED, FORCED_OPEN, True),
        (CLOSED, CLOSED, False),
        (CLOSED, DISABLED, True),
        (DISABLED, CLOSED, True),
        (DISABLED, FORCED_OPEN, True),
        (DISABLED, DISABLED, False),
    ],
)
def test_which_shared_states_are_adopted(shared_state, current, adopted):
    """Open reaches closed and half-open breakers; an operator's disable, open or reset all."""
    assert adoptable(shared_state, current) is adopted


def test_async_faces_use_only_the_async_store_methods(clock):
    """Through async faces a shared breaker reads and writes with aget and aset only."""
    store = AsyncOnlyStore(clock=clock, push=False)
    one, two = shared(store, clock, refresh_interval=0), shared(store, clock)

    async def main() -> None:
        assert await two.acall(asyncio.sleep, 0, "ok") == "ok"  # noqa: TID251  # returns at once
        failing = one(aboom)
        for _ in range(2):
            with pytest.raises(BoomError):
                await failing()
        clock.advance(1)
        with pytest.raises(CircuitOpenError):
            async with two:
                pass
        clock.advance(10)
        async with one:  # the trial passes: closed, and written with aset
            pass

    asyncio.run(main())
    entry = MemoryStore.get(store, NAMESPACE, "svc")
    assert entry is not None
    assert (one.state, two.state, entry.value) == (CLOSED, OPEN, {"state": "closed"})


async def aboom() -> None:
    raise BoomError("down")


class SwitchedStore(MemoryStore):
    """A MemoryStore whose entry methods fail while ``down`` is set."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise StoreError("down") from ConnectionError("refused")

    def get(self, namespace: str, key: str) -> Entry | None:
        self._check()
        return super().get(namespace, key)

    def set(
        self, namespace: str, key: str, value: Any, *, ttl: float | None = None
    ) -> int:
        self._check()
        return super().set(namespace, key, value, ttl=ttl)

    def compare_and_set(self, *args: Any, **kwargs: Any) -> int | None:
        self._check()
        return super().compare_and_set(*args, **kwargs)


def test_after_a_queued_opening_is_replayed_the_fleet_is_followed_again(clock):
    """An opening queued in an outage and replayed later does not deafen the breaker."""
    from tipkit.stores._durable import flush_all

    store = SwitchedStore(clock=clock, push=False)
    one = shared(store, clock, refresh_interval=0)
    two = shared(store, clock, refresh_interval=0)
    store.down = True
    one.force_open()  # in force here, queued for the store
    store.down = False
    flush_all()  # process-wide (other tests' stores may be down): judged below
    two.sync()
    assert two.state is FORCED_OPEN
    two.reset()  # a newer write by a peer
    one.sync()
    assert (one.state, two.state) == (CLOSED, CLOSED)


def test_an_opening_queued_in_an_outage_is_reported_pending_then_flushed(clock):
    """Its write failed: ActionPending at once (sync and async faces); ActionFlushed later."""
    from tipkit.stores import ActionFlushed, ActionPending
    from tipkit.stores._durable import flush_all

    store = SwitchedStore(clock=clock, push=False)
    store.down = True
    breakers = [shared(store, clock, refresh_interval=0) for _ in range(2)]
    with capture_events(ActionPending, ActionFlushed) as events:
        for _ in range(2):
            with pytest.raises(BoomError):
                breakers[0].call(boom)

        async def main() -> None:
            for _ in range(2):
                with pytest.raises(BoomError):
                    await breakers[1].acall(aboom)

        asyncio.run(main())
        assert [OPEN, OPEN] == [b.state for b in breakers]
        pending = [(type(e).__name__, e.component, e.key) for e in events]
        store.down = False
        flush_all()
    assert [("ActionPending", "breaker", "svc")] * 2 == pending
    assert [("ActionFlushed", "svc")] * 2 == [
        (type(e).__name__, e.key) for e in events[2:]
    ]
