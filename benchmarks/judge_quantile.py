"""The latency quantile check's decision quality, measured through tipkit's own code.

One stage at 50 %, log-normal latencies (median 15 ms, sigma 0.7), looks at 60
geometric sample sizes from 100 to 400,000 per arm. Latencies are generated in
numpy and counted into each arm's ``QuantileSketch`` with the sketch's own
bucketing; every look calls the real ``quantile_result``. Rates carry their
99 % Wilson interval.

    python benchmarks/judge_quantile.py --runs 400
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from tipkit._judge._estimate import Stratum
from tipkit._judge._qcheck import QuantileCheck, quantile_result

Z99 = 2.5758293035489
BUCKETS = 932


def wilson(k: int, n: int) -> str:
    p = k / n
    c = (p + Z99 * Z99 / (2 * n)) / (1 + Z99 * Z99 / n)
    h = Z99 * math.sqrt(p * (1 - p) / n + Z99 * Z99 / (4 * n * n)) / (1 + Z99 * Z99 / n)
    return f"{100 * p:.2f} % ({100 * max(0.0, c - h):.2f}-{100 * (c + h):.2f})"


def run(slow: float, seed: int, check: QuantileCheck) -> tuple[str, int]:
    """Return the decision and the samples per arm it took ("none": never)."""
    rng = np.random.default_rng(seed)
    stratum = Stratum(0.5, 0.0, 1, sketch=True)
    assert stratum.lat is not None
    done = 0
    for n in np.unique(np.geomspace(100, 400_000, 60).astype(int)):
        for arm, factor in ((0, 1.0), (1, slow)):
            lat = rng.lognormal(-4.2, 0.7, n - done) * factor
            idx = np.minimum(
                BUCKETS - 1,
                np.where(
                    lat <= 1e-5,
                    0,
                    (np.log(lat / 1e-5) / math.log(1.02)).astype(int) + 1,
                ),
            )
            sketch = stratum.lat[arm]
            add = np.bincount(idx, minlength=BUCKETS)
            sketch.counts = [
                a + int(b) for a, b in zip(sketch.counts, add, strict=True)
            ]
            sketch.n += int(n - done)
        done = int(n)
        r = quantile_result(check, [stratum], 0.01)
        if r.failed:
            return "FAIL", done
        if r.passed:
            return "PASS", done
    return "none", done


def table(runs: int, seed: int) -> str:
    rows = [
        "| p95 of canary / control | margin | FAIL | PASS | median per arm to decide |",
        "|---|---|---|---|---|",
    ]
    for slow, margin in (
        (1.0, 0.25),
        (1.0, 0.5),
        (1.25, 0.25),
        (1.5, 0.5),
        (1.5, 0.25),
    ):
        check = QuantileCheck(0.95, pass_below=margin)
        out = [run(slow, seed + i, check) for i in range(runs)]
        decided = [n for d, n in out if d != "none"]
        med = f"{int(np.median(decided)):,}" if decided else "-"
        fails = sum(d == "FAIL" for d, _ in out)
        passes = sum(d == "PASS" for d, _ in out)
        rows.append(
            f"| {slow:g} | {margin:g} | {wilson(fails, runs)} | {wilson(passes, runs)} | {med} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    sys.stdout.write(table(args.runs, args.seed) + "\n")
    sys.stdout.write(
        f"\n`python benchmarks/judge_quantile.py --runs {args.runs}`: seed {args.seed},"
        f" numpy {np.__version__}, {time.perf_counter() - start:.0f} s\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
