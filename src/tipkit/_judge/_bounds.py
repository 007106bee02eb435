"""One-sided always-valid bounds and the default pass margins (pure maths).

The judge keeps two one-sided confidence sequences for ``d``, how much worse
the canary is than control: a *lower* bound (FAIL once it exceeds
``max_increase``) and an *upper* bound (PASS once it is below the margin).
Each is the half-normal mixture of the Gaussian likelihood ratio (Robbins 1970;
Howard, Ramdas, McAuliffe & Sekhon 2021, one-sided normal mixture)::

    M = 2 (1 + u) ** -0.5 * exp(u g**2 / (2 (1 + u))) * Phi(g sqrt(u / (1 + u)))

with ``u = tau**2 * I`` and ``g = (d_hat - d0) * sqrt(I)``. ``M`` is a
non-negative supermartingale for every ``d <= d0`` (the mixing is over
positive shifts only), so by Ville's inequality the bound ``d_hat - g*/sqrt(I)``
where ``M(g*) = 1/alpha`` is below ``d`` at every sample size at once with
probability ``1 - alpha``; the upper bound is its mirror image. The two
statements are separate: P(a false FAIL, ever) <= alpha and P(a PASS while the
canary is worse than the margin, ever) <= alpha.

Mixing over one side only saves about 12 % of the samples of the two-sided
mixture at the same alpha (the boundary is that of the two-sided one at
``2 alpha``, within 0.1 %).
"""

from __future__ import annotations

import functools
import math
from typing import Final

__all__ = [
    "RATE_MARGIN_FLOOR",
    "REFERENCE_MARGIN_SD",
    "default_margin",
    "one_sided_boundary",
    "one_sided_halfwidth",
    "one_sided_optimal_tau",
]

REFERENCE_MARGIN_SD: Final = 0.005 / math.sqrt(0.01 * 0.99)
"""The default pass margin in control standard deviations: 0.5 pp at a 1 % rate.

0.0503 standard deviations. A margin of ``k`` standard deviations costs the
same samples at any baseline (``n`` grows as ``1 / k**2``), so a rate check's
default margin is ``0.5 pp * sqrt(p (1 - p) / (0.01 * 0.99))`` at control rate
``p``: 0.16 pp at 0.1 %, 1.5 pp at 10 %, 2.5 pp at 50 %.
"""

RATE_MARGIN_FLOOR: Final = 0.001
"""The default margin of a rate is never below 0.1 pp above ``max_increase``.

Below a 0.4 % control rate the scaled margin would shrink with the rate (to 0
for a control that never fails), and a canary could then pass only after
hundreds of thousands of requests; 0.1 pp keeps a near-perfect service's stage
to a few thousand canary requests.
"""

_SQRT2: Final = math.sqrt(2.0)
_SQRT2PI: Final = math.sqrt(2.0 * math.pi)


def _log_mixture(g: float, u: float) -> float:
    c = math.sqrt(u / (1.0 + u))
    phi_cdf = 0.5 * math.erfc(-c * g / _SQRT2)
    return (
        math.log(2.0)
        - 0.5 * math.log1p(u)
        + u * g * g / (2.0 * (1.0 + u))
        + math.log(phi_cdf)
    )


def one_sided_boundary(u: float, alpha: float) -> float:
    """Return ``g*``: the one-sided mixture reaches ``1/alpha`` at ``g* sqrt(I)`` of shift.

    *u* is ``tau**2 * I``. Solved by Newton's method from the two-sided
    boundary at ``2 alpha`` (a few steps to 1e-12); infinite at ``u <= 0``.
    """
    if u <= 0.0:
        return math.inf
    target = math.log(1.0 / alpha)
    g = math.sqrt((1.0 + u) * (2.0 * math.log(0.5 / alpha) + math.log1p(u)) / u)
    g = max(g, 1e-6)
    c = math.sqrt(u / (1.0 + u))
    for _ in range(30):
        h = _log_mixture(g, u) - target
        x = c * g
        phi_cdf = 0.5 * math.erfc(-x / _SQRT2)
        dh = u * g / (1.0 + u) + c * math.exp(-0.5 * x * x) / _SQRT2PI / phi_cdf
        step = h / dh
        g -= step
        if g <= 0.0:
            g = 1e-6
        if abs(step) < 1e-12:
            break
    return g


def one_sided_halfwidth(information: float, tau: float, alpha: float) -> float:
    """Return the distance from the estimate to its one-sided bound (``inf`` without data)."""
    if information <= 0.0 or not math.isfinite(information):
        return math.inf
    return one_sided_boundary(tau * tau * information, alpha) / math.sqrt(information)


@functools.cache
def _best_u(alpha: float) -> tuple[float, float]:
    """Return ``(u, g*(u))`` minimising the boundary (golden-section on ``log u``)."""
    lo, hi = math.log(0.5), math.log(200.0)
    r = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - r * (hi - lo), lo + r * (hi - lo)
    fa = one_sided_boundary(math.exp(a), alpha)
    fb = one_sided_boundary(math.exp(b), alpha)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - r * (hi - lo)
            fa = one_sided_boundary(math.exp(a), alpha)
        else:
            lo, a, fa = a, b, fb
            b = lo + r * (hi - lo)
            fb = one_sided_boundary(math.exp(b), alpha)
    u = math.exp((lo + hi) / 2.0)
    return u, one_sided_boundary(u, alpha)


def one_sided_optimal_tau(delta: float, alpha: float) -> float:
    """Return the mixture ``tau`` whose bound reaches a distance *delta* soonest.

    About ``0.96 * delta`` at ``alpha = 0.01`` (``u = 10.3``, ``g* = 3.353``).
    """
    u, g = _best_u(alpha)
    return math.sqrt(u) / g * delta


def default_margin(max_increase: float, sd: float, *, floor: float = 0.0) -> float:
    """Return the default pass margin: ``max_increase`` + 0.0503 control SDs (>= *floor*)."""
    return max_increase + max(REFERENCE_MARGIN_SD * sd, floor)
