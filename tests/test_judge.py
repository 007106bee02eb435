import copy
import json
import math
import pickle
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tipkit._judge import (
    FAIL,
    INCONCLUSIVE,
    MIN_OUTCOMES_TO_FAIL,
    PASS,
    CanaryGuard,
    CheckResult,
    ErrorRate,
    ErrorRateCheck,
    GuardResult,
    Judge,
    LatencyCheck,
    LatencyGuard,
    MeanCheck,
    MetricCheck,
    RateCheck,
    confidence_halfwidth,
    optimal_tau,
    srm_log_evidence,
)


def log_mixture_ratio(d_hat: float, d0: float, info: float, tau: float) -> float:
    """Log of the normal-mixture likelihood ratio, written out independently."""
    u = tau * tau * info
    return -0.5 * math.log1p(u) + tau * tau * info * info * (d_hat - d0) ** 2 / (
        2 * (1 + u)
    )


def feed(judge: Judge, canary: bool, n: int, bad: int, latency: float = 0.0) -> None:
    """Record n outcomes of one arm, the first `bad` of them errors."""
    for i in range(n):
        judge.record(canary, i < bad, latency)


# ------------------------------------------------------------------ the maths


def test_halfwidth_matches_a_hand_computed_value():
    """At I = 10,000, tau = 0.01 (u = 1), alpha = 0.01 the width is sqrt(2(2 ln 100 + ln 2))/100."""
    assert confidence_halfwidth(10_000, 0.01, 0.01) == pytest.approx(
        0.0445050279239, rel=1e-10
    )


def test_halfwidth_is_infinite_without_information():
    """No information, no bound."""
    assert math.inf == confidence_halfwidth(0.0, 0.01, 0.01)


def test_halfwidth_inverts_the_mixture_sprt_at_one_over_alpha():
    """The interval's edge is exactly where the mixture likelihood ratio reaches 1/alpha."""
    info, tau, alpha, d_hat = 50_000.0, 0.0075, 0.01, 0.004
    w = confidence_halfwidth(info, tau, alpha)
    assert math.log(1 / alpha) == pytest.approx(
        log_mixture_ratio(d_hat, d_hat - w, info, tau), rel=1e-12
    )
    assert log_mixture_ratio(d_hat, d_hat - 0.99 * w, info, tau) < math.log(1 / alpha)


def test_optimal_tau_minimises_the_width_where_it_reaches_delta():
    """With the optimal tau the width equals delta at some I, and any other tau is wider there."""
    delta, alpha = 0.01, 0.01
    tau = optimal_tau(delta, alpha)
    u = 2 * math.log(100)
    for _ in range(60):
        u = 2 * math.log(100) + math.log1p(u)
    info = u / tau**2
    assert delta == pytest.approx(confidence_halfwidth(info, tau, alpha), rel=1e-9)
    for other in (0.5 * tau, 0.9 * tau, 1.1 * tau, 2 * tau):
        assert confidence_halfwidth(info, other, alpha) > delta
    assert pytest.approx(tau, abs=1e-5) == 0.0096  # about 0.96 delta at alpha = 0.01


def test_default_error_tau_is_within_two_percent_of_optimal_for_half_to_one_point():
    """Tau = 0.0075 loses at most ~2 % of width against the optimum for 0.5 and 1 point."""
    alpha = 0.01
    for delta in (0.005, 0.01):
        best = optimal_tau(delta, alpha)
        u = 2 * math.log(100)
        for _ in range(60):
            u = 2 * math.log(100) + math.log1p(u)
        info = u / best**2
        ratio = confidence_halfwidth(info, 0.0075, alpha) / delta
        assert ratio >= 1.0
        assert ratio < 1.02


@given(
    st.floats(1.0, 1e7), st.floats(1.0, 1e7), st.floats(1e-4, 0.2), st.floats(1e-4, 0.2)
)
def test_halfwidth_shrinks_as_information_grows(a, b, tau, alpha):
    """More information never widens the interval."""
    lo, hi = sorted((a, b))
    assert confidence_halfwidth(hi, tau, alpha) <= confidence_halfwidth(lo, tau, alpha)


def test_srm_evidence_matches_closed_forms():
    """Beta(1,1) mixture: 2 of 2 at q=0.5 gives (1/3)/(1/4) = 4/3; 1 of 1 gives 1."""
    assert math.log(4 / 3) == pytest.approx(srm_log_evidence(2, 2, 0.5, 2.0), abs=1e-12)
    assert pytest.approx(srm_log_evidence(1, 1, 0.5, 2.0), abs=1e-12) == 0.0


@pytest.mark.parametrize(("n", "q", "k"), [(20, 0.5, 1000.0), (30, 0.05, 100.0)])
def test_srm_evidence_has_expectation_one_under_the_configured_split(n, q, k):
    """E[e-value] = 1 exactly under Binomial(n, q): it is a test martingale."""
    total = sum(
        math.comb(n, c)
        * q**c
        * (1 - q) ** (n - c)
        * math.exp(srm_log_evidence(c, n, q, k))
        for c in range(n + 1)
    )
    assert pytest.approx(total, rel=1e-9) == 1.0


# ------------------------------------------------------------------ metric checks


def test_checks_validate_and_describe_themselves():
    """Bad settings raise naming the argument; repr and labels show the config."""
    with pytest.raises(ValueError, match="max_increase"):
        ErrorRateCheck(max_increase=1.5)
    with pytest.raises(TypeError, match="max_increase"):
        ErrorRateCheck(max_increase="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        LatencyCheck(threshold=0.0)
    with pytest.raises(ValueError, match="tau"):
        ErrorRateCheck(tau=-1.0)
    assert repr(ErrorRateCheck()) == "ErrorRateCheck(max_increase=0.0, tau=0.0095)"
    assert LatencyCheck().describe() == "latency>0.25s"
    assert LatencyCheck(0.25, 0.02) == LatencyCheck()
    assert len({ErrorRateCheck(), ErrorRateCheck(), LatencyCheck()}) == 2
    with pytest.raises(AttributeError, match="immutable"):
        ErrorRateCheck().max_increase = 0.5  # type: ignore[misc]


def test_latency_check_counts_requests_slower_than_the_threshold():
    """Slow means strictly above the threshold, errors or not."""
    g = LatencyCheck(threshold=0.1)
    assert (
        g.is_bad(False, 0.05),
        g.is_bad(False, 0.1),
        g.is_bad(False, 0.2),
        g.is_bad(True, 0.2),
    ) == (False, False, True, True)


def test_the_old_guard_names_are_aliases_of_the_metric_checks():
    """ErrorRate, LatencyGuard, CanaryGuard and GuardResult are the renamed classes."""
    assert (ErrorRate, LatencyGuard, CanaryGuard, GuardResult) == (
        ErrorRateCheck,
        LatencyCheck,
        MetricCheck,
        CheckResult,
    )
    j = Judge([ErrorRate(), LatencyGuard()], min_samples=10)
    j.start_stage(0.5, 0.0)
    feed(j, True, 200, 20)
    feed(j, False, 200, 2)
    v = j.evaluate(0.0)
    assert v.checks == v.guards
    assert v.checks[0].check is v.checks[0].guard
    assert (ErrorRateCheck(), LatencyCheck()) == j.guards == j.checks
    assert "LatencyCheck(threshold=0.25" in repr(LatencyGuard())


def test_judge_validates_its_arguments():
    """Each bad argument is named in the error."""
    with pytest.raises(ValueError, match="at least one metric check"):
        Judge([])
    with pytest.raises(TypeError, match="metric checks"):
        Judge([object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="confidence"):
        Judge([ErrorRateCheck()], confidence=1.0)
    with pytest.raises(ValueError, match="min_samples"):
        Judge([ErrorRateCheck()], min_samples=0)
    with pytest.raises(ValueError, match="min_stage_duration"):
        Judge([ErrorRateCheck()], min_stage_duration=-1)
    with pytest.raises(ValueError, match="check_ratio"):
        Judge([ErrorRateCheck()], check_ratio=2)
    with pytest.raises(ValueError, match="eager"):
        Judge([ErrorRateCheck()], eager=-1)
    j = Judge([ErrorRateCheck()])
    with pytest.raises(RuntimeError, match="start_stage"):
        j.record(True, False, 0.0)
    with pytest.raises(RuntimeError, match="start_stage"):
        j.evaluate(0.0)
    with pytest.raises(ValueError, match="share"):
        j.start_stage(1.0, 0.0)


# ------------------------------------------------------------------ verdict rules


def test_no_fail_before_one_hundred_outcomes_per_arm():
    """A glaring difference waits for 100 outcomes per arm, then fails at once."""
    j = Judge([ErrorRateCheck()], min_samples=10)
    j.start_stage(0.5, 0.0)
    feed(j, False, 1000, 0)
    feed(j, True, MIN_OUTCOMES_TO_FAIL - 1, MIN_OUTCOMES_TO_FAIL - 1)
    v = j.evaluate(1.0)
    assert v.decision == INCONCLUSIVE
    assert v.checks[0].lower > 0.0
    j.record(True, True, 0.0)
    v = j.evaluate(1.0)
    assert v.decision == FAIL
    assert (
        v.checks[0].canary_count,
        v.checks[0].canary_bad,
        v.checks[0].control_count,
        v.checks[0].control_bad,
    ) == (100, 100, 1000, 0)
    assert "error_rate" in v.reason
    assert (v.checks[0],) == v.failed


def test_fail_respects_max_increase():
    """A proven increase smaller than the allowance does not fail."""
    strict = Judge([ErrorRateCheck(0.0)], min_samples=10)
    lenient = Judge([ErrorRateCheck(0.10)], min_samples=10)
    for j in (strict, lenient):
        j.start_stage(0.5, 0.0)
        feed(j, False, 5000, 50)
        feed(j, True, 5000, 250)
    assert strict.evaluate(0.0).decision == FAIL
    r = lenient.evaluate(0.0)
    assert r.decision != FAIL
    assert 0.0 < r.checks[0].lower < 0.10 < r.checks[0].upper + 0.10


def test_pass_needs_duration_and_samples_per_arm():
    """PASS only once the stage ran min_stage_duration with min_samples in each arm."""
    j = Judge(
        [ErrorRateCheck(pass_below=0.1)], min_samples=200, min_stage_duration=60.0
    )
    j.start_stage(0.5, 100.0)
    feed(j, True, 199, 2)
    feed(j, False, 250, 2)
    v = j.evaluate(1000.0)
    assert (v.decision, v.stage_canary, v.stage_control) == (INCONCLUSIVE, 199, 250)
    assert "200 outcomes per arm" in v.reason
    j.record(True, False, 0.0)
    v = j.evaluate(159.0)
    assert v.decision == INCONCLUSIVE
    assert "60s" in v.reason
    v = j.evaluate(160.0)
    assert (v.decision, v.stage_elapsed) == (PASS, 60.0)


def test_latency_check_fails_on_a_slower_canary_and_error_check_does_not():
    """Each check judges its own bad outcome; the verdict names the one that failed."""
    j = Judge([ErrorRateCheck(), LatencyCheck(threshold=0.25, max_increase=0.02)])
    j.start_stage(0.5, 0.0)
    rng = random.Random(7)
    for _ in range(4000):
        j.record(False, False, 0.3 if rng.random() < 0.05 else 0.1)
        j.record(True, False, 0.3 if rng.random() < 0.20 else 0.1)
    v = j.evaluate(0.0)
    assert v.decision == FAIL
    assert [g.failed for g in v.checks] == [False, True]
    assert "latency>0.25s" in v.reason


def test_sample_ratio_mismatch_refuses_pass():
    """A 45/55 split where 50/50 was configured is flagged and the stage never passes."""
    j = Judge([ErrorRateCheck()], min_samples=100, min_stage_duration=0.0)
    j.start_stage(0.5, 0.0)
    feed(j, True, 4500, 0)
    feed(j, False, 5500, 0)
    v = j.evaluate(10.0)
    assert v.sample_ratio.mismatch
    assert v.decision == INCONCLUSIVE
    assert "sample ratio mismatch" in v.reason
    assert v.sample_ratio.observed == 0.45


def test_sample_ratio_mismatch_latches_across_stages():
    """Once proven broken, assignment stays flagged in later stages."""
    j = Judge([ErrorRateCheck()], min_samples=10, min_stage_duration=0.0)
    j.start_stage(0.5, 0.0)
    feed(j, True, 4000, 0)
    feed(j, False, 6000, 0)
    assert j.evaluate(0.0).sample_ratio.mismatch
    j.start_stage(0.25, 0.0)
    feed(j, True, 250, 0)
    feed(j, False, 750, 0)
    v = j.evaluate(0.0)
    assert (v.sample_ratio.mismatch, v.decision) == (True, INCONCLUSIVE)


def test_sample_ratio_check_is_quiet_under_correct_assignment():
    """A/A on assignment: Bernoulli(0.05) assignment is flagged in at most 3 of 100 seeds."""
    flagged = 0
    for seed in range(100):
        rng = random.Random(seed)
        j = Judge([ErrorRateCheck()], check_ratio=0.0, eager=0)
        j.start_stage(0.05, 0.0)
        for _ in range(4000):
            if j.record(rng.random() < 0.05, False, 0.0) and j.sample_ratio().mismatch:
                flagged += 1
                break
    assert flagged <= 3


def test_sample_ratio_check_detects_a_small_share_lost():
    """Configured 5 % but served 4 %: flagged in all 20 seeds within 60,000 requests."""
    detected = 0
    for seed in range(20):
        rng = random.Random(seed)
        j = Judge([ErrorRateCheck()])
        j.start_stage(0.05, 0.0)
        for _ in range(60_000):
            if j.record(rng.random() < 0.04, False, 0.0) and j.sample_ratio().mismatch:
                detected += 1
                break
    assert detected == 20


def test_stages_are_strata_so_a_baseline_shift_is_not_blamed_on_the_canary():
    """Equal arms within each stage: no FAIL, though pooled rates differ (Simpson's paradox)."""
    j = Judge([ErrorRateCheck()], min_samples=10, min_stage_duration=0.0)
    j.start_stage(0.05, 0.0)
    feed(j, False, 19_000, 190)
    feed(j, True, 1_000, 10)
    j.start_stage(0.5, 0.0)
    feed(j, False, 5_000, 500)
    feed(j, True, 5_000, 500)
    v = j.evaluate(0.0)
    g = v.checks[0]
    assert g.canary_rate - g.control_rate > 0.05  # pooled: 8.5 % vs 2.9 %
    assert pytest.approx(g.difference, abs=1e-12) == 0.0
    assert g.lower < 0.0 < g.upper
    assert v.decision == INCONCLUSIVE  # 10 % errors: the 1.5 pp margin needs more
    assert "within its margin" in v.reason


def test_evidence_carries_over_stages():
    """Two stages with the same increase give a narrower interval than the last alone."""
    both = Judge([ErrorRateCheck()], min_samples=10)
    last = Judge([ErrorRateCheck()], min_samples=10)
    both.start_stage(0.25, 0.0)
    feed(both, False, 6000, 60)
    feed(both, True, 2000, 40)
    for j in (both, last):
        j.start_stage(0.5, 0.0)
        feed(j, False, 2000, 20)
        feed(j, True, 2000, 40)
    w_both = both.evaluate(0).checks[0]
    w_last = last.evaluate(0).checks[0]
    assert (w_both.upper - w_both.lower) < (w_last.upper - w_last.lower)
    assert (w_both.canary_count, w_both.canary_bad) == (4000, 80)


def test_checkpoints_are_every_outcome_then_geometric():
    """record() asks for evaluation on each of the first `eager` outcomes, then every ~1 %."""
    j = Judge([ErrorRateCheck()], eager=100, check_ratio=0.01)
    j.start_stage(0.5, 0.0)
    due = [j.record(i % 2 == 0, False, 0.0) for i in range(100_000)]
    assert all(due[:100])
    count = sum(due)
    assert 100 < count < 1000  # geometric growth of 1 %: under 1 % of 100,000 outcomes
    every = Judge([ErrorRateCheck()], check_ratio=0.0, eager=0)
    every.start_stage(0.5, 0.0)
    assert all(every.record(True, False, 0.0) for _ in range(500))


def test_state_round_trips_through_json():
    """to_state/load_state restore the same verdict, through JSON, in a new judge."""
    j = Judge(
        [ErrorRateCheck(), LatencyCheck()], min_samples=10, min_stage_duration=5.0
    )
    j.start_stage(0.05, 1000.0)
    feed(j, False, 3000, 30, latency=0.3)
    feed(j, True, 150, 3)
    j.start_stage(0.25, 2000.0)
    feed(j, False, 300, 3)
    feed(j, True, 100, 9)
    saved = json.loads(json.dumps(j.to_state()))
    k = Judge(
        [ErrorRateCheck(), LatencyCheck()], min_samples=10, min_stage_duration=5.0
    )
    k.load_state(saved)
    assert j.evaluate(2010.0) == k.evaluate(2010.0)
    assert k.stages == 2
    with pytest.raises(ValueError, match="different checks"):
        Judge([ErrorRateCheck()]).load_state(saved)
    with pytest.raises(ValueError, match="malformed"):
        Judge([ErrorRateCheck()]).load_state({"strata": [{"share": 0.5}]})


def test_set_stage_counts_replaces_the_current_stage_only():
    """Totals counted elsewhere replace the current stage; earlier stages are kept."""
    fed = Judge([ErrorRateCheck(), LatencyCheck()], min_samples=10)
    given = Judge([ErrorRateCheck(), LatencyCheck()], min_samples=10)
    for j in (fed, given):
        j.start_stage(0.05, 0.0)
        feed(j, False, 2000, 20)
        feed(j, True, 120, 3)
        j.start_stage(0.5, 10.0)
    feed(fed, False, 300, 3, latency=0.3)
    feed(fed, True, 310, 12)
    feed(given, False, 7, 7)  # replaced below
    given.set_stage_counts([300, 310], [[3, 300], [12, 0]])
    assert fed.evaluate(20.0) == given.evaluate(20.0)
    assert fed.to_state() == given.to_state()
    assert given.record(True, False, 0.0)  # the next outcome is a checkpoint


def test_set_stage_counts_refuses_bad_shapes():
    """Counts must match two arms and the checks, be counts, and follow a started stage."""
    j = Judge([ErrorRateCheck()])
    with pytest.raises(RuntimeError, match="start_stage"):
        j.set_stage_counts([1, 1], [[0], [0]])
    j.start_stage(0.5, 0.0)
    with pytest.raises(ValueError, match="1 checks per arm"):
        j.set_stage_counts([1, 1], [[0, 0], [0, 0]])
    with pytest.raises(ValueError, match=">= 0"):
        j.set_stage_counts([1, -1], [[0], [0]])


def test_verdict_as_dict_is_json_and_repr_shows_state():
    """Verdicts serialise for the store and events; infinite bounds become null."""
    j = Judge([ErrorRateCheck()])
    j.start_stage(0.5, 0.0)
    j.record(True, False, 0.0)
    d = json.loads(json.dumps(j.evaluate(0.0).as_dict()))
    # The stored format keeps its keys: histories already in stores read the same.
    assert (d["guards"][0]["lower"], d["guards"][0]["guard"]) == (None, "error_rate")
    assert "stages=1 share=0.5 outcomes=1" in repr(j)
    assert (ErrorRateCheck(),) == j.checks


# ------------------------------------------------------------------ simulations


def simulate(p_control, p_canary, seed, per_arm, share=0.5):
    """Return the canary count at the first FAIL, or None (default amortised checks)."""
    rng = random.Random(seed)
    j = Judge([ErrorRateCheck()], min_samples=10**9)
    j.start_stage(share, 0.0)
    canary = 0
    while canary < per_arm:
        c = rng.random() < share
        canary += c
        failed = rng.random() < (p_canary if c else p_control)
        if j.record(c, failed, 0.0) and j.evaluate(0.0).decision == FAIL:
            return canary
    return None


def test_aa_simulation_rarely_rolls_back():
    """A/A at 2 % errors, 60 seeded runs of 3,000 per arm: at most 2 false FAILs (alpha 1 %)."""
    fails = sum(simulate(0.02, 0.02, seed, 3000) is not None for seed in range(60))
    assert fails <= 2


def test_ab_simulation_detects_a_doubled_error_rate():
    """1 % -> 3 % errors: every one of 20 seeded runs rolls back within 3,000 per arm."""
    stops = [simulate(0.01, 0.03, seed, 3000) for seed in range(20)]
    assert all(s is not None for s in stops)
    assert sorted(s for s in stops if s is not None)[10] < 2000


def test_ab_simulation_at_a_small_canary_share():
    """At a 5 % canary share, 1 % -> 4 % is caught in all 10 runs within 2,000 canary requests."""
    stops = [simulate(0.01, 0.04, seed, 2000, share=0.05) for seed in range(10)]
    assert all(s is not None for s in stops)


def test_pass_below_requires_evidence_of_no_harm():
    """With pass_below, a stage passes only once the upper bound is below the margin."""
    j = Judge(
        [ErrorRateCheck(pass_below=0.01)], min_samples=100, min_stage_duration=0.0
    )
    j.start_stage(0.5, 0.0)
    feed(j, True, 1000, 10)
    feed(j, False, 1000, 10)
    v = j.evaluate(0.0)
    assert v.decision == INCONCLUSIVE
    assert "upper bound 0.01" in v.reason
    assert ">= margin 0.01" in v.reason
    feed(j, True, 9000, 90)
    feed(j, False, 9000, 90)
    v = j.evaluate(0.0)
    assert v.checks[0].upper < 0.01
    assert v.decision == PASS
    assert repr(ErrorRateCheck(pass_below=0.01)).endswith("pass_below=0.01)")
    assert ErrorRateCheck(pass_below=0.01) != ErrorRateCheck()
    with pytest.raises(ValueError, match="pass_below"):
        LatencyCheck(pass_below=0.0)
    with pytest.raises(ValueError, match="above max_increase"):
        ErrorRateCheck(max_increase=0.02, pass_below=0.01)


@given(
    st.lists(
        st.tuples(st.integers(0, 400), st.integers(0, 400), st.floats(0.0, 1.0)),
        min_size=1,
        max_size=3,
    ),
    st.floats(0.0, 0.2),
)
def test_verdict_invariants_hold_for_any_counts(stages, max_increase):
    """Bounds bracket the estimate; FAIL iff a lower bound beats max_increase with 100 per arm."""
    j = Judge([ErrorRateCheck(max_increase)], min_samples=1, min_stage_duration=0.0)
    for n_canary, n_control, rate in stages:
        j.start_stage(0.5, 0.0)
        feed(j, True, n_canary, int(n_canary * rate))
        feed(j, False, n_control, int(n_control * (1 - rate)))
    v = j.evaluate(0.0)
    g = v.checks[0]
    assert g.lower <= g.difference <= g.upper
    enough = min(g.canary_count, g.control_count) >= MIN_OUTCOMES_TO_FAIL
    assert (v.decision == FAIL) == (enough and g.lower > max_increase)
    if v.decision == PASS:
        assert min(v.stage_canary, v.stage_control) >= MIN_OUTCOMES_TO_FAIL


@pytest.mark.parametrize(
    "check",
    [
        ErrorRateCheck(),
        LatencyCheck(threshold=0.25, max_increase=0.02, dry_run=True),
        RateCheck("conversion", max_increase=0.01, higher_is_better=True),
        MeanCheck("basket", max_increase=2.0, lower=0.0, upper=500.0),
    ],
    ids=repr,
)
def test_a_check_survives_pickle_and_copy_and_stays_immutable(
    check: MetricCheck,
) -> None:
    """Checks cross process boundaries (pickle) and copy.deepcopy, and stay immutable."""
    for twin in (pickle.loads(pickle.dumps(check)), copy.deepcopy(check)):  # noqa: S301  # our own bytes
        assert check == twin
        assert repr(check) == repr(twin)
        with pytest.raises(AttributeError, match="immutable"):
            twin.max_increase = 0.5  # type: ignore[misc]
