"""What a rollout publishes and reports: its events and its status."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from tipkit._judge import CheckResult, Verdict
from tipkit.telemetry import _names as names
from tipkit.telemetry._events import AttributeValue, Event

__all__ = [
    "ArmSummary",
    "RolloutControlled",
    "RolloutJudged",
    "RolloutRolledBack",
    "RolloutStageChanged",
    "RolloutStatus",
    "Status",
    "rolled_back_event",
]

Status = Literal["running", "paused", "rolled_back", "completed"]


@dataclass(frozen=True, slots=True)
class RolloutStageChanged(Event):
    """A rollout moved to another stage (advanced, completed, restarted).

    Attributes:
        name: the rollout.
        from_percent, to_percent: canary share before and after, in percent.
        status: the rollout's status afterwards.
        reason: why, in plain words ("passed: ...", "manual").
    """

    from_percent: float
    to_percent: float
    status: str
    reason: str

    otel_name: ClassVar[str] = "tipkit.rollout.stage_changed"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the rollout name, percents and status."""
        return {
            names.ROLLOUT_NAME: self.name,
            names.ROLLOUT_FROM_PERCENT: self.from_percent,
            names.ROLLOUT_PERCENT: self.to_percent,
            names.STATE: self.status,
        }


@dataclass(frozen=True, slots=True)
class RolloutRolledBack(Event):
    """A rollout was rolled back: canary share 0, everyone on control.

    Attributes:
        name: the rollout.
        reason: why, in plain words.
        automatic: the judge (or ``on_inconclusive``) did it, not a person.
        percent: the canary share when it happened, in percent.
        check: the label of the failed metric check (``"error_rate"``,
            ``"latency>0.25s"``), or ``None`` for a manual rollback; ``guard``
            is its old name, kept as a read-only alias.
        canary_count, canary_bad, control_count, control_bad: the failed
            check's counts (0 for a manual rollback).
        canary_rate, control_rate: their rates.
        lower, upper: the confidence interval of ``canary - control`` (``None``
            when there was none).
        runbook: the rollout's runbook URL, if any.
        verdict: the full verdict, if a verdict led to it.
        actor: who rolled it back (``"tipkit:rollout"`` for the judge).
    """

    reason: str
    automatic: bool
    percent: float
    check: str | None = None
    canary_count: int = 0
    canary_bad: int = 0
    control_count: int = 0
    control_bad: int = 0
    canary_rate: float = 0.0
    control_rate: float = 0.0
    lower: float | None = None
    upper: float | None = None
    runbook: str | None = None
    verdict: Verdict | None = field(default=None, compare=False)
    actor: str | None = None

    otel_name: ClassVar[str] = "tipkit.rollout.rolled_back"

    @property
    def guard(self) -> str | None:
        """The failed metric check's label (the old name of :attr:`check`)."""
        return self.check

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the rollout name, failed check, numbers and runbook (no user data)."""
        attrs: dict[str, AttributeValue] = {
            names.ROLLOUT_NAME: self.name,
            names.ROLLOUT_AUTOMATIC: self.automatic,
            names.ROLLOUT_PERCENT: self.percent,
            names.ROLLOUT_CANARY_COUNT: self.canary_count,
            names.ROLLOUT_CANARY_BAD: self.canary_bad,
            names.ROLLOUT_CONTROL_COUNT: self.control_count,
            names.ROLLOUT_CONTROL_BAD: self.control_bad,
        }
        if self.check is not None:
            attrs[names.ROLLOUT_GUARD] = self.check
        if self.lower is not None:
            attrs[names.ROLLOUT_LOWER] = self.lower
        if self.upper is not None:
            attrs[names.ROLLOUT_UPPER] = self.upper
        if self.runbook is not None:
            attrs[names.RUNBOOK] = self.runbook
        return attrs


@dataclass(frozen=True, slots=True)
class RolloutControlled(Event):
    """A rollout's state was changed by a person or by the rollout itself.

    Published for every pause, resume, promote (advance), rollback and restart,
    once it is in force in this process (written, or pending while the store
    fails), beside the action's own event (:class:`RolloutStageChanged`,
    :class:`RolloutRolledBack`).

    Attributes:
        name: the rollout.
        action: ``"pause"``, ``"resume"``, ``"promote"``, ``"rollback"`` or
            ``"restart"``.
        actor: who (``"tipkit:rollout"`` when the judge or a policy did it).
        reason: why, in the actor's words.
        from_percent, to_percent: canary share before and after, in percent.
        status: the rollout's status afterwards.
        pending: the store has not taken it yet (it failed; replayed later).
        runbook: the rollout's runbook URL, if any.
    """

    action: str
    actor: str
    reason: str
    from_percent: float
    to_percent: float
    status: str
    pending: bool = False
    runbook: str | None = None

    otel_name: ClassVar[str] = "tipkit.rollout.controlled"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the rollout name, action, actor, percents and status (no reason text)."""
        attrs: dict[str, AttributeValue] = {
            names.ROLLOUT_NAME: self.name,
            "tipkit.rollout.action": self.action,
            "tipkit.audit.actor": self.actor,
            names.ROLLOUT_FROM_PERCENT: self.from_percent,
            names.ROLLOUT_PERCENT: self.to_percent,
            names.STATE: self.status,
        }
        if self.runbook is not None:
            attrs[names.RUNBOOK] = self.runbook
        return attrs


@dataclass(frozen=True, slots=True)
class RolloutJudged(Event):
    """The judge's decision changed (published on changes only, with its numbers).

    Attributes:
        name: the rollout.
        decision: ``"PASS"``, ``"FAIL"`` or ``"INCONCLUSIVE"``.
        reason: the verdict's reason.
        percent: the stage's canary share in percent.
        verdict: the verdict with every metric check's numbers.
    """

    decision: str
    reason: str
    percent: float
    verdict: Verdict = field(compare=False)

    otel_name: ClassVar[str] = "tipkit.rollout.judged"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the rollout name, decision and percent."""
        return {
            names.ROLLOUT_NAME: self.name,
            names.ROLLOUT_DECISION: self.decision,
            names.ROLLOUT_PERCENT: self.percent,
        }


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """One arm's outcomes in the current stage (judged requests only).

    Attributes:
        count: outcomes.
        errors: failed outcomes.
        error_rate: ``errors / count`` (0 when empty).
        latency_mean: mean duration in seconds (0 when empty).
        latency_max: longest duration in seconds (0 when empty).
    """

    count: int
    errors: int
    error_rate: float
    latency_mean: float
    latency_max: float


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """A rollout at one moment: what :meth:`Rollout.status` returns.

    Attributes:
        name, flag: the rollout and its flag key.
        status: ``"running"``, ``"paused"``, ``"rolled_back"`` or ``"completed"``.
        stage: index into ``stages`` of the current stage.
        percent: the canary share now, in percent (0 once rolled back).
        stages: the configured stages.
        canary, control: this process's judged outcomes in the current stage.
        verdict: the last verdict, or ``None`` before the first one.
        history: the transitions, oldest first, each with its wall-clock ``at``.
    """

    name: str
    flag: str
    status: Status
    stage: int
    percent: float
    stages: tuple[float, ...]
    canary: ArmSummary
    control: ArmSummary
    verdict: Verdict | None
    history: tuple[Mapping[str, Any], ...]


def rolled_back_event(  # noqa: PLR0917  # one positional per field of the event
    name: str,
    reason: str,
    percent: float,
    verdict: Verdict | None,
    runbook: str | None,
    actor: str | None = None,
) -> RolloutRolledBack:
    """Build the rollback event: the first failed check's numbers, if a verdict led to it."""
    failed: CheckResult | None = (
        verdict.failed[0] if verdict and verdict.failed else None
    )
    if failed is None:
        return RolloutRolledBack(
            name,
            reason,
            verdict is not None,
            percent,
            runbook=runbook,
            verdict=verdict,
            actor=actor,
        )
    return RolloutRolledBack(
        name,
        reason,
        automatic=True,
        percent=percent,
        check=failed.check.describe(),
        canary_count=failed.canary_count,
        canary_bad=round(failed.canary_bad),
        control_count=failed.control_count,
        control_bad=round(failed.control_bad),
        canary_rate=failed.canary_rate,
        control_rate=failed.control_rate,
        lower=failed.lower if math.isfinite(failed.lower) else None,
        upper=failed.upper if math.isfinite(failed.upper) else None,
        runbook=runbook,
        verdict=verdict,
        actor=actor,
    )
