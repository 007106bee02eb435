"""Invariants over random configurations: dry runs never act, SRM blocks PASS."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tipkit._judge import (
    PASS,
    ErrorRateCheck,
    Judge,
    LatencyCheck,
    MeanCheck,
    MetricCheck,
    RateCheck,
)

acting = st.sampled_from(
    [
        ErrorRateCheck(),
        ErrorRateCheck(max_increase=0.01, pass_below=0.05),
        LatencyCheck(threshold=0.1),
        RateCheck("conversion", higher_is_better=True),
    ]
)
dry = st.sampled_from(
    [
        ErrorRateCheck(dry_run=True),
        LatencyCheck(threshold=0.05, max_increase=0.0, dry_run=True),
        MeanCheck("latency", dry_run=True, upper=1.0),
        RateCheck("refund", dry_run=True),
    ]
)
stage_counts = st.lists(
    st.tuples(
        st.sampled_from([0.01, 0.05, 0.25, 0.5]),  # share
        st.integers(0, 20_000),  # control outcomes
        st.integers(0, 20_000),  # canary outcomes
        st.floats(0.0, 0.4),  # control bad share
        st.floats(0.0, 0.4),  # canary bad share
    ),
    min_size=1,
    max_size=4,
)


def _judge(checks: list[MetricCheck], stages, min_samples: int) -> Judge:
    judge = Judge(checks, min_samples=min_samples, min_stage_duration=0.0)
    k = len(checks)
    for share, nt, nc, bt, bc in stages:
        judge.start_stage(share, 0.0)
        bad = [[round(nt * bt)] * k, [round(nc * bc)] * k]
        sq = [
            [
                float(b) if c.binary else float(b) * 0.5
                for b, c in zip(row, checks, strict=True)
            ]
            for row in bad
        ]
        judge.set_stage_counts([nt, nc], bad, cnt=[[nt] * k, [nc] * k], sq=sq)
    return judge


@settings(max_examples=300, deadline=None)
@given(
    st.lists(acting, min_size=1, max_size=3),
    st.lists(dry, min_size=1, max_size=3),
    stage_counts,
    st.sampled_from([100, 1_000]),
    st.data(),
)
def test_dry_run_checks_never_change_the_decision(
    act: list[MetricCheck],
    dry_checks: list[MetricCheck],
    stages,
    min_samples: int,
    data,
) -> None:
    """Adding dry-run checks anywhere in the list never changes decision or failed checks."""
    order = data.draw(st.permutations([*act, *dry_checks]))
    with_dry = _judge(order, stages, min_samples).evaluate(0.0)
    acting_only = [c for c in order if not c.dry_run]
    without = _judge(acting_only, stages, min_samples).evaluate(0.0)
    assert without.decision == with_dry.decision
    assert [r.check for r in without.failed] == [r.check for r in with_dry.failed]
    assert all(not r.check.dry_run for r in with_dry.failed)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(acting, min_size=1, max_size=2),
    stage_counts,
    st.sampled_from([100, 1_000]),
)
def test_a_sample_ratio_mismatch_never_passes(
    checks: list[MetricCheck], stages, min_samples: int
) -> None:
    """Whatever the counts: once the sample-ratio check flags a mismatch, never PASS."""
    verdict = _judge(checks, stages, min_samples).evaluate(0.0)
    if verdict.sample_ratio.mismatch:
        assert PASS != verdict.decision
    if verdict.decision == PASS:
        assert all(r.passed for r in verdict.checks if not r.check.dry_run)
        assert min(verdict.stage_canary, verdict.stage_control) >= min_samples


@settings(max_examples=50, deadline=None)
@given(st.sampled_from([0.05, 0.25, 0.5]), st.integers(2_000, 50_000))
def test_a_grossly_broken_split_is_always_flagged(share: float, n: int) -> None:
    """Half the configured canary share over thousands of requests: mismatch, no PASS."""
    judge = Judge(
        [ErrorRateCheck(pass_below=0.5)], min_samples=100, min_stage_duration=0.0
    )
    judge.start_stage(share, 0.0)
    canary = int(n * share / 2)
    judge.set_stage_counts([n - canary, canary], [[0], [0]])
    verdict = judge.evaluate(0.0)
    assert (True, "INCONCLUSIVE") == (verdict.sample_ratio.mismatch, verdict.decision)
