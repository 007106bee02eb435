"""Three real processes sharing one store, for fleet fault tests: the children and their checks.

Each child is this interpreter running :data:`CHILD`: it builds its primitives
on a ``RedisStore`` of its own (a ``redis://``, ``redis+sentinel://`` or
``redis+cluster://`` URL), says ``ready``, and on ``go`` serves requests (sync,
and batches of 50 async tasks) until the parent says ``stop``, then prints what
it saw as JSON. :class:`Children` starts three and reads their lines with a
bound; :func:`run_through` takes them through a fault; :func:`assert_kept`
is what every fault test asserts of their reports. Used by
``tests/test_fleet_processes.py`` (one server) and
``tests/test_fleet_processes_topologies.py`` (Sentinel, Cluster).
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fleet_guards import NAMES, assert_guarded
from tests.test_outages_safety import (
    DOC,
    ROLLOUT_DOC,
    rollout_via,
    store_via,
    stored_status,
    until,
)

from tipkit.flags import Flags, InMemoryProvider

__all__ = [
    "BREAKER_REFRESH",
    "CHILD",
    "FLEET_DOC",
    "LINE_BOUND",
    "Children",
    "act_before",
    "assert_kept",
    "assert_stored",
    "fault_hold",
    "figures",
    "run_through",
]

BREAKER_REFRESH = 0.2  # the shared breaker's refresh_interval in every process
REPOSITORY = Path(__file__).resolve().parents[1]  # the children import tests.stalls
LINE_BOUND = 60.0  # a child that says nothing for this long is stuck: the test fails
# The children's flags: 'checkout' (killed before the fault) and 'search' (killed
# by one child during it, when a test says so).
FLEET_DOC = {"flags": {**DOC["flags"], "search": DOC["flags"]["checkout"]}}

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys, threading, time
    url, prefix, timeout, mode, index, refresh = sys.argv[1:7]
    DOC, ROLLOUT_DOC = json.loads(sys.argv[7]), json.loads(sys.argv[8])
    sys.path.insert(0, sys.argv[9])  # the repository: tests.stalls
    from tests.stalls import STALLS
    STALLS.start()  # a bound leaves out the time this process stood still
    from tipkit.breaker import CircuitBreaker, CountWindow
    from tipkit.errors import CircuitOpenError
    from tipkit.flags import Flags, InMemoryProvider
    from tipkit.ratelimit import TokenBucket
    from tipkit.rollout import Rollout
    from tipkit.stores import RedisStore
    from tipkit.stores._events import StoreStateLost, StoreUnavailable
    from tipkit.testing import capture_events

    # Kept referenced: a capture whose context manager is collected stops capturing.
    capturing = [capture_events(StoreStateLost), capture_events(StoreUnavailable)]
    lost = capturing[0].__enter__()  # a restart lost what we knew
    down = capturing[1].__enter__()  # which primitives met the fault
    pace = threading.Event()  # never set: a request every 10 ms
    stop, kill = threading.Event(), threading.Event()
    def commands():  # "kill" (flag 'search', once), then "stop" (or EOF)
        for line in sys.stdin:
            if line.strip() == "kill":
                kill.set()
            else:
                break
        stop.set()
    store = RedisStore(url, prefix=prefix, timeout=float(timeout), on_error="fail_closed")
    out = {"errors": [], "slowest": 0.0, "slowest_batch": 0.0, "slowest_flag": 0.0,
           "own": 0.0, "own_async": 0.0}

    def own(start, key):  # the call's time, less the longest stall of this process in it
        end = time.perf_counter()
        out[key] = max(out[key], end - start - STALLS.worst(start, end))
        return end - start

    def timed(call):
        start = time.perf_counter()
        try:
            return call()
        except CircuitOpenError:
            return "open"
        except BaseException as exc:  # none may reach the application
            out["errors"].append(repr(exc))
        finally:
            out["slowest"] = max(out["slowest"], own(start, "own"))

    if mode == "aof":
        flags = Flags(InMemoryProvider(DOC), store=store, refresh_interval=0.1)
        rflags = Flags(InMemoryProvider(ROLLOUT_DOC), store=store, refresh_interval=0)
        rollout = Rollout("pricing", flags=rflags, stages=[50, 100],
                          refresh_interval=0.2, min_samples=50)
        bucket = TokenBucket("api", rate=1e6, capacity=1e6, store=store)
        from tests.fleet_guards import Guards  # fail_open, keyed, shared breakers
        guards = Guards(url, prefix, float(timeout), store, bucket, float(refresh))
        while flags.is_enabled("checkout", default=True) or rollout.percent != 0.0:
            pace.wait(0.01)  # the parent killed and rolled back before we started
        guards.open_payments(int(index))  # child 0 opens it; all see it open

        def slowest_async(start):
            took = own(start, "own_async")
            out["slowest_async"] = max(out.get("slowest_async", 0.0), took)

        async def request(i):  # two awaited calls and the guards', each timed
            start = time.perf_counter()
            on = await flags.ais_enabled("checkout", default=True)
            slowest_async(start)
            start = time.perf_counter()
            async with rollout.observe(f"user-{i}") as arm:
                canary = arm.is_canary
            slowest_async(start)
            answers = await guards.one(i, slowest_async)
            return on, canary, answers["bucket_closed"], answers

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
        out["slowest_batch"] = out["slowest_async"] = out["own_async"] = 0.0
        guards.reset()

        def flag_on(name):  # a flag read, timed on its own (reads vs writes)
            start = time.perf_counter()
            on = timed(lambda: flags.is_enabled(name, default=True))
            out["slowest_flag"] = max(out["slowest_flag"], time.perf_counter() - start)
            return on
    else:
        breaker = CircuitBreaker("payments", store=store, share="state",
                                 window=CountWindow(4), minimum_calls=4,
                                 open_duration=60, refresh_interval=float(refresh))
        start = time.perf_counter()
        for _ in range(20):
            store.version("flags")
        out["slack"] = max(0.2, 10 * (time.perf_counter() - start))
        out["batch_slack"] = 0.0
        def fail():
            raise ConnectionError("payments down")
    print("ready", out["slack"], out["batch_slack"], flush=True)
    sys.stdin.readline()
    threading.Thread(target=commands, daemon=True).start()
    if mode == "aof":
        out.update(enabled=0, canary=0, batches=0, refused_batches=0, calls=0)
        state, killed, seen = "up", False, False
        while not stop.is_set():
            if kill.is_set() and not killed:  # an operator's kill, now
                killed = True
                start = time.perf_counter()
                timed(lambda: flags.kill("search"))
                print("killed", start, time.perf_counter() - start, flush=True)
            if not seen and not flag_on("search"):
                seen = True
                print("seen", time.perf_counter(), flush=True)
            out["enabled"] += bool(flag_on("checkout"))
            out["canary"] += bool(timed(lambda: canary_now(out["calls"])))
            sync = guards.sync_round(out["calls"], timed)
            results = batch()
            refused = guards.round_refused(sync, [r[3] for r in results])
            out["batches"] += 1
            out["enabled"] += sum(bool(r[0]) for r in results)
            out["canary"] += sum(bool(r[1]) for r in results)
            admitted = [r[2] for r in results]
            if admitted and not any(admitted):
                out["refused_batches"] += 1
                if state == "up" and refused:  # a whole round ran in the outage
                    state = "down"
                    print("down", time.perf_counter(), flush=True)
            elif admitted and all(admitted) and state == "down":
                state = "back"
                print("back", time.perf_counter(), flush=True)
            out["calls"] += 1
            pace.wait(0.01)
        out["pending"] = len(flags.pending()) + len(rollout.pending())
        start = time.perf_counter()  # a write-back under way settles (half LINE_BOUND)
        while (flags.pending() or rollout.pending()) and time.perf_counter() - start < 30:
            pace.wait(0.01)
        out["settled"] = time.perf_counter() - start
        out["pending_after"] = len(flags.pending()) + len(rollout.pending())
        out.update(guards.report())
        out["breakers"] = [guards.inventory.state.name, guards.payments.state.name]
        out["lost"] = len(lost)
        out["lost_by"] = sorted({e.component for e in lost})
        out["unavailable"] = sorted({e.component for e in down})
        out["unavailable_names"] = sorted({e.name for e in down})
        out["search"] = flags.is_enabled("search", default=True)
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
    """Three children running CHILD in *mode*; the lines each prints, read with a bound.

    A thread per child reads its lines as they come (a child never blocks on a
    full pipe); the test waits for a given word within a bound, so a fault that
    ended before a child met it fails the test instead of hanging it.
    """

    def __init__(self, url: str, prefix: str, timeout: float, mode: str) -> None:
        self.procs = [
            subprocess.Popen(  # noqa: S603 - this interpreter running a fixed script
                [sys.executable, "-c", CHILD, url, prefix, str(timeout), mode, str(i),
                 str(BREAKER_REFRESH), json.dumps(FLEET_DOC), json.dumps(ROLLOUT_DOC),
                 str(REPOSITORY)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(3)
        ]  # fmt: skip
        self._lines: list[queue.Queue[str | None]] = [queue.Queue() for _ in self.procs]
        self._stashed: list[list[str]] = [[] for _ in self.procs]
        self._readers = [
            threading.Thread(target=self._pump, args=(p, q), daemon=True)
            for p, q in zip(self.procs, self._lines, strict=True)
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed by close()
            for line in proc.stdout:
                lines.put(line)
        lines.put(None)  # end of output

    def _next(self, index: int, within: float) -> str | None:
        try:
            return self._lines[index].get(timeout=within)
        except queue.Empty:
            raise AssertionError(
                f"child {index} said nothing for {within:.1f} s"
            ) from None

    def read(self, index: int, word: str, within: float = LINE_BOUND) -> list[str]:
        """The first line child *index* prints that starts with *word* (others kept)."""
        for kept in self._stashed[index]:
            if kept.split()[:1] == [word]:
                self._stashed[index].remove(kept)
                return kept.split()
        deadline = time.perf_counter() + within
        while True:
            line = self._next(index, max(0.0, deadline - time.perf_counter()))
            if line is None:
                raise AssertionError(f"child {index} ended before saying {word!r}")
            if line.split()[:1] == [word]:
                return line.split()
            self._stashed[index].append(line)

    def all(self, word: str, within: float = LINE_BOUND) -> list[list[str]]:
        """Each child's first line starting with *word*, all within *within* from now."""
        deadline = time.perf_counter() + within
        return [
            self.read(i, word, max(0.0, deadline - time.perf_counter()))
            for i in range(len(self.procs))
        ]

    def say(self, word: str, index: int | None = None) -> None:
        """Tell every child (or child *index*) *word* (``go``, ``kill``, ``stop``)."""
        for i, p in enumerate(self.procs):
            if index is None or i == index:
                assert p.stdin is not None
                p.stdin.write(word + "\n")
                p.stdin.flush()

    def results(self) -> list[dict[str, Any]]:
        """Each child's JSON report (its last line, after ``stop``)."""
        reports = []
        for i, p in enumerate(self.procs):
            p.wait(timeout=LINE_BOUND)
            said = list(self._stashed[i])
            while (line := self._next(i, LINE_BOUND)) is not None:
                said.append(line)
            reports.append(json.loads(said[-1]))
        return reports

    def close(self) -> None:
        """Kill any child still running; close its pipes once its reader is done."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for p, reader in zip(self.procs, self._readers, strict=True):
            reader.join(LINE_BOUND)
            for pipe in (p.stdin, p.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()


def act_before(url: str, prefix: str, timeout: float) -> None:
    """While healthy: kill 'checkout' and roll 'pricing' back, both stored."""
    store = store_via(url, prefix, timeout=timeout)
    flags = Flags(InMemoryProvider(DOC), store=store, refresh_interval=0)
    flags.kill("checkout")
    rollout = rollout_via(store)
    rollout.rollback("bad canary", actor="oncall")
    assert until(lambda: not flags.pending() and not rollout.pending()) is not None
    assert "rolled_back" == stored_status(store)
    store.close()


def assert_kept(
    results: list[dict[str, Any]], timeout: float, *, lost: bool = False
) -> None:
    """Every child: nothing raised, both actions in force, bounded, nothing pending or lost.

    Each call within 2x the timeout plus that child's own slack (less the time
    the child stood still meanwhile: ``tests.stalls``); each child had
    a batch refused (``fail_closed``) by the fault; the bucket met it, the flags
    and the rollout when they read in it. Its other primitives (both policies,
    keyed limiters, shared breakers) answered per policy: ``assert_guarded``.
    *lost*: the server restarted empty; every child saw ``StoreStateLost`` and
    wrote back what it knew (pending at ``stop`` maybe, settled after).
    """
    assert [[], [], []] == [r["errors"] for r in results], results
    assert [0, 0, 0] == [r["enabled"] for r in results], results
    assert [0, 0, 0] == [r["canary"] for r in results], results
    assert [0, 0, 0] == [r["pending_after"] for r in results], results
    if lost:
        assert all(r["lost"] >= 1 for r in results), results
    else:
        assert [0, 0, 0] == [r["pending"] for r in results], results
        assert [0, 0, 0] == [r["lost"] for r in results], results
    assert [["CLOSED", "OPEN"]] * 3 == [r["breakers"] for r in results], results
    assert_guarded(results, timeout)
    for r in results:
        assert r["own"] < 2 * timeout + r["slack"], r
        assert r["own_async"] < 2 * timeout + r["batch_slack"], r
        assert r["refused_batches"] >= 1, r
        assert "ratelimit" in r["unavailable"], r
        assert {"breaker", "flags", "ratelimit", "rollout"} >= set(r["unavailable"]), r
        # Both policies' limiters met it (fail_open admitting meanwhile).
        limiters = {"api", "api-open", "per-user", "per-user-open"}
        assert limiters <= set(r["unavailable_names"]), r


def assert_stored(url: str, prefix: str, killed: list[str]) -> None:
    """A process built now: the rollout rolled back, the *killed* flags off, 'payments' open."""
    reader = store_via(url, prefix, timeout=5.0)
    try:
        assert "rolled_back" == stored_status(reader)
        entry = reader.get("breakers", "payments")
        assert "open" == (None if entry is None else entry.value["state"])  # type: ignore[index, call-overload]  # a breaker entry
        fresh = Flags(InMemoryProvider(FLEET_DOC), store=reader, refresh_interval=0)
        assert [False] * len(killed) == [
            fresh.is_enabled(name, default=True) for name in killed
        ]
        assert 0.0 == rollout_via(reader).percent
    finally:
        reader.close()


def figures(
    label: str,
    timeout: float,
    hold: float,
    met: float,
    served: float,
    results: list[dict[str, Any]],
) -> str:
    """The measured figures of one fault test, on one line (*hold*: 0 if ended at will)."""
    return (
        f"{label}: timeout {timeout:.3f}{f' (held {hold:.2f} s)' if hold else ''}; "
        "every process met it "
        f"within {met:.3f} s, served again {served:.3f} s after it ended; "
        f"{[r['batches'] for r in results]} batches, "
        f"{[r['refused_batches'] for r in results]} in the outage; slowest call "
        f"{max(r['slowest'] for r in results):.3f} s, flag read "
        f"{max(r['slowest_flag'] for r in results):.3f} s, async call "
        f"{max(r['slowest_async'] for r in results):.3f} s (less stalls: sync "
        f"{max(r['own'] for r in results):.3f} s, async "
        f"{max(r['own_async'] for r in results):.3f} s), batch "
        f"{max(r['slowest_batch'] for r in results):.3f} s; met it: "
        f"{[r['unavailable'] for r in results]}; per primitive admitted/refused, "
        "slowest sync/async less stalls: "
        + ", ".join(
            f"{name} {sum(r['answers'][name][0] for r in results)}/"
            f"{sum(r['answers'][name][1] for r in results)} "
            f"{max(r['slowest_by'][name][0] for r in results):.3f}/"
            f"{max(r['slowest_by'][name][1] for r in results):.3f}"
            for name in NAMES
        )
        + f"; rounds wholly refused {[r['rounds'] for r in results]}"
    )


def fault_hold(timeout: float) -> float:
    """How long a fault that cannot be ended early lasts (DEBUG SLEEP, CLIENT PAUSE).

    Each child must finish the round the fault met and then run a whole round
    in it (its sync calls and a batch, wholly refused by the ``fail_closed``
    limiters). A store known down refuses at once, but lets one call through
    as its probe every ``PROBE`` s (or timeout), and a probe of a server that
    does not answer costs its caller a timeout: a round holds up to three (the
    ``fail_closed`` store's first sync call, the ``fail_open`` store's, and the
    batch, where both stores' probes overlap), so meeting it takes up to six.
    Measured with the flags, rollout and bucket alone (16 runs under load
    average 4-16, ``timeout`` 0.20-5.85 s), every child met it within 1.12
    timeouts; with both stores (``tests/fleet_guards.py``) within 4.1 (one
    pass failed 3 runs in 3 at 4 timeouts + 1.5 s). The hold is 7 timeouts
    plus 1.5 s of scheduling: the timeout is machine-derived, so a loaded
    machine holds the fault longer.
    """
    return 7 * timeout + 1.5


def run_through(
    children: Children,
    hold: float,
    start: Callable[[], Callable[[], None]],
    during: Callable[[], object] = lambda: None,
) -> tuple[list[list[str]], float, float]:
    """Start the fault; once every child ran a whole batch in it, end it (or wait it out).

    *hold*: how long a fault of fixed length lasts (each child must meet it
    within that), else ``LINE_BOUND``. *during* runs once every child met the
    fault, before it ends. Returns each child's ``back`` line, how long after
    the start the last child met it, and the moment the fault ended.
    """
    end = start()
    began = time.perf_counter()
    try:
        down = children.all("down", hold)
        during()
    finally:
        end()
    ended = time.perf_counter()
    met = max(float(d[1]) for d in down) - began
    assert met < ended - began, ("a child met the fault after it ended", met)
    return children.all("back"), met, ended
