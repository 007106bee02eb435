"""The judge: stage-stratified confidence sequences over metric checks.

Pure and synchronous: no I/O, no clock reads, no locks (see :mod:`tipkit._judge`
for the statistics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tipkit._judge._checks import MetricCheck, check_fraction, check_positive
from tipkit._judge._estimate import MIN_OUTCOMES_TO_FAIL, Stratum, check_result
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


class Judge:
    """Judge a canary against control as outcomes arrive, stage after stage.

    Args:
        checks: the metric checks; at least one.
        confidence: one minus the error rate of each side (``0.99``: at most a
            1 % chance of a false FAIL of a canary no worse than control, and at
            most 1 % of a PASS of a canary worse than a check's margin, over the
            whole rollout however often it is checked).
        min_samples: outcomes per arm in the current stage before it may pass
            (at least 100 are always required).
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
        "_by_metric",
        "_checks",
        "_next_check",
        "_requests",
        "_sketch",
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
                    "checks must be metric checks (ErrorRateCheck, LatencyCheck,"
                    f" RateCheck, MeanCheck), got {c!r}"
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
        self._requests = tuple(
            (i, c, c.binary) for i, c in enumerate(checks) if c.per_request()
        )
        by_metric: dict[str, list[int]] = {}
        for i, c in enumerate(checks):
            if not c.per_request() and c.metric is not None:
                by_metric.setdefault(c.metric, []).append(i)
        self._by_metric = {k: tuple(v) for k, v in by_metric.items()}
        self._sketch = any(c.kind == "quantile" for c in checks)
        self._alpha = 1.0 - self.confidence
        self.min_samples = min_samples
        self.min_stage_duration = duration
        self.srm_concentration = check_positive(srm_concentration, "srm_concentration")
        self.check_ratio = ratio
        self.eager = eager
        self._strata: list[Stratum] = []
        self._srm_log_e = 0.0  # log e-value of the finished stages
        self._srm_done = False
        self._srm_threshold = math.log(1.0 / self._alpha)
        self._total = 0
        self._next_check = 1

    @property
    def checks(self) -> tuple[MetricCheck, ...]:
        """The metric checks, in order."""
        return self._checks

    guards = checks  # the old name of :attr:`checks`

    @property
    def metrics(self) -> frozenset[str]:
        """The names fed by value (``record_value``) rather than by requests."""
        return frozenset(self._by_metric)

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
        k = len(self._checks)
        self._strata.append(Stratum(q, float(now), k, sketch=self._sketch))
        self._next_check = self._total + 1

    def _due(self) -> bool:
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

    def record(self, canary: bool, error: bool, latency: float) -> bool:
        """Count one split-assigned request; return whether a checkpoint is due.

        O(checks). When it returns ``True`` the caller should call :meth:`evaluate`.

        Raises:
            RuntimeError: no stage was started.
        """
        if not self._strata:
            raise RuntimeError("Judge.record: call start_stage(share, now) first")
        s = self._strata[-1]
        arm = 1 if canary else 0
        s.n[arm] += 1
        cnt, s1, s2 = s.cnt[arm], s.s1[arm], s.s2[arm]
        for i, c, binary in self._requests:
            cnt[i] += 1
            if binary:
                if c.is_bad(error, latency):
                    s1[i] += 1
                    s2[i] += 1
            else:
                v = c.clip(latency)
                s1[i] += v
                s2[i] += v * v
        if s.lat is not None:
            s.lat[arm].add(latency)
        return self._due()

    def record_value(self, canary: bool, metric: str, value: float) -> bool:
        """Count one *value* of *metric* for an arm (a KPI); return whether a checkpoint is due.

        Every check fed under *metric* takes it (a rate: truthy is 1; a mean:
        capped). A name no check uses is ignored (``False``).

        Raises:
            RuntimeError: no stage was started.
            ValueError: the value is not a finite number.
        """
        if not self._strata:
            raise RuntimeError("Judge.record_value: call start_stage(share, now) first")
        idx = self._by_metric.get(metric)
        if not idx:
            return False
        s = self._strata[-1]
        arm = 1 if canary else 0
        for i in idx:
            v = self._checks[i].clip(value)
            s.cnt[arm][i] += 1
            s.s1[arm][i] += v
            s.s2[arm][i] += v * v
        return self._due()

    def add_sums(
        self, canary: bool, index: int, count: int, total: float, squares: float
    ) -> None:
        """Add *count* values of check *index* for an arm: their sum and sum of squares.

        An upper bound of *squares* is conservative (wider bounds). Raises
        RuntimeError before a stage, ValueError for a negative count.
        """
        if not self._strata:
            raise RuntimeError("Judge.add_sums: call start_stage(share, now) first")
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count!r}")
        s = self._strata[-1]
        arm = 1 if canary else 0
        s.cnt[arm][index] += int(count)
        s.s1[arm][index] += float(total)
        s.s2[arm][index] += float(squares)
        self._next_check = self._total + 1

    def set_stage_counts(
        self,
        counts: Sequence[int],
        bad: Sequence[Sequence[float]],
        *,
        cnt: Sequence[Sequence[int]] | None = None,
        sq: Sequence[Sequence[float]] | None = None,
    ) -> None:
        """Replace the current stage's counts with totals counted elsewhere.

        For a judge deciding on the counts of many processes (a rollout's fleet
        totals): *counts* is ``(control, canary)`` outcomes of the current
        stage, *bad* per arm each check's sum (bad outcomes of a rate), in the
        checks' order; *cnt* per arm each check's number of values (default:
        *counts* for per-request checks, 0 for the others) and *sq* the sums
        of squares (default: *bad*). Earlier stages and the sample-ratio
        evidence of finished stages are kept; the sample-ratio check of this
        stage is now on these totals. The next :meth:`record` is a checkpoint.

        Raises:
            RuntimeError: no stage was started.
            ValueError: the shapes do not match the arms and checks, or a count
                is negative.
        """
        if not self._strata:
            raise RuntimeError(
                "Judge.set_stage_counts: call start_stage(share, now) first"
            )
        k = len(self._checks)
        rows = [bad, cnt if cnt is not None else bad, sq if sq is not None else bad]
        if len(counts) != 2 or any(
            len(r) != 2 or any(len(b) != k for b in r) for r in rows
        ):
            raise ValueError(
                f"set_stage_counts needs 2 arms and {k} checks per arm, got "
                f"{counts!r} and {bad!r}"
            )
        n = [int(counts[0]), int(counts[1])]
        sums = [[float(x) for x in bad[0]], [float(x) for x in bad[1]]]
        if cnt is None:
            per = [c.per_request() for c in self._checks]
            counts_of = [[n[a] if per[i] else 0 for i in range(k)] for a in (0, 1)]
        else:
            counts_of = [[int(x) for x in cnt[0]], [int(x) for x in cnt[1]]]
        squares = (
            [list(sums[0]), list(sums[1])]
            if sq is None
            else [[float(x) for x in sq[0]], [float(x) for x in sq[1]]]
        )
        if min(*n, *counts_of[0], *counts_of[1]) < 0 or any(
            c.binary and min(sums[0][i], sums[1][i]) < 0
            for i, c in enumerate(self._checks)
        ):
            raise ValueError(f"counts must be >= 0, got {n!r} and {sums!r}")
        s = self._strata[-1]
        self._total += n[0] + n[1] - s.n[0] - s.n[1]
        s.n, s.cnt, s.s1, s.s2 = n, counts_of, sums, squares
        self._next_check = self._total + 1

    def _stratum_srm(self, s: Stratum) -> float:
        n = s.n[0] + s.n[1]
        if n == 0:
            return 0.0
        return srm_log_evidence(s.n[1], n, s.share, self.srm_concentration)

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

    def results(self) -> tuple[CheckResult, ...]:
        """Return every check's numbers now (no decision). O(stages x checks)."""
        return tuple(
            check_result(i, c, self._strata, self._alpha)
            for i, c in enumerate(self._checks)
        )

    def evaluate(self, now: float) -> Verdict:
        """Return the verdict at *now* (seconds on the caller's monotonic clock).

        ``FAIL`` as soon as any acting check's lower bound exceeds its
        ``max_increase`` (with at least 100 values per arm); ``PASS`` once the
        current stage ran ``min_stage_duration`` with ``min_samples`` outcomes
        per arm, no sample-ratio mismatch, and every acting check's upper bound
        is below its margin (non-inferiority); else ``INCONCLUSIVE``. Dry-run
        checks are reported and never decide. O(stages x checks).

        Raises:
            RuntimeError: no stage was started.
        """
        srm = self.sample_ratio()
        s = self._strata[-1]
        results = self.results()
        failed = tuple(r for r in results if r.failed and not r.check.dry_run)
        elapsed = max(0.0, float(now) - s.started)
        n_t, n_c = s.n
        need = max(self.min_samples, MIN_OUTCOMES_TO_FAIL)
        decision: Decision
        if failed:
            first = failed[0]
            decision = FAIL
            reason = (
                f"{first.check.describe()}: canary is worse than control by at least"
                f" {first.lower:.4g} (> allowed {first.check.max_increase:g}) at"
                f" {self.confidence:g} confidence; canary {first.canary_bad:g}/"
                f"{first.canary_count}, control {first.control_bad:g}/{first.control_count}"
            )
        elif srm.mismatch:
            decision = INCONCLUSIVE
            reason = (
                f"sample ratio mismatch: canary got {srm.observed:.4f} of this stage's"
                f" traffic, configured {srm.share:g}; assignment looks broken"
            )
        elif min(n_c, n_t) < need:
            decision = INCONCLUSIVE
            reason = (
                f"waiting for {need} outcomes per arm (canary {n_c}, control {n_t})"
            )
        elif elapsed < self.min_stage_duration:
            decision = INCONCLUSIVE
            reason = (
                f"waiting for the stage to run {self.min_stage_duration:g}s"
                f" ({elapsed:g}s so far)"
            )
        elif unproven := [r for r in results if not r.passed and not r.check.dry_run]:
            first_open = unproven[0]
            decision = INCONCLUSIVE
            reason = (
                f"waiting for {first_open.check.describe()} to be shown within its"
                f" margin: upper bound {first_open.upper:.4g} >= margin"
                f" {first_open.margin:.4g}"
            )
        else:
            decision = PASS
            reason = "; ".join(
                f"{r.check.describe()}: upper bound {r.upper:.4g} < margin {r.margin:.4g}"
                for r in results
                if not r.check.dry_run
            ) + (f" after {n_c} canary and {n_t} control outcomes over {elapsed:g}s")
        return Verdict(decision, reason, results, srm, n_c, n_t, elapsed, failed)

    # -- persistence: the counts are the whole state ---------------------------

    def to_state(self) -> dict[str, object]:
        """Return the counts as JSON-compatible values (see :meth:`load_state`)."""
        return {
            "strata": [
                {
                    "share": s.share,
                    "started": s.started,
                    "n": list(s.n),
                    "bad": [list(s.s1[0]), list(s.s1[1])],
                    "cnt": [list(s.cnt[0]), list(s.cnt[1])],
                    "sq": [list(s.s2[0]), list(s.s2[1])],
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
        uses the clock's wall-clock ``time()``). A state saved before checks
        had their own counts (no ``cnt``) loads too.

        Raises:
            ValueError: the state is malformed or was saved with other checks.
        """
        k = len(self._checks)
        per = [c.per_request() for c in self._checks]
        try:
            strata: list[Stratum] = []
            for raw in state["strata"]:
                share, started = float(raw["share"]), float(raw["started"])
                s = Stratum(share, started, k, sketch=self._sketch)
                s.n = [int(raw["n"][0]), int(raw["n"][1])]
                bad = raw["bad"]
                if len(bad[0]) != k or len(bad[1]) != k:
                    raise ValueError("judge state was saved with different checks")
                s.s1 = [[float(x) for x in bad[a]] for a in (0, 1)]
                cnt = raw.get("cnt")
                s.cnt = (
                    [[int(x) for x in cnt[a]] for a in (0, 1)]
                    if cnt is not None
                    else [[s.n[a] if per[i] else 0 for i in range(k)] for a in (0, 1)]
                )
                sq = raw.get("sq")
                s.s2 = (
                    [[float(x) for x in sq[a]] for a in (0, 1)]
                    if sq is not None
                    else [list(s.s1[0]), list(s.s1[1])]
                )
                if any(len(r[a]) != k for r in (s.cnt, s.s2) for a in (0, 1)):
                    raise ValueError("judge state was saved with different checks")
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
