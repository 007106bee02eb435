"""Three real processes sharing one redis-server through its faults.

The children (``tests/fleet_children.py``) evaluate a killed flag, route
through a rolled-back rollout and take from a shared bucket, sync and in
batches of 50 async tasks, while the parent faults the server: SIGKILL and
restart, SIGSTOP, DEBUG SLEEP, CLIENT PAUSE ALL and WRITE, a blackhole and a
dead port (Sentinel and Cluster: ``test_fleet_processes_topologies.py``).
Asserted: no exception in any process, every call bounded by the store's
timeout (2x, plus the scheduling slack each child measures on a healthy server
before the fault, less any time the child stood still: ``tests.stalls``), no
safety action lost, and the breaker's propagation bound (``refresh_interval``
+ ``timeout``) across processes.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from tests.fault_proxy import FaultProxy
from tests.fleet_children import (
    BREAKER_REFRESH,
    LINE_BOUND,
    Children,
    act_before,
    assert_kept,
    assert_stored,
    fault_hold,
    figures,
    run_through,
)
from tests.redis_fixtures import _executable
from tests.redis_server import RedisServer
from tests.test_outages_safety import (
    healthy_timeout,
    machine_slack,
    store_via,
    stored_status,
    until,
)
from tests.test_redis_sentinel import patient, start_fault

from tipkit.breaker import CircuitBreaker, CountWindow
from tipkit.errors import CircuitOpenError, StoreError
from tipkit.ratelimit import TokenBucket
from tipkit.stores import RedisStore

pytestmark = pytest.mark.redis

FLUSH_BOUND = 2.0  # a queued or written-back action reaches a store that answers
# The quick loop (`-m "not slow"`) keeps the restarts and a blackhole across three
# processes; the other faults run there in one process (test_outages_safety,
# test_redis_sentinel, test_redis_cluster_faults) and here in the full suite.
_FULL = pytest.mark.slow
FAULTS = [
    "sigkill", "sigkill_empty", "blackhole",
    pytest.param("sigstop", marks=_FULL), pytest.param("drop", marks=_FULL),
    pytest.param("debug_sleep", marks=_FULL), pytest.param("client_pause", marks=_FULL),
    pytest.param("client_pause_write", marks=_FULL),
]  # fmt: skip
HELD = ("debug_sleep", "client_pause")  # cannot be ended early (even UNPAUSE is held)


@pytest.fixture
def prefix() -> str:
    """A key prefix of the test's own."""
    return f"procs:{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def proxies() -> Iterator[contextlib.ExitStack]:
    """Where a test's fault proxies are entered: each one closed when the test ends."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture
def fault(request: pytest.FixtureRequest) -> str:
    """The fault of the test's parametrization."""
    return str(request.param)


@pytest.fixture
def aof_server(fault: str) -> Iterator[RedisServer]:
    """A redis-server of the test's own: AOF on (fsync always), but off for ``sigkill_empty``."""
    with RedisServer(_executable(), appendonly=fault != "sigkill_empty") as srv:
        yield srv


def start_fault_on(
    fault: str, srv: RedisServer, proxy: FaultProxy | None, hold: float
) -> Callable[[], None]:
    """Start *fault* on the single server; return what ends it (or waits it out)."""
    if fault in ("sigkill", "sigkill_empty"):
        srv.sigkill()
        return srv.start  # the same port, its AOF replayed (or empty: no AOF)
    if fault in ("blackhole", "drop"):
        assert proxy is not None
        proxy.set(fault)
        return lambda: proxy.set("pass")
    if fault == "client_pause_write":  # reads served, writes (and scripts) held
        with redis.Redis(host=srv.host, port=srv.port) as admin:
            admin.execute_command(
                "CLIENT", "PAUSE", str(int(LINE_BOUND * 1000)), "WRITE"
            )
        return functools.partial(patient, srv, hold, "CLIENT", "UNPAUSE")  # not a write
    return start_fault(fault, srv, None, hold)  # sigstop, debug_sleep, client_pause


FULL = 5  # the drained bucket's capacity (it refills one token a million seconds)


def drained(store: RedisStore) -> TokenBucket:
    """The bucket 'drained' on *store*: capacity FULL, no refill within a test."""
    return TokenBucket("drained", rate=1e-6, capacity=FULL, store=store)


def drain(url: str, prefix: str) -> None:
    """Take every token of the shared bucket 'drained' (its level: 0 in the store)."""
    store = store_via(url, prefix, timeout=5.0)
    try:
        bucket = drained(store)
        assert [True] * FULL + [False] == [
            bucket.try_acquire() for _ in range(FULL + 1)
        ]
    finally:
        store.close()


def drained_left(url: str, prefix: str) -> int:
    """How many tokens the shared bucket 'drained' gives now (0: still drained)."""
    store = store_via(url, prefix, timeout=5.0)
    try:
        bucket = drained(store)
        return sum(bucket.try_acquire() for _ in range(FULL + 1))
    finally:
        store.close()


class WriteBack:
    """Watches, from its start, for the store to hold the kill, the rollback and the opening.

    Started as the server comes back (at once for a fault that loses nothing):
    a thread polls every 10 ms, up to ``LINE_BOUND``, and notes when.
    """

    def __init__(self, url: str, prefix: str) -> None:
        self._reader = store_via(url, prefix, timeout=5.0)
        self._when: float | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _held(self) -> bool:
        kill = self._reader.get("flags", "kill/checkout")
        breaker = self._reader.get("breakers", "payments")
        return (
            kill is not None
            and kill.value not in (False, None)  # a kill, not a revive's tombstone
            and breaker is not None
            and breaker.value["state"] == "open"  # type: ignore[index, call-overload]  # a breaker entry
            and stored_status(self._reader) == "rolled_back"
        )

    def _watch(self) -> None:
        try:
            if until(self._held, LINE_BOUND) is not None:
                self._when = time.perf_counter()
        finally:
            self._reader.close()

    def at(self) -> float:
        """When the store held all three (``inf`` if it never did; the caller asserts)."""
        self._thread.join(2 * LINE_BOUND)
        return math.inf if self._when is None else self._when


def reads_and_scripts(url: str, prefix: str, timeout: float) -> tuple[int, float, str]:
    """A plain read (the namespace version: ``HGET``) and an entry read (a script), now.

    Returns the version, how long its read took, and whether the script was
    ``served`` or ``held`` (the store's bounded call gave up: ``StoreError``).
    """
    probe = store_via(url, prefix, timeout=timeout)
    try:
        start = time.perf_counter()
        version = probe.version("flags")
        took = time.perf_counter() - start
        try:
            probe.get("tipkit.rollouts", "pricing")
            script = "served"
        except StoreError:
            script = "held"
    finally:
        probe.close()
    return version, took, script


@pytest.mark.parametrize("fault", FAULTS, indirect=True)
def test_three_processes_keep_a_kill_and_a_rollback_through_the_fault(
    aof_server: RedisServer, prefix: str, proxies: contextlib.ExitStack, fault: str
) -> None:
    """A kill, a rollback and a breaker opening made before the fault hold in 3 processes.

    The faults: SIGKILL and restart (AOF on; and off, ``sigkill_empty``: the
    server comes back empty), SIGSTOP, ``DEBUG SLEEP``, ``CLIENT PAUSE``
    (ALL, and WRITE: reads served, writes and scripts held) and, through a
    ``FaultProxy`` between the processes and the server, a blackhole (never
    answers) and dropped connections (reset at once: a dead port).

    Each process evaluates the killed flag, routes through the rolled-back
    rollout and takes from a shared bucket (``fail_closed``; a take is a
    script: a write), sync and in batches of 50 async tasks, throughout. The
    fault lasts until every process has run a whole batch against it (DEBUG
    SLEEP and CLIENT PAUSE ALL, which cannot be ended early, long enough for
    that; CLIENT PAUSE WRITE is ended by CLIENT UNPAUSE, itself not a write).
    None sees the flag on or the canary, nothing raises, every call and batch is
    bounded (refused at once by a killed server; a hung one costs each call its
    timeout); the server has both actions after it (from its AOF after a
    SIGKILL: no process saw the state lost), and a process built after it sees
    them. Under CLIENT PAUSE WRITE a plain read is served but tipkit's entry
    reads are scripts, held like writes: every primitive meets the outage.

    Each process also holds a ``fail_open`` store beside its ``fail_closed``
    one, a bucket and a keyed limiter on each, and two shared breakers
    (``tests/fleet_guards.py``): ``fail_open`` admits every call, ``fail_closed``
    refuses a whole round (sync and 50 async) in the fault, a closed shared
    breaker keeps admitting and one opened before it keeps refusing.

    Restarted empty: every process sees ``StoreStateLost``; the kill, the
    rollback and the breaker's opening are written back by the processes that
    knew them (the opening by the one whose window opened it) within 2 s of
    the restart, with no call needed; a bucket drained before the fault starts
    full (with AOF it stays drained).
    """
    srv = aof_server
    proxy = None
    if fault in ("blackhole", "drop"):
        proxy = proxies.enter_context(FaultProxy(srv.port))
    url = srv.url if proxy is None else proxy.url
    timeout = healthy_timeout(url, prefix + "t:")
    act_before(srv.url, prefix, timeout)
    drain(srv.url, prefix)
    children = Children(url, prefix, timeout, "aof")
    try:
        children.all("ready")
        hold = fault_hold(timeout)
        children.say("go")
        probed: list[tuple[int, float, str]] = []
        watching: list[WriteBack] = []

        def start() -> Callable[[], None]:
            end = start_fault_on(fault, srv, proxy, hold)

            def ended() -> None:
                end()  # the server back (empty, for sigkill_empty): watch the store
                watching.append(WriteBack(srv.url, prefix))

            return ended

        back, met, ended = run_through(
            children,
            hold if fault in HELD else LINE_BOUND,
            start,
            lambda: (
                fault == "client_pause_write"
                and probed.append(reads_and_scripts(url, prefix, timeout))
            ),
        )
        written_back = watching[0].at() - ended
        children.say("stop")
        results = children.results()
    finally:
        children.close()
    served = max(float(b[1]) for b in back) - ended
    empty = fault == "sigkill_empty"
    # With AOF (or no restart) no process saw the state lost; restarted empty, each did.
    assert_kept(results, timeout, lost=empty)
    if empty:  # every process knew the kill and the opening (child 0 wrote it)
        assert all("flags" in r["lost_by"] for r in results), results
        # Whichever process read the opening absent first wrote it back; the
        # others then read it present: at least one saw the breaker's loss.
        assert any("breaker" in r["lost_by"] for r in results), results
        slack = machine_slack(lambda: healthy_timeout(srv.url, prefix + "s:"), 0.2)
        assert written_back < FLUSH_BOUND + slack, (written_back, slack)
    if fault.startswith("sigkill"):  # the drained bucket: full again only if lost
        assert (FULL if empty else 0) == drained_left(srv.url, prefix)
    if fault in HELD:  # seconds long: every primitive read (and met it) meanwhile
        assert all(
            {"flags", "ratelimit", "rollout"} <= set(r["unavailable"]) for r in results
        ), results
    if fault == "client_pause_write":
        version, version_took, script = probed[0]
        # A plain read is served; tipkit's entry reads are scripts (the snapshot
        # prunes expired entries: a write), held like every write: to tipkit a
        # CLIENT PAUSE WRITE is an outage of every primitive, as ALL is.
        assert (True, True, "held") == (version > 0, version_took < timeout, script)
    assert_stored(srv.url, prefix, ["checkout"])
    shown = hold if fault in HELD else 0.0
    label = "no persistence, sigkill" if empty else f"aof, {fault}"
    print(  # noqa: T201 - the measured figures (pytest -s shows them)
        figures(label, timeout, shown, met, served, results)
        + (f"; written back {written_back:.3f} s after the restart" if empty else "")
    )


def test_three_processes_share_a_breaker_opening_and_keep_it_through_a_restart(
    prefix: str,
) -> None:
    """One process opens a shared breaker; the other two see it within the bound; restart.

    The bound is ``refresh_interval`` + ``timeout`` (plus each process's slack);
    pushed, it is milliseconds. Then the server is SIGKILLed and restarted
    empty: the processes that know the opening write it back (< 2 s, no call
    needed) and a breaker built afterwards opens from it.
    """
    with RedisServer(_executable()) as srv:
        timeout = healthy_timeout(srv.url, prefix + "t:")
        slack = machine_slack(lambda: healthy_timeout(srv.url, prefix + "s:"), 0.2)
        children = Children(srv.url, prefix, timeout, "breaker")
        try:
            children.all("ready")
            children.say("go")
            opened = children.read(0, "opened")
            seen = [children.read(i, "seen") for i in (1, 2)]
            srv.sigkill()
            srv.start()  # empty: no persistence
            restarted = time.perf_counter()
            reader = store_via(srv.url, prefix, timeout=5.0)

            def written_back() -> bool:
                entry = reader.get("breakers", "payments")
                return entry is not None and entry.value["state"] == "open"  # type: ignore[index, call-overload]  # a breaker entry

            back = until(written_back, 10.0)
            after = CircuitBreaker(
                "payments",
                store=reader,
                share="state",
                window=CountWindow(4),
                minimum_calls=4,
                open_duration=60,
                refresh_interval=0,
            )

            def refuses() -> bool:
                try:
                    after.call(lambda: "ok")
                except CircuitOpenError:
                    return True
                return False

            adopted = until(refuses, 10.0)
            children.say("stop")
            results = children.results()
        finally:
            children.close()
        reader.close()
    assert "opened" == opened[0]
    assert [["seen"], ["seen"]] == [s[:1] for s in seen]
    propagation = [float(s[1]) - float(opened[1]) for s in seen]
    bound = BREAKER_REFRESH + timeout
    for took, r in zip(propagation, results[1:], strict=True):
        assert took < bound + r["slack"], (propagation, bound, r)  # type: ignore[operator]  # JSON numbers
    assert back is not None, "the opening was never written back"
    assert back < FLUSH_BOUND + slack, back
    assert adopted is not None
    assert [[], [], []] == [r["errors"] for r in results], results
    assert ["OPEN", "OPEN", "OPEN"] == [r["state"] for r in results], results
    print(  # noqa: T201 - the measured figures (pytest -s shows them)
        f"breaker: timeout {timeout:.3f}; seen open by the others "
        f"{[round(p, 4) for p in propagation]} s after it opened (bound {bound:.3f}); "
        f"written back {back:.3f} s after the empty restart "
        f"({time.perf_counter() - restarted:.3f} s with the checks)"
    )
