"""Retry on the success path side by side: tipkit, tenacity, stamina; and a composed stack.

Run:  python benchmarks/retry.py [--quick] [--cpu] [--repeat N]

Prints ns per call (median of --repeat runs), the overhead over a bare call and
peer/tipkit ratios of that overhead; then every tipkit face (decorator, call,
retry_context, their async twins, and one retry after a failure on a FakeClock);
then retry(breaker(bucket(f))) if tipkit.breaker is importable. ``--cpu`` times
the CPU time of this thread (``time.thread_time``) instead of the wall clock:
steadier on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import timeit
from collections.abc import Callable
from typing import Any

from tipkit.retry import retry

# The timer of the measurements: wall by default, CPU with --cpu.
TIMER: Callable[[], float] = time.perf_counter


def median_ns(fn: Callable[[], Any], number: int, repeat: int) -> float:
    timer = timeit.Timer(fn, timer=TIMER)
    return statistics.median(timer.timeit(number) / number * 1e9 for _ in range(repeat))


def median_async_ns(fn: Callable[[], Any], number: int, repeat: int) -> float:
    async def run() -> float:
        results = []
        for _ in range(repeat):
            start = TIMER()
            for _ in range(number):
                await fn()
            results.append((TIMER() - start) / number * 1e9)
        return statistics.median(results)

    return asyncio.run(run())


def work() -> int:
    return 1


async def awork() -> int:
    return 1


def sync_cases(number: int, repeat: int) -> dict[str, float]:
    import stamina
    import tenacity

    cases: dict[str, Callable[[], Any]] = {
        "bare call": work,
        "tipkit retry": retry(on=ConnectionError, attempts=3)(work),
        "tenacity retry": tenacity.retry(
            retry=tenacity.retry_if_exception_type(ConnectionError),
            stop=tenacity.stop_after_attempt(3),
        )(work),
        "stamina retry": stamina.retry(on=ConnectionError, attempts=3)(work),
    }
    # The peers are ~100x slower: fewer calls keep the run short without changing medians.
    return {
        name: median_ns(
            fn, number if name.startswith(("bare", "tipkit")) else number // 20, repeat
        )
        for name, fn in cases.items()
    }


def async_cases(number: int, repeat: int) -> dict[str, float]:
    import stamina
    import tenacity

    cases: dict[str, Callable[[], Any]] = {
        "bare await": awork,
        "tipkit retry (async)": retry(on=ConnectionError, attempts=3)(awork),
        "tenacity retry (async)": tenacity.retry(
            retry=tenacity.retry_if_exception_type(ConnectionError),
            stop=tenacity.stop_after_attempt(3),
        )(awork),
        "stamina retry (async)": stamina.retry(on=ConnectionError, attempts=3)(awork),
    }
    return {
        name: median_async_ns(
            fn, number if name.startswith(("bare", "tipkit")) else number // 20, repeat
        )
        for name, fn in cases.items()
    }


def face_cases(number: int, repeat: int) -> dict[str, float]:
    """Every face of one tipkit retry, first-try success, and one retry after a failure."""
    from tipkit.retry import retry_context
    from tipkit.testing import FakeClock

    policy = retry(on=ConnectionError, attempts=3)
    block = retry_context(on=ConnectionError, attempts=3)

    def in_block() -> int:
        for attempt in block:
            with attempt:
                return work()
        return 0

    class FailsEveryOtherCall:
        def __init__(self) -> None:
            self.calls = 0

        def __call__(self) -> int:
            self.calls += 1
            if self.calls % 2:
                raise ConnectionError
            return 1

    once = retry(on=ConnectionError, attempts=3, clock=FakeClock())(
        FailsEveryOtherCall()
    )
    return {
        "bare call": median_ns(work, number, repeat),
        "decorator": median_ns(policy(work), number, repeat),
        "call(f)": median_ns(lambda: policy.call(work), number, repeat),
        "retry_context block": median_ns(in_block, number, repeat),
        "one failure, then success": median_ns(once, number // 20, repeat),
    }


def async_face_cases(number: int, repeat: int) -> dict[str, float]:
    """The async faces of one tipkit retry, first-try success."""
    from tipkit.retry import retry_context

    policy = retry(on=ConnectionError, attempts=3)
    block = retry_context(on=ConnectionError, attempts=3)

    async def in_block() -> int:
        async for attempt in block:
            with attempt:
                return await awork()
        return 0

    return {
        "bare await": median_async_ns(awork, number, repeat),
        "async decorator": median_async_ns(policy(awork), number, repeat),
        "acall(f)": median_async_ns(lambda: policy.acall(awork), number, repeat),
        "async retry_context block": median_async_ns(in_block, number, repeat),
    }


def composed_cases(number: int, repeat: int) -> dict[str, float] | None:
    try:
        from tipkit.breaker import CircuitBreaker
    except ImportError:
        return None
    from tipkit import compose
    from tipkit.ratelimit import TokenBucket

    bucket = TokenBucket("bench-stack", rate=1e12, capacity=1e12)
    breaker = CircuitBreaker("bench-stack")
    stack = compose(retry(on=ConnectionError, attempts=3), breaker, bucket)(work)
    return {
        "bare call": median_ns(work, number, repeat),
        "bucket(f)": median_ns(bucket(work), number, repeat),
        "breaker(f)": median_ns(CircuitBreaker("bench-breaker")(work), number, repeat),
        "retry(breaker(bucket(f)))": median_ns(stack, number, repeat),
    }


def report(title: str, results: dict[str, float], bare: str, tipkit: str) -> None:
    print(title)
    base = results[bare]
    ours = results[tipkit] - base
    for name, ns in results.items():
        over = ns - base
        ratio = (
            "" if name == bare else f"  overhead {over:7.0f} ns  x{over / ours:7.1f}"
        )
        print(f"  {name:<28} {ns:9.0f} ns{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--cpu", action="store_true", help="time CPU (thread_time), not wall time"
    )
    args = parser.parse_args()
    if args.cpu:
        global TIMER  # noqa: PLW0603  # the one switch of the timer, as in breaker.py
        TIMER = time.thread_time
    number = 2_000 if args.quick else 200_000
    repeat = 5 if args.quick else max(5, args.repeat)

    report(
        f"retry, success on the first try (ns/call, median of {repeat})",
        sync_cases(number, repeat),
        "bare call",
        "tipkit retry",
    )
    report(
        f"\nasync retry, success on the first try (ns/call, median of {repeat})",
        async_cases(number, repeat),
        "bare await",
        "tipkit retry (async)",
    )
    for title, results in (
        ("tipkit faces, success on the first try", face_cases(number, repeat)),
        ("tipkit async faces", async_face_cases(number, repeat)),
    ):
        print(f"\n{title} (ns/call, median of {repeat})")
        base = next(iter(results.values()))
        for name, ns in results.items():
            print(f"  {name:<28} {ns:9.0f} ns  overhead {ns - base:7.0f} ns")
    composed = composed_cases(number, repeat)
    if composed is None:
        print(
            "\nretry(breaker(bucket(f))): tipkit.breaker is not available; not measured"
        )
        return
    print(f"\ncomposed guards, success path (ns/call, median of {repeat})")
    base = composed["bare call"]
    for name, ns in composed.items():
        print(f"  {name:<28} {ns:9.0f} ns  overhead {ns - base:7.0f} ns")


if __name__ == "__main__":
    main()
