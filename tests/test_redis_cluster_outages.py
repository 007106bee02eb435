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
from tests.redis_fixtures import machine_timeout
from tests.redis_topology import ClusterServers, wait_until
from tests.test_outages_safety import TIMEOUT
from tests.test_redis_cluster import dead_loop_connections, until
from tests.test_redis_cluster_faults import POLICIES, Layout, side_by_side
from tests.test_redis_sentinel import (
    HOT,
    OUTAGE,
    HotCalls,
    assert_on_policy,
    back,
    bounds,
)

from tipkit.flags import Flags, InMemoryProvider
from tipkit.ratelimit import TokenBucket
from tipkit.stores import RedisStore
from tipkit.stores._events import (
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
                    during = side_by_side(
                        {
                            p: lambda h=h: (h.timed(), *h.fifty())
                            for p, h in hots.items()
                        }
                    )
                    start = time.perf_counter()
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
    assert_on_policy(during, limits, hots)
    assert [True] * 10 + [False] * 5 == served  # the store decided: exact
    assert elsewhere_took < limits[POLICIES[0]][0]
    assert OUTAGE == outage_kinds(down)
    assert recovered
    assert 2 * len(HOT) == len(up)
    LOG.info(
        "timeout %.3f; blackholed cluster primary: sync calls %.2f-%.2fx timeout, "
        "50 async %s x timeout; every hot call served %.3f s after the proxy passed "
        "again; other slot 15 acquires in %.3f s",
        timeout,
        min(c[n][1] for c, _, _ in during.values() for n in HOT) / timeout,
        max(c[n][1] for c, _, _ in during.values() for n in HOT) / timeout,
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
    timeout = machine_timeout(layout.url, TIMEOUT)
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
                    during = side_by_side(
                        {
                            p: lambda h=h: (h.timed(), *h.fifty())
                            for p, h in hots.items()
                        }
                    )
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
        assert_on_policy(during, limits, hots)
        assert OUTAGE == outage_kinds(down)
        assert 2 * len(HOT) == len(up)
    else:
        assert {"ok"} == states
        assert_served(during, limits, hots)
        assert [] == down
    assert recovered
    LOG.info(
        "timeout %.3f; primary paused past the node timeout (%s ms), no replica, "
        "full coverage %s: flagged fail %.3f s after SIGSTOP; other slots' sync calls "
        "%.2f-%.2fx timeout, 50 async %s x; served again %.3f s after SIGCONT "
        "(cluster_state ok everywhere %.3f s later)",
        timeout,
        short,
        full_coverage,
        failed,
        min(c[n][1] for c, _, _ in during.values() for n in HOT) / timeout,
        max(c[n][1] for c, _, _ in during.values() for n in HOT) / timeout,
        [round(a / timeout, 2) for _, _, a in during.values()],
        served_again,
        ok_again,
    )


def assert_served(
    during: dict[str, Any],
    limits: dict[str, tuple[float, float]],
    hots: dict[str, HotCalls],
) -> None:
    """Each policy's calls got their healthy answers, each within its bound."""
    healthy = {"ratelimit": True, "flags": False, "breaker": "ok"}
    for policy, (calls, results, async_took) in during.items():
        sync_bound, async_bound = limits[policy]
        assert [] == hots[policy].errors
        assert healthy == {n: calls[n][0] for n in HOT}
        assert all(calls[n][1] < sync_bound for n in HOT), (calls, sync_bound)
        assert [True] * 50 == results
        assert async_took < async_bound, (async_took, async_bound)


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
    assert [("ratelimit", "fail_closed"), ("ratelimit", "fail_open")] == [
        o for o in outages if o[0] == "ratelimit"
    ]
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
