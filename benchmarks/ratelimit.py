"""Rate limiters side by side: tipkit, limits, pyrate-limiter, aiolimiter, hyx.

Run:  python benchmarks/ratelimit.py [--quick] [--cpu] [--repeat N] [--seconds S]

Prints ns per operation (median of --repeat runs, each the mean over many calls)
and peer/tipkit ratios, then 8 threads hammering one bucket for --seconds:
tokens admitted against the bound ``capacity + rate * t``. ``--cpu`` times the
per-operation rows in CPU time of the thread (a busy machine inflates wall time
by however long the process waits for a core). A peer that is not
installed (hyx is not in the ``bench`` extra) is reported as skipped. The last
section times the keyed limiter's key-table lookup against a cachetools
``LRUCache`` lookup (why the table is not one).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import timeit
from collections.abc import Callable
from typing import Any

from tipkit.clock import SYSTEM_CLOCK
from tipkit.ratelimit import KeyedRateLimiter, TokenBucket

HUGE = 10**9

# The timer of the per-operation rows: wall by default, CPU with --cpu.
TIMER: Callable[[], float] = time.perf_counter


def median_ns(fn: Callable[[], Any], number: int, repeat: int) -> float:
    timer = timeit.Timer(fn, timer=TIMER)
    return statistics.median(timer.timeit(number) / number * 1e9 for _ in range(repeat))


def median_async_ns(make: Callable[[], Any], number: int, repeat: int) -> float:
    """Time `async with make()` per iteration, inside one event loop."""

    async def run() -> float:
        cm = make()
        results = []
        for _ in range(repeat):
            start = TIMER()
            for _ in range(number):
                async with cm:
                    pass
            results.append((TIMER() - start) / number * 1e9)
        return statistics.median(results)

    return asyncio.run(run())


def try_acquire_cases(number: int, repeat: int) -> dict[str, float]:
    from limits import RateLimitItemPerSecond
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
    from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate

    bucket = TokenBucket("bench", rate=float(HUGE), capacity=HUGE)
    # The moving window keeps one timestamp per hit up to the limit: keep it finite.
    item = RateLimitItemPerSecond(number * repeat * 2)
    fixed = FixedWindowRateLimiter(MemoryStorage())
    moving = MovingWindowRateLimiter(MemoryStorage())
    pyrate = Limiter(InMemoryBucket([Rate(number * repeat * 2, Duration.SECOND * 10)]))
    keyed = KeyedRateLimiter("bench-keyed", rate=float(HUGE), capacity=HUGE)
    return {
        "tipkit TokenBucket.try_acquire": median_ns(bucket.try_acquire, number, repeat),
        "tipkit KeyedRateLimiter.try_acquire": median_ns(
            lambda: keyed.try_acquire("k"), number, repeat
        ),
        "limits memory fixed window hit": median_ns(
            lambda: fixed.hit(item, "k"), number, repeat
        ),
        "limits memory moving window hit": median_ns(
            lambda: moving.hit(item, "k"), number, repeat
        ),
        "pyrate-limiter in-memory try_acquire": median_ns(
            lambda: pyrate.try_acquire("k", blocking=False), number, repeat
        ),
    }


def face_cases(number: int, repeat: int) -> dict[str, float]:
    bucket = TokenBucket("bench-faces", rate=float(HUGE), capacity=HUGE)
    keyed = KeyedRateLimiter("bench-keyed-faces", rate=float(HUGE), capacity=HUGE)

    def bare() -> None:
        return None

    decorated = bucket(bare)

    def with_bucket() -> None:
        with bucket:
            pass

    cases = {
        "bare call (floor)": median_ns(bare, number, repeat),
        "tipkit @TokenBucket call": median_ns(decorated, number, repeat),
        "tipkit with TokenBucket": median_ns(with_bucket, number, repeat),
    }
    if hasattr(bucket, "check"):  # absent before check() was added
        cases["tipkit TokenBucket.check"] = median_ns(bucket.check, number, repeat)
        cases["tipkit KeyedRateLimiter.check"] = median_ns(
            lambda: keyed.check("k"), number, repeat
        )
    return cases


def async_cases(number: int, repeat: int) -> dict[str, float]:
    from aiolimiter import AsyncLimiter

    class Empty:
        async def __aenter__(self) -> None:
            return None

        async def __aexit__(self, *exc: object) -> None:
            return None

    cases = {
        "empty async with (floor)": median_async_ns(Empty, number, repeat),
        "tipkit async with TokenBucket": median_async_ns(
            lambda: TokenBucket("bench-async", rate=float(HUGE), capacity=HUGE),
            number,
            repeat,
        ),
        "aiolimiter async with": median_async_ns(
            lambda: AsyncLimiter(float(HUGE), 1.0), number, repeat
        ),
    }
    try:
        from hyx.ratelimit import tokenbucket
    except ImportError:
        print("  (hyx not installed: skipped)")
        return cases
    cases["hyx tokenbucket async with"] = median_async_ns(
        lambda: tokenbucket(float(HUGE), 1.0, bucket_size=float(HUGE)),
        number,
        repeat,
    )
    return cases


def key_table_cases(number: int, repeat: int) -> dict[str, float]:
    """One lookup of a present key: the ordered dict the table uses vs cachetools."""
    from collections import OrderedDict

    try:
        import cachetools
    except ImportError:
        print("  (cachetools not installed: skipped)")
        return {}

    keys = [f"tenant-{i}" for i in range(10_000)]
    ordered: OrderedDict[str, int] = OrderedDict((k, 0) for k in keys)
    lru: cachetools.LRUCache[str, int] = cachetools.LRUCache(maxsize=100_000)
    for k in keys:
        lru[k] = 0
    key = keys[5_000]

    def ordered_lookup() -> None:
        if ordered.get(key) is not None:
            ordered.move_to_end(key)

    def lru_lookup() -> None:
        lru.get(key)

    return {
        "OrderedDict get + move_to_end (the table)": median_ns(
            ordered_lookup, number, repeat
        ),
        "cachetools LRUCache.get": median_ns(lru_lookup, number, repeat),
    }


def hammer(
    acquire: Callable[[], bool], seconds: float, threads: int = 8
) -> tuple[int, float]:
    """Return (admitted, elapsed) for *threads* threads calling *acquire* for *seconds*."""
    barrier = threading.Barrier(threads + 1)
    stop = threading.Event()
    counts = [0] * threads

    def worker(i: int) -> None:
        n = 0
        barrier.wait()
        while not stop.is_set():
            if acquire():
                n += 1
        counts[i] = n

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = SYSTEM_CLOCK.monotonic()
    stop.wait(seconds)
    stop.set()
    elapsed = SYSTEM_CLOCK.monotonic() - start
    for t in pool:
        t.join()
    return sum(counts), elapsed


def threaded_cases(seconds: float) -> list[tuple[str, int, float]]:
    from limits import RateLimitItemPerSecond
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
    from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate

    rate, capacity = 2000.0, 2000
    rows = []
    bucket = TokenBucket("hammer", rate=rate, capacity=capacity)
    admitted, elapsed = hammer(bucket.try_acquire, seconds)
    rows.append(("tipkit TokenBucket", admitted, capacity + rate * elapsed))
    # Window limiters: 2000 per second; their bound over t is 2000 * (t + 1) at best.
    item = RateLimitItemPerSecond(int(rate))
    fixed = FixedWindowRateLimiter(MemoryStorage())
    admitted, elapsed = hammer(lambda: fixed.hit(item, "k"), seconds)
    rows.append(("limits memory fixed window", admitted, capacity + rate * elapsed))
    moving = MovingWindowRateLimiter(MemoryStorage())
    admitted, elapsed = hammer(lambda: moving.hit(item, "k"), seconds)
    rows.append(("limits memory moving window", admitted, capacity + rate * elapsed))
    pyrate = Limiter(InMemoryBucket([Rate(int(rate), Duration.SECOND)]))
    admitted, elapsed = hammer(
        lambda: bool(pyrate.try_acquire("k", blocking=False)), seconds
    )
    rows.append(("pyrate-limiter in-memory", admitted, capacity + rate * elapsed))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument(
        "--cpu", action="store_true", help="time CPU (thread_time), not wall time"
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    global TIMER  # noqa: PLW0603  # one switch for every measurement of the run
    if args.cpu:
        TIMER = time.thread_time
    number = 2_000 if args.quick else 100_000
    repeat = 5 if args.quick else max(5, args.repeat)
    seconds = 0.2 if args.quick else args.seconds

    timer = "CPU time" if args.cpu else "wall time"
    print(f"try_acquire, uncontended (ns/op, median of {repeat} x {number}; {timer})")
    sync = try_acquire_cases(number, repeat)
    base = sync["tipkit TokenBucket.try_acquire"]
    for name, ns in sync.items():
        print(f"  {name:<40} {ns:9.0f} ns  x{ns / base:6.1f}")

    print(f"\nfaces and check, uncontended (ns/op, median of {repeat} x {number})")
    faces = face_cases(number, repeat)
    for name, ns in faces.items():
        print(f"  {name:<40} {ns:9.0f} ns")

    print(f"\nasync with, uncontended (ns/op, median of {repeat} x {number})")
    aio = async_cases(number, repeat)
    base = aio["tipkit async with TokenBucket"]
    for name, ns in aio.items():
        print(f"  {name:<40} {ns:9.0f} ns  x{ns / base:6.1f}")

    print(
        f"\n8 threads hammering one limiter for {seconds:g} s (rate 2000/s, capacity 2000)"
    )
    for name, admitted, bound in threaded_cases(seconds):
        verdict = "OVER the bound" if admitted > bound else "within"
        print(
            f"  {name:<30} admitted {admitted:7d} of bound {bound:9.0f}: "
            f"{100 * admitted / bound:6.2f}% ({verdict})"
        )

    print(f"\nkeyed limiter's key table, one lookup (ns/op, median of {repeat})")
    for name, ns in key_table_cases(number, repeat).items():
        print(f"  {name:<40} {ns:9.0f} ns")


if __name__ == "__main__":
    main()
