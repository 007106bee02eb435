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
import heapq
import math
import random
import statistics
import timeit
from collections.abc import Callable
from typing import Any

from tipkit.adaptive import AdaptiveLimit
from tipkit.bulkhead import Bulkhead
from tipkit.clock import SYSTEM_CLOCK
from tipkit.errors import RejectedError
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


# -- adaptive concurrency -----------------------------------------------------------------
# (until, arrivals per second, mean service seconds, servers): healthy, overload,
# a slow dependency, recovered. Capacity is servers / mean service seconds.
PHASES = (
    (20.0, 800.0, 0.010, 10),
    (40.0, 1500.0, 0.010, 10),
    (60.0, 800.0, 0.040, 10),
    (80.0, 800.0, 0.010, 10),
)
DEADLINE = 0.5  # the caller gives up after this; the server keeps working


def run_adaptive_case(  # one discrete-event run; the phases make it long
    guard: Any, seed: int, scale: float
) -> dict[str, Any]:
    """Drive *guard*'s pure core through an open-loop run on a processor-sharing service.

    Poisson arrivals; each admitted call needs Exp(mean) seconds of work, served
    processor-sharing by ``servers`` (a call runs at ``min(1, servers / n)``
    speed, so latency rises with concurrency: M/M/c-like). A call not done
    within DEADLINE times out for its caller (the guard is released with a
    TimeoutError then) while the server still finishes it.
    """
    rng = random.Random(seed)
    phases = [(until * scale, rate, mean, c) for until, rate, mean, c in PHASES]
    end = phases[-1][0]
    now = virtual = 0.0
    work: list[tuple[float, int]] = []  # (virtual finish, call id)
    deadlines: list[tuple[float, int]] = []
    start: dict[int, tuple[float, Any]] = {}  # call id -> (start time, ticket or None)
    good = [0] * len(phases)
    shed = [0] * len(phases)
    offered = [0] * len(phases)
    latencies: list[float] = []
    next_arrival = rng.expovariate(phases[0][1])
    call = 0

    def phase_at(t: float) -> int:
        return next(i for i, p in enumerate(phases) if t < p[0] or i == len(phases) - 1)

    while True:
        i = phase_at(now)
        servers = phases[i][3]
        speed = min(1.0, servers / len(work)) if work else 1.0
        t_done = now + (work[0][0] - virtual) / speed if work else math.inf
        t_dead = deadlines[0][0] if deadlines else math.inf
        t = min(next_arrival, t_done, t_dead)
        if t >= end:
            break
        virtual += (t - now) * speed
        now = t
        if t == t_done:
            _, cid = heapq.heappop(work)
            entry = start.pop(cid, None)
            if entry is not None:  # still awaited by its caller
                latency = now - entry[0]
                latencies.append(latency)
                good[phase_at(entry[0])] += 1
                if guard is not None:
                    guard._release(entry[1], None, now)
        elif t == t_dead:
            _, cid = heapq.heappop(deadlines)
            entry = start.pop(cid, None)
            if entry is not None:  # timed out: the caller leaves, the work stays
                latencies.append(DEADLINE)
                if guard is not None:
                    guard._release(entry[1], TimeoutError(), now)
        else:
            call += 1
            offered[i] += 1
            next_arrival = now + rng.expovariate(phases[i][1])
            ticket = None
            if guard is not None:
                try:
                    ticket = guard._step(now, None)
                except RejectedError:
                    shed[i] += 1
                    continue
            start[call] = (now, ticket)
            heapq.heappush(work, (virtual + rng.expovariate(1 / phases[i][2]), call))
            heapq.heappush(deadlines, (now + DEADLINE, call))
    spans = [p[0] - (phases[k - 1][0] if k else 0.0) for k, p in enumerate(phases)]
    return {
        "goodput": [g / span for g, span in zip(good, spans, strict=True)],
        "total": sum(good) / end,
        "shed": sum(shed) / max(1, sum(offered)),
        "p99": quantile(latencies, 0.99),
    }


def bench_adaptive(quick: bool) -> None:
    """Goodput per phase and p99 for no limit, fixed bulkheads and AdaptiveLimit."""
    scale = 0.5 if quick else 1.0
    print(
        f"open-loop Poisson arrivals on a processor-sharing service, deadline "
        f"{DEADLINE}s, phases of {20 * scale:g}s: healthy (800/s, capacity 1000/s), "
        "overload (1500/s), slow dependency (800/s, capacity 250/s), recovered; "
        "goodput = calls answered within the deadline per second"
    )
    print()
    print(
        "| guard | goodput healthy | overload | slow | recovered | all /s "
        "| shed | p99 ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    cases: list[tuple[str, Any]] = [
        ("no limit", None),
        ("Bulkhead(20)", Bulkhead("bench-20", max_concurrent=20)),
        ("Bulkhead(200)", Bulkhead("bench-200", max_concurrent=200)),
        (
            "AdaptiveLimit aimd",
            AdaptiveLimit("bench-aimd", algorithm="aimd", initial=20, timeout=0.1),
        ),
        (
            "AdaptiveLimit gradient2",
            AdaptiveLimit("bench-g2", algorithm="gradient2", initial=10),
        ),
    ]
    for label, guard in cases:
        r = run_adaptive_case(guard, seed=11, scale=scale)
        phases = " | ".join(f"{g:.0f}" for g in r["goodput"])
        print(
            f"| {label} | {phases} | {r['total']:.0f} | {r['shed']:.1%} "
            f"| {r['p99'] * 1e3:.0f} |"
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
    if args.which in ("adaptive", "all"):
        print()
        bench_adaptive(args.quick)


if __name__ == "__main__":
    main()
