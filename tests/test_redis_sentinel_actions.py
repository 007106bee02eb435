"""Safety actions behind Sentinel and on one node: blocked masters, write pauses, failovers.

* A rollout's ``rollback()``, ``pause()`` and the judge's FAIL verdict, and a keyed
  limiter of each ``on_error`` policy, through ``DEBUG SLEEP``, ``CLIENT PAUSE``
  (ALL) and a blackhole of the Sentinel master (no failover): nothing raises,
  each call bounded, each action in force here at once and on the master after
  the fault with no call (``ActionPending`` then ``ActionFlushed``).
* ``CLIENT PAUSE ... WRITE`` (reads answered, every script held) on one node and
  on the Sentinel master, every store-backed primitive, both policies: a flag
  read is answered, writes time out within the bound and follow the policy, and
  a kill, a breaker opening and a rollback made during it act at once and are
  written once the pause ends.
* Three sentinels and two replicas: the master SIGKILLed while sync calls and 50
  async tasks run; the sentinels pick a replica, the other follows it, and the
  kill made during the failover is replayed to the new master.
* Concurrent master discoveries (50 tasks, 16 threads) keep every sentinel in
  the store's list, and the store's close reaches every sentinel connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

import pytest
import redis
from tests.fault_proxy import FaultProxy
from tests.redis_fixtures import _executable
from tests.redis_server import RedisServer
from tests.redis_topology import SentinelSet
from tests.stalls import STALLS
from tests.test_outages_safety import (
    ASYNC_BOUND,
    BOUND,
    ROLLBACK_TRIPS,
    TIMEOUT,
    healthy_timeout,
    machine_slack,
    rollout_slack,
)
from tests.test_redis_sentinel import (
    FLUSH_BOUND,
    LOG,
    POLICIES,
    KeyedCalls,
    healthy,
    prefix,
    sentinel_url,
    start_fault,
    stores,
    until,
)

from tipkit.breaker import BreakerState, CircuitBreaker, CountWindow
from tipkit.errors import RateLimitedError, StoreError
from tipkit.flags import Flags, InMemoryProvider
from tipkit.ratelimit import KeyedRateLimiter, TokenBucket
from tipkit.rollout import ErrorRateCheck, Rollout, RolloutRolledBack
from tipkit.stores import RedisStore
from tipkit.stores._events import (
    ActionConflict,
    ActionFlushed,
    ActionPending,
    StoreRecovered,
    StoreUnavailable,
)
from tipkit.testing import capture_events

pytestmark = pytest.mark.redis
__all__ = ["healthy", "prefix", "stores"]  # fixtures this module uses, imported

ROLLOUT_NAMES = ("by-hand", "held", "judged")  # rollback(), pause(), the judge's FAIL
SPLIT = {
    "variants": {"new": True, "old": False},
    "off_variant": "old",
    "fallthrough": {"split": {"new": 50, "old": 50}},
}
FLAG = {"variants": {"on": True, "off": False}, "default_variant": "on"}
DOC = {
    "flags": {
        **{name: {**SPLIT} for name in ROLLOUT_NAMES},
        "checkout": {**FLAG, "off_variant": "off"},
        "search": {**FLAG, "off_variant": "off"},
    }
}


class AppError(Exception):
    """The application's own failure inside a canary request."""


def rollout_on(store: RedisStore, name: str) -> Rollout:
    """A 50 % rollout of flag *name*, judged on the error rate alone.

    The flags are read on the store's push (no per-request round trip), so a
    request costs no store call but the rollout's own refresh.
    """
    flags = Flags(InMemoryProvider(DOC), store=store, refresh_interval=3600)
    return Rollout(
        name,
        flags=flags,
        stages=[50, 100],
        refresh_interval=0.2,
        min_samples=50,
        checks=[ErrorRateCheck()],
        fleet_counts=False,
    )


def stored(reader: RedisStore, name: str) -> str | None:
    """Rollout *name*'s stored status (None: none, or the reader cannot read now)."""
    try:
        entry = reader.get("tipkit.rollouts", name)
    except StoreError:  # the reader's pooled connection to a dead master
        return None
    return None if entry is None else str(entry.value["status"])


def drive(rollout: Rollout, limit: int = 5000) -> tuple[int, int, float, list[Any]]:
    """Send requests until the judge rolls back; every canary request fails.

    Returns (requests, the application's errors seen leaving ``observe``, the
    slowest request in seconds, anything else that left it).
    """
    failed, slowest, other = 0, 0.0, []
    sent = 0
    while sent < limit and rollout.percent > 0:
        start = time.perf_counter()
        try:
            with rollout.observe(f"user-{sent}") as arm:
                if arm.is_canary:
                    raise AppError(sent)
        except AppError:
            failed += 1
        except BaseException as exc:  # none may reach the application
            other.append(exc)
        slowest = max(slowest, time.perf_counter() - start)
        sent += 1
    return sent, failed, slowest, other


def timed(call: Callable[[], object]) -> tuple[object, float]:
    """*call*'s result (or the exception it raised) and how long it took."""
    start = time.perf_counter()
    try:
        out: object = call()
    except BaseException as exc:  # asserted absent by the caller
        out = exc
    return out, time.perf_counter() - start


def together(jobs: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run every job in a thread of its own, started on one barrier; their results."""
    done: dict[str, Any] = {}
    barrier = threading.Barrier(len(jobs))

    def run(key: str, job: Callable[[], Any]) -> None:
        barrier.wait()
        done[key] = job()

    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done


def keyed_bounds(keyed: KeyedCalls, timeout: float) -> tuple[float, float]:
    """(sync, 50-async) bounds of a keyed limiter: 2x timeout plus the machine's slack."""
    return (
        2 * timeout + machine_slack(keyed.run, BOUND - 2 * TIMEOUT),
        2 * timeout + machine_slack(keyed.run, ASYNC_BOUND - 2 * TIMEOUT),
    )


def brief(during: dict[str, Any], timeout: float) -> dict[str, str]:
    """Per policy: sync answer and x timeout, async admitted/50 and x timeout (for logs)."""
    return {
        p: f"sync {a} {s / timeout:.2f}x, async {sum(r)}/50 {t / timeout:.2f}x"
        for p, (a, s, r, t) in during.items()
    }


def assert_keyed(
    during: dict[str, tuple[bool, float, list[bool], float]],
    keyed: dict[str, KeyedCalls],
    limits: dict[str, tuple[float, float]],
) -> None:
    """Each keyed limiter followed its policy, sync and 50 async, within its bounds."""
    for policy, (admitted, sync_took, results, async_took) in during.items():
        sync_bound, async_bound = limits[policy]
        assert [] == keyed[policy].errors
        assert (policy == "fail_open") == admitted
        assert sync_took < sync_bound, (policy, sync_took, sync_bound)
        assert [policy == "fail_open"] * 50 == results
        assert async_took < async_bound, (policy, async_took, async_bound)


# -- 1. rollouts and the keyed limiter: DEBUG SLEEP, CLIENT PAUSE, blackhole ------------


@pytest.mark.parametrize(
    "fault",
    [
        # These two cannot be ended early: the fault's whole length is waited.
        pytest.param("debug_sleep", marks=pytest.mark.slow),
        pytest.param("client_pause", marks=pytest.mark.slow),
        "blackhole",
    ],
)
def test_rollout_actions_and_keyed_limiter_through_a_blocked_master(
    healthy: SentinelSet, stores: Callable[..., RedisStore], prefix: str, fault: str
) -> None:
    """rollback(), pause(), the judge's FAIL; keyed limiters: bounded, local, flushed after.

    One process's store holds three rollouts: one rolled back by hand, one
    paused, one whose canary fails every request until the judge rolls it
    back; two more stores hold a keyed limiter of each policy. All act at once
    in threads of their own while the master is blocked (no failover). Nothing
    raises but the application's own error; each control returns within its
    bounded round trips and is in force here at once; each request within
    2x the timeout; each state is on the master within 2 s of the fault's end,
    with no call.
    """
    master = healthy.master()
    with contextlib.ExitStack() as stack:
        proxy: FaultProxy | None = None
        where: dict[str, Any] = {}
        if fault == "blackhole":
            proxy = stack.enter_context(FaultProxy(master.port))
            watcher = stack.enter_context(healthy.naming(proxy.port, "tipkit-via"))
            where = {
                "sentinel": [(watcher.host, watcher.port)],
                "service_name": "tipkit-via",
            }
        url = sentinel_url(
            where.get("sentinel", healthy.sentinel_addresses),
            where.get("service_name", healthy.service),
        )
        timeout = healthy_timeout(url, prefix + "t:")
        store = stores(timeout=timeout, **where)
        reader = stores(timeout=healthy.bound)  # straight to the master
        rollouts = {name: rollout_on(store, name) for name in ROLLOUT_NAMES}
        assert ["running"] * 3 == [stored(reader, n) for n in ROLLOUT_NAMES]
        keyed_stores = {
            p: stores(timeout=timeout, on_error=p, **where) for p in POLICIES
        }
        keyed = {p: KeyedCalls(s) for p, s in keyed_stores.items()}
        assert all(k.run()[0] for k in keyed.values())
        slack = rollout_slack(url, prefix, timeout)
        control_bound = ROLLBACK_TRIPS * 2 * timeout + slack
        limits = {p: keyed_bounds(k, timeout) for p, k in keyed.items()}
        # A healthy judged drive (another rollout) measures this machine now.
        judge_slack = machine_slack(
            lambda: drive(rollout_on(stores(timeout=timeout), "warm")), 1.0
        )
        # The fault outlasts every call below (asserted; they take about one
        # timeout each, at once, and the judged drive), not much more: DEBUG
        # SLEEP and CLIENT PAUSE (ALL) cannot be ended early.
        longest = max(control_bound, *(max(b) for b in limits.values()))
        hold = min(4 * timeout + 2.0, longest) + judge_slack
        jobs: dict[str, Callable[[], Any]] = {
            "by-hand": lambda: timed(
                lambda: rollouts["by-hand"].rollback("drill", actor="oncall")
            ),
            "held": lambda: timed(
                lambda: rollouts["held"].pause("odd", actor="oncall")
            ),
            "judged": lambda: drive(rollouts["judged"]),
            **{p: k.run for p, k in keyed.items()},
        }
        names = (
            "RolloutRolledBack",
            "ActionPending",
            "ActionFlushed",
            "ActionConflict",
        )
        with (
            capture_events(
                RolloutRolledBack, ActionPending, ActionFlushed, ActionConflict
            ) as events,
            healthy.no_failover(),
        ):
            end = start_fault(fault, master, proxy, hold)
            began = time.perf_counter()
            try:
                done = together(jobs)
                took = time.perf_counter() - began
                with rollouts["by-hand"].observe("user-1") as arm:
                    pass
                local = (
                    rollouts["by-hand"].percent,
                    arm.is_canary,
                    rollouts["held"].status().status,
                    rollouts["judged"].percent,
                )
                pending = {n: len(r.pending()) for n, r in rollouts.items()}
            finally:
                end()
            ended = time.perf_counter()
            expected = {"by-hand": "rolled_back", "held": "paused"}
            expected["judged"] = "rolled_back"
            flushed = until(
                lambda: expected == {n: stored(reader, n) for n in ROLLOUT_NAMES},
                healthy.bound,
            )
            cleared = until(
                lambda: not any(r.pending() for r in rollouts.values()), healthy.bound
            )
        for one in [store, *keyed_stores.values()]:
            one.close()  # before the proxy and its sentinel go
    for name in ("by-hand", "held"):
        out, control_took = done[name]
        assert out is None, (name, out)
        assert control_took < control_bound, (name, control_took, control_bound)
    sent, failed, slowest, other = done["judged"]
    assert [] == other
    assert 0 < failed < sent, (failed, sent)
    assert slowest < control_bound, (slowest, control_bound)
    assert (0.0, False, "paused", 0.0) == local
    assert {"by-hand": 1, "held": 1, "judged": 1} == pending
    assert_keyed({p: done[p] for p in POLICIES}, keyed, limits)
    if fault != "blackhole":
        assert took < hold, ("the calls outlasted the fault", took, hold)
    assert flushed is not None, {n: stored(reader, n) for n in ROLLOUT_NAMES}
    assert flushed < FLUSH_BOUND + slack, flushed
    assert cleared is not None
    seen = {(type(e).__name__, e.name) for e in events if e.name in ROLLOUT_NAMES}
    assert {
        *((kind, n) for kind in names[1:3] for n in ROLLOUT_NAMES),
        ("RolloutRolledBack", "by-hand"),
        ("RolloutRolledBack", "judged"),
    } == seen
    actors = {e.name: e.actor for e in events if isinstance(e, RolloutRolledBack)}
    assert {"by-hand": "oncall", "judged": "tipkit:rollout"} == actors
    LOG.info(
        "timeout %.3f; %s: rollback() %.3f s, pause() %.3f s (bound %.3f); judged "
        "%d requests (%d failed), slowest %.3f s; on the master %.3f s after the "
        "fault ended (calls %.3f s, fault %.3f s); keyed %s; bounds %s",
        timeout,
        fault,
        done["by-hand"][1],
        done["held"][1],
        control_bound,
        sent,
        failed,
        slowest,
        flushed,
        took,
        ended - began,
        brief({p: done[p] for p in POLICIES}, timeout),
        limits,
    )


# -- 2. CLIENT PAUSE ... WRITE: reads answered, every script held ----------------------


class Process:
    """Every store-backed primitive of one process, on a store of its own prefix.

    A flag killed while healthy, a shared bucket, a keyed limiter, a shared
    breaker and a rollout. :meth:`during` makes each one's calls (timed, any
    exception recorded: none may reach the application) and three safety
    actions: a kill, a breaker opening, a rollback.
    """

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.flags = Flags(InMemoryProvider(DOC), store=store, refresh_interval=0)
        self.flags.kill("checkout")  # healthy: written
        self.bucket = TokenBucket("api", rate=1000, capacity=1000, store=store)
        self.keyed = KeyedRateLimiter("per-user", rate=1000, capacity=1000, store=store)
        self.breaker = CircuitBreaker(
            "payments",
            store=store,
            share="state",
            window=CountWindow(4),
            minimum_calls=4,
            open_duration=60,
            refresh_interval=0,
        )
        self.rollout = rollout_on(store, "by-hand")
        self.errors: list[BaseException] = []

    def _timed(self, call: Callable[[], object]) -> tuple[object, float]:
        out, took = timed(call)
        if isinstance(out, BaseException):
            self.errors.append(out)
        return out, took

    def _admit(self, acquire: Callable[[], object]) -> bool:
        try:
            acquire()
        except RateLimitedError:  # the fail_closed policy's answer
            return False
        return True

    async def _aadmit(self, i: int) -> bool:
        try:
            if i % 2:
                await self.bucket.acquire_async(timeout=0)
            else:
                async with self.keyed.limit(f"user-{i}"):
                    pass
        except RateLimitedError:  # the fail_closed policy's answer
            return False
        except BaseException as exc:  # anything else reached the application
            self.errors.append(exc)
            return False
        return True

    def fifty(self) -> tuple[list[bool], float]:
        """50 concurrent async admissions (bucket and keyed limiter): results, seconds."""

        async def main() -> list[bool]:
            return list(await asyncio.gather(*(self._aadmit(i) for i in range(50))))

        start = time.perf_counter()
        results = asyncio.run(main())
        return results, time.perf_counter() - start

    def hot(self) -> list[object]:
        """The hot calls once, without a safety action (a healthy pass, for the slack)."""
        return [
            self.flags.is_enabled("checkout", default=True),
            self.breaker.call(lambda: "ok"),
            self.bucket.try_acquire(),
            self.keyed.try_acquire("u"),
        ]

    def calls(self) -> dict[str, tuple[object, float]]:
        """Each hot call once, then the safety actions: {what: (answer, seconds)}."""
        out = {
            "flag": self._timed(
                lambda: self.flags.is_enabled("checkout", default=True)
            ),
            "breaker": self._timed(lambda: self.breaker.call(lambda: "ok")),
            "bucket": self._timed(lambda: self._admit(self.bucket.acquire)),
            "keyed": self._timed(lambda: self._admit(lambda: self.keyed.acquire("u"))),
            "kill": self._timed(lambda: self.flags.kill("search").done),
            "rollback": self._timed(lambda: self.rollout.rollback("drill", actor="me")),
        }

        def failing() -> None:
            raise AppError

        i = 0
        while self.breaker.state is not BreakerState.OPEN and i < 8:
            start = time.perf_counter()
            try:
                self.breaker.call(failing)
            except AppError:  # the application's own error, unchanged
                pass
            except BaseException as exc:  # none may reach the application
                self.errors.append(exc)
            out[f"opening-{i}"] = (None, time.perf_counter() - start)
            i += 1
        return out

    def local(self) -> tuple[bool, BreakerState, float, list[str]]:
        """What is in force here: the kill, the breaker, the rollout; what is pending."""
        keys = [a.key for a in self.flags.pending()]
        fleet = self.breaker._fleet
        assert fleet is not None
        keys += [f"breaker:{a.key}" for a in fleet.durable.pending()]
        keys += [f"rollout:{a.key}" for a in self.rollout.pending()]
        return (
            self.flags.is_enabled("search", default=True),
            self.breaker.state,
            self.rollout.percent,
            sorted(keys),
        )

    def written(self, reader: RedisStore) -> bool:
        """Whether the kill, the opening and the rollback are in the store."""
        kill = reader.get("flags", "kill/search")
        opened = reader.get("breakers", "payments")
        return (
            kill is not None
            and kill.value is True
            and opened is not None
            and opened.value.get("state") == "open"
            and stored(reader, "by-hand") == "rolled_back"
        )


Writable = tuple[RedisServer, str, Callable[..., RedisStore], SentinelSet | None]


@pytest.fixture(params=["single", "sentinel"])
def writable(request: pytest.FixtureRequest) -> Iterator[Writable]:
    """(the server to pause, its URL for calibration, a store factory, the set or None).

    One node of the test's own, or the session's Sentinel master; the factory
    makes stores (one per "process") that the test closes, or the fixture does.
    """
    made: list[RedisStore] = []
    with contextlib.ExitStack() as stack:
        if request.param == "single":
            server = stack.enter_context(RedisServer(_executable()))
            url, topology, options = server.url, None, {}
        else:
            topology = request.getfixturevalue("healthy")
            server = topology.master()
            url = sentinel_url(topology.sentinel_addresses, topology.service)
            options = {
                "sentinel": topology.sentinel_addresses,
                "service_name": topology.service,
            }

        def make(**kwargs: Any) -> RedisStore:
            if topology is None:
                store = RedisStore(url, **kwargs)
            else:
                store = RedisStore(**options, **kwargs)
            made.append(store)
            return store

        try:
            yield server, url, make, topology
        finally:
            for store in made:
                store.close()


def test_write_pause_reads_answered_writes_bounded_actions_written_after(
    writable: Writable, prefix: str
) -> None:
    """CLIENT PAUSE WRITE: every primitive bounded and on policy; actions in force, written after.

    A process of each policy (prefixes of their own) makes every hot call and
    three safety actions while the server holds every write (and every script:
    Redis cannot tell a script's reads from its writes). Nothing raises but the
    application's own error; a flag read (one ``HGET``) is answered; every
    other call returns within 2x the timeout and follows the policy; the kill,
    the breaker opening and the rollback are in force here at once, pending
    (``ActionPending``), and in the store within 2 s of ``CLIENT UNPAUSE`` with
    no call (``ActionFlushed``).
    """
    server, url, make, topology = writable
    timeout = healthy_timeout(url, prefix + "t:")
    procs = {
        p: Process(make(prefix=f"{prefix}{p}:", timeout=timeout, on_error=p))
        for p in POLICIES
    }
    readers = {p: make(prefix=f"{prefix}{p}:", timeout=30.0) for p in POLICIES}
    # The slack is measured on the same concurrency as the fault's (each
    # process's hot calls beside its 50 tasks): a sync call shares the machine
    # with four busy threads.
    jobs = {f"{p}/calls": q.hot for p, q in procs.items()}
    jobs |= {f"{p}/fifty": q.fifty for p, q in procs.items()}
    seconds = timed(lambda: together(jobs))[1]
    slack = max(BOUND - 2 * TIMEOUT, 10 * seconds)
    bounds = (2 * timeout + slack, 2 * timeout + max(ASYNC_BOUND - 2 * TIMEOUT, slack))
    limits = dict.fromkeys(POLICIES, bounds)
    admin = redis.Redis(host=server.host, port=server.port)
    held = contextlib.nullcontext() if topology is None else topology.no_failover()
    kinds = (StoreUnavailable, StoreRecovered, ActionPending, ActionFlushed)
    with held, capture_events(*kinds, ActionConflict) as events:
        # Ended by CLIENT UNPAUSE (a WRITE pause answers it); 60 s if the test dies.
        admin.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
        try:
            STALLS.start()
            began = time.perf_counter()
            # Each process's calls and its 50 async tasks at once (one thread each).
            jobs = {f"{p}/calls": q.calls for p, q in procs.items()}
            jobs |= {f"{p}/fifty": q.fifty for p, q in procs.items()}
            out = together(jobs)
            done = {p: out[f"{p}/calls"] for p in POLICIES}
            fifty = {p: out[f"{p}/fifty"] for p in POLICIES}
            local = {p: q.local() for p, q in procs.items()}
            took = time.perf_counter() - began
            stall = STALLS.worst(began, began + took)  # not tipkit's: added to bounds
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()
        ended = time.perf_counter()
        served = until(
            lambda: (
                procs["fail_closed"].bucket.try_acquire()
                and procs["fail_closed"].keyed.try_acquire("u")
            ),
            10,
        )
        written = until(
            lambda: all(q.written(readers[p]) for p, q in procs.items()),
            FLUSH_BOUND + slack + 5.0,
        )
        flushed = time.perf_counter() - ended
        cleared = until(lambda: not any(q.local()[3] for q in procs.values()), 10)
    for p, q in procs.items():
        sync_bound, async_bound = limits[p]
        calls = done[p]
        assert [] == q.errors
        admit = p == "fail_open"
        answers = {"flag": False, "breaker": "ok", "bucket": admit, "keyed": admit}
        answers |= {"kill": False, "rollback": None}
        assert answers == {k: calls[k][0] for k in answers}
        assert calls["flag"][1] < timeout, ("a read is answered", calls["flag"])
        slow = {k: t for k, (_, t) in calls.items() if t >= sync_bound + stall}
        assert {} == slow, (p, sync_bound, stall)
        results, async_took = fifty[p]
        assert [admit] * 50 == results
        assert async_took < async_bound + stall, (p, async_took, async_bound, stall)
        opened = ["breaker:payments", "kill/search", "rollout:by-hand"]
        assert (False, BreakerState.OPEN, 0.0, opened) == local[p]
    assert written is not None, "the actions never reached the store"
    assert flushed < FLUSH_BOUND + slack, flushed
    assert cleared is not None
    assert served is not None
    acted = {("flags", "kill/search"), ("breaker", "payments"), ("rollout", "by-hand")}

    def keyed(kind: type) -> list[tuple[str, str]]:
        return sorted(
            (e.component, e.key)  # type: ignore[attr-defined]  # an action event
            for e in events
            if isinstance(e, kind) and (e.component, e.key) in acted  # type: ignore[attr-defined]  # an action event
        )

    assert sorted([*acted, *acted]) == keyed(ActionPending), events
    assert sorted([*acted, *acted]) == keyed(ActionFlushed), events
    # The rollout's own write may give the flag its split first (docs/fleet.md).
    conflicts = {e.key for e in events if isinstance(e, ActionConflict)}
    assert {k for k in conflicts if not k.startswith("split/")} == set()
    limiters = sorted(
        (e.name, e.policy)  # type: ignore[attr-defined]  # StoreUnavailable
        for e in events
        if isinstance(e, StoreUnavailable) and e.component == "ratelimit"
    )
    assert sorted((n, p) for n in ("api", "per-user") for p in POLICIES) == limiters
    LOG.info(
        "timeout %.3f; CLIENT PAUSE WRITE on %s (calls %.3f s): flag read %s; "
        "slowest sync %s; 50 async %s; the fail_closed limiters admitting %.3f s "
        "after CLIENT UNPAUSE, every action in the store after %.3f s; bounds %s",
        timeout,
        "one node" if topology is None else "the Sentinel master",
        took,
        {p: round(done[p]["flag"][1], 4) for p in POLICIES},
        {p: round(max(t for _, t in done[p].values()) / timeout, 2) for p in POLICIES},
        {p: round(fifty[p][1] / timeout, 2) for p in POLICIES},
        served,
        flushed,
        limits,
    )


# -- concurrent discoveries keep every sentinel ------------------------------------------


def sentinel_ports(client: Any) -> list[int]:
    """The ports of the sentinels a ``master_for`` client's manager will ask, in order."""
    manager = client.connection_pool.sentinel_manager
    return [s.connection_pool.connection_kwargs["port"] for s in manager.sentinels]


def test_concurrent_discoveries_keep_every_sentinel_and_close_them_all(
    healthy: SentinelSet, prefix: str
) -> None:
    """50 tasks (and 16 threads) discovering the master at once: no sentinel lost or leaked.

    The first sentinel asked answers but does not know the service (a sentinel
    of another service), so every discovery moves the next one to the front:
    redis-py's swap, with an index read before the round trip, duplicated one
    sentinel and dropped this one, whose open connections then escaped the
    store's close (a ResourceWarning at a later collection; filterwarnings
    makes that an error here).
    """
    master = healthy.master()
    with healthy.naming(master.port, "tipkit-other") as other:
        everyone = [(other.host, other.port), *healthy.sentinel_addresses]
        store = RedisStore(
            sentinel=everyone,
            service_name=healthy.service,
            prefix=prefix,
            timeout=healthy.bound,
        )
        seen: dict[str, list[int]] = {}

        async def main() -> None:
            await asyncio.gather(*(store.aget("flags", f"k{i}") for i in range(50)))
            seen["async"] = sentinel_ports(await store._clients.aclient())

        asyncio.run(main())
        barrier = threading.Barrier(16)

        def one() -> None:
            barrier.wait()
            store.get("flags", "k")

        threads = [threading.Thread(target=one) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seen["sync"] = sentinel_ports(store.client)
        store.close()
    ports = sorted(p for _, p in everyone)
    assert {"async": ports, "sync": ports} == {k: sorted(v) for k, v in seen.items()}


# -- 3. three sentinels, two replicas: a failover under load ---------------------------


@pytest.fixture(scope="module")
def two_replicas() -> Iterator[SentinelSet]:
    """A master, two replicas and three sentinels (quorum 2), for this module."""
    with SentinelSet(_executable(), service="tipkit-two", replicas=2) as sentinels:
        yield sentinels


class Load:
    """Requests during a failover: a thread of sync calls, a thread of 50-task batches.

    Each sync call (two flag reads, a bucket acquire) and each batch of 50
    concurrent async calls (flag reads and acquires) is timed; any exception
    is recorded (none may reach the application).
    """

    def __init__(self, writer: Flags, peer: Flags, bucket: TokenBucket) -> None:
        self.writer, self.peer, self.bucket = writer, peer, bucket
        self.errors: list[BaseException] = []
        self.slowest = {"sync": 0.0, "fifty": 0.0}
        self.count = {"sync": 0, "fifty": 0}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=("sync", self.sync_once)),
            threading.Thread(target=self._loop, args=("fifty", self.fifty_once)),
        ]

    def sync_once(self) -> None:
        """One request: the writer's and the peer's flag read, a bucket acquire."""
        self.writer.is_enabled("checkout")
        self.peer.is_enabled("checkout")
        self.bucket.try_acquire()

    async def _one(self, i: int) -> None:
        if i % 2:
            await self.peer.ais_enabled("checkout")
            return
        with contextlib.suppress(RateLimitedError):  # a policy's answer
            await self.bucket.acquire_async(timeout=0)

    def fifty_once(self) -> None:
        """50 concurrent async requests on a loop of their own."""

        async def main() -> None:
            await asyncio.gather(*(self._one(i) for i in range(50)))

        asyncio.run(main())

    def _loop(self, kind: str, once: Callable[[], None]) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                once()
            except BaseException as exc:  # none may reach the application
                self.errors.append(exc)
            took = time.perf_counter() - start
            self.slowest[kind] = max(self.slowest[kind], took)
            self.count[kind] += 1
            self._stop.wait(0.01)

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _role(server: RedisServer) -> tuple[str, int, str]:
    """(role, the port it replicates, its link status) as *server* says now."""
    with redis.Redis(host=server.host, port=server.port, socket_timeout=5) as c:
        info = c.info("replication")
    return (
        str(info["role"]),
        int(info.get("master_port", 0)),
        str(info.get("master_link_status", "")),
    )


def _killed_on(server: RedisServer, prefix: str) -> bool:
    """Whether *server* holds the kill of flag "checkout" under *prefix*."""
    with redis.Redis(host=server.host, port=server.port, socket_timeout=5) as c:
        raw = c.hget(f"{prefix}ns:flags", ":kill/checkout")
    return raw is not None and raw.endswith(b",true]")


@pytest.mark.slow
def test_failover_between_two_replicas_under_load_replays_the_kill(
    two_replicas: SentinelSet, prefix: str
) -> None:
    """Master SIGKILLed under sync calls and 50-task batches: the kill reaches the new master.

    Two replicas: the sentinels promote one and make the other replicate it.
    A kill made during the failover is in force here at once, pending, on the
    new master within 2 s of it being named (no call), replicated to the other
    replica, and seen by a peer; no request raises, each is bounded (2x the
    timeout plus the machine's slack, sync and per batch of 50 async), and the
    old master rejoins as a replica.
    """
    s = two_replicas
    s.wait_healthy()
    LOG.info("%r servers %s", s, [x.port for x in s.servers])
    url = sentinel_url(s.sentinel_addresses, s.service)
    timeout = healthy_timeout(url, prefix + "t:")
    made: list[RedisStore] = []

    def make(**kwargs: Any) -> RedisStore:
        made.append(
            RedisStore(
                sentinel=s.sentinel_addresses,
                service_name=s.service,
                prefix=prefix,
                timeout=timeout,
                **kwargs,
            )
        )
        return made[-1]

    try:
        writer = Flags(InMemoryProvider(DOC), store=make(), refresh_interval=0.2)
        peer_store = make()
        peer = Flags(InMemoryProvider(DOC), store=peer_store, refresh_interval=0.2)
        bucket = TokenBucket("api", rate=1000, capacity=1000, store=make())
        load = Load(writer, peer, bucket)
        sync_bound = 2 * timeout + machine_slack(load.sync_once, BOUND - 2 * TIMEOUT)
        async_bound = 2 * timeout + machine_slack(
            load.fifty_once, ASYNC_BOUND - 2 * TIMEOUT
        )
        assert writer.is_enabled("checkout")
        assert until(lambda: peer_store.watching) is not None
        old = s.master()
        with capture_events(ActionPending, ActionFlushed) as events, load:
            old.sigkill()
            killed = time.perf_counter()
            try:
                start = time.perf_counter()
                action = writer.kill("checkout")
                kill_took = time.perf_counter() - start
                in_force = not writer.is_enabled("checkout", default=True)
                s.wait_master_is_not(old)
                named = time.perf_counter()
                new = s.master()
                (other,) = [r for r in s.servers if r not in (old, new)]
                flushed = until(lambda: _killed_on(new, prefix), s.bound)
                followed = until(
                    lambda: _role(other) == ("slave", new.port, "up"), s.bound
                )
                replicated = until(lambda: _killed_on(other, prefix), s.bound)
                seen = until(lambda: not peer.is_enabled("checkout", default=True), 10)
            finally:
                old.start()  # it rejoins as a replica of the new master
        rejoined = s.wait_healthy()
        assert ("slave", s.master().port, "up") == _role(old)
        assert _killed_on(old, prefix)
    finally:
        for store in made:
            store.close()
    assert [] == load.errors
    assert in_force
    assert kill_took < sync_bound, (kill_took, sync_bound)
    assert flushed is not None, "the queued kill never reached the new master"
    assert flushed < FLUSH_BOUND, flushed
    assert followed is not None, "the other replica never followed the new master"
    assert replicated is not None
    assert seen is not None
    assert action.done
    assert [] == writer.pending()
    assert load.slowest["sync"] < sync_bound, (load.slowest, sync_bound)
    assert load.slowest["fifty"] < async_bound, (load.slowest, async_bound)
    assert min(load.count.values()) > 1, load.count  # requests ran throughout
    names = [type(e).__name__ for e in events if e.name == "flags"]
    assert ["ActionPending", "ActionFlushed"] == names
    LOG.info(
        "timeout %.3f; two replicas: new master named %.3f s after SIGKILL; kill() "
        "%.3f s; kill on the new master %.3f s after it was named, on the other "
        "replica %.3f s later (it followed after %.3f s), seen by a peer after "
        "%.3f s more; requests %s, slowest %s (bounds %.3f, %.3f); old master "
        "rejoined, set healthy %.3f s after its restart",
        timeout,
        named - killed,
        kill_took,
        flushed,
        replicated,
        followed,
        seen,
        load.count,
        {k: round(v / timeout, 2) for k, v in load.slowest.items()},
        sync_bound,
        async_bound,
        rejoined,
    )
