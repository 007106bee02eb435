"""Faults on a real Redis Cluster primary: a node that blocks, and a node that fails over.

``DEBUG SLEEP`` (the whole node blocked) and ``CLIENT PAUSE`` (its clients held,
the cluster bus still talking) on the primary that owns a store's hash tag: every
store-backed hot call (a shared bucket sync and 50 async tasks, flags, a shared
breaker; a rollout's rollback and a keyed limiter) stays bounded by the store
timeout, follows the policy, publishes exact events, and is served again after
the fault; a bucket on another primary stays exact throughout. Then a cluster
with a replica: the primary paused past ``cluster-node-timeout``, the replica
promoted by the cluster itself, and the same store (no new client) serving again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from tests.redis_fixtures import _executable, machine_timeout
from tests.redis_server import RedisServer
from tests.redis_topology import ClusterServers, wait_until
from tests.stalls import STALLS
from tests.test_outages_safety import (
    ASYNC_BOUND,
    BOUND,
    ROLLBACK_TRIPS,
    TIMEOUT,
    machine_slack,
    rollout_slack,
    rollout_via,
    stored_status,
)
from tests.test_redis_cluster import dead_loop_connections, migrate_slot, until
from tests.test_redis_sentinel import (
    DOC,
    HOT,
    HotCalls,
    assert_on_policy,
    back,
    bounds,
)

from tipkit.errors import RateLimitedError
from tipkit.flags import Flags, InMemoryProvider
from tipkit.ratelimit import KeyedRateLimiter, TokenBucket
from tipkit.rollout import RolloutRolledBack
from tipkit.stores import RedisStore
from tipkit.stores._events import (
    ActionConflict,
    ActionFlushed,
    ActionPending,
    StoreRecovered,
    StoreUnavailable,
)
from tipkit.testing import capture_events

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("dead_loop_connections")]
__all__ = ["dead_loop_connections"]  # a fixture this module uses, imported

LOG = logging.getLogger("tests.fleet")  # the measured figures (pytest -rA shows them)
POLICIES = ("fail_open", "fail_closed")


class Layout:
    """Hash tags of one test run: each policy's on the victim primary, one elsewhere."""

    def __init__(self, cluster: ClusterServers, victim: RedisServer) -> None:
        entry = next(n for n in cluster.nodes if n is not victim)
        # The entry node is not the victim: a client's first slot map comes from it.
        self.url = f"redis+cluster://{entry.host}:{entry.port}"
        run = uuid.uuid4().hex[:8]
        probe = RedisStore(self.url, timeout=cluster.bound)
        client: Any = probe.client

        def owner(tag: str) -> int:
            return int(client.get_node_from_key(f"{{{tag}}}:x").port)

        def tag_on(base: str, *, here: bool) -> str:
            return next(
                f"{base}-{run}-{i}"
                for i in range(500)
                if (owner(f"{base}-{run}-{i}") == victim.port) == here
            )

        self.tags = {policy: tag_on(policy, here=True) for policy in POLICIES}
        self.other = tag_on("other", here=False)
        probe.close()

    def prefix(self, policy: str) -> str:
        return f"{{{self.tags[policy]}}}:"


def block(node: RedisServer, fault: str, seconds: float) -> Callable[[], float]:
    """Block *node* for *seconds* (from now) with *fault*; return a wait for its end.

    ``DEBUG SLEEP`` is sent and not awaited (the server runs it before any
    command that reaches it later); ``CLIENT PAUSE`` (ALL) is in force when it
    returns. Neither can be ended early (``CLIENT UNPAUSE`` is held too), so the
    returned function waits for a fresh connection's PING to be answered and
    returns that moment (``perf_counter``).
    """
    conn = redis.Connection(host=node.host, port=node.port, socket_timeout=seconds + 60)
    if fault == "debug_sleep":
        conn.send_command("DEBUG", "SLEEP", f"{seconds:.3f}")
    else:
        conn.send_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
        assert conn.read_response() in (b"OK", "OK")

    def ended() -> float:
        with redis.Redis(
            host=node.host, port=node.port, socket_timeout=seconds + 60
        ) as ping:
            ping.ping()
        at = time.perf_counter()
        if fault == "debug_sleep":
            conn.read_response()
        conn.disconnect()
        return at

    return ended


def side_by_side(work: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run each piece of *work* in a thread of its own, started together."""
    out: dict[str, Any] = {}
    barrier = threading.Barrier(len(work))
    STALLS.start()  # its window is the caller's (STALLS.worst)

    def run(name: str, fn: Callable[[], Any]) -> None:
        barrier.wait()
        out[name] = fn()

    threads = [threading.Thread(target=run, args=item) for item in work.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@pytest.fixture
def cluster(redis_cluster: ClusterServers) -> Iterator[ClusterServers]:
    """The session cluster, ok, with no failing of nodes during the test."""
    redis_cluster.wait_ok()
    with redis_cluster.no_failover():
        yield redis_cluster
    redis_cluster.wait_ok()


@pytest.mark.parametrize("fault", ["debug_sleep", "client_pause"])
def test_a_blocked_primary_bounds_hot_calls_and_other_slots_stay_exact(
    cluster: ClusterServers, fault: str
) -> None:
    """DEBUG SLEEP / CLIENT PAUSE on a primary: bounded, on policy, exact events.

    Both policies' stores have their hash tag on the blocked primary; the fault
    lasts as long as every outage call may take within its bound, so each call
    meets the fault. A bucket on another primary is exact throughout.
    """
    victim = cluster.nodes[1]
    layout = Layout(cluster, victim)
    timeout = machine_timeout(layout.url, TIMEOUT)
    made = {
        p: RedisStore(layout.url, prefix=layout.prefix(p), timeout=timeout, on_error=p)
        for p in POLICIES
    }
    hots = {p: HotCalls(store) for p, store in made.items()}
    other_store = RedisStore(layout.url, prefix=f"{{{layout.other}}}:", timeout=timeout)
    elsewhere = TokenBucket("api", rate=0.001, capacity=20, store=other_store)
    assert [True] * 10 == [elsewhere.try_acquire() for _ in range(10)]
    assert all(h.served() for h in hots.values())
    limits = {p: bounds(h, timeout) for p, h in hots.items()}
    # The policies' calls run side by side; each takes one timeout (the 50 async
    # 1.3-1.6x, docs/fleet.md): the fault lasts twice what they need, plus slack.
    seconds = 2 * (len(HOT) + 2) * timeout + 0.5
    with capture_events(StoreRecovered) as up:  # also from background readers
        ended = block(victim, fault, seconds)
        with capture_events(StoreUnavailable) as down:
            began = time.perf_counter()
            during = side_by_side(
                {p: lambda h=h: (h.timed(), *h.fifty()) for p, h in hots.items()}
            )
            start = time.perf_counter()
            stall = STALLS.worst(began, start)
            served = [elsewhere.try_acquire() for _ in range(15)]
            elsewhere_took = time.perf_counter() - start
        done = time.perf_counter()
        over = ended()
        recovered = until(back(list(hots.values()), up), cluster.bound)
        recovery = time.perf_counter() - over
    for store in [*made.values(), other_store]:
        store.close()
    assert done < over, "the fault ended before the outage calls did"
    assert_on_policy(during, limits, hots, stall=stall)
    assert [True] * 10 + [False] * 5 == served  # the store decided: exact
    assert elsewhere_took < limits[POLICIES[0]][0]
    assert [
        ("breaker", "keep_last"),
        ("breaker", "keep_last"),
        ("flags", "keep_last"),
        ("flags", "keep_last"),
        ("ratelimit", "fail_closed"),
        ("ratelimit", "fail_open"),
    ] == sorted((e.component, e.policy) for e in down)  # type: ignore[attr-defined]  # StoreUnavailable
    assert recovered
    assert 2 * len(HOT) == len(up)
    LOG.info(
        "timeout %.3f; %s %.2f s on a cluster primary: sync calls %.2f-%.2fx timeout, "
        "50 async %s x timeout; every hot call served %.3f s after it ended; other "
        "slot 15 acquires in %.3f s",
        timeout,
        fault,
        seconds,
        min(c[n][1] for c, _, _ in during.values() for n in HOT) / timeout,
        max(c[n][1] for c, _, _ in during.values() for n in HOT) / timeout,
        [round(a / timeout, 2) for _, _, a in during.values()],
        recovery,
        elsewhere_took,
    )


def keyed_fifty(limiter: KeyedRateLimiter) -> list[bool]:
    """50 concurrent async admissions, a key each (fail_closed refuses: False)."""

    async def one(i: int) -> bool:
        try:
            async with limiter.limit(f"user-{i}"):
                return True
        except RateLimitedError:
            return False

    async def main() -> list[bool]:
        return list(await asyncio.gather(*(one(i) for i in range(50))))

    return asyncio.run(main())


def test_a_paused_primary_rollback_acts_at_once_and_keyed_limiter_follows_policy(
    cluster: ClusterServers,
) -> None:
    """SIGSTOP on the rollout's primary: rollback in force here at once, stored after.

    Per policy: ``rollback()`` returns within its four bounded round trips and
    never raises, the rollout serves no canary at once, and the rolled-back
    state is on the cluster within 2 s of SIGCONT with no call; a keyed
    limiter's sync call and 50 async tasks (keys on the same primary) follow
    the policy within their bounds.
    """
    victim = cluster.nodes[2]
    layout = Layout(cluster, victim)
    timeout = machine_timeout(layout.url, TIMEOUT)
    stores: list[RedisStore] = []

    def store(policy: str, **kwargs: Any) -> RedisStore:
        made = RedisStore(
            layout.url, prefix=layout.prefix(policy), on_error=policy, **kwargs
        )
        stores.append(made)
        return made

    parts = {}
    for policy in POLICIES:
        rollout = rollout_via(store(policy, timeout=timeout))
        limiter = KeyedRateLimiter(
            "per-user", rate=1000, capacity=1000, store=store(policy, timeout=timeout)
        )
        direct = store(policy, timeout=cluster.bound)
        assert "running" == stored_status(direct)
        assert limiter.try_acquire("user-0")
        slack = rollout_slack(layout.url, layout.prefix(policy), timeout)
        keyed = (
            2 * timeout
            + machine_slack(
                lambda lim=limiter: lim.try_acquire("user-0"), BOUND - 2 * TIMEOUT
            ),
            2 * timeout
            + machine_slack(
                lambda lim=limiter: keyed_fifty(lim), ASYNC_BOUND - 2 * TIMEOUT
            ),
        )
        parts[policy] = (rollout, limiter, direct, slack, keyed)
    errors: list[BaseException] = []
    seen: dict[str, Any] = {}
    with capture_events(
        RolloutRolledBack,
        ActionPending,
        ActionFlushed,
        ActionConflict,
        StoreUnavailable,
    ) as events:
        victim.pause()
        try:
            for policy, (rollout, limiter, _, _, _) in parts.items():
                try:
                    start = time.perf_counter()
                    rollout.rollback("outage drill", actor="oncall")
                    rolled = time.perf_counter() - start
                    with rollout.observe("user-1") as arm:
                        pass
                    start = time.perf_counter()
                    one = limiter.try_acquire("user-1")
                    one_took = time.perf_counter() - start
                    start = time.perf_counter()
                    fifty = keyed_fifty(limiter)
                    fifty_took = time.perf_counter() - start
                except BaseException as exc:  # none may reach the application
                    errors.append(exc)
                    raise
                seen[policy] = (rolled, rollout.percent, arm.is_canary)
                seen[policy] += (one, one_took, fifty, fifty_took)
        finally:
            victim.resume()
        resumed = time.perf_counter()
        flushed = {
            p: until(lambda d=direct: stored_status(d) == "rolled_back", cluster.bound)
            and time.perf_counter() - resumed
            for p, (_, _, direct, _, _) in parts.items()
        }
        drained = until(
            lambda: (
                not any(r.pending() or r._flags.pending() for r, *_ in parts.values())
            ),
            cluster.bound,
        )
    assert [] == errors
    for policy, (rolled, percent, canary, one, one_took, fifty, took) in seen.items():
        _, _, _, slack, (sync_bound, async_bound) = parts[policy]
        assert rolled < ROLLBACK_TRIPS * 2 * timeout + slack, (rolled, slack)
        assert (0.0, False) == (percent, canary)  # in force here at once
        assert (policy == "fail_open", True) == (one, one_took < sync_bound)
        assert [policy == "fail_open"] * 50 == fifty
        assert took < async_bound, (took, async_bound)
        assert flushed[policy] is not False
        assert flushed[policy] < 2.0 + slack  # the flusher's 2 s, plus slack now
    assert drained
    kinds = sorted(
        (type(e).__name__, e.component)
        for e in events
        if type(e) in (ActionPending, StoreUnavailable)
    )  # type: ignore[attr-defined]  # store events
    assert [
        *[("ActionPending", "flags")] * 4,  # the flag's split and override
        *[("ActionPending", "rollout")] * 2,
        *[("StoreUnavailable", "flags")] * 2,
        *[("StoreUnavailable", "ratelimit")] * 2,
        *[("StoreUnavailable", "rollout")] * 2,
    ] == kinds
    # Every queued action is written, or reported as overtaken (the rollout's
    # own flush may write the flag's split first): none is lost in silence.
    keys = {
        kind: sorted({(e.component, e.key) for e in events if type(e) in kind})  # type: ignore[attr-defined]  # store events
        for kind in ((ActionPending,), (ActionFlushed, ActionConflict))
    }
    assert keys[(ActionPending,)] == keys[(ActionFlushed, ActionConflict)]
    for policy in POLICIES:  # another process building it now: rolled back
        later = rollout_via(store(policy, timeout=cluster.bound))
        assert ("rolled_back", 0.0) == (later.status().status, later.percent)
    assert 2 == sum(type(e) is RolloutRolledBack for e in events)
    LOG.info(
        "timeout %.3f; paused cluster primary: rollback %s x timeout; keyed sync %s x, "
        "50 async %s x; rolled-back state on the cluster %s s after SIGCONT",
        timeout,
        [round(v[0] / timeout, 2) for v in seen.values()],
        [round(v[4] / timeout, 2) for v in seen.values()],
        [round(v[6] / timeout, 2) for v in seen.values()],
        flushed,
    )
    for made in stores:
        made.close()


@pytest.mark.slow  # a cluster of its own (~9 s to start) and a real failover (~4 s)
def test_a_primary_paused_past_the_node_timeout_fails_over_and_the_same_store_follows() -> (
    None
):
    """SIGSTOP past ``cluster-node-timeout`` (3 masters + 1 replica): failover, no restart.

    The cluster fails the paused primary and promotes its replica by itself;
    the very same stores (no new client: redis-py's cluster client refreshes
    its slot map) serve every hot call again, the watch follows the slot's new
    owner while the old one still hangs (its health PING goes unanswered) and
    after it rejoins as a replica on SIGCONT. Measured: failover time, recovery
    after it, and the push delays.
    """
    with ClusterServers(_executable(), replicas=1, node_timeout_ms=2000) as cluster:
        master, replica = cluster.nodes[0], cluster.nodes[3]
        layout = Layout(cluster, master)
        timeout = machine_timeout(layout.url, TIMEOUT)
        made = {
            p: RedisStore(
                layout.url, prefix=layout.prefix(p), timeout=timeout, on_error=p
            )
            for p in POLICIES
        }
        hots = {p: HotCalls(store) for p, store in made.items()}
        # The watch pair has a namespace of its own: its events are told apart.
        reader = Flags(
            InMemoryProvider(DOC),
            store=made["fail_closed"],
            refresh_interval=3600,
            namespace="watched",
        )
        writer_store = RedisStore(
            layout.url, prefix=layout.prefix("fail_closed"), timeout=timeout
        )
        writer = Flags(
            InMemoryProvider(DOC),
            store=writer_store,
            refresh_interval=0,
            namespace="watched",
        )
        writer.kill("checkout")
        assert until(lambda: made["fail_closed"].watching, cluster.bound)
        assert until(lambda: not reader.is_enabled("checkout", default=True))
        assert all(h.served() for h in hots.values())
        limits = {p: bounds(h, timeout) for p, h in hots.items()}
        with capture_events(StoreRecovered) as up:
            master.pause()
            paused = time.perf_counter()
            try:
                with capture_events(StoreUnavailable) as down:
                    began = time.perf_counter()
                    during = side_by_side(
                        {
                            p: lambda h=h: (h.timed(), *h.fifty())
                            for p, h in hots.items()
                        }
                    )
                    stall = STALLS.worst(began, time.perf_counter())
                wait_until(
                    lambda: cluster.role(replica) == "master",
                    cluster.bound,
                    "the replica promoted",
                )
                promoted = time.perf_counter()
                recovered = until(back(list(hots.values()), up), cluster.bound)
                served = time.perf_counter()
                ups = [e for e in up if e.name != "watched"]
                # The old primary still frozen (it sends nothing, not even its
                # unsubscribes): the watch finds the slot's new owner by itself.
                writer.revive("checkout")  # pending if it meets the old map first
                pushed = until(lambda: reader.is_enabled("checkout"), cluster.bound)
                push_took = time.perf_counter() - served
            finally:
                master.resume()
        wait_until(
            lambda: cluster.role(master) == "slave",
            cluster.bound,
            "old primary rejoins",
        )
        cluster.wait_ok()
        start = time.perf_counter()
        writer.kill("checkout")  # and pushed once the old primary is back, a replica
        again = until(lambda: not reader.is_enabled("checkout", default=True), 10)
        again_took = time.perf_counter() - start
        for store in [*made.values(), writer_store]:
            store.close()
    assert_on_policy(during, limits, hots, stall=stall)
    assert recovered, sorted((e.component, e.name) for e in ups)  # type: ignore[attr-defined]  # StoreRecovered
    assert pushed, "the revive never reached the watch while the old primary hung"
    assert again, "a kill never reached the watch after the old primary rejoined"
    assert [
        ("breaker", "keep_last"),
        ("breaker", "keep_last"),
        ("flags", "keep_last"),
        ("flags", "keep_last"),
        ("ratelimit", "fail_closed"),
        ("ratelimit", "fail_open"),
    ] == sorted((e.component, e.policy) for e in down if e.name != "watched")  # type: ignore[attr-defined]  # StoreUnavailable
    assert 2 * len(HOT) == len(ups)
    LOG.info(
        "timeout %.3f; cluster primary paused past the node timeout (2 s): replica promoted "
        "%.3f s after SIGSTOP; every hot call served by it %.3f s after promotion; "
        "a revive on the watch %.3f s later (old primary still frozen), a kill %.3f s "
        "after it rejoined; bounds %s",
        timeout,
        promoted - paused,
        served - promoted,
        push_took,
        again_took,
        limits,
    )


def shard_subscribers(cluster: ClusterServers, port: int, channel: str) -> int:
    """How many sharded subscribers *channel* has on the node at *port*."""
    node = next(n for n in cluster.nodes if n.port == port)
    with redis.Redis(host=node.host, port=node.port, socket_timeout=cluster.bound) as c:
        found = c.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(found[1])


def test_the_watch_follows_the_namespaces_slot_to_its_new_primary(
    redis_cluster: ClusterServers,
) -> None:
    """CLUSTER SETSLOT + MIGRATE of the namespaces' slot: the watch moves with it.

    The old owner unsubscribes its sharded subscribers when it loses the slot;
    the listener reconnects to the new owner (a fresh slot map), and a kill
    written after the move is pushed to a Flags with a 1 h refresh.
    """
    redis_cluster.wait_ok()
    prefix = f"{{mig-{uuid.uuid4().hex[:8]}}}:"
    url = f"redis+cluster://{redis_cluster.nodes[0].host}:{redis_cluster.nodes[0].port}"
    reader_store = RedisStore(url, prefix=prefix, timeout=redis_cluster.bound)
    writer_store = RedisStore(url, prefix=prefix, timeout=redis_cluster.bound)
    reader = Flags(InMemoryProvider(DOC), store=reader_store, refresh_interval=3600)
    writer = Flags(InMemoryProvider(DOC), store=writer_store, refresh_interval=0)
    both = (reader_store, writer_store)  # both Flags watch the namespace
    assert until(lambda: all(s.watching for s in both), redis_cluster.bound)
    channel = f"{prefix}ns:flags"
    writer.kill("checkout")  # the namespace's hash exists: MIGRATE moves it
    assert until(lambda: not reader.is_enabled("checkout", default=True))
    source, target = migrate_slot(redis_cluster, channel)
    moved = time.perf_counter()
    followed = until(
        lambda: shard_subscribers(redis_cluster, target, channel) == len(both),
        redis_cluster.bound,
    )
    follow_took = time.perf_counter() - moved
    assert until(lambda: all(s.watching for s in both), redis_cluster.bound)
    start = time.perf_counter()
    writer.revive("checkout")
    pushed = until(lambda: reader.is_enabled("checkout"), redis_cluster.bound)
    push_took = time.perf_counter() - start
    left = shard_subscribers(redis_cluster, source, channel)
    for store in both:
        store.close()
    assert source != target
    assert followed, "the listener never subscribed on the slot's new owner"
    assert pushed
    assert 0 == left
    LOG.info(
        "slot migrated: the watch subscribed on the new owner %.3f s after "
        "SETSLOT NODE; a revive pushed in %.3f s",
        follow_took,
        push_took,
    )


def test_a_server_without_sharded_pubsub_falls_back_to_classic_by_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SSUBSCRIBE/SPUBLISH renamed away (as on Redis 6): classic pub/sub, logged once each.

    The store keeps its default (``sharded_pubsub=True``): the scripts publish
    with ``PUBLISH`` when ``SPUBLISH`` is unknown, the listener subscribes the
    classic way when ``SSUBSCRIBE`` is, and a kill still reaches another Flags
    by push.
    """
    renamed = ("--rename-command", "SSUBSCRIBE", "", "--rename-command", "SPUBLISH", "")
    with ClusterServers(_executable(), extra=renamed) as cluster:
        url = f"redis+cluster://{cluster.nodes[0].host}:{cluster.nodes[0].port}"
        stores = [
            RedisStore(url, prefix="old:", timeout=cluster.bound) for _ in range(2)
        ]
        assert [True, True] == [s.sharded_pubsub for s in stores]
        reader = Flags(InMemoryProvider(DOC), store=stores[0], refresh_interval=3600)
        writer = Flags(InMemoryProvider(DOC), store=stores[1], refresh_interval=0)
        with caplog.at_level(logging.WARNING, logger="tipkit"):
            watching = until(lambda: stores[0].watching, cluster.bound)
            writer.kill("checkout")
            pushed = until(
                lambda: not reader.is_enabled("checkout", default=True), cluster.bound
            )
            writer.revive("checkout")
            again = until(lambda: reader.is_enabled("checkout"), cluster.bound)
        for store in stores:
            store.close()
    assert (True, True, True) == (bool(watching), bool(pushed), bool(again))
    fallbacks = [r for r in caplog.records if "no SSUBSCRIBE" in r.getMessage()]
    assert 2 == len(fallbacks)  # once per store (both Flags watch), not per retry
