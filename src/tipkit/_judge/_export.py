"""Every verdict, exported: per-check gauges, a counter and a typed event.

A rollout's engine hands each checkpoint's verdict to its :class:`VerdictExport`,
which

* counts it in ``tipkit.rollout.judge.verdicts`` per check, by that check's own
  verdict (``PASS`` once its upper bound is below its margin, ``FAIL`` once its
  lower bound is above ``max_increase``, else ``INCONCLUSIVE``) and mode
  (``enforce`` or ``dry_run``);
* keeps it for the gauges ``tipkit.rollout.judge.bound`` and
  ``tipkit.rollout.judge.margin`` (attribute ``tipkit.rollout.judge.side``:
  ``upper``, the PASS side, compared with the pass margin; ``lower``, the FAIL
  side, compared with ``max_increase``), read when the SDK collects;
* publishes :class:`JudgeVerdict` when a check's verdict or the stage changes
  (built only while someone listens).

A dry-run check goes through all three exactly like an acting one, with
``dry_run=True`` / ``mode=dry_run``: that is how a team sees what it would
have done before letting it act.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import ClassVar

from tipkit._judge._verdict import FAIL, INCONCLUSIVE, PASS, CheckResult, Verdict
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY
from tipkit.telemetry._events import BUS, AttributeValue, Event

__all__ = ["JudgeVerdict", "VerdictExport", "check_decision"]


def check_decision(result: CheckResult) -> str:
    """Return one check's own verdict: ``FAIL``, ``PASS`` or ``INCONCLUSIVE``.

    It ignores the rollout's floors (``min_samples``, ``min_stage_duration``)
    and the sample-ratio check: those belong to the rollout's verdict.
    """
    if result.failed:
        return FAIL
    return PASS if result.passed else INCONCLUSIVE


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True, slots=True)
class JudgeVerdict(Event):
    """One metric check's verdict changed (or its rollout entered a new stage).

    Attributes:
        name: the rollout.
        check: the check's label (``error_rate``, ``latency>0.25s``, a KPI name).
        decision: the check's own verdict (see :func:`check_decision`).
        rollout_decision: the rollout's verdict at the same checkpoint.
        percent: the stage's canary share, in percent.
        lower, upper: the always-valid bounds of how much worse the canary is
            (``None`` until both arms have data).
        margin: the pass margin the upper bound must fall below.
        max_increase: the worsening the lower bound must exceed to fail.
        canary_count, canary_bad, control_count, control_bad: the check's
            values per arm over the rollout (``bad``: bad outcomes of a rate,
            the sum of a mean).
        dry_run: the check only reports; it never rolls back nor holds a stage.
    """

    check: str
    decision: str
    rollout_decision: str
    percent: float
    lower: float | None
    upper: float | None
    margin: float | None
    max_increase: float
    canary_count: int
    canary_bad: float
    control_count: int
    control_bad: float
    dry_run: bool

    otel_name: ClassVar[str] = "tipkit.rollout.judge.verdict"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the rollout, check, verdicts, bounds, margin, counts and mode."""
        attrs: dict[str, AttributeValue] = {
            names.ROLLOUT_NAME: self.name,
            names.ROLLOUT_GUARD: self.check,
            names.ROLLOUT_DECISION: self.decision,
            names.ROLLOUT_PERCENT: self.percent,
            names.MODE: "dry_run" if self.dry_run else "enforce",
            "tipkit.rollout.max_increase": self.max_increase,
            names.ROLLOUT_CANARY_COUNT: self.canary_count,
            names.ROLLOUT_CANARY_BAD: self.canary_bad,
            names.ROLLOUT_CONTROL_COUNT: self.control_count,
            names.ROLLOUT_CONTROL_BAD: self.control_bad,
        }
        if self.lower is not None:
            attrs[names.ROLLOUT_LOWER] = self.lower
        if self.upper is not None:
            attrs[names.ROLLOUT_UPPER] = self.upper
        if self.margin is not None:
            attrs["tipkit.rollout.margin"] = self.margin
        return attrs


class VerdictExport:
    """Export one rollout's verdicts (see the module docstring).

    Registers its two gauges on creation (held weakly: they stop when this
    object is garbage-collected). Thread-safe: :meth:`record` may be called
    from any thread; one lock guards the last verdict.
    """

    __slots__ = ("__weakref__", "_last", "_lock", "_seen", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._last: tuple[Verdict, float] | None = None
        self._seen: dict[int, tuple[str, float]] = {}
        REGISTRY.register_gauge(names.JUDGE_BOUND, self, _bounds)
        REGISTRY.register_gauge(names.JUDGE_MARGIN, self, _margins)

    def __repr__(self) -> str:
        return f"<VerdictExport of rollout {self.name!r}>"

    def record(self, verdict: Verdict, percent: float) -> None:
        """Count *verdict* (judged at a stage of *percent*), keep it, announce changes."""
        changed: list[tuple[CheckResult, str]] = []
        with self._lock:
            self._last = (verdict, percent)
            for i, r in enumerate(verdict.checks):
                decision = check_decision(r)
                if self._seen.get(i) != (decision, percent):
                    self._seen[i] = (decision, percent)
                    changed.append((r, decision))
        for r in verdict.checks:
            REGISTRY.counter(
                names.JUDGE_VERDICTS,
                {
                    names.ROLLOUT_NAME: self.name,
                    names.ROLLOUT_GUARD: r.check.describe(),
                    names.ROLLOUT_DECISION: check_decision(r),
                    names.MODE: "dry_run" if r.check.dry_run else "enforce",
                },
            ).inc()
        if changed and JudgeVerdict.listened:
            for r, decision in changed:
                BUS.publish(
                    JudgeVerdict(
                        self.name,
                        check=r.check.describe(),
                        decision=decision,
                        rollout_decision=verdict.decision,
                        percent=percent,
                        lower=_finite(r.lower),
                        upper=_finite(r.upper),
                        margin=_finite(r.margin),
                        max_increase=r.check.max_increase,
                        canary_count=r.canary_count,
                        canary_bad=r.canary_bad,
                        control_count=r.control_count,
                        control_bad=r.control_bad,
                        dry_run=r.check.dry_run,
                    )
                )

    def last(self) -> tuple[Verdict, float] | None:
        """Return the last verdict and its stage's percent (``None`` before one)."""
        with self._lock:
            return self._last

    def readings(
        self, *, margins: bool
    ) -> list[tuple[float, dict[str, str | int | float | bool]]]:
        """Return the gauge readings: each check's finite bounds (or margins) per side."""
        last = self.last()
        if last is None:
            return []
        verdict, percent = last
        out: list[tuple[float, dict[str, str | int | float | bool]]] = []
        for r in verdict.checks:
            pairs = (
                (("upper", r.margin), ("lower", r.check.max_increase))
                if margins
                else (("upper", r.upper), ("lower", r.lower))
            )
            for side, value in pairs:
                if math.isfinite(value):
                    out.append(
                        (
                            value,
                            {
                                names.ROLLOUT_NAME: self.name,
                                names.ROLLOUT_GUARD: r.check.describe(),
                                names.ROLLOUT_PERCENT: percent,
                                names.JUDGE_SIDE: side,
                                names.MODE: "dry_run" if r.check.dry_run else "enforce",
                            },
                        )
                    )
        return out


def _bounds(
    owner: VerdictExport,
) -> list[tuple[float, dict[str, str | int | float | bool]]]:
    return owner.readings(margins=False)


def _margins(
    owner: VerdictExport,
) -> list[tuple[float, dict[str, str | int | float | bool]]]:
    return owner.readings(margins=True)
