"""The judge: stage-stratified confidence sequences over metric checks.

Pure and synchronous: no I/O, no clock reads, no locks (see :mod:`tipkit._judge`
for the statistics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from tipkit._judge._checks import MetricCheck, check_fraction, check_positive
from tipkit._judge._verdict import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    CheckResult,
    Decision,
    SampleRatio,
    Verdict,
)

__all__ = [
    "MIN_OUTCOMES_TO_FAIL",
    "Judge",
    "confidence_halfwidth",
    "optimal_tau",
    "srm_log_evidence",
]

MIN_OUTCOMES_TO_FAIL: Final = 100
"""No metric check fails before each arm has this many outcomes (rollout-wide)."""

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


# ----------------------------------------------------------------- the judge


class _Stratum:
    """Counts of one stage: per arm, outcomes and bad outcomes per check."""

    __slots__ = ("bad", "n", "share", "started")

    def __init__(self, share: float, started: float, checks: int) -> None:
        self.share = share
        self.started = started
        self.n = [0, 0]  # [control, canary]
        self.bad = [[0] * checks, [0] * checks]


def _arm_variance(bad: int, n: int) -> float:
    p = (bad + 0.5) / (n + 1.0)
    return p * (1.0 - p) / n


class Judge:
    """Judge a canary against control as outcomes arrive, stage after stage.

    Args:
        checks: the metric checks; at least one.
        confidence: coverage of the confidence sequences and of the sample-ratio
            check (``0.99``: at most a 1 % chance of a false FAIL, or of a false
            mismatch, over the whole rollout however often it is checked).
        min_samples: outcomes per arm in the current stage before it may pass
            (at least 100 are always required: a stage must not pass before its
            checks could have failed it).
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
        "_checks",
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
        checks: Sequence[MetricCheck],
        *,
        confidence: float = 0.99,
        min_samples: int = 1_000,
        min_stage_duration: float = 300.0,
        srm_concentration: float = 1_000.0,
        check_ratio: float = 0.01,
        eager: int = 1_000,
    ) -> None:
        checks = tuple(checks)
        if not checks:
            raise ValueError("checks must name at least one metric check, got none")
        for c in checks:
            if not isinstance(c, MetricCheck):
                raise TypeError(
                    f"checks must be metric checks (ErrorRateCheck, LatencyCheck), got {c!r}"
                )
        self.confidence = check_fraction(
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
        self._checks = checks
        self._alpha = 1.0 - self.confidence
        self.min_samples = min_samples
        self.min_stage_duration = duration
        self.srm_concentration = check_positive(srm_concentration, "srm_concentration")
        self.check_ratio = ratio
        self.eager = eager
        self._strata: list[_Stratum] = []
        self._srm_log_e = 0.0  # log e-value of the finished stages
        self._srm_done = False
        self._srm_threshold = math.log(1.0 / self._alpha)
        self._total = 0
        self._next_check = 1

    @property
    def checks(self) -> tuple[MetricCheck, ...]:
        """The metric checks, in order."""
        return self._checks

    @property
    def guards(self) -> tuple[MetricCheck, ...]:
        """The metric checks (the old name of :attr:`checks`)."""
        return self._checks

    @property
    def stages(self) -> int:
        """How many stages have been started."""
        return len(self._strata)

    def __repr__(self) -> str:
        share = self._strata[-1].share if self._strata else None
        return (
            f"<Judge checks={list(self._checks)!r} confidence={self.confidence}"
            f" stages={len(self._strata)} share={share} outcomes={self._total}>"
        )

    def start_stage(self, share: float, now: float) -> None:
        """Start a new stratum where a fraction *share* (0 < share < 1) goes to the canary.

        Evidence of earlier stages is kept; the current stage's counts, duration
        and sample-ratio check start afresh.
        """
        q = check_fraction(share, "share", low_open=True, high_open=True)
        if self._strata:
            self._srm_log_e += self._stratum_srm(self._strata[-1])
        self._strata.append(_Stratum(q, float(now), len(self._checks)))
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
        for i, c in enumerate(self._checks):
            if c.is_bad(error, latency):
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

    def set_stage_counts(
        self, counts: Sequence[int], bad: Sequence[Sequence[int]]
    ) -> None:
        """Replace the current stage's counts with totals counted elsewhere.

        For a judge deciding on the counts of many processes (a rollout's fleet
        totals): *counts* is ``(control, canary)`` outcomes of the current
        stage, *bad* per arm the bad outcomes of each check, in the checks'
        order. Earlier stages and the sample-ratio evidence of finished stages
        are kept. The next :meth:`record` is a checkpoint.

        Raises:
            RuntimeError: no stage was started.
            ValueError: the shapes do not match the arms and checks, or a count
                is negative.
        """
        if not self._strata:
            raise RuntimeError(
                "Judge.set_stage_counts: call start_stage(share, now) first"
            )
        checks = len(self._checks)
        if len(counts) != 2 or len(bad) != 2 or any(len(b) != checks for b in bad):
            raise ValueError(
                f"set_stage_counts needs 2 arms and {checks} checks per arm, got "
                f"{counts!r} and {bad!r}"
            )
        n = [int(counts[0]), int(counts[1])]
        rows = [[int(x) for x in bad[0]], [int(x) for x in bad[1]]]
        if min(*n, *rows[0], *rows[1]) < 0:
            raise ValueError(f"counts must be >= 0, got {n!r} and {rows!r}")
        s = self._strata[-1]
        self._total += n[0] + n[1] - s.n[0] - s.n[1]
        s.n = n
        s.bad = rows
        self._next_check = self._total + 1

    def _stratum_srm(self, s: _Stratum) -> float:
        n = s.n[0] + s.n[1]
        if n == 0:
            return 0.0
        return srm_log_evidence(s.n[1], n, s.share, self.srm_concentration)

    def _check_result(self, i: int, check: MetricCheck) -> CheckResult:
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
            w = confidence_halfwidth(info, check.tau, self._alpha)
            lower, upper = estimate - w, estimate + w
        else:
            estimate, lower, upper = rate_c - rate_t, -math.inf, math.inf
        failed = (
            lower > check.max_increase
            and nc >= MIN_OUTCOMES_TO_FAIL
            and nt >= MIN_OUTCOMES_TO_FAIL
        )
        return CheckResult(
            check, nc, xc, nt, xt, rate_c, rate_t, estimate, lower, upper, failed
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

        ``FAIL`` as soon as any check's lower bound exceeds its ``max_increase``
        (with at least 100 outcomes per arm); ``PASS`` once the current stage
        ran ``min_stage_duration`` with ``min_samples`` per arm, no sample-
        ratio mismatch, and every check with ``pass_below`` has its upper bound
        below it; else ``INCONCLUSIVE``. O(stages x checks).

        Raises:
            RuntimeError: no stage was started.
        """
        srm = self.sample_ratio()
        s = self._strata[-1]
        results = tuple(self._check_result(i, c) for i, c in enumerate(self._checks))
        failed = tuple(r for r in results if r.failed)
        elapsed = max(0.0, float(now) - s.started)
        n_t, n_c = s.n
        decision: Decision
        if failed:
            first = failed[0]
            decision = FAIL
            reason = (
                f"{first.check.describe()}: canary - control is at least {first.lower:.4f}"
                f" (> allowed {first.check.max_increase:g}) at {self.confidence:g}"
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
            if r.check.pass_below is not None and not r.upper < r.check.pass_below
        ]:
            first_open = unproven[0]
            decision = INCONCLUSIVE
            reason = (
                f"waiting for {first_open.check.describe()} to be shown below"
                f" +{first_open.check.pass_below:g} (upper bound {first_open.upper:.4f})"
            )
        else:
            decision = PASS
            reason = (
                f"no check failed after {n_c} canary and {n_t} control outcomes"
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
        """Restore counts saved by :meth:`to_state` (same checks, in the same order).

        Stage start times are restored as saved, so the caller must use the same
        time base for ``now`` across processes (a :class:`tipkit.rollout.Rollout`
        uses the clock's wall-clock ``time()``).

        Raises:
            ValueError: the state is malformed or was saved with other checks.
        """
        try:
            strata: list[_Stratum] = []
            for raw in state["strata"]:
                s = _Stratum(
                    float(raw["share"]), float(raw["started"]), len(self._checks)
                )
                s.n = [int(raw["n"][0]), int(raw["n"][1])]
                bad = raw["bad"]
                if len(bad[0]) != len(self._checks) or len(bad[1]) != len(self._checks):
                    raise ValueError("judge state was saved with different checks")
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
