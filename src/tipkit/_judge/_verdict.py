"""The judge's answers: a verdict and the numbers behind it (JSON-ready)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, Literal

from tipkit._judge._checks import MetricCheck

__all__ = [
    "FAIL",
    "INCONCLUSIVE",
    "PASS",
    "CheckResult",
    "Decision",
    "GuardResult",
    "SampleRatio",
    "Verdict",
]

Decision = Literal["PASS", "FAIL", "INCONCLUSIVE"]
PASS: Final = "PASS"  # noqa: S105  # a verdict, not a password
FAIL: Final = "FAIL"
INCONCLUSIVE: Final = "INCONCLUSIVE"


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One metric check's numbers at one evaluation.

    Attributes:
        check: the metric check (``guard`` is its old name, kept as an alias).
        canary_count, control_count: outcomes per arm (whole rollout).
        canary_bad, control_bad: bad outcomes per arm (whole rollout); for a
            mean, the sum of the (capped) values.
        canary_rate, control_rate: ``bad / count`` per arm (0 when empty): the
            rate, or the mean.
        difference: the stage-stratified estimate of ``d``, how much worse the
            canary is (``canary - control``; the reverse when higher is better).
        lower, upper: its one-sided always-valid bounds (infinite until both
            arms have data).
        failed: the lower bound exceeds ``check.max_increase`` and both arms
            have at least 100 values.
        margin: the pass margin in force (``check.pass_below``, or the default
            scaled to the control's standard deviation).
        passed: the upper bound is below the margin (with 100 values per arm).
    """

    check: MetricCheck
    canary_count: int
    canary_bad: float
    control_count: int
    control_bad: float
    canary_rate: float
    control_rate: float
    difference: float
    lower: float
    upper: float
    failed: bool
    margin: float = math.inf
    passed: bool = False

    @property
    def guard(self) -> MetricCheck:
        """The metric check (the old name of :attr:`check`)."""
        return self.check

    def as_dict(self) -> dict[str, object]:
        """Return the numbers as JSON-compatible values (the check as its label).

        The keys are a stored format (rollout histories in the store): the
        check's label stays under ``"guard"``, its name before the rename.
        """
        return {
            "guard": self.check.describe(),
            "max_increase": self.check.max_increase,
            "pass_below": self.check.pass_below,
            "margin": _finite_or_none(self.margin),
            "passed": self.passed,
            "dry_run": self.check.dry_run,
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


GuardResult = CheckResult
"""The old name of :class:`CheckResult`."""


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
        checks: every metric check's numbers (``guards`` is the old name).
        sample_ratio: the sample-ratio check.
        stage_canary, stage_control: outcomes per arm in the current stage.
        stage_elapsed: seconds since the current stage started.
        failed: the checks that failed, in order (dry-run checks excluded).
    """

    decision: Decision
    reason: str
    checks: tuple[CheckResult, ...]
    sample_ratio: SampleRatio
    stage_canary: int
    stage_control: int
    stage_elapsed: float
    failed: tuple[CheckResult, ...] = field(default=())

    @property
    def guards(self) -> tuple[CheckResult, ...]:
        """Every metric check's numbers (the old name of :attr:`checks`)."""
        return self.checks

    def as_dict(self) -> dict[str, object]:
        """Return the verdict as JSON-compatible values (for the store and events).

        A stored format: the checks' numbers stay under ``"guards"``.
        """
        return {
            "decision": self.decision,
            "reason": self.reason,
            "guards": [c.as_dict() for c in self.checks],
            "sample_ratio": self.sample_ratio.as_dict(),
            "stage_canary": self.stage_canary,
            "stage_control": self.stage_control,
            "stage_elapsed": self.stage_elapsed,
        }
