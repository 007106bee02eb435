"""Distributed rate limiting on a local Redis: tipkit's RedisStore beside its peers.

Run: python benchmarks/redis.py [--quick] [--url redis://127.0.0.1:6379/0]

Without --url the script starts its own redis-server (persistence off) on a free
loopback port, as the test suite does. It measures, in one run:

* round-trip microseconds per admitted acquire, one process, sequential calls
  (median of >= 5 repeats), for tipkit ``RedisStore.take_tokens``, ``limits``
  with Redis storage (moving window and fixed window), and ``pyrate-limiter``
  with its Redis bucket (sliding log) and its Redis state store (token bucket);
  a bare ``PING`` gives the floor of one round trip;
* acquires per second with 1 and 4 processes hammering one shared key;
* fleet features: acquires per second through ``TokenBucket(store=...)`` with
  1 and 4 processes (``batch=1`` and ``batch=16``); the cost of a flag
  evaluation with a ``RedisStore`` attached against a ``MemoryStore`` (same
  rule, interleaved repeats); and how long a kill switch written by one process
  takes to stop the feature in 4 others (pushed, and with ``push=False`` so
  only the 1 s refresh interval carries it).

``--cluster`` runs only one table: one acquire on a single node beside the same
acquire on a private 3-master Redis Cluster (``tests/redis_topology.py``), each
beside a PING to the server that holds the bucket.

Every limit is set high enough that every call is admitted: the figures are
the cost of deciding, not of refusing.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# This file is named redis.py: keep its folder off sys.path so `import redis`
# finds the client library, not this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import redis  # noqa: E402 - after the sys.path fix above

HIGH = 10_000_000  # per second: never reached, so every call is admitted

Acquire = Callable[[], Any]


def make_tipkit(url: str, key: str) -> Acquire:
    from tipkit.stores import RedisStore

    store = RedisStore(url, prefix="bench:", timeout=1.0)
    return lambda: store.take_tokens(key, 1, rate=HIGH, capacity=HIGH).admitted


def make_limits(url: str, key: str, strategy: str) -> Acquire:
    from limits import RateLimitItemPerSecond
    from limits.storage import RedisStorage
    from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    storage = RedisStorage(url)
    cls = MovingWindowRateLimiter if strategy == "moving" else FixedWindowRateLimiter
    limiter = cls(storage)
    # A moving window keeps one list element per hit: a million per second would
    # hold a million entries; a second's worth at our pace is enough.
    item = RateLimitItemPerSecond(200_000 if strategy == "moving" else HIGH)
    return lambda: limiter.hit(item, key)


def make_pyrate_log(url: str, key: str) -> Acquire:
    from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

    bucket = RedisBucket.init(
        [Rate(200_000, Duration.SECOND)], redis.Redis.from_url(url), key
    )
    limiter = Limiter(bucket)
    return lambda: limiter.try_acquire("bench", blocking=False)


def make_pyrate_state(url: str, key: str) -> Acquire:
    from pyrate_limiter import (
        Duration,
        Limiter,
        Rate,
        RedisStateStore,
        StateBucket,
        TokenBucket,
    )

    store = RedisStateStore(redis.Redis.from_url(url), key)
    bucket = StateBucket(
        [Rate(HIGH, Duration.SECOND)], algorithm=TokenBucket(), store=store
    )
    limiter = Limiter(bucket)
    return lambda: limiter.try_acquire("bench", blocking=False)


def make_ping(url: str, key: str) -> Acquire:
    client = redis.Redis.from_url(url)
    return client.ping


def make_evalsha(url: str, key: str) -> Acquire:
    # tipkit's script through redis-py's own evalsha: what take_tokens did before
    # it sent pre-packed commands (the client-side overhead it no longer pays).
    from tipkit.stores import RedisStore

    try:
        from tipkit.stores._redis_lua import SCRIPTS, bucket_args
    except ImportError:  # the code before the scripts had a module of their own
        from tipkit.stores._redis import _S as SCRIPTS
        from tipkit.stores._redis import _bucket_args as bucket_args

    store = RedisStore(url, prefix="bench:", timeout=1.0)
    store.take_tokens(key, 0, rate=HIGH, capacity=HIGH)
    client, sha = store.client, SCRIPTS["take_tokens"].sha
    args = bucket_args(1, HIGH, HIGH, 0.0)
    rkey = f"bench:tb:{key}"
    return lambda: client.evalsha(sha, 1, rkey, *args)


LIBRARIES: dict[str, Callable[[str, str], Acquire]] = {
    "tipkit RedisStore.take_tokens (token bucket)": make_tipkit,
    "limits RedisStorage, moving window": lambda u, k: make_limits(u, k, "moving"),
    "limits RedisStorage, fixed window": lambda u, k: make_limits(u, k, "fixed"),
    "pyrate-limiter RedisBucket (sliding log)": make_pyrate_log,
    "pyrate-limiter RedisStateStore (token bucket)": make_pyrate_state,
    "same script through redis-py evalsha (tipkit before)": make_evalsha,
    "redis-py PING (one round trip, the floor)": make_ping,
}
TIPKIT = next(iter(LIBRARIES))


def round_trip_us(acquire: Acquire, number: int, repeats: int) -> float:
    for _ in range(min(number, 200)):  # warm up: connect, load scripts
        assert acquire() is not False
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            acquire()
        runs.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(runs)


def _worker(
    name: str, url: str, key: str, seconds: float, barrier: Any, out: Any
) -> None:
    acquire = LIBRARIES[name](url, key)
    acquire()
    barrier.wait()
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        acquire()
        count += 1
    out.put(count)


def acquires_per_second(name: str, url: str, processes: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    key = f"mp-{uuid.uuid4().hex[:8]}"
    procs = [
        ctx.Process(target=_worker, args=(name, url, key, seconds, barrier, out))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return total / seconds


def run(url: str, quick: bool) -> None:
    number, repeats, seconds = (200, 5, 0.5) if quick else (2_000, 7, 2.0)
    info = redis.Redis.from_url(url).info("server")
    print(
        f"redis-server {info['redis_version']} at {url}; Python {sys.version.split()[0]}; "
        f"{number} calls x {repeats} repeats (median); {seconds} s per throughput run"
    )
    print()
    print(
        "| library | µs per acquire | ratio (peer/tipkit) "
        "| acquires/s, 1 process | acquires/s, 4 processes |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    base = None
    for name, factory in LIBRARIES.items():
        acquire = factory(url, f"rt-{uuid.uuid4().hex[:8]}")
        us = round_trip_us(acquire, number, repeats)
        if name == TIPKIT:
            base = us
        assert base is not None
        one = acquires_per_second(name, url, 1, seconds)
        four = acquires_per_second(name, url, 4, seconds)
        print(
            f"| {name} | {us:.1f} | {us / base:.2f} | {one:,.0f} | {four:,.0f} |",
            flush=True,
        )


# -- fleet features ------------------------------------------------------------------
def make_bucket(url: str, key: str, batch: int) -> Acquire:
    from tipkit.ratelimit import TokenBucket
    from tipkit.stores import RedisStore

    store = RedisStore(url, prefix="bench:", timeout=1.0, push=False)
    bucket = TokenBucket(key, rate=HIGH, capacity=HIGH, store=store, batch=batch)
    return bucket.try_acquire


def _bucket_worker(
    url: str, key: str, batch: int, seconds: float, barrier: Any, out: Any
) -> None:
    acquire = make_bucket(url, key, batch)
    acquire()
    barrier.wait()
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        acquire()
        count += 1
    out.put(count)


def bucket_per_second(url: str, batch: int, processes: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    key = f"tb-{uuid.uuid4().hex[:8]}"
    procs = [
        ctx.Process(
            target=_bucket_worker, args=(url, key, batch, seconds, barrier, out)
        )
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return total / seconds


FLAGS_DOC = {
    "version": 1,
    "flags": {
        "checkout": {
            "variants": {"on": True, "off": False},
            "off_variant": "off",
            "fallthrough": {"split": {"on": 50, "off": 50}},
        }
    },
}


# Served "on" to everyone until killed: a kill flips every watcher's answer.
KILL_DOC = {
    "version": 1,
    "flags": {
        "checkout": {
            "variants": {"on": True, "off": False},
            "default_variant": "on",
            "off_variant": "off",
        }
    },
}


def flag_eval_ns(url: str, number: int, repeats: int) -> tuple[float, float]:
    """Return ns per is_enabled() with a MemoryStore and with a RedisStore attached."""
    from tipkit.flags import Flags, InMemoryProvider
    from tipkit.stores import MemoryStore, RedisStore

    store = RedisStore(url, prefix=f"bench-{uuid.uuid4().hex[:6]}:", timeout=1.0)
    flags = {
        "memory": Flags(InMemoryProvider(FLAGS_DOC), store=MemoryStore()),
        "redis": Flags(InMemoryProvider(FLAGS_DOC), store=store),
    }
    runs: dict[str, list[float]] = {"memory": [], "redis": []}
    users = [f"user-{i}" for i in range(min(number, 100_000))]
    laps = max(1, number // len(users))
    for _ in range(repeats):
        for name, f in flags.items():
            is_enabled = f.is_enabled
            # One timing loop lasts longer than the 1 s refresh interval in the
            # full run and the figure is its mean (never a best-of, which could
            # pick a loop without a refresh): the Redis refreshes are inside it.
            start = time.perf_counter()
            for _ in range(laps):
                for user in users:
                    is_enabled("checkout", user)
            runs[name].append((time.perf_counter() - start) / (laps * len(users)) * 1e9)
    store.close()
    return statistics.median(runs["memory"]), statistics.median(runs["redis"])


def _kill_watcher(url: str, prefix: str, push: bool, ready: Any, out: Any) -> None:
    from tipkit.flags import Flags, InMemoryProvider
    from tipkit.stores import RedisStore

    store = RedisStore(url, prefix=prefix, timeout=1.0, push=push)
    flags = Flags(InMemoryProvider(KILL_DOC), store=store, refresh_interval=1.0)
    limit = time.perf_counter() + 120
    while push and not store.watching and time.perf_counter() < limit:
        pass
    for _ in range(1_000_000):
        ready.put(1)
        while flags.is_enabled("checkout", "u", default=True) is not False:
            if time.perf_counter() > limit:
                return
        out.put(time.perf_counter())
        while not flags.is_enabled("checkout", "u", default=False):
            if time.perf_counter() > limit:
                return


def kill_propagation_ms(url: str, push: bool, rounds: int) -> tuple[float, float]:
    """Return the median and max ms until 4 processes see a kill written by this one."""
    from tipkit.flags import Flags, InMemoryProvider
    from tipkit.stores import RedisStore

    ctx = mp.get_context("spawn")
    prefix = f"kill-{uuid.uuid4().hex[:6]}:"
    store = RedisStore(url, prefix=prefix, timeout=1.0)
    flags = Flags(InMemoryProvider(KILL_DOC), store=store)
    ready, out = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=_kill_watcher, args=(url, prefix, push, ready, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    delays: list[float] = []
    try:
        for _ in range(rounds):
            for _ in procs:
                ready.get(timeout=60)
            killed = time.perf_counter()
            flags.kill("checkout")
            seen = [out.get(timeout=60) for _ in procs]
            delays.append((max(seen) - killed) * 1000)
            flags.revive("checkout")
    finally:
        for p in procs:
            p.terminate()
            p.join(timeout=10)
        store.close()
    return statistics.median(delays), max(delays)


def client_overhead(url: str, quick: bool) -> None:
    """Interleave take_tokens, redis-py evalsha of the same script, and PING."""
    key = f"ab-{uuid.uuid4().hex[:8]}"
    cands = {
        "take_tokens, pre-packed EVALSHA (now)": make_tipkit(url, key),
        "redis-py evalsha, the same script (before)": make_evalsha(url, key),
        "redis-py PING": make_ping(url, key),
    }
    runs: dict[str, list[float]] = {k: [] for k in cands}
    rounds, number = (3, 200) if quick else (15, 1_000)
    for _ in range(rounds):
        for name, acquire in cands.items():
            start = time.perf_counter()
            for _ in range(number):
                acquire()
            runs[name].append((time.perf_counter() - start) / number * 1e6)
    print()
    print("| path | µs median | µs best |")
    print("| --- | ---: | ---: |")
    for name, values in runs.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} |")


def cluster_overhead(url: str, cluster: Any, quick: bool) -> None:
    """Interleave one acquire on a single node and on a 3-master cluster, with PINGs."""
    from tipkit.stores import RedisStore

    key = f"cl-{uuid.uuid4().hex[:8]}"
    on_cluster = RedisStore(cluster.url, cluster=True, prefix="bench:", timeout=1.0)
    node = on_cluster.client.get_node_from_key(f"bench:tb:{key}")  # type: ignore[attr-defined]  # a RedisCluster
    node_ping = redis.Redis(host=node.host, port=node.port).ping
    cands = {
        "single node: take_tokens": make_tipkit(url, key),
        "single node: PING": make_ping(url, key),
        "cluster: take_tokens (RedisCluster, cluster=True)": lambda: (
            on_cluster.take_tokens(key, 1, rate=HIGH, capacity=HIGH).admitted
        ),
        "cluster: PING to the bucket's primary": node_ping,
    }
    runs: dict[str, list[float]] = {k: [] for k in cands}
    rounds, number = (3, 200) if quick else (15, 1_000)
    for acquire in cands.values():  # connect, load scripts
        for _ in range(50):
            acquire()
    for _ in range(rounds):
        for name, acquire in cands.items():
            start = time.perf_counter()
            for _ in range(number):
                acquire()
            runs[name].append((time.perf_counter() - start) / number * 1e6)
    print()
    print("| one acquire, single node vs 3-master cluster | µs median | µs best |")
    print("| --- | ---: | ---: |")
    for name, values in runs.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} |")
    on_cluster.close()


def run_fleet(url: str, quick: bool) -> None:
    seconds = 0.5 if quick else 2.0
    print()
    print(
        "| TokenBucket(store=RedisStore) | acquires/s, 1 process | acquires/s, 4 processes |"
    )
    print("| --- | ---: | ---: |")
    for batch in (1, 16):
        one = bucket_per_second(url, batch, 1, seconds)
        four = bucket_per_second(url, batch, 4, seconds)
        print(f"| batch={batch} | {one:,.0f} | {four:,.0f} |", flush=True)
    number, repeats = (20_000, 5) if quick else (3_000_000, 7)
    memory, redis_ns = flag_eval_ns(url, number, repeats)
    print()
    print(
        "| flag evaluation (is_enabled, split) | ns per evaluation | vs MemoryStore |"
    )
    print("| --- | ---: | ---: |")
    print(f"| Flags(store=MemoryStore()) | {memory:.0f} | 1.00 |")
    print(
        f"| Flags(store=RedisStore(...)) | {redis_ns:.0f} | {redis_ns / memory:.2f} |"
    )
    rounds = 3 if quick else 10
    print()
    print("| kill switch to 4 processes | median ms | max ms |")
    print("| --- | ---: | ---: |")
    for push in (True, False):
        median, worst = kill_propagation_ms(url, push, rounds)
        how = "pushed (pub/sub)" if push else "push=False (refresh_interval 1 s)"
        print(f"| {how} | {median:.1f} | {worst:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="few iterations (smoke run)"
    )
    parser.add_argument(
        "--url", help="use this Redis (default: start a private redis-server)"
    )
    parser.add_argument(
        "--fleet-only", action="store_true", help="only the fleet-feature tables"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="only: one acquire on a single node beside a private 3-master cluster",
    )
    args = parser.parse_args()
    if args.cluster:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.redis_server import RedisServer, find_redis_server
        from tests.redis_topology import ClusterServers

        exe = find_redis_server()
        assert exe is not None, "redis-server is not installed"
        with RedisServer() as server, ClusterServers(exe) as cluster:
            cluster_overhead(server.url, cluster, args.quick)
        return

    def everything(url: str) -> None:
        if not args.fleet_only:
            run(url, args.quick)
            client_overhead(url, args.quick)
        run_fleet(url, args.quick)

    if args.url:
        everything(args.url)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.redis_server import RedisServer

    with RedisServer() as server:
        everything(server.url)


if __name__ == "__main__":
    main()
