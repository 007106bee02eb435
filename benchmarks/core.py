"""Per-call overhead of the bare guard base (decorator and `with`) over a plain call.

Run: python benchmarks/core.py [--quick]

A no-op guard (its _step admits at once, its _release does nothing) isolates
what the faces themselves cost: the deadline check, two clock reads, the step
and release calls, and for `with` the scope stack. A no-op guard with the
fast-path hooks (_fast_admit / _fast_release) shows what the hooks save, and a
timeout and a deadline scope show what a scope's faces cost.

Times are CPU time of this thread (time.thread_time), the median of several
runs: on a shared machine other processes then do not inflate them. Run the
same script against an older tree with PYTHONPATH=<tree>/src to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import timeit

from tipkit._core._guard import Guard, Wait
from tipkit.deadline import deadline
from tipkit.timeout import Timeout


class Noop(Guard[None]):
    __slots__ = ()

    def _step(self, now: float, pending: Wait | None) -> None:
        return None

    def _release(self, ticket: None, error: BaseException | None, now: float) -> None:
        return None


class Hooked(Noop):
    __slots__ = ()

    def _fast_admit(self) -> bool:
        return True

    def _fast_release(self, ticket: object) -> bool:
        return True


def measure(stmt: object, number: int, repeats: int) -> float:
    """Return the median ns per call of *stmt* over *repeats* runs of *number* calls."""
    timer = timeit.Timer(stmt, timer=time.thread_time)  # type: ignore[arg-type]
    runs = timer.repeat(repeat=repeats, number=number)
    return statistics.median(runs) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="few iterations (smoke run)"
    )
    args = parser.parse_args()
    number, repeats = (20_000, 3) if args.quick else (500_000, 7)

    guard = Noop()

    def plain() -> int:
        return 1

    decorated = guard(plain)

    def with_block() -> int:
        with guard:
            return plain()

    def call_face() -> int:
        return guard.call(plain)

    hooked = Hooked()(plain) if hasattr(Guard, "_fast_admit") else None
    timeout = Timeout(60.0)
    timed = timeout(plain)
    scope = deadline(60.0)

    def timeout_with() -> int:
        with timeout:
            return plain()

    def deadline_with() -> int:
        with scope:
            return plain()

    def decorator_in_deadline() -> int:
        with scope:
            return decorated()

    async def aplain() -> int:
        return 1

    adecorated = guard(aplain)

    async def awith() -> int:
        async with guard:
            return 1

    def drive(coro_fn: object) -> object:
        def run() -> None:
            coro = coro_fn()  # type: ignore[operator]
            with contextlib.suppress(StopIteration):
                coro.send(None)

        return run

    base = measure(plain, number, repeats)
    rows = [
        ("plain call", base),
        ("decorator", measure(decorated, number, repeats)),
        ("with block", measure(with_block, number, repeats)),
        ("call()", measure(call_face, number, repeats)),
    ]
    if hooked is not None:
        rows.append(("decorator, fast hooks", measure(hooked, number, repeats)))
    inner = measure(deadline_with, number, repeats)
    rows += [
        ("Timeout decorator", measure(timed, number, repeats)),
        ("Timeout with block", measure(timeout_with, number, repeats)),
        ("deadline() with block", inner),
    ]
    in_deadline = measure(decorator_in_deadline, number, repeats) - inner + base
    abase = measure(drive(aplain), number, repeats)
    arows = [
        ("plain coroutine (driven by send)", abase),
        ("async decorator", measure(drive(adecorated), number, repeats)),
        ("async with", measure(drive(awith), number, repeats)),
    ]
    print(f"{'case':<36}{'ns/call':>10}{'overhead ns':>14}")
    rows.append(("decorator inside a deadline", in_deadline))
    for name, ns in rows:
        print(f"{name:<36}{ns:>10.0f}{ns - base:>14.0f}")
    for name, ns in arows:
        print(f"{name:<36}{ns:>10.0f}{ns - abase:>14.0f}")


if __name__ == "__main__":
    main()
