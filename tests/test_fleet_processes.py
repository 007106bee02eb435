"""Three real processes sharing one redis-server through its faults.

Each child is this interpreter running :data:`CHILD`: it builds its primitives
on a ``RedisStore`` of its own, says ``ready``, and on ``go`` serves requests
(sync, and batches of 50 async tasks) until the parent says ``stop``, then
prints what it saw as JSON. The parent SIGKILLs and restarts the server
meanwhile. Asserted: no exception in any process, every call bounded by the
store's timeout (2x, plus the scheduling slack each child measures on a
healthy server before the fault), no safety action lost, and the breaker's
propagation bound (``refresh_interval`` + ``timeout``) across processes.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest
from tests.fault_proxy import FaultProxy
from tests.redis_fixtures import _executable
from tests.redis_server import RedisServer
from tests.test_outages_safety import (
    DOC,
    ROLLOUT_DOC,
    healthy_timeout,
    machine_slack,
    rollout_via,
    store_via,
    stored_status,
    until,
)

from tipkit.breaker import CircuitBreaker, CountWindow
from tipkit.errors import CircuitOpenError
from tipkit.flags import Flags, InMemoryProvider

pytestmark = pytest.mark.redis

BREAKER_REFRESH = 0.2  # the shared breaker's refresh_interval in every process
FLUSH_BOUND = 2.0  # a queued or written-back action reaches a store that answers

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys, threading, time
    url, prefix, timeout, mode, index, refresh = sys.argv[1:7]
    DOC, ROLLOUT_DOC = json.loads(sys.argv[7]), json.loads(sys.argv[8])
    from tipkit.breaker import CircuitBreaker, CountWindow
    from tipkit.errors import CircuitOpenError, RateLimitedError
    from tipkit.flags import Flags, InMemoryProvider
    from tipkit.ratelimit import TokenBucket
    from tipkit.rollout import Rollout
    from tipkit.stores import RedisStore
    from tipkit.stores._events import StoreStateLost
    from tipkit.testing import capture_events

    lost = capture_events(StoreStateLost).__enter__()  # a restart lost what we knew
    pace = threading.Event()  # never set: a request every 10 ms
    stop = threading.Event()
    def said_stop():
        sys.stdin.readline()
        stop.set()
    store = RedisStore(url, prefix=prefix, timeout=float(timeout), on_error="fail_closed")
    out = {"errors": [], "slowest": 0.0, "slowest_batch": 0.0}

    def timed(call):
        start = time.perf_counter()
        try:
            return call()
        except CircuitOpenError:
            return "open"
        except BaseException as exc:  # none may reach the application
            out["errors"].append(repr(exc))
        finally:
            out["slowest"] = max(out["slowest"], time.perf_counter() - start)

    if mode == "aof":
        flags = Flags(InMemoryProvider(DOC), store=store, refresh_interval=0.1)
        rflags = Flags(InMemoryProvider(ROLLOUT_DOC), store=store, refresh_interval=0)
        rollout = Rollout("pricing", flags=rflags, stages=[50, 100],
                          refresh_interval=0.2, min_samples=50)
        bucket = TokenBucket("api", rate=1e6, capacity=1e6, store=store)
        while flags.is_enabled("checkout", default=True) or rollout.percent != 0.0:
            pace.wait(0.01)  # the parent killed and rolled back before we started

        def slowest_async(start):
            took = time.perf_counter() - start
            out["slowest_async"] = max(out.get("slowest_async", 0.0), took)

        async def request(i):  # three awaited calls, each timed
            start = time.perf_counter()
            on = await flags.ais_enabled("checkout", default=True)
            slowest_async(start)
            start = time.perf_counter()
            async with rollout.observe(f"user-{i}") as arm:
                canary = arm.is_canary
            slowest_async(start)
            start = time.perf_counter()
            try:
                await bucket.acquire_async(timeout=0)
                admitted = True
            except RateLimitedError:  # fail_closed: the store is down
                admitted = False
            slowest_async(start)
            return on, canary, admitted

        async def fifty():
            return await asyncio.gather(*(request(i) for i in range(50)))

        def batch():
            start = time.perf_counter()
            try:
                return asyncio.run(fifty())
            except BaseException as exc:
                out["errors"].append(repr(exc))
                return []
            finally:
                took = time.perf_counter() - start
                out["slowest_batch"] = max(out["slowest_batch"], took)

        def canary_now(n):
            with rollout.observe(f"user-{n}") as arm:
                return arm.is_canary

        start = time.perf_counter()  # this process's slack now: 10x healthy work
        for _ in range(20):
            store.version("flags")
        out["slack"] = max(0.2, 10 * (time.perf_counter() - start))
        start = time.perf_counter()
        batch()
        out["batch_slack"] = max(0.5, 10 * (time.perf_counter() - start))
        out["slowest_batch"] = out["slowest_async"] = 0.0
    else:
        breaker = CircuitBreaker("payments", store=store, share="state",
                                 window=CountWindow(4), minimum_calls=4,
                                 open_duration=60, refresh_interval=float(refresh))
        start = time.perf_counter()
        for _ in range(20):
            store.version("flags")
        out["slack"] = max(0.2, 10 * (time.perf_counter() - start))
        def fail():
            raise ConnectionError("payments down")
    print("ready", flush=True)
    sys.stdin.readline()
    threading.Thread(target=said_stop, daemon=True).start()
    if mode == "aof":
        out.update(enabled=0, canary=0, batches=0, refused_batches=0, calls=0)
        state = "up"
        while not stop.is_set():
            out["enabled"] += bool(timed(lambda: flags.is_enabled("checkout", default=True)))
            out["canary"] += bool(timed(lambda: canary_now(out["calls"])))
            results = batch()
            out["batches"] += 1
            out["enabled"] += sum(bool(r[0]) for r in results)
            out["canary"] += sum(bool(r[1]) for r in results)
            admitted = [r[2] for r in results]
            if admitted and not any(admitted):
                out["refused_batches"] += 1
                if state == "up":  # a whole batch ran during the outage
                    state = "down"
                    print("down", flush=True)
            elif admitted and all(admitted) and state == "down":
                state = "back"
                print("back", flush=True)
            out["calls"] += 1
            pace.wait(0.01)
        out["pending"] = len(flags.pending()) + len(rollout.pending())
        out["lost"] = len(lost)
    else:
        if index == "0":  # the process whose window opens the breaker
            for _ in range(4):
                try:
                    breaker.call(fail)
                except ConnectionError:
                    pass
            print("opened", time.perf_counter(), flush=True)
        else:
            while timed(lambda: breaker.call(lambda: "ok")) != "open":
                pace.wait(0.001)
            print("seen", time.perf_counter(), flush=True)
        out["open_answers"] = out["calls"] = 0
        while not stop.is_set():
            out["open_answers"] += timed(lambda: breaker.call(lambda: "ok")) == "open"
            out["calls"] += 1
            pace.wait(0.01)
        out["state"] = breaker.state.name
    print(json.dumps(out), flush=True)
    """
)


class Children:
    """Three children running CHILD in *mode*; each line they print, read in order."""

    def __init__(self, url: str, prefix: str, timeout: float, mode: str) -> None:
        self.procs = [
            subprocess.Popen(  # noqa: S603 - this interpreter running a fixed script
                [sys.executable, "-c", CHILD, url, prefix, str(timeout), mode, str(i),
                 str(BREAKER_REFRESH), json.dumps(DOC), json.dumps(ROLLOUT_DOC)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(3)
        ]  # fmt: skip

    def read(self, index: int) -> list[str]:
        """The next line child *index* printed, split into words."""
        stdout = self.procs[index].stdout
        assert stdout is not None
        return stdout.readline().split()

    def say(self, word: str) -> None:
        """Tell every child *word* (``go``, ``stop``)."""
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(word + "\n")
            p.stdin.flush()

    def results(self) -> list[dict[str, object]]:
        """Each child's JSON report (after ``stop``)."""
        return [json.loads(p.communicate(timeout=60)[0]) for p in self.procs]

    def close(self) -> None:
        """Kill any child still running and close its pipes."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


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
def aof_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own with the append-only file on (fsync always)."""
    with RedisServer(_executable(), appendonly=True) as srv:
        yield srv


@pytest.mark.parametrize("fault", ["sigkill", "sigstop", "blackhole", "drop"])
def test_three_processes_keep_a_kill_and_a_rollback_through_the_fault(
    aof_server: RedisServer, prefix: str, proxies: contextlib.ExitStack, fault: str
) -> None:
    """AOF: a kill and a rollback made before the fault hold in 3 processes.

    The faults: SIGKILL and restart, SIGSTOP, and, through a ``FaultProxy``
    between the processes and the server, a blackhole (never answers) and
    dropped connections (reset at once: a dead port).

    Each process evaluates the killed flag, routes through the rolled-back
    rollout and takes from a shared bucket (``fail_closed``), sync and in
    batches of 50 async tasks, throughout. The server is held down until every
    process has run a whole batch against it. None sees the flag on or the
    canary, nothing raises, every call and batch is bounded (refused at once
    by a killed server; a hung one costs each call its timeout); the restarted
    server has both actions from its AOF (no process saw the state lost), and a
    process built after it sees them.
    """
    srv = aof_server
    proxy = None
    if fault in ("blackhole", "drop"):
        proxy = proxies.enter_context(FaultProxy(srv.port))
    url = srv.url if proxy is None else proxy.url
    timeout = healthy_timeout(url, prefix + "t:")
    store = store_via(srv.url, prefix, timeout=timeout)
    flags = Flags(InMemoryProvider(DOC), store=store, refresh_interval=0)
    flags.kill("checkout")
    rollout = rollout_via(store)
    rollout.rollback("bad canary", actor="oncall")
    assert until(lambda: not flags.pending() and not rollout.pending()) is not None
    assert "rolled_back" == stored_status(store)
    children = Children(url, prefix, timeout, "aof")
    try:
        assert [["ready"]] * 3 == [children.read(i) for i in range(3)]
        children.say("go")
        if fault == "sigkill":
            srv.sigkill()
        elif fault == "sigstop":
            srv.pause()
        else:
            assert proxy is not None
            proxy.set(fault)
        try:
            down = [children.read(i) for i in range(3)]  # each ran a batch in it
        finally:
            if fault == "sigkill":
                srv.start()  # the same port, its AOF replayed
            elif fault == "sigstop":
                srv.resume()
            else:
                assert proxy is not None
                proxy.set("pass")
        restarted = time.perf_counter()
        back = [children.read(i) for i in range(3)]
        served = time.perf_counter() - restarted
        children.say("stop")
        results = children.results()
    finally:
        children.close()
    assert [["down"]] * 3 == down
    assert [["back"]] * 3 == back
    assert [[], [], []] == [r["errors"] for r in results], results
    assert [0, 0, 0] == [r["enabled"] for r in results], results
    assert [0, 0, 0] == [r["canary"] for r in results], results
    assert [0, 0, 0] == [r["pending"] for r in results], results
    assert [0, 0, 0] == [r["lost"] for r in results], results  # the AOF kept it
    for r in results:  # within 2x the timeout plus each process's own slack
        assert r["slowest"] < 2 * timeout + r["slack"], r  # type: ignore[operator]  # JSON numbers
        assert r["slowest_async"] < 2 * timeout + r["batch_slack"], r  # type: ignore[operator]  # JSON numbers
        assert r["refused_batches"] >= 1, r  # type: ignore[operator]  # JSON numbers
    reader = store_via(srv.url, prefix, timeout=5.0)
    assert "rolled_back" == stored_status(reader)
    fresh_flags = Flags(InMemoryProvider(DOC), store=reader, refresh_interval=0)
    assert not fresh_flags.is_enabled("checkout", default=True)
    fresh = rollout_via(reader)
    assert 0.0 == fresh.percent
    reader.close()
    store.close()
    print(  # noqa: T201 - the measured figures (pytest -s shows them)
        f"aof, {fault}: timeout {timeout:.3f}; every process served again "
        f"{served:.3f} s after the server was back; {[r['batches'] for r in results]} batches, "
        f"{[r['refused_batches'] for r in results]} in the outage; slowest call "
        f"{max(r['slowest'] for r in results):.3f} s, async call "  # type: ignore[type-var]  # JSON numbers
        f"{max(r['slowest_async'] for r in results):.3f} s, batch "  # type: ignore[type-var]  # JSON numbers
        f"{max(r['slowest_batch'] for r in results):.3f} s"  # type: ignore[type-var]  # JSON numbers
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
            assert [["ready"]] * 3 == [children.read(i) for i in range(3)]
            children.say("go")
            opened = children.read(0)
            seen = [children.read(i) for i in (1, 2)]
            srv.sigkill()
            srv.start()  # empty: no persistence
            restarted = time.perf_counter()
            reader = store_via(srv.url, prefix, timeout=5.0)

            def written_back() -> bool:
                entry = reader.get("breakers", "payments")
                return entry is not None and entry.value == {"state": "open"}

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
