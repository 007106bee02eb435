"""Distributed rate limiting on a local Redis: tipkit's RedisStore beside its peers.

Run: python benchmarks/redis.py [--quick] [--url redis://127.0.0.1:6379/0]

Without --url the script starts its own redis-server (persistence off) on a free
loopback port, as the test suite does. It measures, in one run:

* round-trip microseconds per admitted acquire, one process, sequential calls
  (median of >= 5 repeats), for tipkit ``RedisStore.take_tokens``, ``limits``
  with Redis storage (moving window and fixed window), and ``pyrate-limiter``
  with its Redis bucket (sliding log) and its Redis state store (token bucket);
  a bare ``PING`` gives the floor of one round trip;
* acquires per second with 1 and 4 processes hammering one shared key.

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


LIBRARIES: dict[str, Callable[[str, str], Acquire]] = {
    "tipkit RedisStore.take_tokens (token bucket)": make_tipkit,
    "limits RedisStorage, moving window": lambda u, k: make_limits(u, k, "moving"),
    "limits RedisStorage, fixed window": lambda u, k: make_limits(u, k, "fixed"),
    "pyrate-limiter RedisBucket (sliding log)": make_pyrate_log,
    "pyrate-limiter RedisStateStore (token bucket)": make_pyrate_state,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="few iterations (smoke run)"
    )
    parser.add_argument(
        "--url", help="use this Redis (default: start a private redis-server)"
    )
    args = parser.parse_args()
    if args.url:
        run(args.url, args.quick)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.redis_server import RedisServer

    with RedisServer() as server:
        run(server.url, args.quick)


if __name__ == "__main__":
    main()
