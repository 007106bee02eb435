"""The canary judge: always-valid sequential statistics for guarded rollouts.

The metric checks (:class:`ErrorRateCheck`, :class:`LatencyCheck`, base
:class:`MetricCheck`) were called guards before; ``ErrorRate``,
``LatencyGuard``, ``CanaryGuard`` and ``GuardResult`` remain as aliases.

Pure and synchronous: no I/O, no clock reads, no locks. The caller (a
:class:`tipkit.rollout.Rollout`) feeds outcomes with :meth:`Judge.record`, passes
``now`` to :meth:`Judge.evaluate`, and serialises access itself.

The statistics, in short (``docs/rollouts.md`` says it in plain words):

* **Metric checks compare proportions.** :class:`ErrorRateCheck` compares the
  share of failed requests, :class:`LatencyCheck` the share of requests slower
  than a threshold (a proportion stays well-behaved on small samples where a
  p99 does not). Each keeps a confidence *sequence* for the difference
  ``d = rate(canary) - rate(control)``: an interval that covers the true ``d``
  at every sample size simultaneously with probability ``confidence``, so it may
  be looked at after every request, and the rollout may stop at any time,
  without inflating the false-alarm rate.
* **The sequence is the normal-mixture mSPRT inverted** (Robbins 1970; Johari,
  Pekelis & Walsh, "Always valid inference", 2017/2022; Howard, Ramdas,
  McAuliffe & Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence
  sequences", 2021). With an estimate ``d_hat`` of information ``I`` (the inverse
  of its variance), the mixture likelihood ratio against ``d = d0`` with a
  ``N(d0, tau**2)`` mixing distribution is::

      Lambda = (1 + tau**2 * I) ** -0.5 * exp(tau**2 * I**2 * (d_hat - d0)**2
                                              / (2 * (1 + tau**2 * I)))

  a non-negative martingale under ``d = d0`` (in the Gaussian limit), so by
  Ville's inequality ``P(ever Lambda >= 1/alpha) <= alpha``. The ``d0`` values
  not rejected form the interval ``d_hat +- w`` with::

      w = sqrt((1 + tau**2 * I) * (2 * log(1/alpha) + log(1 + tau**2 * I))) / (tau * I)

* **Stages are strata.** Within a stage the canary share is fixed; each stage
  ``k`` gives ``d_hat_k`` and ``I_k = 1 / (p_c(1-p_c)/n_c + p_t(1-p_t)/n_t)``.
  The rollout-wide estimate is ``sum(I_k * d_hat_k) / sum(I_k)`` with
  information ``sum(I_k)``: stage increments of a martingale in information time
  add up to one martingale, so one confidence sequence at one ``alpha`` covers
  the whole rollout (evidence carries over when a stage advances, and the
  false-alarm rate is not multiplied by the number of stages). Comparing within
  a stage only also keeps time-of-day drift between stages out of the estimate.
  The per-arm rate used in the variance is ``(x + 0.5) / (n + 1)`` so that a
  zero-error arm does not claim zero variance.
* **Choosing tau.** For a given information ``I`` the width is smallest when
  ``u = tau**2 * I`` solves ``u = 2 log(1/alpha) + log(1 + u)`` (``u = 11.76``
  at ``alpha = 0.01``); a check detects an effect ``delta`` around the
  information where ``w(I) = delta``, which puts the best ``tau`` at about
  ``0.96 * delta``, whatever the baseline rate. The width is flat near the
  optimum (a factor 2 off in ``tau`` costs a few percent of samples), so
  :class:`ErrorRateCheck` defaults to ``tau = 0.0075`` (tuned for increases of
  0.5 to 1 percentage point: within 1 % and 2 % of the optimal widths for 1 pp
  and 0.5 pp) and :class:`LatencyCheck` to ``tau = 0.03`` (an increase of a few
  points in the slow share above its allowance).
* **Sample-ratio mismatch** (SRM) is tested exactly, not asymptotically: within
  a stage of canary share ``q``, the beta-binomial mixture likelihood ratio
  ``B(a + c, b + n - c) / B(a, b) / (q**c * (1 - q)**(n - c))`` with
  ``a = K q`` and ``b = K (1 - q)`` is a martingale when assignment really is
  ``Bernoulli(q)`` (Lindon & Malek, "Anytime-valid inference for multinomial
  count data", 2022). Stage ratios multiply into one e-process across stages;
  crossing ``1/alpha`` flags the assignment as broken, permanently, and the
  judge then refuses to pass.
* **Amortised checking.** :meth:`Judge.record` is O(1) (a few integer
  increments) and says when a checkpoint is due: every outcome for the first
  ``eager`` outcomes, then whenever the count has grown by ``check_ratio``
  (1 % by default). A confidence sequence holds at *all* sample sizes at once,
  so it holds in particular at any subset of them chosen by any rule: checking
  less often never costs validity, only detection delay (at most ``check_ratio``
  of the samples already seen).
"""

from tipkit._judge._bounds import (
    RATE_MARGIN_FLOOR,
    REFERENCE_MARGIN_SD,
    default_margin,
    one_sided_boundary,
    one_sided_halfwidth,
    one_sided_optimal_tau,
)
from tipkit._judge._checks import (
    CanaryGuard,
    ErrorRate,
    ErrorRateCheck,
    LatencyCheck,
    LatencyGuard,
    MeanCheck,
    MetricCheck,
    RateCheck,
)
from tipkit._judge._judge import (
    MIN_OUTCOMES_TO_FAIL,
    Judge,
    confidence_halfwidth,
    optimal_tau,
    srm_log_evidence,
)
from tipkit._judge._qcheck import QuantileCheck
from tipkit._judge._verdict import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    CheckResult,
    Decision,
    GuardResult,
    SampleRatio,
    Verdict,
)

__all__ = [
    "FAIL",
    "INCONCLUSIVE",
    "MIN_OUTCOMES_TO_FAIL",
    "PASS",
    "RATE_MARGIN_FLOOR",
    "REFERENCE_MARGIN_SD",
    "CanaryGuard",
    "CheckResult",
    "Decision",
    "ErrorRate",
    "ErrorRateCheck",
    "GuardResult",
    "Judge",
    "LatencyCheck",
    "LatencyGuard",
    "MeanCheck",
    "MetricCheck",
    "QuantileCheck",
    "RateCheck",
    "SampleRatio",
    "Verdict",
    "confidence_halfwidth",
    "default_margin",
    "one_sided_boundary",
    "one_sided_halfwidth",
    "one_sided_optimal_tau",
    "optimal_tau",
    "srm_log_evidence",
]
