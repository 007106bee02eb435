"""Decision quality of the canary judge: a simulation, not a timed benchmark.

Simulates many rollouts of one stage with random assignment (each request goes
to the canary with probability ``share``) and judges after every request:

* false rollbacks in A/A (canary identical to control, 1 % errors);
* detection of 1 % -> 2 % and 1 % -> 1.5 % errors (power, requests per arm
  until rollback);
* latency regression (slow share 5 % -> 10 % above 250 ms, check allowance 2
  points) and a latency A/A;
* the same A/A and 1 % -> 2 % at a 5 % canary share (unbalanced arms);
* a naive repeated two-proportion z-test (one-sided, 99 %) on the same data.

The judge's formulas are vectorised with numpy here for speed; ``--check``
(on by default for a few runs) replays runs through the real
``tipkit._judge.Judge`` and asserts the same rollback request.

    python benchmarks/judge.py            # 2,000 runs per scenario, ~2-4 min
    python benchmarks/judge.py --quick    # 200 runs, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tipkit._judge import MIN_OUTCOMES_TO_FAIL, ErrorRateCheck, Judge, LatencyCheck

ALPHA = 0.01
Z_ONE_SIDED_99 = 2.3263478740408408  # Phi^-1(0.99)
Z_ONE_SIDED_95 = 1.6448536269514722  # Phi^-1(0.95)


@dataclass
class Scenario:
    name: str
    share: float
    kind: str  # "error" or "latency"
    control: float  # error probability, or median latency (s)
    canary: float
    horizon: int  # requests per arm (expected) before the run is abandoned


@dataclass
class Outcome:
    stops: np.ndarray  # per run: requests per arm at rollback, or -1
    stops_canary: np.ndarray  # per run: canary requests at rollback, or -1
    z_stops: np.ndarray
    z95_stops: np.ndarray
    amortised_stops: np.ndarray


LAT_SIGMA = (
    math.log(0.25 / 0.1) / 1.6448536269514722
)  # P(>250 ms) = 5 % at median 100 ms
LAT_SLOW_MEDIAN = 0.25 / math.exp(1.2815515655446004 * LAT_SIGMA)  # P(>250 ms) = 10 %


def simulate_chunk(sc: Scenario, runs: int, rng: np.random.Generator):
    n_total = round(sc.horizon / min(sc.share, 1 - sc.share))
    arm = rng.random((runs, n_total)) < sc.share
    if sc.kind == "error":
        p = np.where(arm, sc.canary, sc.control)
        bad = rng.random((runs, n_total)) < p
        latency = None
    else:
        med = np.where(arm, sc.canary, sc.control)
        latency = med * np.exp(LAT_SIGMA * rng.standard_normal((runs, n_total)))
        bad = latency > 0.25
    return arm, bad, latency


def judge_stops(arm: np.ndarray, bad: np.ndarray, tau: float, max_increase: float):
    """Return per run the first index where the judge would FAIL (or -1), vectorised."""
    nc = np.cumsum(arm, axis=1, dtype=np.int64)
    idx = np.arange(1, arm.shape[1] + 1)
    nt = idx - nc
    xc = np.cumsum(bad & arm, axis=1, dtype=np.int64)
    xt = np.cumsum(bad & ~arm, axis=1, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pc = (xc + 0.5) / (nc + 1.0)
        pt = (xt + 0.5) / (nt + 1.0)
        var = pc * (1 - pc) / nc + pt * (1 - pt) / nt
        info = 1.0 / var
        est = xc / nc - xt / nt
        u = tau * tau * info
        w = np.sqrt((1 + u) * (2 * math.log(1 / ALPHA) + np.log1p(u))) / (tau * info)
        lower = est - w
        fail = (
            (lower > max_increase)
            & (nc >= MIN_OUTCOMES_TO_FAIL)
            & (nt >= MIN_OUTCOMES_TO_FAIL)
        )
        # naive: pooled two-proportion z-test, one-sided at 99 %, after every request
        pool = (xc + xt) / idx
        se = np.sqrt(pool * (1 - pool) * (1 / nc + 1 / nt))
        z = (xc / nc - xt / nt) / se
        zfail = (
            (z > Z_ONE_SIDED_99)
            & (nc >= MIN_OUTCOMES_TO_FAIL)
            & (nt >= MIN_OUTCOMES_TO_FAIL)
        )
        enough = (nc >= MIN_OUTCOMES_TO_FAIL) & (nt >= MIN_OUTCOMES_TO_FAIL)
        z95fail = (z > Z_ONE_SIDED_95) & enough
    return first_true(fail), first_true(zfail), first_true(z95fail), nc, nt


def first_true(mask: np.ndarray) -> np.ndarray:
    any_ = mask.any(axis=1)
    first = mask.argmax(axis=1)
    return np.where(any_, first, -1)


def checkpoints(n: int, eager: int = 1000, ratio: float = 0.01) -> np.ndarray:
    """The default amortised schedule of Judge.record (0-based request indices)."""
    out = []
    total = 1
    while total <= n:
        out.append(total - 1)
        total = total + 1 if total < eager else total + max(1, int(total * ratio))
    return np.array(out, dtype=np.int64)


def run_scenario(sc: Scenario, runs: int, seed: int, check: int) -> Outcome:
    rng = np.random.default_rng(seed)
    metric = ErrorRateCheck() if sc.kind == "error" else LatencyCheck()
    chunk = max(
        1, min(runs, int(2_000_000 / (sc.horizon / min(sc.share, 1 - sc.share))))
    )
    stops, stops_c, zs, z95s, am = [], [], [], [], []
    done = 0
    checked = 0
    sched = None
    while done < runs:
        k = min(chunk, runs - done)
        arm, bad, latency = simulate_chunk(sc, k, rng)
        if sched is None:
            sched = checkpoints(arm.shape[1])
        f, zf, z95, nc, nt = judge_stops(arm, bad, metric.tau, metric.max_increase)
        rows = np.arange(k)
        per_arm = np.where(f >= 0, (nc[rows, f] + nt[rows, f]) / 2.0, -1)
        # at small shares "per arm" is the canary's count; keep both
        stops.append(per_arm)
        stops_c.append(np.where(f >= 0, nc[rows, f], -1))
        z95s.append(np.where(z95 >= 0, 1, -1))
        zs.append(np.where(zf >= 0, (nc[rows, zf] + nt[rows, zf]) / 2.0, -1))
        # amortised schedule: first checkpoint at or after the first failing index
        # is where the real judge (check_ratio=0.01) notices; a CS failing at index i
        # may recover before the next checkpoint, so recompute on the schedule itself
        f_sched = sched_stops(arm, bad, metric, sched)
        am.append(np.where(f_sched >= 0, nc[rows, np.maximum(f_sched, 0)], -1))
        while checked < check and checked - done < k:
            i = checked - done
            replay(
                arm[i],
                bad[i],
                None if latency is None else latency[i],
                metric,
                sc,
                expected=int(f[i]),
            )
            checked += 1
        done += k
    return Outcome(
        np.concatenate(stops),
        np.concatenate(stops_c),
        np.concatenate(zs),
        np.concatenate(z95s),
        np.concatenate(am),
    )


def sched_stops(arm, bad, metric, sched):
    a = arm
    nc = np.cumsum(a, axis=1, dtype=np.int64)[:, sched]
    nt = (sched + 1) - nc
    xc = np.cumsum(bad & a, axis=1, dtype=np.int64)[:, sched]
    xt = np.cumsum(bad & ~a, axis=1, dtype=np.int64)[:, sched]
    tau = metric.tau
    with np.errstate(divide="ignore", invalid="ignore"):
        pc = (xc + 0.5) / (nc + 1.0)
        pt = (xt + 0.5) / (nt + 1.0)
        info = 1.0 / (pc * (1 - pc) / nc + pt * (1 - pt) / nt)
        u = tau * tau * info
        w = np.sqrt((1 + u) * (2 * math.log(1 / ALPHA) + np.log1p(u))) / (tau * info)
        lower = xc / nc - xt / nt - w
        fail = (
            (lower > metric.max_increase)
            & (nc >= MIN_OUTCOMES_TO_FAIL)
            & (nt >= MIN_OUTCOMES_TO_FAIL)
        )
    f = first_true(fail)
    return np.where(f >= 0, sched[np.maximum(f, 0)], -1)


def replay(arm, bad, latency, metric, sc: Scenario, *, expected: int) -> None:
    """Feed one simulated run through the real Judge and assert the same FAIL index."""
    judge = Judge([metric], min_samples=10**9, check_ratio=0.0)
    judge.start_stage(sc.share, 0.0)
    got = -1
    for i in range(arm.shape[0]):
        lat = float(latency[i]) if latency is not None else 0.0
        err = bool(bad[i]) if latency is None else False
        if (
            judge.record(bool(arm[i]), err, lat)
            and judge.evaluate(0.0).decision == "FAIL"
        ):
            got = i
            break
    if got != expected:
        raise AssertionError(
            f"{sc.name}: Judge failed at {got}, vectorised at {expected}"
        )


def _median(stops: np.ndarray) -> str:
    hit = stops >= 0
    if hit.mean() < 0.5:
        return "-"
    return f"{float(np.median(np.where(hit, stops, np.inf))):,.0f}"


def summarise(sc: Scenario, out: Outcome, runs: int) -> dict[str, str]:
    return {
        "scenario": sc.name,
        "canary share": f"{sc.share:g}",
        "runs": f"{runs:,}",
        "horizon (canary requests)": f"{sc.horizon:,}",
        "rollbacks, judged every request": f"{100 * (out.stops >= 0).mean():.1f} %",
        "median canary requests to rollback": _median(out.stops_canary),
        "rollbacks, amortised checks": f"{100 * (out.amortised_stops >= 0).mean():.1f} %",
        "median (amortised)": _median(out.amortised_stops),
        "naive z-test at 99 %, every request": f"{100 * (out.z_stops >= 0).mean():.1f} %",
        "naive z-test at 95 %, every request": f"{100 * (out.z95_stops >= 0).mean():.1f} %",
    }


def whole_rollouts(
    p_control: float,
    p_canary: float,
    runs: int,
    seed: int,
    *,
    stages=(1, 5, 25, 50),
    min_samples: int = 1_000,
    pass_below: float | None = None,
    horizon: float = 1.3,
):
    """Simulate whole rollouts through the stages, judged after every request.

    Mirrors Judge's stage stratification: earlier stages' information and
    weighted estimates carry over; a stage passes at the first request where
    both arms have min_samples (a FAIL at that same request wins, as in
    Judge.evaluate). Returns (failed stage index or -1, canary requests seen).
    """
    rng = np.random.default_rng(seed)
    tau = ErrorRateCheck().tau
    two_l = 2 * math.log(1 / ALPHA)
    prev_info = np.zeros(runs)
    prev_w = np.zeros(runs)
    prev_nc = np.zeros(runs, dtype=np.int64)
    prev_nt = np.zeros(runs, dtype=np.int64)
    failed_at = np.full(runs, -1)
    held = np.zeros(runs, dtype=bool)  # neither passed nor failed by the horizon
    canary_seen = np.zeros(runs, dtype=np.int64)
    need = max(min_samples, MIN_OUTCOMES_TO_FAIL)
    for k, pct in enumerate(stages):
        q = pct / 100
        n = int(need / min(q, 1 - q) * horizon) + 1_000
        alive = np.flatnonzero((failed_at < 0) & ~held)
        chunk = max(1, 1_500_000 // n)
        for start in range(0, alive.size, chunk):
            idx = alive[start : start + chunk]
            m = idx.size
            arm = rng.random((m, n)) < q
            bad = rng.random((m, n)) < np.where(arm, p_canary, p_control)
            nc = np.cumsum(arm, axis=1, dtype=np.int64)
            nt = np.arange(1, n + 1) - nc
            xc = np.cumsum(bad & arm, axis=1, dtype=np.int64)
            xt = np.cumsum(bad & ~arm, axis=1, dtype=np.int64)
            with np.errstate(divide="ignore", invalid="ignore"):
                pc = (xc + 0.5) / (nc + 1.0)
                pt = (xt + 0.5) / (nt + 1.0)
                i_cur = 1.0 / (pc * (1 - pc) / nc + pt * (1 - pt) / nt)
                i_cur = np.where((nc > 0) & (nt > 0), i_cur, 0.0)
                w_cur = np.where(i_cur > 0, i_cur * (xc / nc - xt / nt), 0.0)
                info = prev_info[idx, None] + i_cur
                est = (prev_w[idx, None] + w_cur) / info
                u = tau * tau * info
                hw = np.sqrt((1 + u) * (two_l + np.log1p(u))) / (tau * info)
                lower = np.where(info > 0, est - hw, -np.inf)
            fail = (
                (lower > 0.0)
                & (prev_nc[idx, None] + nc >= MIN_OUTCOMES_TO_FAIL)
                & (prev_nt[idx, None] + nt >= MIN_OUTCOMES_TO_FAIL)
            )
            passed = np.minimum(nc, nt) >= need
            if pass_below is not None:
                passed &= np.where(info > 0, est + hw, np.inf) < pass_below
            ever = passed.any(axis=1)
            first_pass = np.where(ever, passed.argmax(axis=1), n - 1)
            first_fail = first_true(fail)
            rows = np.arange(m)
            failed = (first_fail >= 0) & (first_fail <= first_pass)
            held[idx[~failed & ~ever]] = True
            stop = np.where(failed, first_fail, first_pass)
            failed_at[idx[failed]] = k
            canary_seen[idx] += nc[rows, stop]
            prev_info[idx] += i_cur[rows, stop]
            prev_w[idx] += w_cur[rows, stop]
            prev_nc[idx] += nc[rows, stop]
            prev_nt[idx] += nt[rows, stop]
    return failed_at, canary_seen, held


def whole_rollout_table(runs: int, seed: int) -> str:
    header = (
        "| whole rollout, stages 1, 5, 25, 50 %, min_samples 1,000 | PASS rule | runs"
        " | rolled back | rolled back at stage 1 / 5 / 25 / 50 %"
        " | median canary requests to rollback | still inconclusive at the horizon |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    cases = (
        ("A/A errors 1 % vs 1 %", 0.01, None),
        ("errors 1 % -> 2 %", 0.02, None),
        ("A/A errors 1 % vs 1 %", 0.01, 0.01),
        ("errors 1 % -> 2 %", 0.02, 0.01),
    )
    for i, (label, pc, below) in enumerate(cases):
        failed_at, seen, held = whole_rollouts(
            0.01,
            pc,
            runs,
            seed + i,
            pass_below=below,
            horizon=1.3 if below is None else 5,
        )
        hit = failed_at >= 0
        per_stage = " / ".join(
            f"{100 * (failed_at == k).mean():.1f} %" for k in range(4)
        )
        med = f"{float(np.median(seen[hit])):,.0f}" if hit.mean() >= 0.5 else "-"
        rule = "no FAIL (default)" if below is None else f"pass_below={below:g}"
        lines.append(
            f"| {label} | {rule} | {runs:,} | {100 * hit.mean():.1f} % | {per_stage}"
            f" | {med} | {100 * held.mean():.1f} % |"
        )
    return "\n".join(lines)


def _median_ns(fn, n: int, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        fn(n)
        times.append((time.perf_counter_ns() - t) / n)
    return sorted(times)[len(times) // 2]


def timing(quick: bool) -> str:
    """ns/op of the judge's hot path and of a whole observed request (no peers exist)."""
    from tipkit.flags import Flags, InMemoryProvider
    from tipkit.rollout import Rollout
    from tipkit.stores import MemoryStore

    n = 20_000 if quick else 200_000
    judge = Judge([ErrorRateCheck(), LatencyCheck()], min_samples=10**9)
    judge.start_stage(0.5, 0.0)

    def record_only(k: int) -> None:
        rec = judge.record
        for i in range(k):
            rec(i & 1 == 1, i % 97 == 0, 0.1)

    def record_and_evaluate(k: int) -> None:
        rec, ev = judge.record, judge.evaluate
        for i in range(k):
            if rec(i & 1 == 1, i % 97 == 0, 0.1):
                ev(0.0)

    def evaluate_only(k: int) -> None:
        ev = judge.evaluate
        for _ in range(k):
            ev(0.0)

    flags = Flags(InMemoryProvider(), store=MemoryStore())
    rollout = Rollout(
        "bench",
        flags=flags,
        stages=[50, 100],
        min_samples=10**9,
        min_stage_duration=1e9,
    )
    keys = [f"user-{i}" for i in range(1024)]

    def observe(k: int) -> None:
        obs = rollout.observe
        for i in range(k):
            with obs(keys[i & 1023]):
                pass

    async def aobserve_loop(k: int) -> None:
        obs = rollout.observe
        for i in range(k):
            async with obs(keys[i & 1023]):
                pass

    def aobserve(k: int) -> None:
        asyncio.run(aobserve_loop(k))

    def flag_only(k: int) -> None:
        ev = flags.evaluate
        for i in range(k):
            ev("bench", keys[i & 1023])

    rows = [
        ("Judge.record (2 checks)", _median_ns(record_only, n)),
        ("Judge.record + evaluate at checkpoints", _median_ns(record_and_evaluate, n)),
        ("Judge.evaluate (one stage, 2 checks)", _median_ns(evaluate_only, n // 20)),
        ("Flags.evaluate alone (for reference)", _median_ns(flag_only, n // 4)),
        ("with rollout.observe(key): pass", _median_ns(observe, n // 4)),
        ("async with rollout.observe(key): pass", _median_ns(aobserve, n // 4)),
    ]
    lines = ["| operation | ns/op (median of 5) |", "|---|---|"]
    lines += [f"| {name} | {ns:,.0f} |" for name, ns in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="200 runs, shorter horizons"
    )
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument(
        "--check", type=int, default=3, help="runs per scenario replayed through Judge"
    )
    parser.add_argument(
        "--write", type=Path, default=None, help="write the markdown table here"
    )
    parser.add_argument(
        "--timing-only", action="store_true", help="only the ns/op table"
    )
    args = parser.parse_args(argv)
    runs = args.runs or (200 if args.quick else 2_000)
    h = 10_000 if args.quick else 20_000
    scenarios = [
        Scenario("A/A errors 1 % vs 1 %", 0.5, "error", 0.01, 0.01, h),
        Scenario("errors 1 % -> 2 %", 0.5, "error", 0.01, 0.02, h),
        Scenario("errors 1 % -> 1.5 %", 0.5, "error", 0.01, 0.015, 2 * h),
        Scenario("A/A latency (5 % slow)", 0.5, "latency", 0.1, 0.1, h),
        Scenario("latency 5 % -> 10 % slow", 0.5, "latency", 0.1, LAT_SLOW_MEDIAN, h),
        Scenario("A/A errors, 5 % canary", 0.05, "error", 0.01, 0.01, h // 2),
        Scenario("errors 1 % -> 2 %, 5 % canary", 0.05, "error", 0.01, 0.02, h // 2),
    ]
    t0 = time.perf_counter()
    perf = timing(args.quick)
    print(perf + "\n")
    if args.timing_only:
        return 0
    rows = []
    for i, sc in enumerate(scenarios):
        t = time.perf_counter()
        out = run_scenario(sc, runs, args.seed + i, args.check)
        rows.append(summarise(sc, out, runs))
        print(f"{sc.name}: {time.perf_counter() - t:.1f}s", file=sys.stderr)
    t = time.perf_counter()
    whole = whole_rollout_table(max(100, runs // 2), args.seed + 100)
    print(f"whole rollouts: {time.perf_counter() - t:.1f}s", file=sys.stderr)
    head = list(rows[0].keys())
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r[k] for k in head) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    print()
    print(whole)
    cmd = (
        "python benchmarks/judge.py"
        + (" --quick" if args.quick else "")
        + (f" --runs {args.runs}" if args.runs else "")
    )
    print(
        f"\n{cmd}: {time.perf_counter() - t0:.0f}s, numpy {np.__version__}, seed {args.seed}"
    )
    if args.write:
        args.write.write_text(table + "\n\n" + whole + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
