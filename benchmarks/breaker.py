"""Breaker and bulkhead overhead: tipkit and its peers side by side, in one run.

    python benchmarks/breaker.py            # full run
    python benchmarks/breaker.py --quick    # smoke run (seconds)
    python benchmarks/breaker.py --cpu      # time CPU, not wall (a busy machine)

Overhead is ns per call over the same bare call, the median of >= 5 repeats
(each repeat takes the best of a few timing loops). Ratios are peer / tipkit.
The threaded cases use real 10 ms sleeps inside the protected call (wall time
always: they measure waiting).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import threading
import time
import timeit
import warnings
from collections.abc import Callable
from typing import Any

from tipkit.breaker import CircuitBreaker, CountWindow
from tipkit.bulkhead import Bulkhead
from tipkit.errors import CircuitOpenError

warnings.simplefilter("ignore")

# The timer of the per-call measurements: wall by default, CPU with --cpu.
TIMER: Callable[[], float] = time.perf_counter


def bare() -> int:
    return 1


async def abare() -> int:
    return 1


def sync_ns(fn: Callable[[], Any], number: int, repeats: int) -> float:
    runs = [
        min(timeit.repeat(fn, number=number, repeat=3, timer=TIMER)) / number * 1e9
        for _ in range(repeats)
    ]
    return statistics.median(runs)


def async_ns(make: Callable[[], Any], number: int, repeats: int) -> float:
    async def loop() -> float:
        fn = make()
        best = float("inf")
        for _ in range(3):
            t0 = TIMER()
            for _ in range(number):
                await fn()
            best = min(best, TIMER() - t0)
        return best / number * 1e9

    return statistics.median(asyncio.run(loop()) for _ in range(repeats))


def sync_peers() -> dict[str, Callable[[], Any]]:
    peers: dict[str, Callable[[], Any]] = {
        "tipkit": CircuitBreaker("bench", window=CountWindow(100))(bare),
    }
    try:
        import pybreaker

        peers["pybreaker"] = pybreaker.CircuitBreaker(fail_max=5)(bare)
    except ImportError:
        pass
    try:
        import circuitbreaker

        peers["circuitbreaker"] = circuitbreaker.circuit(bare)
    except ImportError:
        pass
    try:
        import purgatory

        factory = purgatory.SyncCircuitBreakerFactory()
        peers["purgatory"] = factory("bench")(bare)
    except ImportError:
        pass
    try:
        import aiobreaker

        peers["aiobreaker"] = aiobreaker.CircuitBreaker()(bare)
    except ImportError:
        pass
    return peers


def async_peers() -> dict[str, Callable[[], Any]]:
    def tipkit() -> Any:
        return CircuitBreaker("bench-async", window=CountWindow(100))(abare)

    peers: dict[str, Callable[[], Any]] = {"tipkit": tipkit}
    try:
        import circuitbreaker

        peers["circuitbreaker"] = lambda: circuitbreaker.circuit(abare)
    except ImportError:
        pass
    try:
        import aiobreaker

        peers["aiobreaker"] = lambda: aiobreaker.CircuitBreaker()(abare)
    except ImportError:
        pass
    try:
        from hyx.circuitbreaker import consecutive_breaker

        peers["hyx"] = lambda: consecutive_breaker(exceptions=(Exception,))(abare)
    except ImportError:
        pass
    try:
        import purgatory

        async def make_purgatory() -> Any:
            factory = purgatory.AsyncCircuitBreakerFactory()
            await factory.initialize()
            return factory("bench")(abare)

        peers["purgatory"] = make_purgatory
    except ImportError:
        pass
    return peers


def other_cases(number: int, repeats: int) -> dict[str, float]:
    """Time the closed breaker through `with` and `call`, and configured otherwise."""
    from tipkit.stores import MemoryStore

    plain = CircuitBreaker("bench-faces")

    def with_block() -> int:
        with plain:
            return 1

    return {
        "`with` block": sync_ns(with_block, number, repeats),
        "`call(fn)`": sync_ns(lambda: plain.call(bare), number, repeats),
        "decorator, `slow_call_duration=1.0`": sync_ns(
            CircuitBreaker("bench-slow", slow_call_duration=1.0)(bare), number, repeats
        ),
        "decorator, shared through a MemoryStore": sync_ns(
            CircuitBreaker("bench-shared", store=MemoryStore(), share="state")(bare),
            number,
            repeats,
        ),
    }


def threads_throughput(
    decorate: Callable[[Callable[[], Any]], Callable[[], Any]], calls: int
) -> float:
    """Return the fraction of the ideal throughput of 8 threads around a 10 ms call."""
    threads_n, per_call = 8, 0.010

    def work() -> None:
        time.sleep(per_call)  # noqa: TID251  # the benchmark measures real 10 ms calls

    guarded = decorate(work)
    barrier = threading.Barrier(threads_n + 1)

    def worker() -> None:
        barrier.wait()
        for _ in range(calls):
            guarded()

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    ideal = calls * per_call
    return ideal / elapsed


def half_open_trials(half_open_calls: int = 1) -> tuple[int, int]:
    """8 threads arrive together at a half-open breaker; return (let through, rejected)."""
    from tipkit.testing import FakeClock

    clock = FakeClock()
    breaker = CircuitBreaker(
        "half-open",
        minimum_calls=1,
        open_duration=1.0,
        half_open_calls=half_open_calls,
        clock=clock,
    )

    def boom() -> None:
        raise RuntimeError

    with contextlib.suppress(RuntimeError):
        breaker.call(boom)
    clock.advance(1.0)
    barrier = threading.Barrier(8)
    release = threading.Event()
    through: list[int] = []
    rejected: list[int] = []

    def trial() -> None:
        through.append(1)
        release.wait(5)

    def worker() -> None:
        barrier.wait()
        try:
            breaker.call(trial)
        except CircuitOpenError:
            rejected.append(1)
            if len(rejected) == 8 - half_open_calls:
                release.set()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(through), len(rejected)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument(
        "--cpu", action="store_true", help="time CPU (thread_time), not wall time"
    )
    args = parser.parse_args()
    global TIMER  # noqa: PLW0603  # one switch for every measurement of the run
    if args.cpu:
        TIMER = time.thread_time
    number, repeats = (2_000, 5) if args.quick else (100_000, 7)

    timer = "CPU time" if args.cpu else "wall time"
    print(
        f"# breaker benchmarks ({'quick' if args.quick else 'full'}; median of "
        f"{repeats}; {timer})\n"
    )
    base = sync_ns(bare, number, repeats)
    results = {
        name: sync_ns(fn, number, repeats) - base for name, fn in sync_peers().items()
    }
    tk = results["tipkit"]
    print("## closed breaker, sync decorator: overhead over a bare call\n")
    print("| library | ns/call | peer / tipkit |\n| --- | ---: | ---: |")
    for name, ns in results.items():
        print(f"| {name} | {ns:.0f} | {ns / tk:.2f}x |")

    abase = async_ns(lambda: abare, number, repeats)
    aresults: dict[str, float] = {}
    for name, make in async_peers().items():
        if asyncio.iscoroutinefunction(make):
            fn = asyncio.run(make())  # purgatory builds its breaker asynchronously
            aresults[name] = async_ns(lambda fn=fn: fn, number, repeats) - abase
        else:
            aresults[name] = async_ns(make, number, repeats) - abase
    atk = aresults["tipkit"]
    print("\n## closed breaker, async decorator: overhead over a bare await\n")
    print("| library | ns/call | peer / tipkit |\n| --- | ---: | ---: |")
    for name, ns in aresults.items():
        print(f"| {name} | {ns:.0f} | {ns / atk:.2f}x |")

    print("\n## closed breaker, other faces and configurations: overhead\n")
    print("| case | ns/call |\n| --- | ---: |")
    for label, ns in other_cases(number, repeats).items():
        print(f"| {label} | {ns - base:.0f} |")

    print("\n## bulkhead, uncontended: overhead over a bare call\n")
    print("| case | ns/call |\n| --- | ---: |")
    bh = sync_ns(Bulkhead("bench", max_concurrent=10)(bare), number, repeats) - base
    print(f"| tipkit Bulkhead, sync decorator | {bh:.0f} |")
    abh = (
        async_ns(lambda: Bulkhead("bench-a", max_concurrent=10)(abare), number, repeats)
        - abase
    )
    print(f"| tipkit Bulkhead, async decorator | {abh:.0f} |")
    try:
        from hyx.bulkhead import bulkhead as hyx_bulkhead

        hyx = async_ns(lambda: hyx_bulkhead(10, 100)(abare), number, repeats) - abase
        print(f"| hyx bulkhead, async decorator | {hyx:.0f} |")
    except ImportError:
        pass

    calls = 5 if args.quick else 25
    print("\n## 8 threads around a 10 ms call through a closed breaker\n")
    print("| library | throughput vs ideal |\n| --- | ---: |")
    print(f"| tipkit | {threads_throughput(CircuitBreaker('threads'), calls):.1%} |")
    try:
        import pybreaker

        print(
            f"| pybreaker | {threads_throughput(pybreaker.CircuitBreaker(), calls):.1%} |"
        )
    except ImportError:
        pass

    through, rejected = half_open_trials(1)
    print(
        "\n## 8 threads arriving together at a half-open breaker, half_open_calls=1\n"
    )
    print(f"let through: {through} (target: exactly 1); rejected at once: {rejected}")

    print("\n## targets\n")
    gates = [
        ("sync closed overhead <= 500 ns", tk <= 500),
        ("async closed overhead <= 700 ns", atk <= 700),
        ("bulkhead uncontended <= 500 ns", bh <= 500),
        ("half-open lets exactly 1 through", through == 1),
    ]
    if "pybreaker" in results:
        gates.append(("pybreaker / tipkit >= 4x", results["pybreaker"] / tk >= 4))
    if "circuitbreaker" in results:
        gates.append(
            ("never slower than circuitbreaker", tk <= results["circuitbreaker"])
        )
    for label, passed in gates:
        print(f"- {'PASS' if passed else 'MISS'}: {label}")


if __name__ == "__main__":
    main()
