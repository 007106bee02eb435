"""One check's numbers over the stages: the stratified estimate and its two bounds.

Pure functions over a rollout's :class:`Stratum` counts (see :mod:`tipkit._judge`
for the statistics and :mod:`._bounds` for the one-sided bounds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from tipkit._judge._bounds import (
    RATE_MARGIN_FLOOR,
    default_margin,
    one_sided_halfwidth,
    one_sided_optimal_tau,
)
from tipkit._judge._checks import MetricCheck
from tipkit._judge._qcheck import QuantileCheck, quantile_result
from tipkit._judge._verdict import CheckResult
from tipkit._quantile import QuantileSketch

__all__ = ["DEFAULT_TAU_SD", "MIN_OUTCOMES_TO_FAIL", "Stratum", "check_result"]

MIN_OUTCOMES_TO_FAIL: Final = 100
"""No metric check fails or passes before each arm has this many values (rollout-wide)."""

DEFAULT_TAU_SD: Final = 0.075
"""The FAIL side's mixture scale when a check gives none, in control standard deviations."""

_VAR_FLOOR: Final = 1e-12


class Stratum:
    """Counts of one stage: outcomes per arm, and per arm and check ``count, sum, sum of squares``.

    Arm 0 is control, arm 1 the canary. For a rate the sum is the number of bad
    outcomes (and equals the sum of squares). With *sketch*, ``lat`` holds each
    arm's latency sketch (for quantile checks).
    """

    __slots__ = ("cnt", "lat", "n", "s1", "s2", "share", "started")

    def __init__(
        self, share: float, started: float, checks: int, *, sketch: bool = False
    ) -> None:
        self.lat = (QuantileSketch(), QuantileSketch()) if sketch else None
        self.share = share
        self.started = started
        self.n = [0, 0]  # [control, canary]: split-assigned outcomes (sample ratio)
        self.cnt = [[0] * checks, [0] * checks]
        self.s1: list[list[float]] = [[0.0] * checks, [0.0] * checks]
        self.s2: list[list[float]] = [[0.0] * checks, [0.0] * checks]


def _arm_variance(binary: bool, cnt: int, s1: float, s2: float) -> float:
    """Return the variance of one arm's mean (``inf`` when it cannot be estimated yet)."""
    if binary:
        if cnt < 1:
            return math.inf
        p = (s1 + 0.5) / (cnt + 1.0)
        return p * (1.0 - p) / cnt
    if cnt < 2:
        return math.inf
    mean = s1 / cnt
    var = max(s2 / cnt - mean * mean, 0.0) * cnt / (cnt - 1.0)
    return (var + _VAR_FLOOR * (1.0 + mean * mean)) / cnt


def _control_sd(binary: bool, cnt: int, s1: float, s2: float) -> float:
    if binary:
        p = min((s1 + 0.5) / (cnt + 1.0), 0.5)
        return math.sqrt(p * (1.0 - p))
    if cnt < 2:
        return math.inf
    mean = s1 / cnt
    var = max(s2 / cnt - mean * mean, 0.0) * cnt / (cnt - 1.0)
    return math.sqrt(var + _VAR_FLOOR * (1.0 + mean * mean))


def check_result(
    i: int, check: MetricCheck, strata: Sequence[Stratum], alpha: float
) -> CheckResult:
    """Return check *i*'s numbers: per-arm totals, the estimate of ``d`` and both bounds.

    ``d`` is how much worse the canary is (``canary - control``, or the
    reverse when higher is better); each stage contributes its difference of
    means weighted by its information. ``failed``: the lower bound exceeds
    ``max_increase``; ``passed``: the upper bound is below the margin; both
    need :data:`MIN_OUTCOMES_TO_FAIL` values per arm.
    """
    if isinstance(check, QuantileCheck):
        return quantile_result(check, strata, alpha)
    binary = check.binary
    sign = -1.0 if check.higher_is_better else 1.0
    nc = sum(s.cnt[1][i] for s in strata)
    nt = sum(s.cnt[0][i] for s in strata)
    xc = sum(s.s1[1][i] for s in strata)
    xt = sum(s.s1[0][i] for s in strata)
    qt = sum(s.s2[0][i] for s in strata)
    rate_c = xc / nc if nc else 0.0
    rate_t = xt / nt if nt else 0.0
    sd = _control_sd(binary, nt, xt, qt)
    if check.pass_below is not None:
        margin = check.pass_below
    elif math.isfinite(sd):
        margin = default_margin(
            check.max_increase, sd, floor=RATE_MARGIN_FLOOR if binary else 0.0
        )
    else:
        margin = math.inf
    info = weighted = info_p = weighted_p = 0.0
    for s in strata:
        n_t, n_c = s.cnt[0][i], s.cnt[1][i]
        x_t, x_c = s.s1[0][i], s.s1[1][i]
        var_t = _arm_variance(binary, n_t, x_t, s.s2[0][i])
        var_c = _arm_variance(binary, n_c, x_c, s.s2[1][i])
        if not math.isfinite(var_c + var_t):
            continue
        d = sign * (x_c / n_c - x_t / n_t)
        info += 1.0 / (var_c + var_t)
        weighted += d / (var_c + var_t)
        if binary and math.isfinite(margin):
            # The PASS side's variance is also taken where the canary would be
            # worse by the margin (a score-test variance): a canary that happens
            # to show few errors must not also claim a small variance.
            p_null = (x_t + 0.5) / (n_t + 1.0) + sign * margin
            p_null = min(max(p_null, 0.5 / (n_c + 1.0)), 1.0 - 0.5 / (n_c + 1.0))
            var_c = max(var_c, p_null * (1.0 - p_null) / n_c)
        info_p += 1.0 / (var_c + var_t)
        weighted_p += d / (var_c + var_t)
    if info > 0.0:
        estimate = weighted / info
        tau_fail = check.tau if check.tau is not None else DEFAULT_TAU_SD * sd
        lower = (
            estimate - one_sided_halfwidth(info, tau_fail, alpha)
            if math.isfinite(tau_fail) and tau_fail > 0.0
            else -math.inf
        )
        distance = margin if math.isfinite(margin) else 0.0
        upper = (
            max(weighted_p / info_p, estimate)  # never below the reported estimate
            + one_sided_halfwidth(info_p, one_sided_optimal_tau(distance, alpha), alpha)
            if distance > 0.0
            else math.inf
        )
    else:
        estimate, lower, upper = sign * (rate_c - rate_t), -math.inf, math.inf
    enough = nc >= MIN_OUTCOMES_TO_FAIL and nt >= MIN_OUTCOMES_TO_FAIL
    return CheckResult(
        check,
        nc,
        _count(xc),
        nt,
        _count(xt),
        rate_c,
        rate_t,
        estimate,
        lower,
        upper,
        lower > check.max_increase and enough,
        margin,
        upper < margin and enough,
    )


def _count(x: float) -> float:
    """Return a sum as an int when it is one (rates count bad outcomes)."""
    r = round(x)
    return r if r == x else x
