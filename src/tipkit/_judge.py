"""The canary judge: always-valid sequential statistics for guarded rollouts.

Pure and synchronous: no I/O, no clock reads, no locks. The caller (a
:class:`tipkit.rollout.Rollout`) feeds outcomes with :meth:`Judge.record`, passes
``now`` to :meth:`Judge.evaluate`, and serialises access itself.

The statistics, in short (``docs/rollouts.md`` says it in plain words):

* **Guards compare proportions.** :class:`ErrorRate` compares the share of
  failed requests, :class:`LatencyGuard` the share of requests slower than a
  threshold (a proportion stays well-behaved on small samples where a p99 does
  not). Each keeps a confidence *sequence* for the difference
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
  at ``alpha = 0.01``); a guard detects an effect ``delta`` around the
  information where ``w(I) = delta``, which puts the best ``tau`` at about
  ``0.96 * delta``, whatever the baseline rate. The width is flat near the
  optimum (a factor 2 off in ``tau`` costs a few percent of samples), so
  :class:`ErrorRate` defaults to ``tau = 0.0075`` (tuned for increases of 0.5 to
  1 percentage point: within 1 % and 2 % of the optimal widths for 1 pp and
  0.5 pp) and :class:`LatencyGuard` to ``tau = 0.03`` (an increase of a few
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

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "FAIL",
    "INCONCLUSIVE",
    "PASS",
    "CanaryGuard",
    "Decision",
    "ErrorRate",
    "GuardResult",
    "Judge",
    "LatencyGuard",
    "SampleRatio",
    "Verdict",
    "confidence_halfwidth",
    "optimal_tau",
    "srm_log_evidence",
]

Decision = Literal["PASS", "FAIL", "INCONCLUSIVE"]
PASS: Final = "PASS"  # noqa: S105  # a verdict, not a password
FAIL: Final = "FAIL"
INCONCLUSIVE: Final = "INCONCLUSIVE"

MIN_OUTCOMES_TO_FAIL: Final = 100
"""No guard fails before each arm has this many outcomes (rollout-wide)."""


def _check_fraction(
    value: float, name: str, *, low_open: bool, high_open: bool
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    low_ok = v > 0.0 if low_open else v >= 0.0
    high_ok = v < 1.0 if high_open else v <= 1.0
    if not (low_ok and high_ok and math.isfinite(v)):
        lo = "(0" if low_open else "[0"
        hi = "1)" if high_open else "1]"
        raise ValueError(f"{name} must be in {lo}, {hi}, got {value!r}")
    return v


def _check_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not (v > 0.0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


# ----------------------------------------------------------------- the maths


def confidence_halfwidth(information: float, tau: float, alpha: float) -> float:
    """Return the half-width of the normal-mixture confidence sequence.

    *information* is the inverse variance of the estimate, *tau* the standard
    deviation of the mixing distribution (in the estimate's units) and *alpha*
    one minus the confidence. Infinite when there is no information yet.
    """
    if information <= 0.0:
        return math.inf
    u = tau * tau * information
    return math.sqrt((1.0 + u) * (2.0 * math.log(1.0 / alpha) + math.log1p(u))) / (
        tau * information
    )


def optimal_tau(delta: float, alpha: float) -> float:
    """Return the mixture ``tau`` that detects an effect of *delta* soonest.

    Solves ``u = 2 log(1/alpha) + log(1 + u)`` (the ``u = tau**2 I`` minimising
    the width at a given information ``I``) and places the optimum at the
    information where the width equals *delta*.
    """
    two_l = 2.0 * math.log(1.0 / alpha)
    u = two_l
    for _ in range(50):  # a contraction: converges to 1e-12 in a dozen steps
        u = two_l + math.log1p(u)
    width_factor = (1.0 + 1.0 / u) * (two_l + math.log1p(u))  # w**2 * I at optimum
    information = width_factor / (delta * delta)
    return math.sqrt(u / information)


def srm_log_evidence(
    canary: int, total: int, share: float, concentration: float
) -> float:
    """Return the log beta-binomial mixture likelihood ratio for a sample ratio.

    *canary* of *total* assignments went to the canary where *share* was
    configured; the mixing distribution is ``Beta(K q, K (1 - q))`` with
    ``K = concentration``. Its exponential is an e-value: a non-negative
    martingale with expectation 1 while assignment is ``Bernoulli(share)``.
    """
    a = concentration * share
    b = concentration * (1.0 - share)
    rest = total - canary
    log_mix = (
        math.lgamma(a + canary)
        + math.lgamma(b + rest)
        - math.lgamma(a + b + total)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    )
    return log_mix - canary * math.log(share) - rest * math.log1p(-share)


# ----------------------------------------------------------------- guards


class CanaryGuard:
    """Base of the rollout guards: a per-request "bad" outcome and an allowance.

    A guard fails the canary when the lower confidence bound of
    ``rate(canary) - rate(control)`` of bad outcomes exceeds ``max_increase``.
    Immutable and thread-safe.
    """

    __slots__ = ("max_increase", "pass_below", "tau")

    kind: str = "guard"
    max_increase: float
    tau: float
    pass_below: float | None

    def __init__(
        self, max_increase: float, tau: float, pass_below: float | None = None
    ) -> None:
        object.__setattr__(
            self,
            "max_increase",
            _check_fraction(
                max_increase, "max_increase", low_open=False, high_open=True
            ),
        )
        object.__setattr__(self, "tau", _check_positive(tau, "tau"))
        if pass_below is not None:
            pass_below = _check_fraction(
                pass_below, "pass_below", low_open=True, high_open=True
            )
        object.__setattr__(self, "pass_below", pass_below)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def is_bad(
        self, error: bool, latency: float
    ) -> bool:  # pragma: no cover - abstract
        """Return whether one outcome counts against the arm."""
        raise NotImplementedError

    def describe(self) -> str:
        """Return a short label for events and metrics (low cardinality)."""
        return self.kind

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self), self._key()))

    def _key(self) -> tuple[float | None, ...]:
        return (self.max_increase, self.tau, self.pass_below)

    def _repr_tail(self) -> str:
        return "" if self.pass_below is None else f", pass_below={self.pass_below}"


class ErrorRate(CanaryGuard):
    """Fail the canary when its error rate is worse than control's by more than allowed.

    Args:
        max_increase: the tolerated increase of the error rate, as a fraction
            (``0.0``: any proven increase fails; ``0.005``: half a point).
        tau: standard deviation of the mixture over effects; the default suits
            increases of 0.5 to 1 percentage point (see the module notes).
        pass_below: if set, a stage passes only once the *upper* confidence
            bound of the increase is below this: evidence that the canary is
            not worse by that much, not merely no evidence that it is worse
            (``None``, the default: the absence of a FAIL is enough).

    Raises:
        ValueError, TypeError: an argument is out of range or not a number.
    """

    __slots__ = ()
    kind = "error_rate"

    def __init__(
        self,
        max_increase: float = 0.0,
        *,
        tau: float = 0.0075,
        pass_below: float | None = None,
    ) -> None:
        super().__init__(max_increase, tau, pass_below)

    def is_bad(self, error: bool, latency: float) -> bool:  # noqa: ARG002  # shared signature
        """Return *error*: a failed request counts against its arm."""
        return error

    def __repr__(self) -> str:
        return (
            f"ErrorRate(max_increase={self.max_increase}, tau={self.tau}"
            f"{self._repr_tail()})"
        )


class LatencyGuard(CanaryGuard):
    """Fail the canary when more of its requests are slower than *threshold* seconds.

    Compares the share of requests (failed ones included: a slow failure is
    still slow) that took longer than *threshold*; a proportion is stable on
    small samples, unlike a p99.

    Args:
        threshold: seconds; a request slower than this counts as slow.
        max_increase: the tolerated increase of the slow share, as a fraction.
        tau: standard deviation of the mixture over effects.
        pass_below: as for :class:`ErrorRate`.

    Raises:
        ValueError, TypeError: an argument is out of range or not a number.
    """

    __slots__ = ("threshold",)
    kind = "latency"
    threshold: float

    def __init__(
        self,
        threshold: float = 0.250,
        max_increase: float = 0.02,
        *,
        tau: float = 0.03,
        pass_below: float | None = None,
    ) -> None:
        super().__init__(max_increase, tau, pass_below)
        object.__setattr__(self, "threshold", _check_positive(threshold, "threshold"))

    def is_bad(self, error: bool, latency: float) -> bool:  # noqa: ARG002  # shared signature
        """Return whether *latency* exceeds the threshold."""
        return latency > self.threshold

    def describe(self) -> str:
        """Return ``latency>THRESHOLDs``."""
        return f"latency>{self.threshold:g}s"

    def _key(self) -> tuple[float | None, ...]:
        return (self.threshold, self.max_increase, self.tau, self.pass_below)

    def __repr__(self) -> str:
        return (
            f"LatencyGuard(threshold={self.threshold}, max_increase={self.max_increase},"
            f" tau={self.tau}{self._repr_tail()})"
        )


# ----------------------------------------------------------------- verdicts


@dataclass(frozen=True, slots=True)
class GuardResult:
    """One guard's numbers at one evaluation.

    Attributes:
        guard: the guard.
        canary_count, control_count: outcomes per arm (whole rollout).
        canary_bad, control_bad: bad outcomes per arm (whole rollout).
        canary_rate, control_rate: ``bad / count`` per arm (0 when empty).
        difference: the stage-stratified estimate of ``canary - control``.
        lower, upper: its confidence-sequence bounds (infinite until both arms
            have data).
        failed: the lower bound exceeds ``guard.max_increase`` and both arms
            have at least 100 outcomes.
    """

    guard: CanaryGuard
    canary_count: int
    canary_bad: int
    control_count: int
    control_bad: int
    canary_rate: float
    control_rate: float
    difference: float
    lower: float
    upper: float
    failed: bool

    def as_dict(self) -> dict[str, object]:
        """Return the numbers as JSON-compatible values (the guard as its label)."""
        return {
            "guard": self.guard.describe(),
            "max_increase": self.guard.max_increase,
            "pass_below": self.guard.pass_below,
            "canary_count": self.canary_count,
            "canary_bad": self.canary_bad,
            "control_count": self.control_count,
            "control_bad": self.control_bad,
            "canary_rate": self.canary_rate,
            "control_rate": self.control_rate,
            "difference": self.difference,
            "lower": _finite_or_none(self.lower),
            "upper": _finite_or_none(self.upper),
            "failed": self.failed,
        }


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True, slots=True)
class SampleRatio:
    """The sample-ratio check at one evaluation (current stage and overall).

    Attributes:
        share: the configured canary share of the current stage (0 to 1).
        canary, total: split-assigned outcomes of the current stage.
        observed: ``canary / total`` (0 when empty).
        log_evidence: log of the e-value accumulated over all stages.
        threshold: ``log(1 / alpha)``; crossing it flags a mismatch.
        mismatch: the assignment is (or was, at some point) proven broken.
    """

    share: float
    canary: int
    total: int
    observed: float
    log_evidence: float
    threshold: float
    mismatch: bool

    def as_dict(self) -> dict[str, object]:
        """Return the numbers as JSON-compatible values."""
        return {
            "share": self.share,
            "canary": self.canary,
            "total": self.total,
            "observed": self.observed,
            "log_evidence": self.log_evidence,
            "threshold": self.threshold,
            "mismatch": self.mismatch,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's decision with the numbers behind it.

    Attributes:
        decision: ``"FAIL"``, ``"PASS"`` or ``"INCONCLUSIVE"``.
        reason: one line in plain words.
        guards: every guard's numbers.
        sample_ratio: the sample-ratio check.
        stage_canary, stage_control: outcomes per arm in the current stage.
        stage_elapsed: seconds since the current stage started.
    """

    decision: Decision
    reason: str
    guards: tuple[GuardResult, ...]
    sample_ratio: SampleRatio
    stage_canary: int
    stage_control: int
    stage_elapsed: float
    failed: tuple[GuardResult, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        """Return the verdict as JSON-compatible values (for the store and events)."""
        return {
            "decision": self.decision,
            "reason": self.reason,
            "guards": [g.as_dict() for g in self.guards],
            "sample_ratio": self.sample_ratio.as_dict(),
            "stage_canary": self.stage_canary,
            "stage_control": self.stage_control,
            "stage_elapsed": self.stage_elapsed,
        }


# ----------------------------------------------------------------- the judge


class _Stratum:
    """Counts of one stage: per arm, outcomes and bad outcomes per guard."""

    __slots__ = ("bad", "n", "share", "started")

    def __init__(self, share: float, started: float, guards: int) -> None:
        self.share = share
        self.started = started
        self.n = [0, 0]  # [control, canary]
        self.bad = [[0] * guards, [0] * guards]


def _arm_variance(bad: int, n: int) -> float:
    p = (bad + 0.5) / (n + 1.0)
    return p * (1.0 - p) / n


class Judge:
    """Judge a canary against control as outcomes arrive, stage after stage.

    Args:
        guards: the guards; at least one.
        confidence: coverage of the confidence sequences and of the sample-ratio
            check (``0.99``: at most a 1 % chance of a false FAIL, or of a false
            mismatch, over the whole rollout however often it is checked).
        min_samples: outcomes per arm in the current stage before it may pass
            (at least 100 are always required: a stage must not pass before its
            guards could have failed it).
        min_stage_duration: seconds the current stage must run before it may pass.
        srm_concentration: ``K`` of the sample-ratio mixture ``Beta(K q, K(1-q))``;
            larger values look for smaller mismatches more patiently.
        check_ratio: a checkpoint is due when the outcome count has grown by this
            fraction since the last one (0: after every outcome).
        eager: outcomes during which every outcome is a checkpoint.

    Not thread-safe: the caller serialises calls. Reads no clock: the caller
    passes ``now`` (seconds on its monotonic clock).

    Raises:
        ValueError, TypeError: an argument is out of range.
    """

    __slots__ = (
        "_alpha",
        "_guards",
        "_next_check",
        "_srm_done",
        "_srm_log_e",
        "_srm_threshold",
        "_strata",
        "_total",
        "check_ratio",
        "confidence",
        "eager",
        "min_samples",
        "min_stage_duration",
        "srm_concentration",
    )

    def __init__(
        self,
        guards: Sequence[CanaryGuard],
        *,
        confidence: float = 0.99,
        min_samples: int = 1_000,
        min_stage_duration: float = 300.0,
        srm_concentration: float = 1_000.0,
        check_ratio: float = 0.01,
        eager: int = 1_000,
    ) -> None:
        guards = tuple(guards)
        if not guards:
            raise ValueError("guards must name at least one guard, got none")
        for g in guards:
            if not isinstance(g, CanaryGuard):
                raise TypeError(f"guards must be ErrorRate or LatencyGuard, got {g!r}")
        self.confidence = _check_fraction(
            confidence, "confidence", low_open=True, high_open=True
        )
        if type(min_samples) is not int or min_samples < 1:
            raise ValueError(f"min_samples must be an int >= 1, got {min_samples!r}")
        if eager < 0:
            raise ValueError(f"eager must be an int >= 0, got {eager!r}")
        duration = float(min_stage_duration)
        if not (duration >= 0.0 and math.isfinite(duration)):
            raise ValueError(
                f"min_stage_duration must be >= 0 seconds, got {min_stage_duration!r}"
            )
        ratio = float(check_ratio)
        if not (0.0 <= ratio <= 1.0):
            raise ValueError(f"check_ratio must be in [0, 1], got {check_ratio!r}")
        self._guards = guards
        self._alpha = 1.0 - self.confidence
        self.min_samples = min_samples
        self.min_stage_duration = duration
        self.srm_concentration = _check_positive(srm_concentration, "srm_concentration")
        self.check_ratio = ratio
        self.eager = eager
        self._strata: list[_Stratum] = []
        self._srm_log_e = 0.0  # log e-value of the finished stages
        self._srm_done = False
        self._srm_threshold = math.log(1.0 / self._alpha)
        self._total = 0
        self._next_check = 1

    @property
    def guards(self) -> tuple[CanaryGuard, ...]:
        """The guards, in order."""
        return self._guards

    @property
    def stages(self) -> int:
        """How many stages have been started."""
        return len(self._strata)

    def __repr__(self) -> str:
        share = self._strata[-1].share if self._strata else None
        return (
            f"<Judge guards={list(self._guards)!r} confidence={self.confidence}"
            f" stages={len(self._strata)} share={share} outcomes={self._total}>"
        )

    def start_stage(self, share: float, now: float) -> None:
        """Start a new stratum where a fraction *share* (0 < share < 1) goes to the canary.

        Evidence of earlier stages is kept; the current stage's counts, duration
        and sample-ratio check start afresh.
        """
        q = _check_fraction(share, "share", low_open=True, high_open=True)
        if self._strata:
            self._srm_log_e += self._stratum_srm(self._strata[-1])
        self._strata.append(_Stratum(q, float(now), len(self._guards)))
        self._next_check = self._total + 1

    def record(self, canary: bool, error: bool, latency: float) -> bool:
        """Count one split-assigned outcome; return whether a checkpoint is due.

        O(1). When it returns ``True`` the caller should call :meth:`evaluate`.

        Raises:
            RuntimeError: no stage was started.
        """
        if not self._strata:
            raise RuntimeError("Judge.record: call start_stage(share, now) first")
        s = self._strata[-1]
        arm = 1 if canary else 0
        s.n[arm] += 1
        bad = s.bad[arm]
        for i, g in enumerate(self._guards):
            if g.is_bad(error, latency):
                bad[i] += 1
        self._total += 1
        if self._total < self._next_check:
            return False
        total = self._total
        self._next_check = (
            total + 1
            if total < self.eager
            else total + max(1, int(total * self.check_ratio))
        )
        return True

    def _stratum_srm(self, s: _Stratum) -> float:
        n = s.n[0] + s.n[1]
        if n == 0:
            return 0.0
        return srm_log_evidence(s.n[1], n, s.share, self.srm_concentration)

    def _guard_result(self, i: int, guard: CanaryGuard) -> GuardResult:
        info = 0.0
        weighted = 0.0
        nc = nt = xc = xt = 0
        for s in self._strata:
            n_t, n_c = s.n
            x_t = s.bad[0][i]
            x_c = s.bad[1][i]
            nc += n_c
            nt += n_t
            xc += x_c
            xt += x_t
            if n_c == 0 or n_t == 0:
                continue
            ik = 1.0 / (_arm_variance(x_c, n_c) + _arm_variance(x_t, n_t))
            info += ik
            weighted += ik * (x_c / n_c - x_t / n_t)
        rate_c = xc / nc if nc else 0.0
        rate_t = xt / nt if nt else 0.0
        if info > 0.0:
            estimate = weighted / info
            w = confidence_halfwidth(info, guard.tau, self._alpha)
            lower, upper = estimate - w, estimate + w
        else:
            estimate, lower, upper = rate_c - rate_t, -math.inf, math.inf
        failed = (
            lower > guard.max_increase
            and nc >= MIN_OUTCOMES_TO_FAIL
            and nt >= MIN_OUTCOMES_TO_FAIL
        )
        return GuardResult(
            guard, nc, xc, nt, xt, rate_c, rate_t, estimate, lower, upper, failed
        )

    def sample_ratio(self) -> SampleRatio:
        """Return the sample-ratio check now (it latches once a mismatch is proven).

        Raises:
            RuntimeError: no stage was started.
        """
        if not self._strata:
            raise RuntimeError("Judge.sample_ratio: call start_stage(share, now) first")
        s = self._strata[-1]
        log_e = self._srm_log_e + self._stratum_srm(s)
        if log_e >= self._srm_threshold:
            self._srm_done = True
        n = s.n[0] + s.n[1]
        return SampleRatio(
            s.share,
            s.n[1],
            n,
            s.n[1] / n if n else 0.0,
            log_e,
            self._srm_threshold,
            self._srm_done,
        )

    def evaluate(self, now: float) -> Verdict:
        """Return the verdict at *now* (seconds on the caller's monotonic clock).

        ``FAIL`` as soon as any guard's lower bound exceeds its ``max_increase``
        (with at least 100 outcomes per arm); ``PASS`` once the current stage
        ran ``min_stage_duration`` with ``min_samples`` per arm, no sample-
        ratio mismatch, and every guard with ``pass_below`` has its upper bound
        below it; else ``INCONCLUSIVE``. O(stages x guards).

        Raises:
            RuntimeError: no stage was started.
        """
        srm = self.sample_ratio()
        s = self._strata[-1]
        results = tuple(self._guard_result(i, g) for i, g in enumerate(self._guards))
        failed = tuple(r for r in results if r.failed)
        elapsed = max(0.0, float(now) - s.started)
        n_t, n_c = s.n
        decision: Decision
        if failed:
            first = failed[0]
            decision = FAIL
            reason = (
                f"{first.guard.describe()}: canary - control is at least {first.lower:.4f}"
                f" (> allowed {first.guard.max_increase:g}) at {self.confidence:g}"
                f" confidence; canary {first.canary_bad}/{first.canary_count},"
                f" control {first.control_bad}/{first.control_count}"
            )
        elif srm.mismatch:
            decision = INCONCLUSIVE
            reason = (
                f"sample ratio mismatch: canary got {srm.observed:.4f} of this stage's"
                f" traffic, configured {srm.share:g}; assignment looks broken"
            )
        elif min(n_c, n_t) < max(self.min_samples, MIN_OUTCOMES_TO_FAIL):
            decision = INCONCLUSIVE
            reason = (
                f"waiting for {max(self.min_samples, MIN_OUTCOMES_TO_FAIL)} outcomes per arm"
                f" (canary {n_c}, control {n_t})"
            )
        elif elapsed < self.min_stage_duration:
            decision = INCONCLUSIVE
            reason = (
                f"waiting for the stage to run {self.min_stage_duration:g}s"
                f" ({elapsed:g}s so far)"
            )
        elif unproven := [
            r
            for r in results
            if r.guard.pass_below is not None and not r.upper < r.guard.pass_below
        ]:
            first_open = unproven[0]
            decision = INCONCLUSIVE
            reason = (
                f"waiting for {first_open.guard.describe()} to be shown below"
                f" +{first_open.guard.pass_below:g} (upper bound {first_open.upper:.4f})"
            )
        else:
            decision = PASS
            reason = (
                f"no guard failed after {n_c} canary and {n_t} control outcomes"
                f" over {elapsed:g}s"
            )
        return Verdict(decision, reason, results, srm, n_c, n_t, elapsed, failed)

    # -- persistence: the counts are the whole state ---------------------------

    def to_state(self) -> dict[str, object]:
        """Return the counts as JSON-compatible values (see :meth:`from_state`)."""
        return {
            "strata": [
                {
                    "share": s.share,
                    "started": s.started,
                    "n": list(s.n),
                    "bad": [list(s.bad[0]), list(s.bad[1])],
                }
                for s in self._strata
            ],
            "srm_log_e": self._srm_log_e,
            "srm_done": self._srm_done,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore counts saved by :meth:`to_state` (same guards, in the same order).

        Stage start times are restored as saved, so the caller must use the same
        time base for ``now`` across processes (a :class:`tipkit.rollout.Rollout`
        uses the clock's wall-clock ``time()``).

        Raises:
            ValueError: the state is malformed or was saved with other guards.
        """
        try:
            strata: list[_Stratum] = []
            for raw in state["strata"]:
                s = _Stratum(
                    float(raw["share"]), float(raw["started"]), len(self._guards)
                )
                s.n = [int(raw["n"][0]), int(raw["n"][1])]
                bad = raw["bad"]
                if len(bad[0]) != len(self._guards) or len(bad[1]) != len(self._guards):
                    raise ValueError("judge state was saved with different guards")
                s.bad = [[int(x) for x in bad[0]], [int(x) for x in bad[1]]]
                strata.append(s)
            srm_log_e = float(state.get("srm_log_e", 0.0))
            srm_done = bool(state.get("srm_done", False))
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"malformed judge state: {exc!r}") from exc
        self._strata = strata
        self._srm_log_e = srm_log_e
        self._srm_done = srm_done
        self._total = sum(s.n[0] + s.n[1] for s in strata)
        self._next_check = self._total + 1
