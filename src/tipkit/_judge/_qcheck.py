"""A latency quantile check: canary p95 against control p95, with always-valid bounds.

Each arm's request latencies go into a :class:`tipkit._quantile.QuantileSketch`
(buckets 2 % apart). The time-uniform DKW inequality
(:func:`tipkit._quantile.uniform_cdf_radius`, Howard & Ramdas 2022) bounds the
distance between an arm's empirical and true distribution functions by
``eps(n)`` at every sample size at once, with probability ``1 - alpha/2`` per
arm, whatever the latencies' distribution. Then the true ``q``-quantile lies
between the sample's ``(q - eps)`` and ``(q + eps)`` quantiles, and reading
those from the sketch as the lower and upper edges of their buckets only
widens the interval. With ``d = Q_canary / Q_control - 1`` (relative
worsening of the quantile)::

    lower = low(canary, q - eps_c) / high(control, q + eps_t) - 1
    upper = high(canary, q + eps_c) / low(control, q - eps_t) - 1

both hold at all times with probability ``1 - alpha`` (a union bound over the
two arms): FAIL when ``lower > max_increase``, PASS when ``upper < margin``,
each at error rate ``alpha`` or less, however often it is looked at.

The price of assuming nothing about the distribution: the interval is wide.
At ``q = 0.95`` with log-normal latencies (sigma 0.7) a canary equal to
control needs tens of thousands of requests per arm to show ``upper < 0.25``;
a tail quantile (p99) needs ten times more. :class:`LatencyCheck` (the share
of requests slower than a fixed threshold) needs far fewer and should be the
first choice; use this check where no threshold can be chosen in advance.
Stages are pooled (the quantile of each arm over the whole rollout). The
sketches are this process's only: they are neither saved with the judge's
counts nor summed over a fleet, so with ``fleet_counts`` the check judges
this process's share of the traffic (valid, with fewer samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tipkit._judge._checks import MetricCheck, check_fraction
from tipkit._judge._verdict import CheckResult
from tipkit._quantile import QuantileSketch, uniform_cdf_radius

if TYPE_CHECKING:
    from tipkit._judge._estimate import Stratum

__all__ = ["QuantileCheck", "quantile_result"]

MIN_VALUES: int = 100  # as MIN_OUTCOMES_TO_FAIL (not imported: a cycle)


class QuantileCheck(MetricCheck):
    """Judge a latency quantile: the canary's ``q``-quantile relative to control's.

    Args:
        q: the quantile (``0.95``: p95).
        max_increase: the relative worsening that fails the canary once proven
            (``0.0``: any proven increase; ``0.1``: 10 % slower).
        pass_below: the relative margin a stage must show the canary within
            (default: ``max_increase + 0.25``).
        dry_run: judge and report only.

    ``d`` is ``Q_canary / Q_control - 1``; its bounds are always valid and
    assume nothing about the latencies (see :mod:`tipkit._judge._qcheck`).

    Raises:
        ValueError, TypeError: an argument is out of range or not a number.
    """

    __slots__ = ("q",)
    kind = "quantile"
    q: float

    def __init__(
        self,
        q: float = 0.95,
        *,
        max_increase: float = 0.0,
        pass_below: float | None = None,
        dry_run: bool = False,
    ) -> None:
        quantile = check_fraction(q, "q", low_open=True, high_open=True)
        margin = pass_below
        if margin is None and isinstance(max_increase, int | float):
            margin = float(max_increase) + 0.25
        super().__init__(max_increase, None, margin, dry_run=dry_run, binary=False)
        object.__setattr__(self, "q", quantile)

    def is_bad(self, error: bool, latency: float) -> bool:  # noqa: ARG002  # shared signature
        """Return ``False``: a quantile has values, not bad outcomes."""
        return False

    def value(self, error: bool, latency: float) -> float | None:  # noqa: ARG002
        """Return the request's latency."""
        return latency

    def describe(self) -> str:
        """Return ``latency:p95``."""
        return f"latency:p{self.q * 100:g}"

    def _key(self) -> tuple[object, ...]:
        return (self.q, *super()._key())

    def __repr__(self) -> str:
        return (
            f"QuantileCheck(q={self.q}, max_increase={self.max_increase},"
            f" pass_below={self.pass_below}{', dry_run=True' if self.dry_run else ''})"
        )


def _pooled(strata: Sequence[Stratum], arm: int) -> QuantileSketch:
    out = QuantileSketch()
    for s in strata:
        if s.lat is not None:
            out.merge(s.lat[arm])
    return out


def _ratio(num: float, den: float) -> float:
    if den <= 0.0 or not math.isfinite(num):
        return math.inf
    return num / den - 1.0


def quantile_result(
    check: QuantileCheck, strata: Sequence[Stratum], alpha: float
) -> CheckResult:
    """Return a quantile check's numbers: each arm's quantile, ``d`` and both bounds.

    ``canary_rate``/``control_rate`` are the arms' estimated quantiles (bucket
    midpoints, seconds); ``canary_bad``/``control_bad`` are 0.
    """
    canary, control = _pooled(strata, 1), _pooled(strata, 0)
    q = check.q
    eps_c = uniform_cdf_radius(canary.n, alpha / 2)
    eps_t = uniform_cdf_radius(control.n, alpha / 2)
    c_lo, c_hi = canary.bounds(q)
    t_lo, t_hi = control.bounds(q)
    mid_c = (c_lo + c_hi) / 2 if math.isfinite(c_hi) else c_lo
    mid_t = (t_lo + t_hi) / 2 if math.isfinite(t_hi) else t_lo
    enough = min(canary.n, control.n) >= MIN_VALUES
    if enough:
        lower = _lower(canary.bounds(q - eps_c)[0], control.bounds(q + eps_t)[1])
        upper = _ratio(canary.bounds(q + eps_c)[1], control.bounds(q - eps_t)[0])
    else:
        lower, upper = -math.inf, math.inf
    margin = check.pass_below if check.pass_below is not None else math.inf
    return CheckResult(
        check,
        canary.n,
        0.0,
        control.n,
        0.0,
        mid_c,
        mid_t,
        _ratio(mid_c, mid_t) if mid_t > 0 else 0.0,
        lower,
        upper,
        enough and lower > check.max_increase,
        margin,
        enough and upper < margin,
    )


def _lower(num: float, den: float) -> float:
    if not math.isfinite(den) or den <= 0.0:
        return -1.0  # the canary's quantile is at least 0: d >= -1
    return num / den - 1.0
