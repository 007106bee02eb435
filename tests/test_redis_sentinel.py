"""RedisStore behind Sentinel: a real master, replica and three sentinels, with failovers.

The store contract through the sentinels, the three ways to name them (``sentinel=``,
a ``redis+sentinel://`` URL, a ``master_for`` client with its async twin), and a
failover (the master SIGKILLed; the sentinels promote the replica) during which a
kill switch acts locally at once, nothing raises into the application, the kill
is replayed to the new master and every watching process sees it.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio.sentinel
import redis.sentinel
from tests.redis_topology import SentinelSet
from tests.store_contract import StoreContract

from tipkit.flags import Flags, InMemoryProvider
from tipkit.stores import RedisStore, Store
from tipkit.stores._events import ActionFlushed, ActionPending
from tipkit.testing import capture_events

pytestmark = pytest.mark.redis

DOC = {
    "flags": {
        "checkout": {
            "variants": {"on": True, "off": False},
            "default_variant": "on",
            "off_variant": "off",
        }
    }
}
# How soon a queued action must reach a store that answers again (issue 14), plus
# a busy machine's scheduling.
FLUSH_BOUND = 2.0 + 1.0


def until(condition: Callable[[], object], seconds: float = 5.0) -> float | None:
    """Wait (on an event, never sleeping) until *condition*; return how long it took."""
    start = time.perf_counter()
    tick = threading.Event()
    while not condition():
        if time.perf_counter() - start > seconds:
            return None
        tick.wait(0.005)
    return time.perf_counter() - start


class TestSentinelStore(StoreContract):
    """RedisStore(sentinel=..., service_name=...) passes the Store contract."""

    controls_time = False

    @pytest.fixture
    def store(self, sentinel_store: RedisStore) -> RedisStore:
        return sentinel_store

    def watch_ready(self, store: Store) -> None:
        """Wait until the subscription (on the master) is confirmed."""
        assert isinstance(store, RedisStore)
        assert until(lambda: store.watching) is not None


@pytest.fixture
def prefix() -> str:
    """A key prefix of the test's own."""
    return f"sn-{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def healthy(redis_sentinel: SentinelSet) -> SentinelSet:
    """The session's sentinel set, healthy (after any earlier failover)."""
    redis_sentinel.wait_healthy()
    return redis_sentinel


@pytest.fixture
def stores(healthy: SentinelSet, prefix: str) -> Iterator[Callable[..., RedisStore]]:
    """Make stores through the sentinels sharing one prefix (one per "process")."""
    made: list[RedisStore] = []

    def make(**kwargs: Any) -> RedisStore:
        store = RedisStore(
            sentinel=healthy.sentinel_addresses,
            service_name=healthy.service,
            prefix=prefix,
            **{"timeout": 0.25, **kwargs},
        )
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def test_three_ways_to_name_the_sentinels_reach_one_master(
    healthy: SentinelSet, prefix: str
) -> None:
    """sentinel=, redis+sentinel:// and a master_for client (and its async twin) agree."""
    hosts = ",".join(f"{h}:{p}" for h, p in healthy.sentinel_addresses)
    manager = redis.sentinel.Sentinel(healthy.sentinel_addresses, socket_timeout=5)
    given = manager.master_for(healthy.service, socket_timeout=5)
    forms = [
        RedisStore(
            sentinel=healthy.sentinel_addresses,
            service_name=healthy.service,
            prefix=prefix,
            timeout=5,
        ),
        RedisStore(
            f"redis+sentinel://{hosts}/{healthy.service}/0", prefix=prefix, timeout=5
        ),
        RedisStore(given, prefix=prefix, timeout=5),
    ]
    assert {f"redis+sentinel://{hosts}/{healthy.service}/0"} == {s.url for s in forms}
    forms[0].set("flags", "k", "v")
    assert ["v", "v", "v"] == [
        e.value for e in (s.get("flags", "k") for s in forms) if e is not None
    ]

    async def main() -> Any:
        return await forms[2].aget("flags", "k")

    twin = asyncio.run(main())
    assert twin is not None
    assert "v" == twin.value
    master = healthy.master()
    with redis.Redis(host=master.host, port=master.port) as direct:
        assert direct.exists(f"{prefix}ns:flags")
        direct.delete(f"{prefix}ns:flags")
    for s in forms:
        s.close()
    given.close()


def test_bad_sentinel_arguments_are_refused() -> None:
    """sentinel= needs a service name and no URL; a sentinel URL needs /service."""
    with pytest.raises(ValueError, match="service_name"):
        RedisStore(sentinel=[("127.0.0.1", 26379)])
    with pytest.raises(TypeError, match="not both"):
        RedisStore("redis://x", sentinel=[("127.0.0.1", 26379)], service_name="m")  # type: ignore[call-overload]  # refused at run time
    with pytest.raises(ValueError, match="/<service>"):
        RedisStore("redis+sentinel://127.0.0.1:26379")
    with pytest.raises(ValueError, match="unknown Redis URL scheme"):
        RedisStore("redis+other://127.0.0.1:6379")


def test_kill_during_a_failover_is_local_first_and_replayed_to_the_new_master(
    healthy: SentinelSet, stores: Callable[..., RedisStore], prefix: str
) -> None:
    """Master SIGKILLed: kill() acts at once, nothing raises, the new master gets it.

    Recovery is measured from the moment the sentinels name the new master to
    the moment the queued kill is on it (and a peer process's Flags sees it).
    """
    writer = Flags(InMemoryProvider(DOC), store=stores(), refresh_interval=0.2)
    peer_store = stores()
    peer = Flags(InMemoryProvider(DOC), store=peer_store, refresh_interval=0.2)
    assert writer.is_enabled("checkout")
    assert until(lambda: peer_store.watching) is not None
    old = healthy.master()
    old.sigkill()
    errors: list[BaseException] = []
    stop = threading.Event()

    def application() -> None:  # requests keep coming during the failover
        while not stop.is_set():
            try:
                writer.is_enabled("checkout")
                peer.is_enabled("checkout")
            except BaseException as exc:
                errors.append(exc)
            stop.wait(0.01)

    app = threading.Thread(target=application)
    app.start()
    try:
        with capture_events(ActionPending, ActionFlushed) as events:
            writer.kill("checkout")
            assert not writer.is_enabled("checkout", default=True)  # at once, here
            healthy.wait_master_is_not(old)
            named = time.perf_counter()
            new = healthy.master()

            def on_new_master() -> bool:
                with redis.Redis(host=new.host, port=new.port) as direct:
                    raw = direct.hgetall(f"{prefix}ns:flags")
                return any(b"true" in v for k, v in raw.items() if k != b"version")

            flushed = until(on_new_master, healthy.bound)
            seen = until(lambda: not peer.is_enabled("checkout", default=True), 10)
    finally:
        stop.set()
        app.join()
        old.start()  # it rejoins as a replica of the new master
    assert flushed is not None, "the queued kill never reached the new master"
    assert seen is not None
    recovery = time.perf_counter() - named
    assert [] == errors
    assert flushed < FLUSH_BOUND, (flushed, recovery)
    names = [type(e).__name__ for e in events]
    assert ("ActionPending", {"ActionPending", "ActionFlushed"}) == (
        names[0],
        set(names),
    )
    assert [] == writer.pending()


def test_forced_failover_keeps_the_state_and_the_watch(
    healthy: SentinelSet, stores: Callable[..., RedisStore]
) -> None:
    """SENTINEL FAILOVER: state replicated, watches re-subscribe on the new master."""
    writer = Flags(InMemoryProvider(DOC), store=stores(), refresh_interval=3600)
    reader_store = stores()
    reader = Flags(InMemoryProvider(DOC), store=reader_store, refresh_interval=3600)
    assert until(lambda: reader_store.watching) is not None
    writer.kill("checkout")
    assert until(lambda: not reader.is_enabled("checkout", default=True)) is not None
    old = healthy.failover()
    healthy.wait_master_is_not(old)
    # The demoted master dropped its clients: the listener re-subscribes on the new one.
    assert until(lambda: reader_store.watching, healthy.bound) is not None
    writer.revive("checkout")
    took = until(lambda: reader.is_enabled("checkout"), 10)
    assert took is not None
    assert [] == writer.pending()


def test_shared_bucket_breaker_and_audit_through_the_sentinels(
    stores: Callable[..., RedisStore],
) -> None:
    """Through the sentinels: an exact shared bucket, a breaker opening, audited ops."""
    from tipkit import audit, registry
    from tipkit.breaker import BreakerState, CircuitBreaker, CountWindow
    from tipkit.errors import CircuitOpenError
    from tipkit.ops import Operator
    from tipkit.ratelimit import TokenBucket

    one, two = stores(timeout=5), stores(timeout=5)
    buckets = [TokenBucket("api", rate=0.001, capacity=12, store=s) for s in (one, two)]
    assert 12 == sum(buckets[i % 2].try_acquire() for i in range(40))

    def breaker(store: RedisStore) -> CircuitBreaker:
        return CircuitBreaker(
            "payments",
            store=store,
            share="state",
            window=CountWindow(4),
            minimum_calls=4,
            open_duration=30,
            refresh_interval=3600,
        )

    here, there = breaker(one), breaker(two)
    assert until(lambda: two.watching) is not None

    def failing() -> None:
        raise ConnectionError

    for _ in range(4):
        with pytest.raises(ConnectionError):
            here.call(failing)
    assert until(lambda: there._fleet.next == float("-inf")) is not None
    with pytest.raises(CircuitOpenError):
        there.call(lambda: None)
    assert BreakerState.OPEN == there.state

    flags = Flags(InMemoryProvider(DOC), store=one, refresh_interval=0)
    registration = registry.register_flags(flags)
    Operator(one, actor="bob").kill("checkout", reason="incident 9")
    assert not flags.is_enabled("checkout", default=True)
    assert ["flag.kill"] == [r.action for r in audit.read(two, target="flag:checkout")]
    assert registration is not None
