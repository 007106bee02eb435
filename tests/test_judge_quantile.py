"""The latency quantile check: a streaming sketch and always-valid, distribution-free bounds."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipkit._judge import FAIL, PASS, ErrorRateCheck, Judge
from tipkit._judge._estimate import Stratum
from tipkit._judge._qcheck import QuantileCheck, quantile_result
from tipkit._quantile import QuantileSketch, uniform_cdf_radius

np = pytest.importorskip("numpy")

Z99 = 2.5758293035489


def wilson_low(k: int, n: int, z: float = Z99) -> float:
    """Lower end of the 99 % Wilson interval of k successes in n."""
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return c - h


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.0, 2_000.0), min_size=1, max_size=300),
    st.floats(0.001, 0.999),
)
def test_sketch_bounds_contain_the_sample_quantile(
    values: list[float], p: float
) -> None:
    """Low <= the sample's p-quantile <= high, for any values and p."""
    sketch = QuantileSketch()
    for v in values:
        sketch.add(v)
    exact = sorted(values)[max(1, math.ceil(p * len(values) - 1e-9)) - 1]
    low, high = sketch.bounds(p)
    assert low <= exact <= high
    assert high <= max(exact * 1.0201, 1e-5) or math.isinf(high)


def test_sketch_edges_and_merge() -> None:
    """Empty: (0, inf); p <= 0: (0, 0); merged counts add; NaN ignored."""
    a, b = QuantileSketch(), QuantileSketch()
    assert (0.0, math.inf) == a.bounds(0.5)
    a.add(float("nan"))
    a.add(0.010)
    b.add(5_000.0)
    a.merge(b)
    assert 2 == a.n
    assert (0.0, 0.0) == a.bounds(0.0)
    assert math.isinf(a.bounds(1.0)[1])
    assert (0.0, math.inf) == a.bounds(1.5)
    assert "<QuantileSketch n=2>" == repr(a)


def test_the_time_uniform_dkw_radius_covers_every_sample_size() -> None:
    """Uniform streams: sup|F_n - F| > eps(n) at any n checked happens in <= alpha of runs."""
    rng = np.random.default_rng(42)
    alpha, runs, horizon = 0.05, 400, 4_000
    looks = np.unique(np.geomspace(1, horizon, 60).astype(int))
    crossed = 0
    for _ in range(runs):
        x = rng.random(horizon)
        for n in looks:
            s = np.sort(x[:n])
            i = np.arange(1, n + 1)
            ks = max(np.max(i / n - s), np.max(s - (i - 1) / n))
            if ks > uniform_cdf_radius(int(n), alpha):
                crossed += 1
                break
    assert wilson_low(crossed, runs) <= alpha
    assert math.isinf(uniform_cdf_radius(0, alpha))


def _simulate(slow: float, seed: int, *, margin: float, looks: int = 40) -> str:
    """One stage at 50 %, judged at geometric looks up to 200k per arm, via numpy counts."""
    rng = np.random.default_rng(seed)
    check = QuantileCheck(0.95, pass_below=margin)
    stratum = Stratum(0.5, 0.0, 1, sketch=True)
    assert stratum.lat is not None
    sizes = np.unique(np.geomspace(100, 200_000, looks).astype(int))
    done = 0
    for n in sizes:
        for arm, factor in ((0, 1.0), (1, slow)):
            lat = rng.lognormal(-4.2, 0.7, n - done) * factor
            idx = np.where(
                lat <= 1e-5,
                0,
                np.minimum(931, (np.log(lat / 1e-5) / math.log(1.02)).astype(int) + 1),
            )
            sketch = stratum.lat[arm]
            counts = np.bincount(idx, minlength=932)
            sketch.counts = [
                a + int(b) for a, b in zip(sketch.counts, counts, strict=True)
            ]
            sketch.n += int(n - done)
        done = n
        r = quantile_result(check, [stratum], 0.01)
        if r.failed:
            return FAIL
        if r.passed:
            return PASS
    return "none"


def test_an_equal_canary_is_rarely_failed_and_passes_its_margin() -> None:
    """A/A at p95: false FAIL <= 1 % (99 % CI); every run passes a 0.5 margin."""
    outcomes = [_simulate(1.0, seed, margin=0.5) for seed in range(100)]
    assert wilson_low(outcomes.count(FAIL), len(outcomes)) <= 0.01
    assert outcomes.count(PASS) >= 97


def test_a_canary_worse_by_the_margin_rarely_passes() -> None:
    """p95 25 % slower against a 0.25 margin: PASS <= 1 % (99 % CI)."""
    outcomes = [_simulate(1.25, 1_000 + seed, margin=0.25) for seed in range(100)]
    assert wilson_low(outcomes.count(PASS), len(outcomes)) <= 0.01


def test_a_much_slower_canary_fails_through_the_judge() -> None:
    """A canary 1.5x slower at every request: FAIL on the quantile, not on errors."""
    rng = random.Random(3)
    judge = Judge(
        [ErrorRateCheck(), QuantileCheck(0.95)], min_samples=100, min_stage_duration=0
    )
    judge.start_stage(0.5, 0.0)
    verdict = None
    for _ in range(100_000):
        canary = rng.random() < 0.5
        lat = rng.lognormvariate(-4.2, 0.7) * (1.5 if canary else 1.0)
        if judge.record(canary, False, lat):
            verdict = judge.evaluate(0.0)
            if verdict.decision != "INCONCLUSIVE":
                break
    assert verdict is not None
    assert FAIL == verdict.decision
    assert ["latency:p95"] == [r.check.describe() for r in verdict.failed]
    r = verdict.failed[0]
    assert 0.0 < r.lower < 0.5 < r.upper
    assert r.canary_rate > r.control_rate


def test_quantile_check_validates_describes_and_survives_a_state_round_trip() -> None:
    """Bad q refused; repr/label; a restored judge keeps feeding the sketches."""
    with pytest.raises(ValueError, match="q must be in"):
        QuantileCheck(1.5)
    check = QuantileCheck(0.99, max_increase=0.1)
    assert (0.99, 0.35, "latency:p99") == (check.q, check.pass_below, check.describe())
    assert "QuantileCheck(q=0.99, max_increase=0.1, pass_below=0.35)" == repr(check)
    assert QuantileCheck(0.99, max_increase=0.1) == check
    judge = Judge([check])
    judge.start_stage(0.5, 0.0)
    judge.record(True, False, 0.1)
    restored = Judge([check])
    restored.load_state(judge.to_state())
    for i in range(300):
        restored.record(i % 2 == 0, False, 0.05)
    r = restored.results()[0]
    assert (150, 150) == (r.canary_count, r.control_count)
