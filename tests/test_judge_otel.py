"""Business KPIs from an OpenTelemetry histogram: a real SDK, an InMemoryMetricReader."""

from __future__ import annotations

import math
import random

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)

from tipkit._judge import ErrorRateCheck, MeanCheck, RateCheck
from tipkit._judge._otel import HistogramSource
from tipkit.flags import Flags, InMemoryProvider
from tipkit.rollout import Rollout
from tipkit.stores import MemoryStore
from tipkit.testing import FakeClock

VARIANT = "feature_flag.result.variant"
BOUNDS = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0)


def _app(exponential: bool = False) -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    aggregation = (
        ExponentialBucketHistogramAggregation()
        if exponential
        else ExplicitBucketHistogramAggregation(BOUNDS)
    )
    provider = MeterProvider(
        metric_readers=[reader],
        views=[View(instrument_name="checkout.value", aggregation=aggregation)],
    )
    return provider, reader


def _rollout(checks: list, name: str = "otel-kpi") -> Rollout:
    clock = FakeClock()
    flags = Flags(InMemoryProvider(), store=MemoryStore(clock=clock), clock=clock)
    return Rollout(
        name,
        flags=flags,
        stages=[50, 100],
        min_samples=100,
        min_stage_duration=0.0,
        checks=checks,
        clock=clock,
    )


def _counts(rollout: Rollout, index: int) -> tuple[int, float, int, float]:
    v = rollout.status().verdict
    assert v is not None
    r = v.checks[index]
    return (r.canary_count, r.canary_bad, r.control_count, r.control_bad)


def test_a_mean_gets_exact_counts_and_sums_and_each_value_once() -> None:
    """Two polls of a cumulative histogram: exact count and sum per arm, never twice."""
    provider, reader = _app()
    hist = provider.get_meter("shop").create_histogram("checkout.value")
    rollout = _rollout(
        [ErrorRateCheck(), MeanCheck("order_value", higher_is_better=True)]
    )
    source = HistogramSource(rollout, reader, "checkout.value", metric="order_value")
    rng = random.Random(3)
    sums = {"canary": [0, 0.0], "control": [0, 0.0]}
    fed = 0
    for _ in range(2):
        for _ in range(300):
            arm = "canary" if rng.random() < 0.5 else "control"
            value = round(rng.uniform(5, 120), 2)
            hist.record(value, {VARIANT: arm, "http.route": "/checkout"})
            sums[arm][0] += 1
            sums[arm][1] += value
        hist.record(999.0, {VARIANT: "unjudged"})  # neither arm: ignored
        fed += source.poll()
    assert 600 == fed
    canary_n, canary_sum, control_n, control_sum = _counts(rollout, 1)
    assert (sums["canary"][0], sums["control"][0]) == (canary_n, control_n)
    assert sums["canary"][1] == pytest.approx(canary_sum)
    assert sums["control"][1] == pytest.approx(control_sum)
    assert 0 == source.poll()  # nothing new
    provider.shutdown()


def test_the_histogram_variance_is_an_upper_bound_so_bounds_are_wider() -> None:
    """The same values fed one by one give a narrower interval than their histogram."""
    provider, reader = _app()
    hist = provider.get_meter("shop").create_histogram("checkout.value")
    check = MeanCheck("order_value", higher_is_better=True)
    by_hist = _rollout([check], "otel-hist")
    exact = _rollout([check], "otel-exact")
    source = HistogramSource(by_hist, reader, "checkout.value", metric="order_value")
    rng = random.Random(5)
    for _ in range(2_000):
        canary = rng.random() < 0.5
        value = rng.gauss(50, 12)
        hist.record(value, {VARIANT: "canary" if canary else "control"})
        exact._local.judge.record_value(canary, "order_value", value)
    source.poll()
    h = by_hist.status().verdict.checks[0]
    e = exact.evaluate() or exact._local.judge.evaluate(0.0)
    x = e.checks[0]
    assert h.difference == pytest.approx(x.difference)
    assert h.upper - h.lower > x.upper - x.lower
    assert h.lower <= x.lower
    assert h.upper >= x.upper
    provider.shutdown()


def test_a_rate_above_a_boundary_is_exact_and_a_drop_rolls_back() -> None:
    """Share of orders above 50: exact from the buckets; a canary that halves it fails."""
    provider, reader = _app()
    hist = provider.get_meter("shop").create_histogram("checkout.value")
    rollout = _rollout([RateCheck("big_order", higher_is_better=True)], "otel-rate")
    source = HistogramSource(
        rollout,
        reader,
        "checkout.value",
        metric="big_order",
        above=50.0,
        where={"http.route": "/checkout"},
    )
    rng = random.Random(11)
    big = {True: 0, False: 0}
    n = {True: 0, False: 0}
    for _ in range(4_000):
        canary = rng.random() < 0.5
        value = (
            rng.uniform(51, 100) if rng.random() < (0.2 if canary else 0.4) else 30.0
        )
        hist.record(
            value,
            {VARIANT: "canary" if canary else "control", "http.route": "/checkout"},
        )
        hist.record(75.0, {VARIANT: "canary", "http.route": "/other"})  # filtered out
        n[canary] += 1
        big[canary] += value > 50
    source.poll()
    status = rollout.status()
    assert "rolled_back" == status.status
    r = status.verdict.checks[0]
    assert (n[True], big[True], n[False], big[False]) == (
        r.canary_count,
        r.canary_bad,
        r.control_count,
        r.control_bad,
    )
    provider.shutdown()


def test_an_exponential_histogram_feeds_a_mean() -> None:
    """Exponential buckets (rescaling as values spread): exact counts and sums."""
    provider, reader = _app(exponential=True)
    hist = provider.get_meter("shop").create_histogram("checkout.value")
    rollout = _rollout([MeanCheck("checkout.value")], "otel-exp")
    source = HistogramSource(rollout, reader, "checkout.value")
    total = {"canary": 0.0, "control": 0.0}
    for i in range(1, 401):
        arm = "canary" if i % 2 else "control"
        value = 0.5 * i if i < 200 else 40.0 * i  # the second half rescales
        hist.record(value, {VARIANT: arm})
        total[arm] += value
        if i == 200:
            source.poll()
    source.poll()
    canary_n, canary_sum, control_n, control_sum = _counts(rollout, 0)
    assert (200, 200) == (canary_n, control_n)
    assert total["canary"] == pytest.approx(canary_sum)
    assert total["control"] == pytest.approx(control_sum)
    assert math.isfinite(rollout.status().verdict.checks[0].upper)
    provider.shutdown()


def test_misconfigurations_are_refused_where_the_source_is_made() -> None:
    """No fed check, a rate without above=, a capped mean: ValueError naming it."""
    reader = InMemoryMetricReader()
    with pytest.raises(ValueError, match="no check fed by 'nope'"):
        HistogramSource(_rollout([ErrorRateCheck()], "otel-bad1"), reader, "nope")
    with pytest.raises(ValueError, match="give above="):
        HistogramSource(_rollout([RateCheck("r")], "otel-bad2"), reader, "r")
    with pytest.raises(ValueError, match="cannot cap"):
        HistogramSource(_rollout([MeanCheck("m", upper=5.0)], "otel-bad3"), reader, "m")
    source = HistogramSource(_rollout([MeanCheck("m")], "otel-ok"), reader, "m")
    assert "<HistogramSource 'm' -> 'm'" in repr(source)
    assert 0 == source.poll()


def test_a_rate_threshold_between_boundaries_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """above=55 splits a bucket: the point is skipped (no evidence), and it says so."""
    provider, reader = _app()
    hist = provider.get_meter("shop").create_histogram("checkout.value")
    rollout = _rollout([RateCheck("big", higher_is_better=True)], "otel-skip")
    source = HistogramSource(
        rollout, reader, "checkout.value", metric="big", above=55.0
    )
    hist.record(57.0, {VARIANT: "canary"})
    with caplog.at_level("WARNING", logger="tipkit"):
        assert 0 == source.poll()
    assert "not a bucket boundary" in caplog.text
    provider.shutdown()
