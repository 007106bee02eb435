"""Fleet mode on a real Redis: shared limits, flags, breakers, and what happens in faults.

Multi-process tests run small scripts with this interpreter (tipkit imported from
the installed package) and compare ``time.perf_counter()`` readings across
processes: on Linux it is CLOCK_MONOTONIC, one clock for the whole host.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.conftest import Face
from tests.redis_fixtures import machine_timeout
from tests.redis_server import RedisServer, run_children

from tipkit.breaker import BreakerState, CircuitBreaker, CountWindow
from tipkit.clock import SYSTEM_CLOCK
from tipkit.errors import CircuitOpenError, RateLimitedError
from tipkit.flags import Flags, InMemoryProvider
from tipkit.ratelimit import KeyedRateLimiter, TokenBucket
from tipkit.stores import MemoryStore, RedisStore
from tipkit.stores._batch import CountBatcher
from tipkit.stores._events import StoreRecovered, StoreUnavailable
from tipkit.testing import FakeClock, capture_events

pytestmark = pytest.mark.redis

TIMEOUT = 0.05  # on an idle machine; the fault tests derive theirs (fault_timeout)


def until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll *condition* until it holds or *seconds* of real time pass."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if condition():
            return True
        # real-time-ok: waiting for another process or the listener thread to act
        threading.Event().wait(0.002)
    return condition()


@pytest.fixture
def prefix() -> str:
    return f"fleet-{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def stores(redis_url: str, prefix: str) -> Iterator[Callable[..., RedisStore]]:
    """Make RedisStores on the session server sharing one prefix (one per "process")."""
    made: list[RedisStore] = []

    def make(**kwargs: Any) -> RedisStore:
        store = RedisStore(redis_url, prefix=prefix, **{"timeout": 5.0, **kwargs})
        made.append(store)
        return store

    yield make
    if made:
        keys = list(made[0].client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            made[0].client.delete(*keys)
    for store in made:
        store.close()


@pytest.fixture
def fault_timeout(private_redis_server: RedisServer) -> float:
    """0.05 s, or 3x the slowest healthy call on a loaded machine."""
    return machine_timeout(private_redis_server.url, TIMEOUT)


@pytest.fixture
def bound(fault_timeout: float) -> float:
    """Connect + reply, each bounded by the timeout, plus slack that grows with load."""
    return 2 * fault_timeout + (0.25 + 2 * fault_timeout)


@pytest.fixture
def fault_store(
    private_redis_server: RedisServer, fault_timeout: float
) -> Iterator[RedisStore]:
    store = RedisStore(private_redis_server.url, prefix="fault:", timeout=fault_timeout)
    yield store
    store.close()


# -- distributed token bucket ----------------------------------------------------------
BUCKET_CHILD = textwrap.dedent(
    """
    import json, sys, time
    url, prefix, rate, capacity, duration, skew, batch = sys.argv[1:8]
    rate, capacity, duration, skew = float(rate), float(capacity), float(duration), float(skew)
    if float(skew):
        # This process's clocks are an hour off: the bucket must not care.
        real_time, real_mono = time.time, time.monotonic
        time.time = lambda: real_time() + skew
        time.monotonic = lambda: real_mono() + skew
    from tipkit.ratelimit import TokenBucket
    from tipkit.stores import RedisStore
    store = RedisStore(url, prefix=prefix, timeout=5, push=False)
    bucket = TokenBucket("api", rate=rate, capacity=capacity, store=store, batch=int(batch))
    store.take_tokens("warm-up", 0, rate=1, capacity=1)
    print("ready", flush=True)
    sys.stdin.readline()
    def server_now():
        s, us = store.client.time()
        return s + us / 1e6
    start = server_now()
    deadline = time.perf_counter() + duration
    admitted = attempts = 0
    while time.perf_counter() < deadline:
        attempts += 1
        admitted += bucket.try_acquire()
    end = server_now()
    print(json.dumps({"admitted": admitted, "attempts": attempts, "start": start,
                      "end": end, "held": bucket._shared.held}))
    """
)


@pytest.mark.parametrize("batch", [1, 8])
def test_token_bucket_shared_by_four_processes(
    redis_url: str, prefix: str, stores: Callable[..., RedisStore], batch: int
) -> None:
    """4 processes, one TokenBucket on Redis, ~1.5 s: the fleet bound holds, >= 95% used.

    With ``batch=k`` each process may hold k-1 unused tokens, so the bound is
    capacity + rate*t + 4*(k-1); the lower bound counts only tokens that left
    the store (those held at the end were admitted by the store, not used).
    One process's clocks are an hour ahead: it takes no more than a fair share.
    """
    stores()  # cleans the prefix afterwards
    rate, capacity, duration = 400.0, 150.0, 1.5
    skews = ["0", "0", "0", "3600"]
    results = run_children(
        BUCKET_CHILD,
        [
            [redis_url, prefix, str(rate), str(capacity), str(duration), s, str(batch)]
            for s in skews
        ],
    )
    window = max(r["end"] for r in results) - min(r["start"] for r in results)
    fleet_bound = capacity + rate * window
    admitted = sum(r["admitted"] for r in results)
    held = sum(r["held"] for r in results)
    assert admitted <= fleet_bound + len(results) * (batch - 1), (admitted, fleet_bound)
    # Liveness over the time every process was asking at once (a loaded machine
    # starts and stops the children at different times): the bucket gave out
    # what it holds plus what it refilled then.
    overlap = min(r["end"] for r in results) - max(r["start"] for r in results)
    live_bound = capacity + rate * max(0.0, overlap)
    assert admitted + held >= 0.95 * live_bound, (admitted, held, live_bound, results)
    skewed, others = results[-1], results[:-1]
    others_ratio = sum(r["admitted"] for r in others) / sum(
        r["attempts"] for r in others
    )
    # The sharp check is the bound above: a process refilling by its own clock,
    # an hour ahead, would refill the bucket on every take. Per attempt it does
    # no better than the others, within what a loaded machine's scheduling moves
    # (the process that gets a core while the others wait catches more refills).
    assert skewed["admitted"] / skewed["attempts"] < 5 * others_ratio, results


def test_batch_takes_k_tokens_per_round_trip(stores: Callable[..., RedisStore]) -> None:
    """batch=5 takes 5 tokens from the store, serves 4 more locally, then the rest."""
    store = stores()
    bucket = TokenBucket("hot", rate=0.001, capacity=12, store=store, batch=5)
    level = store.take_tokens("ratelimit:hot", 0, rate=0.001, capacity=12).tokens
    assert level == pytest.approx(12, abs=0.01)
    assert bucket.try_acquire()
    assert store.take_tokens("ratelimit:hot", 0, rate=0.001, capacity=12).tokens == (
        pytest.approx(7, abs=0.01)
    )
    for _ in range(4):
        assert bucket.try_acquire()  # from the 4 held: the store is not asked
    assert store.take_tokens("ratelimit:hot", 0, rate=0.001, capacity=12).tokens == (
        pytest.approx(7, abs=0.01)
    )
    assert bucket.try_acquire()  # 5 more: 2 left in the store, 4 held
    assert [bucket.try_acquire() for _ in range(4)] == [True] * 4
    # Fewer than a batch in the store: the 2 there are taken as they are.
    assert bucket.try_acquire()
    assert store.take_tokens("ratelimit:hot", 0, rate=0.001, capacity=12).tokens == (
        pytest.approx(0, abs=0.01)
    )
    assert bucket.try_acquire()
    assert not bucket.try_acquire()
    assert "batch=5" in repr(bucket)


def test_batch_refusal_says_when_the_tokens_asked_for_are_there() -> None:
    """A batched bucket's refusal gives retry_after for the tokens asked, not a batch."""
    clock = FakeClock()
    bucket = TokenBucket(
        "hot", rate=1, capacity=10, store=MemoryStore(clock=clock), batch=5
    )
    assert [bucket.try_acquire() for _ in range(10)] == [True] * 10
    with pytest.raises(RateLimitedError) as info:
        bucket.acquire(timeout=0)
    assert info.value.retry_after == pytest.approx(1.0)

    async def refused() -> float | None:
        with pytest.raises(RateLimitedError) as ainfo:
            await bucket.acquire_async(timeout=0)
        return ainfo.value.retry_after

    clock.advance(0.5)
    assert 0.5 == pytest.approx(asyncio.run(refused()))


def test_shared_bucket_survives_script_flush(stores: Callable[..., RedisStore]) -> None:
    """After SCRIPT FLUSH the pre-packed take reloads the scripts and answers."""
    store = stores()
    bucket = TokenBucket("flushed", rate=0.001, capacity=2, store=store)
    assert bucket.try_acquire()
    store.client.script_flush()
    assert bucket.try_acquire()
    assert not bucket.try_acquire()


def test_batch_is_checked() -> None:
    """A batch needs a store and must lie between 1 and the capacity."""
    with pytest.raises(ValueError, match="needs store="):
        TokenBucket("b", rate=1, capacity=5, batch=2)
    with pytest.raises(ValueError, match="batch must be between 1 and the capacity"):
        TokenBucket("b", rate=1, capacity=5, batch=6, store=MemoryStore())
    with pytest.raises(TypeError, match="batch must be an int"):
        TokenBucket("b", rate=1, capacity=5, batch=2.5, store=MemoryStore())  # type: ignore[arg-type]


def test_keyed_limiter_on_redis_shares_keys_and_expires_idle_ones(
    stores: Callable[..., RedisStore], prefix: str
) -> None:
    """Two limiters on two connections share each key's bucket; idle keys expire."""
    one = KeyedRateLimiter("tenants", rate=2, capacity=4, store=stores())
    two = KeyedRateLimiter("tenants", rate=2, capacity=4, store=stores())
    client = stores().client
    assert [one.try_acquire("acme") for _ in range(3)] == [True] * 3
    start = time.perf_counter()  # the take that empties the bucket sets the TTL
    assert two.try_acquire("acme")
    assert not two.try_acquire("acme")
    with pytest.raises(RateLimitedError, match="retry after"):
        one.acquire("acme")
    ttl_ms = client.pttl(f"{prefix}tb:ratelimit:tenants:acme")
    elapsed_ms = (time.perf_counter() - start) * 1000
    assert two.try_acquire("globex")  # another key, its own bucket
    # Empty bucket: 4 tokens at 2/s refill in 2 s; the key lives at least that long
    # (less the time since the emptying take, however busy the machine).
    assert 1_900 - elapsed_ms <= ttl_ms <= 2_002


# -- the limiters' failure policy ----------------------------------------------------
def test_bucket_fails_open_within_the_timeout_and_reports_the_outage_once(
    private_redis_server: RedisServer, fault_store: RedisStore, bound: float
) -> None:
    """Redis stopped: fail_open admits within the bound, counts, one event; then recovers."""
    bucket = TokenBucket("open", rate=0.001, capacity=3, store=fault_store)
    assert bucket.try_acquire()
    private_redis_server.stop()
    with capture_events(StoreUnavailable, StoreRecovered) as events:
        for _ in range(5):
            start = time.perf_counter()
            assert bucket.try_acquire()
            with bucket:
                pass
            assert time.perf_counter() - start < 2 * bound
        assert bucket.store_errors == 10
        assert [type(e) for e in events] == [StoreUnavailable]
        assert events[0].name == "open"
        assert events[0].policy == "fail_open"
        assert events[0].component == "ratelimit"
        assert events[0].error_type == "ConnectionError"
        private_redis_server.start()
        assert bucket.try_acquire()  # a fresh, full bucket on the restarted server
        assert [type(e) for e in events] == [StoreUnavailable, StoreRecovered]
        assert events[1].failures == 10


def test_bucket_fails_closed_on_a_hung_server(
    private_redis_server: RedisServer, bound: float, fault_timeout: float
) -> None:
    """Redis frozen: fail_closed refuses with RateLimitedError after about the timeout."""
    store = RedisStore(
        private_redis_server.url,
        prefix="closed:",
        timeout=fault_timeout,
        on_error="fail_closed",
    )
    bucket = TokenBucket("closed", rate=10, capacity=3, store=store)
    keyed = KeyedRateLimiter("closed-keys", rate=10, capacity=3, store=store)
    assert bucket.try_acquire()
    assert keyed.try_acquire("k")
    private_redis_server.pause()
    try:
        start = time.perf_counter()
        assert not bucket.try_acquire()
        with pytest.raises(RateLimitedError, match="rate limit 'closed' exceeded"):
            bucket.acquire(timeout=1.0)
        with pytest.raises(RateLimitedError, match="closed-keys"):
            keyed.acquire("k")
        assert time.perf_counter() - start < 3 * bound
        assert (bucket.store_errors, keyed.store_errors) == (2, 1)
    finally:
        private_redis_server.resume()
    # The store is known down until its probe (at most 0.25 s or one timeout on).
    tick, deadline = threading.Event(), time.perf_counter() + bound + 0.25
    while not bucket.try_acquire():
        assert time.perf_counter() < deadline
        tick.wait(0.01)
    store.close()


def test_async_bucket_follows_the_policy(
    private_redis_server: RedisServer, fault_store: RedisStore, bound: float
) -> None:
    """The async faces of a shared bucket fail open within the bound too."""
    bucket = TokenBucket("async-open", rate=0.001, capacity=2, store=fault_store)

    async def main() -> list[float]:
        async with bucket:
            pass
        private_redis_server.stop()
        took = []
        for _ in range(3):
            start = time.perf_counter()
            async with bucket:
                pass
            await bucket.acquire_async()
            took.append(time.perf_counter() - start)
        return took

    assert max(asyncio.run(main())) < 2 * bound
    assert bucket.store_errors == 6


# -- shared flag state ------------------------------------------------------------------
DOC = {
    "version": 1,
    "flags": {
        "checkout": {
            "variants": {"on": True, "off": False},
            "default_variant": "on",
            "off_variant": "off",
        }
    },
}


def test_kill_reaches_another_connection_by_push(
    stores: Callable[..., RedisStore],
) -> None:
    """A kill written through one store is pushed to Flags on another within ms.

    refresh_interval is an hour: only the pushed invalidation can explain it.
    """
    writer = Flags(InMemoryProvider(DOC), store=stores(), refresh_interval=3600)
    reader_store = stores()
    reader = Flags(InMemoryProvider(DOC), store=reader_store, refresh_interval=3600)
    assert until(lambda: reader_store.watching)
    assert reader.is_enabled("checkout")
    writer.kill("checkout")
    assert until(lambda: not reader.is_enabled("checkout", default=True), 2.0)
    writer.revive("checkout")
    assert until(lambda: reader.is_enabled("checkout"), 2.0)
    with writer.override("checkout", "off"):
        assert until(lambda: not reader.is_enabled("checkout", default=True), 2.0)
    assert until(lambda: reader.is_enabled("checkout"), 2.0)


def test_without_push_the_refresh_interval_bounds_staleness(
    stores: Callable[..., RedisStore],
) -> None:
    """push=False: a kill is seen on the first evaluation after refresh_interval."""
    writer = Flags(InMemoryProvider(DOC), store=stores(), refresh_interval=3600)
    reader = Flags(
        InMemoryProvider(DOC), store=stores(push=False), refresh_interval=0.05
    )
    assert reader.is_enabled("checkout")
    writer.kill("checkout")
    start = time.perf_counter()
    assert until(lambda: not reader.is_enabled("checkout", default=True), 2.0)
    assert time.perf_counter() - start < 1.0


KILL_CHILD = textwrap.dedent(
    """
    import json, sys, time
    url, prefix, interval = sys.argv[1:4]
    from tipkit.flags import Flags, InMemoryProvider
    from tipkit.stores import RedisStore
    doc = {"version": 1, "flags": {"checkout": {"variants": {"on": True, "off": False},
                                               "default_variant": "on", "off_variant": "off"}}}
    store = RedisStore(url, prefix=prefix, timeout=5)
    flags = Flags(InMemoryProvider(doc), store=store, refresh_interval=float(interval))
    assert flags.is_enabled("checkout")
    limit = time.perf_counter() + 10
    while not store.watching and time.perf_counter() < limit:
        pass
    print("ready", flush=True)
    evaluations = 0
    while flags.is_enabled("checkout") and time.perf_counter() < limit:
        evaluations += 1
    seen = time.perf_counter()
    killed = not flags.is_enabled("checkout", default=True)
    print(json.dumps({"seen": seen, "killed": killed, "evaluations": evaluations}))
    """
)


def test_kill_switch_reaches_four_processes_within_the_bound(
    redis_url: str, prefix: str, stores: Callable[..., RedisStore]
) -> None:
    """A kill in this process stops the feature in 4 others within 0.5 s (push).

    Their refresh interval is 30 s, so only the pushed invalidation can do it;
    the documented bound is one pub/sub delivery plus one evaluation (measured:
    a few milliseconds), refresh_interval + timeout when pushes are lost.
    """
    store = stores()
    killer = Flags(InMemoryProvider(DOC), store=store, refresh_interval=30)
    procs = [
        subprocess.Popen(  # noqa: S603 - this interpreter running a fixed script
            [sys.executable, "-c", KILL_CHILD, redis_url, prefix, "30"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        # real-time-ok: let the 4 processes be evaluating in their loops
        threading.Event().wait(0.2)
        killed_at = time.perf_counter()
        killer.kill("checkout")
        results = [json.loads(p.communicate(timeout=30)[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    delays = [r["seen"] - killed_at for r in results]
    assert all(r["killed"] for r in results), results
    assert max(delays) < 0.5, delays


def test_flags_keep_the_last_shared_state_through_an_outage(
    private_redis_server: RedisServer, fault_store: RedisStore, bound: float
) -> None:
    """Redis down: kills stay in force, one StoreUnavailable; back: StoreRecovered."""
    flags = Flags(InMemoryProvider(DOC), store=fault_store, refresh_interval=0)
    flags.kill("checkout")
    assert not flags.is_enabled("checkout", default=True)
    # Captured from before the stop: a background reader (the watch, the
    # flusher) may meet the dead server first, and the outage is reported once.
    with capture_events(StoreUnavailable, StoreRecovered) as seen:
        private_redis_server.stop()

        def events() -> list[Any]:
            return [e for e in seen if e.component == "flags"]  # type: ignore[attr-defined]  # store events

        for _ in range(5):
            start = time.perf_counter()
            assert not flags.is_enabled("checkout", default=True)
            assert time.perf_counter() - start < bound
        assert [type(e) for e in events()] == [StoreUnavailable]
        assert (events()[0].component, events()[0].policy) == ("flags", "keep_last")
        private_redis_server.start()
        # The restarted server is empty (no persistence in tests): the epoch is
        # gone, so this process writes back the kill it still knows.
        assert until(lambda: fault_store.get("flags", "kill/checkout") is not None)
        assert not flags.is_enabled("checkout", default=True)
        assert until(lambda: len(events()) == 2)
        assert [type(e) for e in events()] == [StoreUnavailable, StoreRecovered]
    flags.revive("checkout")
    assert flags.is_enabled("checkout", default=False)


def test_watch_reconnects_after_a_restart(
    private_redis_server: RedisServer, fault_store: RedisStore
) -> None:
    """The listener resubscribes after a restart and fires its callbacks (writes may be lost)."""
    fired = threading.Event()
    watch = fault_store.watch("ns", fired.set)
    assert until(lambda: fault_store.watching)
    fired.clear()
    private_redis_server.restart()
    assert until(fired.is_set, 5.0)
    assert until(lambda: fault_store.watching)
    fired.clear()
    other = RedisStore(private_redis_server.url, prefix="fault:", timeout=1.0)
    other.set("ns", "k", 1)
    assert until(fired.is_set, 2.0)
    watch.cancel()
    fired.clear()
    other.set("ns", "k", 2)
    assert not until(fired.is_set, 0.2)
    assert "Watch 'ns'" in repr(watch)
    other.close()


def test_watch_listener_ends_when_its_store_is_collected(redis_url: str) -> None:
    """A store dropped without close() does not leave its listener thread running."""
    store = RedisStore(redis_url, prefix=f"gone:{uuid.uuid4().hex[:8]}:", timeout=1.0)
    store.watch("ns", lambda: None)
    listener = store._listener
    assert listener is not None
    assert until(listener.ready.is_set)
    thread = listener._thread
    assert thread is not None
    store.client.close()
    ref = weakref.ref(store)
    del store
    gc.collect()
    assert ref() is None
    thread.join(timeout=5.0)  # the listener polls its socket every 0.25 s
    assert not thread.is_alive()


def test_watch_listener_restarts_in_a_forked_child(
    stores: Callable[..., RedisStore],
) -> None:
    """A forked worker (gunicorn --preload) gets a listener of its own: kills still arrive."""
    writer = Flags(InMemoryProvider(DOC), store=stores(), refresh_interval=3600)
    store = stores()
    flags = Flags(InMemoryProvider(DOC), store=store, refresh_interval=3600)
    assert until(lambda: store.watching)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            if until(lambda: store.watching, 5.0) and flags.is_enabled("checkout"):
                writer.kill("checkout")
                code = 0 if until(lambda: not flags.is_enabled("checkout"), 5.0) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- batched fleet-wide counts (rollouts) -------------------------------------------------
COUNT_CHILD = textwrap.dedent(
    """
    import json, sys
    url, prefix, offset = sys.argv[1:4]
    from tipkit.stores import RedisStore
    from tipkit.stores._batch import CountBatcher
    store = RedisStore(url, prefix=prefix, timeout=5, push=False)
    batcher = CountBatcher(store, "rollout:r:1:0", every=100, interval=3600)
    print("ready", flush=True)
    sys.stdin.readline()
    flushes = 0
    for i in range(1000):
        canary = (i + int(offset)) % 2
        flushes += batcher.add({f"n{canary}": 1, f"bad{canary}": i % 10 == 0}) is not None
    print(json.dumps({"flushes": flushes, "pending": batcher.pending}))
    """
)


def test_counts_from_three_processes_add_up_in_batches(
    redis_url: str, prefix: str, stores: Callable[..., RedisStore]
) -> None:
    """3 processes x 1,000 outcomes reach the store in 10 round trips each, none lost."""
    store = stores()
    results = run_children(COUNT_CHILD, [[redis_url, prefix, str(i)] for i in range(3)])
    assert [r["flushes"] for r in results] == [10, 10, 10]
    assert all(r["pending"] == {} for r in results)
    totals = store.counters("rollout:r:1:0")
    assert totals["n0"] + totals["n1"] == 3000
    assert totals["bad0"] + totals["bad1"] == 300


def test_count_batcher_keeps_counts_through_an_outage(
    private_redis_server: RedisServer, fault_store: RedisStore
) -> None:
    """Store down: counts stay pending, one StoreUnavailable; back up: all of them arrive."""
    batcher = CountBatcher(fault_store, "c", every=2, interval=3600, name="r")
    assert batcher.add({"n": 1}) is None
    assert batcher.add({"n": 1}) == {"n": 2}
    private_redis_server.stop()
    with capture_events(StoreUnavailable, StoreRecovered) as events:
        for _ in range(4):
            batcher.add({"n": 1, "bad": 1})
        assert batcher.pending == {"n": 4, "bad": 4}
        private_redis_server.start()  # empty: the 2 already sent are gone with it
        assert batcher.flush() == {"n": 4, "bad": 4}
    assert [type(e) for e in events] == [StoreUnavailable, StoreRecovered]
    assert events[0].component == "rollout"
    assert "CountBatcher 'c'" in repr(batcher)
    with pytest.raises(ValueError, match="every"):
        CountBatcher(fault_store, "c", every=0)


ROLLOUT_CHILD = textwrap.dedent(
    """
    import json, random, sys, time
    url, prefix, seed = sys.argv[1:4]
    from tipkit.flags import Flags, InMemoryProvider
    from tipkit.rollout import ErrorRate, Rollout, RolloutRolledBack
    from tipkit.stores import RedisStore
    store = RedisStore(url, prefix=prefix, timeout=5)
    flags = Flags(InMemoryProvider({"version": 1, "flags": {}}), store=store)
    rolled = []
    rollout = Rollout("pricing", flags=flags, stages=[50, 100], min_stage_duration=0,
                      min_samples=10_000, guards=[ErrorRate()], store=store,
                      refresh_interval=0.05, flush_every=20,
                      on_rollback=rolled.append)
    rng = random.Random(int(seed))
    print("ready", flush=True)
    sys.stdin.readline()
    seen = {0: 0, 1: 0}
    limit = time.perf_counter() + 20
    i = 0
    while rollout.status().status == "running" and time.perf_counter() < limit:
        with rollout.observe(f"user-{seed}-{i}") as arm:
            if arm.judged:
                seen[int(arm.is_canary)] += 1
            if arm.is_canary and rng.random() < 0.8:
                arm.fail()
        i += 1
    print(json.dumps({
        "status": rollout.status().status,
        "rollbacks": [{"canary": e.canary_count, "control": e.control_count} for e in rolled],
        "seen": seen,
    }))
    """
)


def test_counts_from_three_processes_give_one_verdict_and_one_rollback(
    redis_url: str, prefix: str, stores: Callable[..., RedisStore]
) -> None:
    """3 processes judge on their summed counts; exactly one applies the rollback.

    The rollback's numbers exceed what the process that applied it observed
    itself: the verdict was reached on the fleet's counts.
    """
    store = stores()
    results = run_children(
        ROLLOUT_CHILD, [[redis_url, prefix, str(seed)] for seed in range(3)]
    )
    assert all(r["status"] == "rolled_back" for r in results), results
    rollbacks = [(r, rb) for r in results for rb in r["rollbacks"]]
    assert len(rollbacks) == 1, results
    decider, numbers = rollbacks[0]
    assert numbers["canary"] > decider["seen"]["1"], results
    entry = store.get("tipkit.rollouts", "pricing")
    assert entry is not None
    history = [h["action"] for h in entry.value["history"]]
    assert history.count("rolled_back") == 1, history


# -- shared breaker state ---------------------------------------------------------------
def failing() -> None:
    raise ConnectionError


def make_breaker(store: RedisStore, **kwargs: Any) -> CircuitBreaker:
    return CircuitBreaker(
        "payments",
        store=store,
        share="state",
        window=CountWindow(4),
        minimum_calls=4,
        open_duration=30,
        refresh_interval=3600,
        **kwargs,
    )


def test_breakers_open_and_close_together(stores: Callable[..., RedisStore]) -> None:
    """One breaker opens: its peer on another connection opens; a reset closes both."""
    here, there_store = stores(), stores()
    one = make_breaker(here)
    two = make_breaker(there_store)
    assert until(lambda: there_store.watching)
    guarded = one(failing)
    for _ in range(4):
        with pytest.raises(ConnectionError):
            guarded()
    assert one.state is BreakerState.OPEN
    # The peer adopts the opening on its next call (pushed: no refresh wait).
    assert until(lambda: two._fleet.next == float("-inf"), 2.0)
    with pytest.raises(CircuitOpenError):
        two.call(lambda: None)
    assert two.state is BreakerState.OPEN
    one.reset()
    assert until(lambda: two._fleet.next == float("-inf"), 2.0)
    assert two.call(lambda: 42) == 42
    assert two.state is BreakerState.CLOSED
    two.force_open()
    assert until(lambda: one._fleet.next == float("-inf"), 2.0)
    with pytest.raises(CircuitOpenError, match="forced open"):
        one.call(lambda: None)


def test_shared_open_entry_expires_with_the_open_duration(
    stores: Callable[..., RedisStore], prefix: str
) -> None:
    """The OPEN entry lives as long as the opening (server clock): latecomers skip it."""
    store = stores()
    one = make_breaker(store)
    for _ in range(4):
        with pytest.raises(ConnectionError):
            one.call(failing)
    pttl = store.client.hget(f"{prefix}ns:breakers", ":payments")
    assert pttl is not None
    assert b'"state":"open"' in pttl
    entry = store.get("breakers", "payments")
    assert entry is not None
    assert isinstance(entry.value, dict)
    assert "open" == entry.value["state"]
    assert entry.value["until"] > SYSTEM_CLOCK.time()  # when the opening ends


def test_shared_breaker_keeps_its_state_when_the_store_fails(
    private_redis_server: RedisServer, fault_store: RedisStore, bound: float
) -> None:
    """Redis down: the breaker decides locally within the bound; one StoreUnavailable."""
    breaker = CircuitBreaker(
        "db",
        store=fault_store,
        share="state",
        window=CountWindow(4),
        minimum_calls=4,
        refresh_interval=0,
    )
    assert breaker.call(lambda: 1) == 1
    private_redis_server.stop()
    with capture_events(StoreUnavailable) as events:
        start = time.perf_counter()
        for _ in range(3):  # with the success before: 3 of 4 failed, it opens
            with pytest.raises(ConnectionError):
                breaker.call(failing)
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: 1)
        assert time.perf_counter() - start < 6 * bound
    assert breaker.state is BreakerState.OPEN
    assert [e.component for e in events] == ["breaker"]


def test_shared_breaker_adopts_on_its_refresh_interval(
    face: Face, clock: FakeClock
) -> None:
    """Without pushes, a peer adopts an opening on its first call after refresh_interval."""
    store = MemoryStore(clock=clock, push=False)

    def breaker() -> CircuitBreaker:
        return CircuitBreaker(
            "svc",
            store=store,
            share="state",
            window=CountWindow(2),
            minimum_calls=2,
            open_duration=10,
            refresh_interval=1.0,
            clock=clock,
        )

    one, two = breaker(), breaker()
    assert face.run(two, lambda: 1) == 1  # reads the (empty) shared state at t=0
    for _ in range(2):
        with pytest.raises(ConnectionError):
            one.call(failing)
    assert one.state is BreakerState.OPEN
    clock.advance(0.5)
    assert face.run(two, lambda: 2) == 2  # not due yet: still its own closed state
    clock.advance(0.6)
    with pytest.raises(CircuitOpenError):
        face.run(two, lambda: 3)
    assert two.state is BreakerState.OPEN
    # Both probe back on their own; the first to close tells the other.
    clock.advance(10)
    for _ in range(5):
        assert one.call(lambda: 4) == 4
    assert one.state is BreakerState.CLOSED
    clock.advance(1.1)
    assert face.run(two, lambda: 5) == 5
    assert two.state is BreakerState.CLOSED


def test_batched_bucket_async_faces(stores: Callable[..., RedisStore]) -> None:
    """The async faces of a batched shared bucket take k per round trip too."""
    store = stores()
    bucket = TokenBucket("abatch", rate=0.001, capacity=6, store=store, batch=3)

    async def main() -> int:
        admitted = 0
        for _ in range(7):
            try:
                async with bucket:
                    admitted += 1
            except RateLimitedError:
                pass
        return admitted

    assert asyncio.run(main()) == 6
    assert bucket.tokens == pytest.approx(0, abs=0.01)


def test_sharing_options_are_checked(redis_store: RedisStore) -> None:
    """store= needs share='state' and vice versa; without them nothing changes."""
    assert type(CircuitBreaker("plain")) is CircuitBreaker
    with pytest.raises(ValueError, match="needs store="):
        CircuitBreaker("x", share="state")
    with pytest.raises(ValueError, match="needs share='state'"):
        CircuitBreaker("x", store=redis_store)
    with pytest.raises(TypeError, match="must implement"):
        CircuitBreaker("x", store=object(), share="state")  # type: ignore[arg-type]
    shared = CircuitBreaker("x", store=redis_store, share="state")
    assert type(shared) is CircuitBreaker
    assert shared.store is redis_store
    shared.sync()
