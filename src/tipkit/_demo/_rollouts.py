"""Scenarios 1 and 2: a bad pricing canary rolled back, a good one promoted.

Both use the checks' safe defaults: a stage passes only once the judge's
upper bound of (canary - control) is below each check's margin (0.5 point of
errors at a 1 % error rate). The good change starts at 5 %: at a 1 % stage,
showing a canary within half a point takes about 6,000 canary requests, i.e.
600,000 requests in all, which the demo cannot afford in seconds (a first
stage of 1 % is for catching a bad change early, as scenario 1 does).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tipkit._demo._common import (
    BAD_ERROR,
    BASE_ERROR,
    STAGES,
    Params,
    Reporter,
)
from tipkit._judge._plot import Point
from tipkit.flags import Flags, InMemoryProvider
from tipkit.rollout import (
    ErrorRateCheck,
    LatencyCheck,
    Rollout,
    RolloutRolledBack,
)
from tipkit.stores import MemoryStore
from tipkit.testing import FakeClock


class RolloutPoint(NamedTuple):
    """One sample of a rollout's traffic: cumulative counts per arm at virtual *t*."""

    t: float
    percent: float
    canary: int
    canary_errors: int
    control: int
    control_errors: int


@dataclass(frozen=True, slots=True)
class StageChange:
    """A stage transition with the judge's numbers that caused it.

    Attributes:
        t: virtual seconds since the rollout started.
        from_percent, to_percent: canary share before and after.
        action: ``"advanced"``, ``"completed"`` or ``"rolled_back"``.
        decision: the judge's verdict (``"PASS"``, ``"FAIL"``).
        canary, control: outcomes per arm the verdict was based on.
        canary_rate, control_rate: their error rates.
        lower, upper: the 99 % confidence sequence of canary - control.
        margin: the pass margin the upper bound had to fall below.
    """

    t: float
    from_percent: float
    to_percent: float
    action: str
    decision: str | None
    canary: int
    control: int
    canary_rate: float
    control_rate: float
    lower: float | None
    upper: float | None
    margin: float | None = None


@dataclass(frozen=True, slots=True)
class _RolloutRun:
    status: str
    requests: int
    virtual_seconds: float
    changes: tuple[StageChange, ...]
    series: tuple[RolloutPoint, ...]
    rolled_back: RolloutRolledBack | None
    bounds: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class CanaryResult:
    """Scenario 1: a bad pricing change (errors 1 % -> 2.5 %) is rolled back.

    Attributes:
        status: the rollout's final status (``"rolled_back"`` expected).
        rolled_back_at: the canary share, in percent, when it was rolled back
            (``None`` if it was not).
        stage: 1-based index of that stage among :data:`STAGES`.
        canary_requests, control_requests: judged requests per arm at the
            rollback (the failed guard's counts).
        canary_errors, control_errors: their errors.
        canary_rate, control_rate: their error rates.
        lower, upper: the judge's 99 % bounds of canary - control then.
        guard: the guard that failed.
        requests: requests served in all.
        virtual_seconds: virtual time the rollout ran.
        changes, series: for the chart.
    """

    status: str
    rolled_back_at: float | None
    stage: int | None
    canary_requests: int
    control_requests: int
    canary_errors: int
    control_errors: int
    canary_rate: float
    control_rate: float
    lower: float | None
    upper: float | None
    guard: str | None
    requests: int
    virtual_seconds: float
    changes: tuple[StageChange, ...] = field(repr=False)
    series: tuple[RolloutPoint, ...] = field(repr=False)

    @property
    def early(self) -> bool:
        """Whether it was rolled back at the first or second stage (1 % or 5 %)."""
        return self.rolled_back_at is not None and self.rolled_back_at <= STAGES[1]


@dataclass(frozen=True, slots=True)
class PromotionResult:
    """Scenario 2: a good change is promoted stage by stage to 100 %.

    Attributes:
        status: the rollout's final status (``"completed"`` expected).
        percents: every canary share the rollout served, in order.
        final_percent: the share at the end.
        requests: requests served in all.
        virtual_seconds: virtual time the rollout ran.
        changes: each transition with the judge's numbers.
        series: for the chart.
        bounds: ``(canary requests, percent, verdict)`` samples: the error
            check's upper bound closing in on its margin, stage by stage
            (``tipkit._judge._plot.plot_bounds`` draws them).
    """

    status: str
    percents: tuple[float, ...]
    final_percent: float
    requests: int
    virtual_seconds: float
    changes: tuple[StageChange, ...] = field(repr=False)
    series: tuple[RolloutPoint, ...] = field(repr=False)
    bounds: tuple[Point, ...] = field(default=(), repr=False)


GOOD_STAGES = (5.0, 25.0, 50.0, 100.0)
"""The good change's plan (see the module docstring for why it starts at 5 %)."""


def _latency(rng: random.Random) -> float:
    # Log-normal, median 15 ms: about 50 requests a second, one after another.
    return rng.lognormvariate(-4.2, 0.7)


def _changes(status: Any, offset: float, first: float) -> tuple[StageChange, ...]:
    out: list[StageChange] = []
    previous = first
    for entry in status.history:
        action = entry["action"]
        if action not in {"advanced", "completed", "rolled_back"}:
            continue
        verdict = entry.get("verdict") or {}
        guards = verdict.get("guards") or [{}]
        failed = [g for g in guards if g.get("failed")]
        g = failed[0] if failed else guards[0]
        to = float(entry["percent"])
        out.append(
            StageChange(
                t=float(entry["at"]) - offset,
                from_percent=previous,
                to_percent=to,
                action=action,
                decision=verdict.get("decision"),
                canary=int(g.get("canary_count", 0)),
                control=int(g.get("control_count", 0)),
                canary_rate=float(g.get("canary_rate", 0.0)),
                control_rate=float(g.get("control_rate", 0.0)),
                lower=g.get("lower"),
                upper=g.get("upper"),
                margin=g.get("margin"),
            )
        )
        previous = to
    return tuple(out)


def _drive_rollout(
    name: str,
    canary_error: float,
    *,
    seed: int,
    params: Params,
    reporter: Reporter,
    key: str,
    title: str,
    stages: tuple[float, ...] = STAGES,
) -> _RolloutRun:
    clock = FakeClock()
    offset = clock.time() - clock.monotonic()
    flags = Flags(InMemoryProvider(), store=MemoryStore(clock=clock), clock=clock)
    rolled_back: list[RolloutRolledBack] = []
    rollout = Rollout(
        name,
        flags=flags,
        stages=stages,
        min_stage_duration=params.min_stage_duration,
        min_samples=1_000,
        max_stage_duration=None,
        # The defaults: a stage passes only on evidence that the canary is
        # less than half a point worse (errors), 2 points + 0.05 SD (slow share).
        checks=[
            ErrorRateCheck(),
            LatencyCheck(threshold=0.250),
        ],
        confidence=0.99,
        clock=clock,
        runbook="https://runbooks.example/pricing",
        on_rollback=rolled_back.append,
    )
    rng = random.Random(seed)  # noqa: S311  # a simulation, not cryptography
    counts = [0, 0, 0, 0]  # control, control errors, canary, canary errors
    series: list[RolloutPoint] = [RolloutPoint(0.0, rollout.percent, 0, 0, 0, 0)]
    bounds: list[Point] = []
    reporter.begin(key, title, len(stages))
    every = params.sample_every
    requests = 0
    percent = rollout.percent
    judging = True
    while judging and requests < params.max_requests:
        for _ in range(every):
            # A fresh customer id per request: assignment is then exactly a coin
            # with the stage's share (a small pool of ids would not be, and the
            # judge's sample-ratio check would rightly refuse to pass).
            with rollout.observe(f"customer-{rng.getrandbits(48)}") as arm:
                clock.advance(_latency(rng))
                i = 2 if arm.is_canary else 0
                counts[i] += 1
                if rng.random() < (canary_error if i else BASE_ERROR):
                    counts[i + 1] += 1
                    arm.fail()  # a 5xx response: counted, not raised
            if rollout.percent != percent:
                percent = rollout.percent
                judging = 0.0 < percent < 100.0
                if not judging:
                    break
        requests = counts[0] + counts[2]
        series.append(
            RolloutPoint(clock.monotonic(), rollout.percent, *counts[2:], *counts[:2])
        )
        verdict = rollout.status().verdict
        if verdict is not None:
            bounds.append((counts[2], percent, verdict))
        stage = stages.index(percent) if percent in stages else 0
        canary_rate = counts[3] / counts[2] if counts[2] else 0.0
        control_rate = counts[1] / counts[0] if counts[0] else 0.0
        reporter.update(
            key,
            stage + (1 if percent >= 100.0 else 0),
            f"stage {percent:g}% · canary {counts[2]:,} req {canary_rate:.2%} err"
            f" · control {counts[0]:,} req {control_rate:.2%} err"
            f" · {clock.monotonic() / 60:,.0f} virtual min",
        )
    status = rollout.status()
    return _RolloutRun(
        status=status.status,
        requests=requests,
        virtual_seconds=clock.monotonic(),
        changes=_changes(status, offset, stages[0]),
        series=tuple(series),
        rolled_back=rolled_back[0] if rolled_back else None,
        bounds=tuple(bounds),
    )


def run_bad_canary(seed: int, params: Params, reporter: Reporter) -> CanaryResult:
    """Roll out a pricing change that raises errors from 1 % to 2.5 %; expect a rollback."""
    key = "canary"
    run = _drive_rollout(
        "pricing-v2-bad",
        BAD_ERROR,
        seed=seed,
        params=params,
        reporter=reporter,
        key=key,
        title="1 · bad pricing change (errors 1% → 2.5%)",
    )
    ev = run.rolled_back
    if ev is None:
        reporter.end(key, f"not rolled back ({run.status})", ok=False)
        return CanaryResult(
            run.status, None, None, 0, 0, 0, 0, 0.0, 0.0, None, None, None,
            run.requests, run.virtual_seconds, run.changes, run.series,
        )  # fmt: skip
    stage = STAGES.index(ev.percent) + 1 if ev.percent in STAGES else None
    reporter.end(
        key,
        f"rolled back at {ev.percent:g}% (stage {stage}) after {ev.canary_count:,} canary"
        f" and {ev.control_count:,} control requests: canary {ev.canary_rate:.2%}"
        f" vs control {ev.control_rate:.2%}",
        ok=True,
    )
    return CanaryResult(
        status=run.status,
        rolled_back_at=ev.percent,
        stage=stage,
        canary_requests=ev.canary_count,
        control_requests=ev.control_count,
        canary_errors=ev.canary_bad,
        control_errors=ev.control_bad,
        canary_rate=ev.canary_rate,
        control_rate=ev.control_rate,
        lower=ev.lower,
        upper=ev.upper,
        guard=ev.guard,
        requests=run.requests,
        virtual_seconds=run.virtual_seconds,
        changes=run.changes,
        series=run.series,
    )


def run_good_rollout(seed: int, params: Params, reporter: Reporter) -> PromotionResult:
    """Roll out a change as good as the old code; expect 5 -> 25 -> 50 -> 100."""
    key = "promotion"
    run = _drive_rollout(
        "pricing-v3-good",
        BASE_ERROR,
        seed=seed + 1,
        params=params,
        reporter=reporter,
        key=key,
        title="2 · good change, promoted when the bound crosses the margin",
        stages=GOOD_STAGES,
    )
    percents = (GOOD_STAGES[0], *(c.to_percent for c in run.changes))
    final = percents[-1]
    crossings = "; ".join(
        f"{c.from_percent:g}%: upper bound +{100 * c.upper:.5f} pt < margin"
        f" +{100 * c.margin:.5f} pt after {c.canary:,} canary requests"
        for c in run.changes
        if c.upper is not None and c.margin is not None
    )
    reporter.end(
        key,
        " → ".join(f"{p:g}" for p in percents)
        + f"% ({run.status}) in {run.virtual_seconds / 3600:.1f} virtual hours,"
        f" {run.requests:,} requests; errors {crossings}",
        ok=run.status == "completed",
    )
    return PromotionResult(
        status=run.status,
        percents=percents,
        final_percent=final,
        requests=run.requests,
        virtual_seconds=run.virtual_seconds,
        changes=run.changes,
        series=run.series,
        bounds=run.bounds,
    )


# ------------------------------------------------------------------ the outage
