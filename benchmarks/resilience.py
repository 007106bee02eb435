"""Retry budgets, hedged requests and adaptive concurrency, each against its baseline.

Run:  python benchmarks/resilience.py [budget|hedge|adaptive|all] [--quick]

budget    load amplification on a dependency at 100% failure: naive 3-attempt
          retry vs retry(budget=RetryBudget()), in simulated time (FakeClock);
          and the cost on the healthy path (ns per call, real time).
hedge     p50/p99 on a simulated long-tail dependency (lognormal + 2% 10x stalls)
          with and without hedging, and the extra load hedging cost (simulated
          time: every figure is reproducible with the seed).
adaptive  goodput and p99 on a dependency whose latency rises with concurrency
          (M/M/c-like), for no limit, fixed bulkheads and AdaptiveLimit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import statistics
import timeit
from collections.abc import Callable
from typing import Any

from tipkit.clock import SYSTEM_CLOCK
from tipkit.hedge import Hedge, hedge
from tipkit.retry import RetryBudget, retry
from tipkit.testing import FakeClock


def median_ns(fn: Callable[[], Any], number: int, repeat: int) -> float:
    timer = timeit.Timer(fn)
    return statistics.median(timer.timeit(number) / number * 1e9 for _ in range(repeat))


# -- retry budget -------------------------------------------------------------------------
def amplification(budgeted: bool, rate: float, seconds: float) -> tuple[int, int]:
    """Return (first attempts, calls reaching the dead dependency) over *seconds*."""
    clock = FakeClock()
    calls = 0

    def dead() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    budget = RetryBudget(clock=clock) if budgeted else None
    policy = retry(
        on=ConnectionError,
        attempts=3,
        wait_initial=0,
        wait_jitter=0,
        wait_max=0,
        budget=budget,
        clock=clock,
    )(dead)
    firsts = int(rate * seconds)
    for _ in range(firsts):
        with contextlib.suppress(ConnectionError):
            policy()
        clock.advance(1 / rate)
    return firsts, calls


def bench_budget(quick: bool) -> None:
    seconds = 30.0 if quick else 120.0
    print("## retry budget: a dependency at 100% failure (simulated time)")
    print(
        "| traffic | retry | first attempts | calls to dependency | amplification | bound |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for rate in (50.0, 200.0, 1000.0):
        for budgeted in (False, True):
            firsts, calls = amplification(budgeted, rate, seconds)
            bound = (
                1 + 0.1 + 10 * (seconds + 10) / firsts if budgeted else 3.0
            )  # 1 + ratio + floor x (elapsed + window) / firsts
            label = (
                "retry(budget=RetryBudget())" if budgeted else "naive retry(attempts=3)"
            )
            print(
                f"| {rate:g}/s for {seconds:g}s | {label} | {firsts} | {calls} "
                f"| {calls / firsts:.3f}x | {bound:.3f}x |"
            )
    number, repeat = (20_000, 5) if quick else (200_000, 7)

    def work() -> int:
        return 1

    plain = retry(on=ConnectionError, attempts=3)(work)
    budgeted = retry(on=ConnectionError, attempts=3, budget=RetryBudget())(work)
    bare = median_ns(work, number, repeat)
    a = median_ns(plain, number, repeat)
    b = median_ns(budgeted, number, repeat)
    print()
    print("## retry budget: the healthy path (ns per successful call, median)")
    print("| case | ns/call | over a bare call |")
    print("| --- | ---: | ---: |")
    print(f"| bare call | {bare:.0f} | |")
    print(f"| retry(attempts=3) | {a:.0f} | +{a - bare:.0f} |")
    print(f"| retry(attempts=3, budget=RetryBudget()) | {b:.0f} | +{b - bare:.0f} |")


# -- hedged requests ---------------------------------------------------------------------
def long_tail(rng: random.Random, median: float) -> float:
    """Lognormal latency around *median*, with 2% stalls ten times as long."""
    latency = rng.lognormvariate(math.log(median), 0.4)
    return latency * 10 if rng.random() < 0.02 else latency


async def run_hedge_case(
    guard: Hedge | None, requests: int, concurrency: int, median: float, seed: int
) -> tuple[list[float], int]:
    """Return (latencies, calls reaching the dependency) for *requests* calls."""
    rng = random.Random(seed)
    calls = 0

    async def dependency() -> None:
        nonlocal calls
        calls += 1
        await SYSTEM_CLOCK.asleep(long_tail(rng, median))

    fn = dependency if guard is None else guard(dependency)
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            start = SYSTEM_CLOCK.monotonic()
            await fn()
            latencies.append(SYSTEM_CLOCK.monotonic() - start)

    await asyncio.gather(*(one() for _ in range(requests)))
    return latencies, calls


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_hedge(quick: bool) -> None:
    requests = 1500 if quick else 6000
    median = 0.02
    print(
        "## hedging: a long-tail dependency (lognormal, median 20 ms, 2% stalls x10), real asyncio"
    )
    print("| case | p50 ms | p99 ms | p99.9 ms | calls / request |")
    print("| --- | ---: | ---: | ---: | ---: |")
    cases: list[tuple[str, Hedge | None]] = [
        ("no hedging", None),
        ("hedge(after='p95')", hedge(after="p95", name="bench-p95")),
        ("hedge(after='p90')", hedge(after="p90", name="bench-p90")),
        ("hedge(after=0.05)", hedge(after=0.05, name="bench-fixed")),
    ]
    for label, guard in cases:
        latencies, calls = asyncio.run(
            run_hedge_case(guard, requests, 16, median, seed=7)
        )
        print(
            f"| {label} | {quantile(latencies, 0.5) * 1e3:.1f} "
            f"| {quantile(latencies, 0.99) * 1e3:.1f} "
            f"| {quantile(latencies, 0.999) * 1e3:.1f} | {calls / requests:.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "which",
        nargs="?",
        default="all",
        choices=["budget", "hedge", "adaptive", "all"],
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    if args.which in ("budget", "all"):
        bench_budget(args.quick)
    if args.which in ("hedge", "all"):
        print()
        bench_hedge(args.quick)


if __name__ == "__main__":
    main()
