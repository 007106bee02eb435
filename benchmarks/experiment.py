"""Shadow-experiment overhead on the caller: tipkit and laboratory side by side, in one run.

    python benchmarks/experiment.py            # full run
    python benchmarks/experiment.py --quick    # smoke run (seconds)
    python benchmarks/experiment.py --cpu      # CPU time: steadier on a busy machine

Overhead is ns per call over calling the control directly, the median of >= 5
repeats (each repeat takes the best of 3 timing loops). The control and the
candidate are trivial functions, so the figures are what the experiment itself
costs in inline mode: at sample=100 that is running the candidate, timing both,
comparing, counting and keeping the result. The background row is the caller's
side only (the hand-off to the pool; in this tight loop most runs find the pool
full and are skipped). Ratios are peer / tipkit.

laboratory (PyPI ``laboratory``) has no sampling: its nearest equivalent of
sample=0 is an experiment whose ``enabled()`` returns False, and its documented
decorator builds an experiment per call. It is skipped if not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import timeit
import warnings
from collections.abc import Callable
from typing import Any

from tipkit.experiment import Experiment

warnings.simplefilter("ignore")


def control(x: int) -> int:
    return x + 1


def candidate(x: int) -> int:
    return x + 1


async def acontrol(x: int) -> int:
    return x + 1


async def acandidate(x: int) -> int:
    return x + 1


# Wall time by default; --cpu times the process's CPU time instead, which other
# processes on a shared machine do not inflate (it still counts cache misses).
TIMER: list[Callable[[], float]] = [time.perf_counter]


def sync_ns(fn: Callable[[], Any], number: int, repeats: int) -> float:
    runs = [
        min(timeit.repeat(fn, number=number, repeat=3, timer=TIMER[0])) / number * 1e9
        for _ in range(repeats)
    ]
    return statistics.median(runs)


def async_ns(fn: Callable[[], Any], number: int, repeats: int) -> float:
    timer = TIMER[0]

    async def loop() -> float:
        best = float("inf")
        for _ in range(3):
            t0 = timer()
            for _ in range(number):
                await fn()
            best = min(best, timer() - t0)
        return best / number * 1e9

    return statistics.median(asyncio.run(loop()) for _ in range(repeats))


def laboratory_cases() -> dict[str, Callable[[], Any]]:
    try:
        import laboratory
    except ImportError:
        return {}

    class Disabled(laboratory.Experiment):  # type: ignore[misc]
        def enabled(self) -> bool:
            return False

    lab_on = laboratory.Experiment.decorator(candidate)(control)
    lab_off = Disabled.decorator(candidate)(control)
    return {
        "sample=0 (disabled)": lambda: lab_off(1),
        "sample=100": lambda: lab_on(1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--cpu", action="store_true", help="time CPU, not wall")
    args = parser.parse_args()
    if args.cpu:
        TIMER[0] = time.process_time
    number, repeats = (2_000, 5) if args.quick else (50_000, 7)

    tip = {
        "sample=0": Experiment("b0", control=control, candidate=candidate, sample=0),
        "sample=5 (random)": Experiment(
            "b5", control=control, candidate=candidate, sample=5
        ),
        "sample=5 (by key)": Experiment(
            "b5k", control=control, candidate=candidate, sample=5, sample_key=str
        ),
        "sample=100": Experiment("b100", control=control, candidate=candidate),
    }
    base = sync_ns(lambda: control(1), number, repeats)
    lab = laboratory_cases()
    lab_key = {"sample=0": "sample=0 (disabled)", "sample=100": "sample=100"}

    rows: list[tuple[str, float, float | None]] = []
    for case, exp in tip.items():
        tip_ns = sync_ns(lambda exp=exp: exp(1), number, repeats) - base
        peer_fn = lab.get(lab_key.get(case, ""))
        peer_ns = None if peer_fn is None else sync_ns(peer_fn, number, repeats) - base
        rows.append((f"sync, {case}", tip_ns, peer_ns))

    # The caller's side of background mode: a hand-off to the pool. Under this
    # tight loop the pool is mostly full, so most runs take the (cheaper) skip path.
    bg = Experiment("bbg", control=control, candidate=candidate, mode="background")
    rows.append(
        (
            "sync, background, sample=100",
            sync_ns(lambda: bg(1), number, repeats) - base,
            None,
        )
    )
    bg.drain(10)

    abase = async_ns(lambda: acontrol(1), number, repeats)
    # The timeout row: a candidate timed against the experiment's clock (it
    # returns without waiting, so this is the cost of watching it).
    for case, sample, timeout in (
        ("sample=0", 0.0, None),
        ("sample=100", 100.0, None),
        ("sample=100, timeout", 100.0, 1.0),
    ):
        aexp = Experiment(
            "ab", control=acontrol, candidate=acandidate, sample=sample, timeout=timeout
        )
        rows.append(
            (
                f"async, {case}",
                async_ns(lambda aexp=aexp: aexp(1), number, repeats) - abase,
                None,
            )
        )

    print(f"bare control call: {base:.0f} ns (sync), {abase:.0f} ns (async)")
    print(f"{'case':<28} {'tipkit ns':>10} {'laboratory ns':>14} {'ratio':>7}")
    for case, tip_ns, peer_ns in rows:
        peer = "-" if peer_ns is None else f"{peer_ns:.0f}"
        ratio = "-" if peer_ns is None else f"{peer_ns / tip_ns:.1f}x"
        print(f"{case:<28} {tip_ns:>10.0f} {peer:>14} {ratio:>7}")
    if not lab:
        print("laboratory not installed: pip install laboratory")


if __name__ == "__main__":
    main()
