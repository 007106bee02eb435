"""What telemetry costs: spans from traced(), flag evaluation under an SDK, guards.

Part 1 (issue 19), CPU time per call (``time.process_time``, so a loaded machine's
waiting is not counted), median of many repeats, configurations interleaved:

  bare call                        the function itself
  traced(), no SDK                 no global provider, nothing instrumented
  traced(), SDK unsampled          an SDK TracerProvider with the ALWAYS_OFF sampler
  traced(), SDK recording          an SDK TracerProvider, ALWAYS_ON, spans dropped
  raw OTel, unsampled / recording  start_span + attach + detach + end by hand,
                                   inline and as a hand-written decorator
  flag evaluation, no SDK          flags.get with no provider anywhere
  flag evaluation, SDK outside     instrument() with an SDK tracer, no current span
  flag evaluation, SDK unsampled   the same inside an unsampled span (no target:
                                   the common case of a sampled-out request)
  flag evaluation, SDK in span     the same inside a recording span (the
                                   feature_flag.evaluation span event is recorded)

Targets: traced() no SDK <= bare + 100 ns; unsampled <= raw unsampled + 100 ns;
recording <= raw recording + 300 ns; flags outside a span <= 1.2x no SDK; flags in
a recording span <= 3x no SDK.

Part 2 (issue 6, ``--guards``): the per-guard overhead of instrument() on a flag
evaluation, a closed-breaker call and a token acquire.

    python benchmarks/telemetry.py            # part 1
    python benchmarks/telemetry.py --guards   # part 2 as well
    python benchmarks/telemetry.py --quick    # smoke run
    python benchmarks/telemetry.py --callgrind [ROW ...]  # instructions per call
"""

from __future__ import annotations

import argparse
import collections
import gc
import itertools
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from time import perf_counter_ns, process_time_ns
from typing import Any

from opentelemetry import context, trace
from opentelemetry._logs import NoOpLoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

from tipkit.clock import SystemClock
from tipkit.telemetry import instrument, traced, uninstrument

Op = Callable[[], object]


class _DropSpans(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _provider(sampler: Any) -> TracerProvider:
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(_DropSpans()))
    return provider


def cpu_ns(op: Op, loops: int) -> float:
    """Return CPU ns per call of *op* over *loops* calls (process time).

    The cyclic collector is paused while timing: a recording span allocates
    enough to set it off at arbitrary points, which moved the SDK rows by up to
    a microsecond between otherwise equal runs (callgrind counts the same
    instructions for traced() and the raw API where this clock said +900 ns).
    """
    gc.collect()
    gc.disable()
    try:
        if _IN_C_LOOP:  # --only, under --callgrind: the calls, and nothing else, in C
            collections.deque(itertools.starmap(op, itertools.repeat((), loops)), 0)
            return 0.0
        start = process_time_ns()
        for _ in range(loops):
            op()
        return (process_time_ns() - start) / loops
    finally:
        gc.enable()


# --callgrind counts instructions only inside itertools' starmap_next, the C loop
# calling op(): startup, setup and background threads (which run longer the
# slower the machine) made whole-process counts vary by millions.
_IN_C_LOOP = False


def wall_ns(op: Op, loops: int) -> float:
    """Return wall-clock ns per call (part 2 keeps its historical clock)."""
    start = perf_counter_ns()
    for _ in range(loops):
        op()
    return (perf_counter_ns() - start) / loops


def work() -> int:
    """The traced function: as cheap as a function gets."""
    return 1


def _raw_inline(tracer: trace.Tracer) -> Op:
    def raw() -> int:
        span = tracer.start_span("bench")
        token = context.attach(trace.set_span_in_context(span))
        try:
            return work()
        finally:
            context.detach(token)
            span.end()

    return raw


def _raw_decorator(tracer: trace.Tracer) -> Op:
    def decorate(fn: Callable[..., int]) -> Callable[..., int]:
        def wrapper(*args: Any, **kwargs: Any) -> int:
            span = tracer.start_span("bench")
            token = context.attach(trace.set_span_in_context(span))
            try:
                return fn(*args, **kwargs)
            finally:
                context.detach(token)
                span.end()

        return wrapper

    return decorate(work)


class _FrozenClock(SystemClock):
    """The system clock with ``monotonic`` stopped (a C call all the same).

    For ``--callgrind``: under valgrind time runs ~50x slower per call, so the
    flags' due refreshes would come at rates the real run never sees.
    """

    monotonic = staticmethod(itertools.repeat(1_000.0).__next__)  # type: ignore[assignment]  # same signature


def _flags(clock: Any = None) -> Any:
    from tipkit.flags import Flags  # absent in very old trees

    flags = Flags.from_dict(
        {
            "flags": {
                "checkout": {
                    "variants": {"old": "v1", "new": "v2"},
                    "default_variant": "old",
                    "rules": [
                        {
                            "id": "nz",
                            "if": {"attr": "country", "op": "eq", "value": "NZ"},
                            "serve": "new",
                        }
                    ],
                }
            }
        },
        clock=clock,
    )
    ctx = {"targeting_key": "user-42", "country": "NZ"}
    assert flags.get("checkout", ctx, default="v0") == "v2"
    return lambda: flags.get("checkout", ctx, default="v0")


Row = tuple[int, Callable[[int], float]]


def _rows(clock: Any = None) -> dict[str, Row]:
    """Return each row of part 1: ``(divisor, measure)``; ``measure(n)`` times *n* calls.

    A row runs ``loops // divisor`` calls per repeat (the slow rows fewer).
    """
    off, on = _provider(ALWAYS_OFF), _provider(ALWAYS_ON)
    plain = traced("bench")(work)
    unsampled = traced("bench", tracer_provider=off)(work)
    recording = traced("bench", tracer_provider=on)(work)
    flag = _flags(clock)

    def flags_under_sdk(span_provider: TracerProvider | None, n: int) -> float:
        instrument(
            tracer_provider=on,
            meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
            logger_provider=NoOpLoggerProvider(),
        )
        try:
            if span_provider is None:
                return cpu_ns(flag, n)
            with span_provider.get_tracer("bench").start_as_current_span("request"):
                return cpu_ns(flag, n)
        finally:
            uninstrument()

    return {
        "bare call": (1, lambda n: cpu_ns(work, n)),
        "traced(), no SDK": (1, lambda n: cpu_ns(plain, n)),
        "traced(), SDK unsampled": (4, lambda n: cpu_ns(unsampled, n)),
        "raw OTel inline, unsampled": (
            4,
            lambda n: cpu_ns(_raw_inline(off.get_tracer("b")), n),
        ),
        "raw OTel decorator, unsampled": (
            4,
            lambda n: cpu_ns(_raw_decorator(off.get_tracer("b")), n),
        ),
        "traced(), SDK recording": (8, lambda n: cpu_ns(recording, n)),
        "raw OTel inline, recording": (
            8,
            lambda n: cpu_ns(_raw_inline(on.get_tracer("b")), n),
        ),
        "raw OTel decorator, recording": (
            8,
            lambda n: cpu_ns(_raw_decorator(on.get_tracer("b")), n),
        ),
        "flag evaluation, no SDK": (1, lambda n: cpu_ns(flag, n)),
        "flag evaluation, SDK outside a span": (1, lambda n: flags_under_sdk(None, n)),
        "flag evaluation, SDK in an unsampled span": (
            1,
            lambda n: flags_under_sdk(off, n),
        ),
        "flag evaluation, SDK in a recording span": (
            4,
            lambda n: flags_under_sdk(on, n),
        ),
    }


def part1(loops: int, repeats: int) -> bool:
    """Spans and flags under an SDK; print the table; return whether targets are met."""
    rows = {
        label: (lambda m=measure, n=loops // div: m(n))
        for label, (div, measure) in _rows().items()
    }
    uninstrument()
    for measure in rows.values():  # warm up
        measure()
    samples: dict[str, list[float]] = {label: [] for label in rows}
    for _ in range(repeats):
        for label, measure in rows.items():
            samples[label].append(measure())
    med = {label: statistics.median(values) for label, values in samples.items()}

    print(
        f"CPU ns per call, median of {repeats} repeats (python {sys.version.split()[0]})"
    )
    for label, value in med.items():
        print(f"  {label:<42} {value:>9,.0f}")
    checks = [
        (
            "traced() no SDK - bare <= 100 ns",
            med["traced(), no SDK"] - med["bare call"],
            100.0,
        ),
        (
            "traced() unsampled - raw inline unsampled <= 100 ns",
            med["traced(), SDK unsampled"] - med["raw OTel inline, unsampled"],
            100.0,
        ),
        (
            "traced() recording - raw inline recording <= 300 ns",
            med["traced(), SDK recording"] - med["raw OTel inline, recording"],
            300.0,
        ),
        (
            "flags SDK outside / no SDK <= 1.2",
            med["flag evaluation, SDK outside a span"] / med["flag evaluation, no SDK"],
            1.2,
        ),
        (
            "flags SDK in recording span / no SDK <= 3",
            med["flag evaluation, SDK in a recording span"]
            / med["flag evaluation, no SDK"],
            3.0,
        ),
    ]
    ok = True
    print("targets:")
    for label, value, limit in checks:
        passed = value <= limit
        ok = ok and passed
        print(f"  {label:<52} {value:>9.2f}  {'met' if passed else 'MISSED'}")
    return ok


def guard_operations() -> dict[str, Op]:
    """Build every guard operation whose primitive exists in this tree."""
    ops: dict[str, Op] = {"flag evaluation": _flags()}
    from tipkit.breaker import CircuitBreaker
    from tipkit.ratelimit import TokenBucket

    breaker = CircuitBreaker("bench")

    @breaker
    def protected() -> int:
        return 1

    ops["closed-breaker call"] = protected
    bucket = TokenBucket("bench", rate=1e12, capacity=1e12)
    ops["token-bucket acquire"] = bucket.try_acquire
    return ops


def part2(loops: int, repeats: int) -> bool:
    """Per-guard overhead of instrument() (issue 6): (a) off, (b) no SDK, (c) metrics."""
    ops = guard_operations()
    sdk_meters = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def configure(config: str) -> None:
        uninstrument()
        if config == "b":
            instrument()
        elif config == "c":
            instrument(
                meter_provider=sdk_meters,
                tracer_provider=trace.NoOpTracerProvider(),
                logger_provider=NoOpLoggerProvider(),
            )

    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeats):
        for config in ("a", "b", "c"):
            configure(config)
            for label, op in ops.items():
                results.setdefault((label, config), []).append(cpu_ns(op, loops))
    uninstrument()
    med = {key: statistics.median(values) for key, values in results.items()}
    print(
        f"\nguards, CPU ns/op, median of {repeats}: (a) off, (b) no SDK, (c) SDK metrics"
    )
    ok = True
    for label in ops:
        a, b, c = (med[label, k] for k in "abc")
        passed = (b - a) <= 100 and (c - a) <= 300
        ok = ok and passed
        print(
            f"  {label:<22} {a:>7.0f} {b:>7.0f} {c:>7.0f}  b-a {b - a:>+5.0f}  "
            f"c-a {c - a:>+5.0f}  {'met' if passed else 'MISSED'}"
        )
    return ok


IR_ROWS = (
    "bare call",
    "flag evaluation, no SDK",
    "flag evaluation, SDK outside a span",
    "flag evaluation, SDK in an unsampled span",
    "flag evaluation, SDK in a recording span",
)


def instructions(label: str, calls: int) -> int:
    """Return the instructions callgrind counts for a process making *calls* of row *label*."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    run = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--toggle-collect=starmap_next",
            sys.executable,
            __file__,
            "--only",
            label,
            "--calls",
            str(calls),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in: {run.stderr[-500:]}")
    return int(found.group(1))


def callgrind(labels: list[str], calls: int) -> None:
    """Print instructions per call of each row: two runs, (calls, 2*calls), differenced.

    The difference leaves out what the first call does once (a flag's first
    refresh). Only the calls themselves are counted (see ``_IN_C_LOOP``).
    Load-independent, unlike the CPU clock: for A/B against another tree, run it
    with that tree's ``src`` first on ``PYTHONPATH``.
    """
    print(f"callgrind instructions per call ({calls:,} vs {2 * calls:,} calls)")
    for label in labels:
        per_call = (instructions(label, 2 * calls) - instructions(label, calls)) / calls
        print(f"  {label:<42} {per_call:>9,.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few loops: a smoke run")
    parser.add_argument("--guards", action="store_true", help="also run part 2")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--callgrind",
        nargs="*",
        metavar="ROW",
        help="instruction counts under valgrind instead (default rows: the flag ones)",
    )
    parser.add_argument("--only", metavar="ROW", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=20_000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only is not None:  # one row, untimed output: what --callgrind runs
        global _IN_C_LOOP  # noqa: PLW0603  # a one-shot process
        _IN_C_LOOP = True
        _rows(_FrozenClock())[args.only][1](args.calls)
        return 0
    if args.callgrind is not None:
        callgrind(args.callgrind or list(IR_ROWS), args.calls)
        return 0
    loops = 2_000 if args.quick else 40_000
    repeats = 3 if args.quick else max(5, args.repeats)
    ok = part1(loops, repeats)
    if args.guards:
        ok = part2(loops, repeats) and ok
    return 0 if ok or args.quick else 2


if __name__ == "__main__":
    raise SystemExit(main())
