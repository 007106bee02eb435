"""Outages of a real Redis Cluster primary that the application cannot tell from a dead one.

* A blackhole: the application's connections to one primary never answer (the
  node announces a FaultProxy in front of it as its client port, so clients
  discover the proxy through ``CLUSTER SLOTS``; the cluster bus is untouched).
* A primary paused past ``cluster-node-timeout`` with no replica: its peers
  fail it, and with ``cluster-require-full-coverage yes`` (Redis' default)
  every other primary refuses with ``CLUSTERDOWN`` until it is back; with
  ``no``, only its own slots are out.
* ``CLIENT PAUSE WRITE``: reads answered, scripts (every write) held.
* A rollout's rollback and a keyed limiter through ``DEBUG SLEEP`` and
  ``CLIENT PAUSE`` on their primary.
* 3 primaries + 3 replicas: the namespaces' primary SIGKILLed and its replica
  promoted by the cluster, with a kill, a rollback and a shared bucket.

Asserted each time: nothing raises into the application, every hot call is
bounded (2x the store timeout plus the machine's slack; sync, and 50 async
tasks), the ``on_error`` policy is followed, one ``StoreUnavailable`` per
primitive and store, no action lost, and the time to be served again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from tests.fault_proxy import FaultProxy
from tests.redis_fixtures import _executable, machine_timeout
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
    until,
)
from tests.test_redis_cluster import dead_loop_connections
from tests.test_redis_cluster_faults import (
    POLICIES,
    Layout,
    block,
    keyed_fifty,
    side_by_side,
)
from tests.test_redis_sentinel import (
    CALLS,
    HOT,
    OUTAGE,
    HotCalls,
    assert_on_policy,
    back,
    bounds,
    expected_calls,
    status,
)

from tipkit.flags import Flags, InMemoryProvider
from tipkit.ratelimit import KeyedRateLimiter, TokenBucket
from tipkit.rollout import Rollout, RolloutRolledBack
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
_FLAG = {
    "variants": {"on": True, "off": False},
    "default_variant": "on",
    "off_variant": "off",
}
DOC2 = {"flags": {"checkout": _FLAG, "pricing": _FLAG}}


@pytest.fixture
def cluster(redis_cluster: ClusterServers) -> Iterator[ClusterServers]:
    """The session cluster, ok before and after the test."""
    redis_cluster.wait_ok()
    yield redis_cluster
    redis_cluster.wait_ok()


def outage_kinds(events: list[Any]) -> list[tuple[str, str]]:
    """(component, policy) of each StoreUnavailable, sorted."""
    return sorted((e.component, e.policy) for e in events)


# -- a blackhole between the application and one primary ------------------------------


def test_a_blackholed_primary_bounds_its_slots_calls_and_other_slots_stay_exact(
    cluster: ClusterServers,
) -> None:
    """A primary discovered through a FaultProxy that stops answering: bounded, on policy.

    The node announces the proxy's port (``cluster-announce-port``), so the
    stores' cluster clients reach it only through the proxy. Blackhole: each
    policy's hot calls for that primary's slots (sync, and 50 async tasks) are
    bounded and on policy, one ``StoreUnavailable`` per primitive and store; a
    bucket on another primary stays exact. The proxy passes again: every hot
    call served, one ``StoreRecovered`` each, and the time it took.
    """
    victim = cluster.nodes[2]
    layout = Layout(cluster, victim)  # slot owners by the real ports, before
    with (
        cluster.no_failover(),
        FaultProxy(victim.port) as proxy,
        cluster.announced(victim, proxy.port),
    ):
        timeout = machine_timeout(layout.url, TIMEOUT)
        made = {
            p: RedisStore(
                layout.url, prefix=layout.prefix(p), timeout=timeout, on_error=p
            )
            for p in POLICIES
        }
        hots = {p: HotCalls(store) for p, store in made.items()}
        other_store = RedisStore(
            layout.url, prefix=f"{{{layout.other}}}:", timeout=timeout
        )
        elsewhere = TokenBucket("api", rate=0.001, capacity=20, store=other_store)
        assert [True] * 10 == [elsewhere.try_acquire() for _ in range(10)]
        assert all(h.served() for h in hots.values())
        through = proxy.accepted
        limits = {p: bounds(h, timeout) for p, h in hots.items()}
        with capture_events(StoreRecovered) as up:  # also from background readers
            proxy.set("blackhole")
            try:
                with capture_events(StoreUnavailable) as down:
                    began = time.perf_counter()
                    during = side_by_side(
                        {
                            p: lambda h=h: (h.timed(), *h.fifty())
                            for p, h in hots.items()
                        }
                    )
                    start = time.perf_counter()
                    stall = STALLS.worst(began, start)
                    served = [elsewhere.try_acquire() for _ in range(15)]
                    elsewhere_took = time.perf_counter() - start
            finally:
                proxy.set("pass")
            passing = time.perf_counter()
            recovered = until(back(list(hots.values()), up), cluster.bound)
            recovery = time.perf_counter() - passing
        for store in [*made.values(), other_store]:
            store.close()
    assert through > 0, "the stores never went through the proxy"
    assert_on_policy(during, limits, hots, CALLS, expected_calls, stall)
    assert [True] * 10 + [False] * 5 == served  # the store decided: exact
    assert elsewhere_took < limits[POLICIES[0]][0]
    assert OUTAGE == outage_kinds(down)
    assert recovered is not None
    assert 2 * len(HOT) == len(up)
    LOG.info(
        "timeout %.3f; blackholed cluster primary: sync calls %.2f-%.2fx timeout, "
        "50 async %s x timeout; every hot call served %.3f s after the proxy passed "
        "again; other slot 15 acquires in %.3f s",
        timeout,
        min(c[n][1] for c, _, _ in during.values() for n in CALLS) / timeout,
        max(c[n][1] for c, _, _ in during.values() for n in CALLS) / timeout,
        [round(a / timeout, 2) for _, _, a in during.values()],
        recovery,
        elsewhere_took,
    )


# -- a primary failed by its peers, no replica: the cluster's refusal window ----------


def cluster_state(cluster: ClusterServers, node: Any) -> str:
    """``ok`` or ``fail``, as *node* says now."""
    with redis.Redis(host=node.host, port=node.port, socket_timeout=cluster.bound) as c:
        return str(c.cluster("INFO")["cluster_state"])


def flagged_fail(cluster: ClusterServers, node: Any, victim_id: str) -> bool:
    """Whether *node* has flagged node *victim_id* ``fail`` (its peers agreed it is down)."""
    with redis.Redis(host=node.host, port=node.port, socket_timeout=cluster.bound) as c:
        nodes = c.execute_command("CLUSTER", "NODES")
    text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == victim_id:
            return "fail" in fields[2].split(",")
    return False


@pytest.mark.parametrize("full_coverage", ["yes", "no"])
def test_a_primary_failed_by_its_peers_without_a_replica_other_slots_follow_the_policy(
    cluster: ClusterServers, full_coverage: str
) -> None:
    """SIGSTOP past ``cluster-node-timeout``, no replica: the refusal window measured.

    Each policy's store has its hash tag on ANOTHER primary. Once the peers
    flag the paused primary ``fail``: with ``cluster-require-full-coverage
    yes`` every node refuses with ``CLUSTERDOWN``, and those stores' hot calls
    (sync and 50 async tasks) return at once on policy, nothing raised, one
    ``StoreUnavailable`` per primitive and store; with ``no`` they are served
    as if nothing happened. SIGCONT: served again, and how long that took.
    """
    victim = cluster.nodes[1]
    layout = Layout(cluster, victim)
    # Two stores' 50-task bursts run at once here (machine_timeout measures
    # one): twice its figure, so a healthy primary's calls never time out.
    timeout = 2 * machine_timeout(layout.url, TIMEOUT)
    others = [n for n in cluster.nodes if n is not victim]
    victim_id = cluster.node_id(victim)
    made = {
        p: RedisStore(
            layout.url, prefix=f"{{{layout.other}}}:{p}:", timeout=timeout, on_error=p
        )
        for p in POLICIES
    }
    hots = {p: HotCalls(store) for p, store in made.items()}
    assert all(h.served() for h in hots.values())
    limits = {p: bounds(h, timeout) for p, h in hots.items()}
    short = "1000"  # the peers fail it sooner (the session cluster has 2000)
    for node in cluster.nodes:
        with cluster._client(node) as c:
            c.config_set("cluster-require-full-coverage", full_coverage)
            c.config_set("cluster-node-timeout", short)
    try:
        with capture_events(StoreRecovered) as up:
            victim.pause()
            try:
                failed = wait_until(
                    lambda: all(flagged_fail(cluster, n, victim_id) for n in others),
                    cluster.bound,
                    "the peers flag the paused primary fail",
                )
                states = {cluster_state(cluster, n) for n in others}
                with capture_events(StoreUnavailable) as down:
                    began = time.perf_counter()
                    during = side_by_side(
                        {
                            p: lambda h=h: (h.timed(), *h.fifty())
                            for p, h in hots.items()
                        }
                    )
                    stall = STALLS.worst(began, time.perf_counter())
            finally:
                victim.resume()
            resumed = time.perf_counter()
            # With full coverage, served and one StoreRecovered each; without
            # it, nothing was out: served is all there is to wait for.
            wanted = back(
                list(hots.values()), up if full_coverage == "yes" else HOT * 2
            )
            recovered = until(wanted, cluster.bound)
            served_again = time.perf_counter() - resumed
            ok_again = cluster.wait_ok()
    finally:
        for node in cluster.nodes:
            with cluster._client(node) as c:
                c.config_set("cluster-require-full-coverage", "yes")
                c.config_set("cluster-node-timeout", str(cluster.node_timeout_ms))
        for store in made.values():
            store.close()
    if full_coverage == "yes":
        assert {"fail"} == states
        assert_on_policy(during, limits, hots, CALLS, expected_calls, stall)
        assert OUTAGE == outage_kinds(down)
        # Refused by an answer (CLUSTERDOWN), not a timeout: at once, and the
        # store is not taken for down (redis-py's path slept 0.25 s on it).
        assert {"ClusterDownError"} == {e.error_type for e in down}
        assert all(c[n][1] < timeout for c, _, _ in during.values() for n in CALLS), (
            during
        )
        assert 2 * len(HOT) == len(up)
    else:
        assert {"ok"} == states
        assert_served(during, limits, hots, stall)
        assert [] == down
    assert recovered is not None
    LOG.info(
        "timeout %.3f; primary paused past the node timeout (%s ms), no replica, "
        "full coverage %s: flagged fail %.3f s after SIGSTOP; other slots' sync calls "
        "%.2f-%.2fx timeout, 50 async %s x; served again %.3f s after SIGCONT "
        "(cluster_state ok everywhere %.3f s later)",
        timeout,
        short,
        full_coverage,
        failed,
        min(c[n][1] for c, _, _ in during.values() for n in CALLS) / timeout,
        max(c[n][1] for c, _, _ in during.values() for n in CALLS) / timeout,
        [round(a / timeout, 2) for _, _, a in during.values()],
        served_again,
        ok_again,
    )


def assert_served(
    during: dict[str, Any],
    limits: dict[str, tuple[float, float]],
    hots: dict[str, HotCalls],
    stall: float,
) -> None:
    """Each policy's calls got their healthy answers, each within its bound (+ *stall*)."""
    healthy = {"acquire": True, "ratelimit": True, "flags": False, "breaker": "ok"}
    for policy, (calls, results, async_took) in during.items():
        sync_bound, async_bound = limits[policy]
        assert [] == hots[policy].errors
        assert healthy == {n: calls[n][0] for n in CALLS}
        assert all(calls[n][1] < sync_bound + stall for n in CALLS), (
            calls,
            sync_bound,
            stall,
        )
        assert [True] * 50 == results
        assert async_took < async_bound + stall, (async_took, async_bound, stall)


# -- CLIENT PAUSE WRITE: reads answered, every script held ----------------------------


def pause_writes(node: Any, tag: str, seconds: float) -> Callable[[], float]:
    """``CLIENT PAUSE <ms> WRITE`` on *node*; return a wait for its end (``perf_counter``).

    A paused server refuses ``CLIENT UNPAUSE`` from a client that writes... and
    the pause cannot be ended early from here: the end is the moment a write
    to a key of *tag* (on *node*), sent by a client that waits it out, is
    answered.
    """
    with redis.Redis(host=node.host, port=node.port, socket_timeout=60) as admin:
        admin.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "WRITE")

    def ended() -> float:
        with redis.Redis(
            host=node.host,
            port=node.port,
            socket_timeout=seconds + 60,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        ) as patient:
            patient.set(f"{{{tag}}}:pause-end", 1)
        return time.perf_counter()

    return ended


def test_client_pause_write_answers_reads_and_bounds_every_script(
    cluster: ClusterServers,
) -> None:
    """``CLIENT PAUSE WRITE`` on the namespaces' primary: reads served, scripts bounded.

    Per policy, a reader's flag evaluation (a ``HGET`` of the namespace version,
    a read) is answered as if nothing happened (no outage event); the writer's
    bucket (sync, and 50 async tasks: ``EVALSHA``, held like every script) is
    bounded and on policy, and its ``kill()`` (a compare-and-set script) returns
    within its bound, in force here at once and pending. After the pause the
    kill is on the cluster with no call and the reader sees it.
    """
    victim = cluster.nodes[0]
    layout = Layout(cluster, victim)
    timeout = machine_timeout(layout.url, TIMEOUT)
    stores: list[RedisStore] = []

    def store(policy: str) -> RedisStore:
        made = RedisStore(
            layout.url, prefix=layout.prefix(policy), timeout=timeout, on_error=policy
        )
        stores.append(made)
        return made

    parts = {}
    for policy in POLICIES:
        reader = Flags(InMemoryProvider(DOC2), store=store(policy), refresh_interval=0)
        hot = HotCalls(store(policy))  # kills "checkout" while healthy
        writer = Flags(InMemoryProvider(DOC2), store=hot.store, refresh_interval=0)
        assert until(lambda r=reader: not r.is_enabled("checkout", default=True))
        assert hot.served()
        start = time.perf_counter()
        reader.is_enabled("checkout")
        read_healthy = time.perf_counter() - start
        parts[policy] = (reader, hot, writer, read_healthy, bounds(hot, timeout))
    seconds = 2 * 5 * timeout + 0.5  # bucket, 50 async (up to 2), kill (up to 2)

    def outage(reader: Flags, hot: HotCalls, writer: Flags) -> tuple[Any, ...]:
        start = time.perf_counter()
        read = reader.is_enabled("checkout", default=True)
        read_took = time.perf_counter() - start
        acquire = hot.timed_one("ratelimit")
        fifty = hot.fifty()
        start = time.perf_counter()
        writer.kill("pricing", actor="oncall")
        kill_took = time.perf_counter() - start
        killed_here = not writer.is_enabled("pricing", default=True)
        pending = len(writer.pending())
        return read, read_took, acquire, fifty, kill_took, killed_here, pending

    with capture_events(StoreUnavailable, ActionPending, ActionFlushed) as events:
        ended = pause_writes(victim, layout.tags["fail_open"], seconds)
        during = side_by_side({p: lambda a=a: outage(*a[:3]) for p, a in parts.items()})
        done = time.perf_counter()
        over = ended()
        flushed = until(
            lambda: all(not a[2].pending() for a in parts.values()),
            cluster.bound,
        )
        flush_took = time.perf_counter() - over
        seen = until(
            lambda: all(
                not a[0].is_enabled("pricing", default=True) for a in parts.values()
            ),
            cluster.bound,
        )
    for made in stores:
        made.close()
    assert done < over, "the pause ended before the outage calls did"
    for policy, (
        read,
        read_took,
        acquire,
        fifty,
        kill_took,
        here,
        pending,
    ) in during.items():
        _, hot, _, read_healthy, (sync_bound, async_bound) = parts[policy]
        assert [] == hot.errors
        assert (False, True) == (read, read_took < sync_bound), (
            read_took,
            read_healthy,
        )
        assert (policy == "fail_open", True) == (acquire[0], acquire[1] < sync_bound)
        assert ([policy == "fail_open"] * 50, True) == (
            fifty[0],
            fifty[1] < async_bound,
        )
        assert (True, 1, True) == (here, pending, kill_took < 2 * sync_bound)
    assert flushed is not None
    assert flush_took < 2.0 + 1.0  # the flusher's 2 s (issue 14), plus a busy machine
    assert seen is not None
    outages = sorted(
        (e.component, e.policy) for e in events if type(e) is StoreUnavailable
    )
    # Per policy: the bucket, and the writer's store's two Flags (the hot calls'
    # and the writer); none from the readers, whose reads were answered.
    assert [
        *[("flags", "keep_last")] * 4,
        ("ratelimit", "fail_closed"),
        ("ratelimit", "fail_open"),
    ] == outages
    pendings = [e for e in events if type(e) is ActionPending]
    flushes = [e for e in events if type(e) is ActionFlushed]
    assert sorted(e.key for e in pendings) == sorted(e.key for e in flushes)
    assert 2 == len(pendings)
    LOG.info(
        "timeout %.3f; CLIENT PAUSE WRITE %.2f s on a cluster primary: flag reads "
        "%s s; bucket sync %s x timeout, 50 async %s x; kill %s x, pending, on the "
        "cluster %.3f s after the pause ended; outage events %s",
        timeout,
        seconds,
        [round(d[1], 4) for d in during.values()],
        [round(d[2][1] / timeout, 2) for d in during.values()],
        [round(d[3][1] / timeout, 2) for d in during.values()],
        [round(d[4] / timeout, 2) for d in during.values()],
        flush_took,
        outages,
    )


# -- a rollout's rollback and a keyed limiter through DEBUG SLEEP and CLIENT PAUSE ----


@pytest.mark.parametrize("fault", ["debug_sleep", "client_pause"])
def test_a_blocked_primary_rollback_acts_at_once_and_keyed_limiter_follows_policy(
    cluster: ClusterServers, fault: str
) -> None:
    """DEBUG SLEEP / CLIENT PAUSE (ALL) on the rollout's primary, both policies at once.

    ``rollback()`` never raises and returns within its bounded round trips, the
    rollout serves no canary here at once, and the rolled-back state is on the
    cluster within 2 s of the fault's end with no call; a keyed limiter (keys on
    the same primary), sync and 50 async tasks, follows the policy within its
    bounds. Every queued action is written or reported overtaken.
    """
    victim = cluster.nodes[1]
    layout = Layout(cluster, victim)
    timeout = machine_timeout(layout.url, TIMEOUT)
    stores: list[RedisStore] = []

    def store(policy: str, seconds: float) -> RedisStore:
        made = RedisStore(
            layout.url, prefix=layout.prefix(policy), timeout=seconds, on_error=policy
        )
        stores.append(made)
        return made

    parts = {}
    for policy in POLICIES:
        rollout = rollout_via(store(policy, timeout))
        limiter = KeyedRateLimiter(
            "per-user", rate=1000, capacity=1000, store=store(policy, timeout)
        )
        direct = store(policy, cluster.bound)
        assert "running" == stored_status(direct)
        assert limiter.try_acquire("user-0")
        rollback_bound = ROLLBACK_TRIPS * 2 * timeout + rollout_slack(
            layout.url, layout.prefix(policy), timeout
        )
        keyed = (
            2 * timeout
            + machine_slack(lambda lim=limiter: lim.try_acquire("user-0"), BOUND - 0.2),
            2 * timeout
            + machine_slack(lambda lim=limiter: keyed_fifty(lim), ASYNC_BOUND - 0.2),
        )
        parts[policy] = (rollout, limiter, direct, rollback_bound, keyed)

    def outage(rollout: Rollout, limiter: KeyedRateLimiter) -> tuple[Any, ...]:
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
        return rolled, rollout.percent, arm.is_canary, one, one_took, fifty, fifty_took

    # Rollback, one sync call and 50 async (up to 2 timeouts each), twice over.
    seconds = 2 * 4 * timeout + 0.5
    with capture_events(
        RolloutRolledBack,
        ActionPending,
        ActionFlushed,
        ActionConflict,
        StoreUnavailable,
    ) as events:
        ended = block(victim, fault, seconds)
        during = side_by_side(
            {p: lambda a=a: outage(a[0], a[1]) for p, a in parts.items()}
        )
        done = time.perf_counter()
        over = ended()
        flushed = {
            p: until(lambda d=a[2]: stored_status(d) == "rolled_back", cluster.bound)
            and time.perf_counter() - over
            for p, a in parts.items()
        }
        drained = until(
            lambda: (
                not any(a[0].pending() or a[0]._flags.pending() for a in parts.values())
            ),
            cluster.bound,
        )
    assert done < over, "the fault ended before the outage calls did"
    for policy, (rolled, percent, canary, one, one_took, fifty, took) in during.items():
        _, _, _, rollback_bound, (sync_bound, async_bound) = parts[policy]
        assert rolled < rollback_bound, (rolled, rollback_bound)
        assert (0.0, False) == (percent, canary)  # in force here at once
        assert (policy == "fail_open", True) == (one, one_took < sync_bound)
        assert [policy == "fail_open"] * 50 == fifty
        assert took < async_bound, (took, async_bound)
        assert flushed[policy] is not None
        assert flushed[policy] < 2.0 + 1.0  # the flusher's 2 s, plus a busy machine
    assert drained is not None
    assert [
        *[("ActionPending", "rollout")] * 2,
        *[("StoreUnavailable", "ratelimit")] * 2,
        *[("StoreUnavailable", "rollout")] * 2,
    ] == sorted(
        (type(e).__name__, e.component)
        for e in events
        if type(e) in (ActionPending, StoreUnavailable) and e.component != "flags"
    )
    keys = {
        kind: sorted({(e.component, e.key) for e in events if type(e) in kind})
        for kind in ((ActionPending,), (ActionFlushed, ActionConflict))
    }
    assert keys[(ActionPending,)] == keys[(ActionFlushed, ActionConflict)]
    assert 2 == sum(type(e) is RolloutRolledBack for e in events)
    for policy in POLICIES:  # another process building it now: rolled back
        later = rollout_via(store(policy, cluster.bound))
        assert ("rolled_back", 0.0) == (later.status().status, later.percent)
    for made in stores:
        made.close()
    LOG.info(
        "timeout %.3f; %s %.2f s on the rollout's cluster primary: rollback %s x "
        "timeout; keyed sync %s x, 50 async %s x; rolled-back state on the cluster "
        "%s s after the fault ended",
        timeout,
        fault,
        seconds,
        [round(d[0] / timeout, 2) for d in during.values()],
        [round(d[4] / timeout, 2) for d in during.values()],
        [round(d[6] / timeout, 2) for d in during.values()],
        flushed,
    )


# -- 3 primaries + 3 replicas: the cluster fails over by itself -----------------------


@pytest.mark.slow  # a 6-node cluster of its own (~6 s to start) and a failover (~4 s)
def test_a_failover_with_three_replicas_keeps_the_kill_rollback_and_bucket() -> None:
    """3 primaries + 3 replicas; the namespaces' primary paused past the node timeout.

    Before: a kill, a running rollout and a shared bucket with 5 of 20 tokens
    taken, replicated (``WAIT``). During the failover nothing raises: the kill
    holds, ``rollback()`` is in force here at once and pending, the buckets
    follow the policy. The cluster promotes the replica by itself; the same
    store objects (no new client) are then served by it: the rollback is
    written to it with no call, the kill and the bucket's level (15 left) were
    replicated, and a store that only ever takes tokens (whose calls all went
    to the frozen primary) finds the new one too.
    """
    with ClusterServers(_executable(), replicas=3, node_timeout_ms=2000) as cluster:
        master, replica = cluster.nodes[0], cluster.nodes[3]  # replica i of master i
        layout = Layout(cluster, master)
        timeout = machine_timeout(layout.url, TIMEOUT)
        parts = {}
        stores: list[RedisStore] = []
        for policy in POLICIES:
            store, only_bucket = (
                RedisStore(
                    layout.url,
                    prefix=layout.prefix(policy),
                    timeout=timeout,
                    on_error=policy,
                ),
                RedisStore(
                    layout.url,
                    prefix=layout.prefix(policy),
                    timeout=timeout,
                    on_error=policy,
                ),
            )
            stores += [store, only_bucket]
            flags = Flags(InMemoryProvider(DOC2), store=store, refresh_interval=0)
            flags.kill("checkout")
            rollout = rollout_via(store)
            bucket = TokenBucket("shared", rate=0.001, capacity=20, store=store)
            alone = TokenBucket("alone", rate=0.001, capacity=20, store=only_bucket)
            assert [True] * 5 == [bucket.try_acquire() for _ in range(5)]
            assert [True] * 5 == [alone.try_acquire() for _ in range(5)]
            parts[policy] = (store, flags, rollout, bucket, alone)
        with redis.Redis(host=master.host, port=master.port) as primary:
            assert 1 <= primary.execute_command("WAIT", 1, int(cluster.bound * 1000))
        errors: list[BaseException] = []
        during: dict[str, tuple[Any, ...]] = {}
        with capture_events(
            ActionPending, ActionFlushed, ActionConflict, StoreRecovered
        ) as events:
            master.pause()
            paused = time.perf_counter()
            try:
                for policy, (_, flags, rollout, bucket, alone) in parts.items():
                    try:
                        kept = not flags.is_enabled("checkout", default=True)
                        rollout.rollback("failover drill", actor="oncall")
                        with rollout.observe("user-1") as arm:
                            pass
                        during[policy] = (
                            kept,
                            arm.is_canary,
                            bucket.try_acquire(),
                            alone.try_acquire(),
                        )
                    except BaseException as exc:  # none may reach the application
                        errors.append(exc)
                        raise
                wait_until(
                    lambda: cluster.role(replica) == "master",
                    cluster.bound,
                    "the replica promoted",
                )
                promoted = time.perf_counter()
                written = until(
                    lambda: (
                        2
                        == sum(
                            type(e) is ActionFlushed and e.component == "rollout"
                            for e in events
                        )
                    ),
                    cluster.bound,
                )
                written_took = time.perf_counter() - promoted

                def alone_served() -> bool:
                    # Called until served: a probe every 0.25 s while known down.
                    for a in parts.values():
                        a[4].try_acquire()
                    return 2 == sum(
                        type(e) is StoreRecovered and e.name == "alone" for e in events
                    )

                alone_back = until(alone_served, cluster.bound)
                alone_took = time.perf_counter() - promoted
                after = {
                    p: (
                        not a[1].is_enabled("checkout", default=True),
                        a[2].status().status,
                        a[2].percent,
                        round(a[3].tokens),
                    )
                    for p, a in parts.items()
                }
                # A store of the test's own, made now: its first slot map may
                # still name the frozen primary (a peer not told yet), so its
                # reads may time out (generously) until the map is fresh.
                reader = RedisStore(
                    layout.url, prefix=layout.prefix("fail_open"), timeout=10 * timeout
                )
                stores.append(reader)
                stored = until(lambda: status(reader) == "rolled_back", cluster.bound)
                kill_stored = reader.get("flags", "kill/checkout")
            finally:
                master.resume()
            cluster.wait_ok()
            for store in stores:
                store.close()
    assert [] == errors
    for policy, got in during.items():
        assert (True, False, policy == "fail_open", policy == "fail_open") == got
        assert (True, "rolled_back", 0.0, 15) == after[policy]
    assert written is not None, "the rollback never reached the promoted replica"
    assert stored is not None
    assert written_took < 2.0 + 1.0 + 2 * timeout  # flusher's 2 s + a busy machine
    assert alone_back is not None, "the bucket-only store never found the new primary"
    assert kill_stored is not None
    assert kill_stored.value is True
    # Every queued action is written, or reported overtaken (the rollout's own
    # flush may write the flag's split first): none is lost in silence.
    pendings = sorted((e.component, e.key) for e in events if type(e) is ActionPending)
    done = {
        (e.component, e.key)
        for e in events
        if type(e) in (ActionFlushed, ActionConflict)
    }
    assert sorted(set(pendings)) == sorted(done)
    assert 2 == sum(c == "rollout" for c, _ in pendings)
    LOG.info(
        "timeout %.3f; 3 primaries + 3 replicas, the namespaces' primary paused: "
        "replica promoted %.3f s after SIGSTOP; the rollback on it %.3f s after the "
        "promotion (no call), a bucket-only store served %.3f s after it",
        timeout,
        promoted - paused,
        written_took,
        alone_took,
    )


def slot_zero_owner(cluster: ClusterServers) -> Any:
    """The primary that owns slot 0: the first of a client's map (its default node)."""
    with redis.Redis(
        host=cluster.nodes[0].host,
        port=cluster.nodes[0].port,
        socket_timeout=cluster.bound,
    ) as c:
        ranges = c.execute_command("CLUSTER", "SLOTS")
    port = next(int(r[2][1]) for r in ranges if int(r[0]) == 0)
    return next(n for n in cluster.nodes if n.port == port)


def test_a_store_first_used_while_the_first_primary_hangs_never_raises(
    cluster: ClusterServers,
) -> None:
    """A store first used while the first primary of the slot map is paused: no raise.

    Making redis-py's sync cluster client is I/O (the slot map, then
    ``COMMAND`` on the map's first primary): with that primary frozen it timed
    out, and redis-py's ``TimeoutError`` reached the application instead of
    the policy. Each policy's hot calls (their keys on a healthy primary)
    follow the policy within the bound; the store serves them once the
    primary answers again.
    """
    first = slot_zero_owner(cluster)
    layout = Layout(cluster, first)
    timeout = machine_timeout(layout.url, TIMEOUT)
    with cluster.no_failover():
        first.pause()
        try:
            made = {
                p: RedisStore(
                    layout.url,
                    prefix=f"{{{layout.other}}}:first-{p}:",
                    timeout=timeout,
                    on_error=p,
                )
                for p in POLICIES
            }
            hots = {p: HotCalls(made[p]) for p in POLICIES}  # its kill: pending
            during = {p: h.timed() for p, h in hots.items()}
        finally:
            first.resume()
        recovered = until(lambda: all(h.served() for h in hots.values()), cluster.bound)
        limits = {p: bounds(h, timeout) for p, h in hots.items()}
        for store in made.values():
            store.close()
    for policy, calls in during.items():
        assert [] == hots[policy].errors
        assert expected_calls(policy) == {n: calls[n][0] for n in CALLS}
        assert all(calls[n][1] < limits[policy][0] for n in CALLS), calls
    assert recovered is not None
    LOG.info(
        "timeout %.3f; a store first used while the map's first primary hangs: "
        "calls %s x timeout; served %.3f s after SIGCONT",
        timeout,
        [round(c[n][1] / timeout, 2) for c in during.values() for n in CALLS],
        recovered,
    )
