"""Scenarios 1 and 2: a bad pricing canary rolled back, a good one promoted."""

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


@dataclass(frozen=True, slots=True)
class _RolloutRun:
    status: str
    requests: int
    virtual_seconds: float
    changes: tuple[StageChange, ...]
    series: tuple[RolloutPoint, ...]
    rolled_back: RolloutRolledBack | None


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
    """

    status: str
    percents: tuple[float, ...]
    final_percent: float
    requests: int
    virtual_seconds: float
    changes: tuple[StageChange, ...] = field(repr=False)
    series: tuple[RolloutPoint, ...] = field(repr=False)


def _latency(rng: random.Random) -> float:
    # Log-normal, median 15 ms: about 50 requests a second, one after another.
    return rng.lognormvariate(-4.2, 0.7)


def _changes(status: Any, offset: float) -> tuple[StageChange, ...]:
    out: list[StageChange] = []
    previous = STAGES[0]
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
) -> _RolloutRun:
    clock = FakeClock()
    offset = clock.time() - clock.monotonic()
    flags = Flags(InMemoryProvider(), store=MemoryStore(clock=clock), clock=clock)
    rolled_back: list[RolloutRolledBack] = []
    rollout = Rollout(
        name,
        flags=flags,
        stages=STAGES,
        min_stage_duration=params.min_stage_duration,
        min_samples=1_000,
        max_stage_duration=None,
        # pass_below: a stage passes only on evidence that the canary is less
        # than one point worse; "no FAIL yet" lets doubled error rates through.
        checks=[
            ErrorRateCheck(max_increase=0.0, pass_below=0.01),
            LatencyCheck(threshold=0.250, max_increase=0.02),
        ],
        confidence=0.99,
        clock=clock,
        runbook="https://runbooks.example/pricing",
        on_rollback=rolled_back.append,
    )
    rng = random.Random(seed)  # noqa: S311  # a simulation, not cryptography
    counts = [0, 0, 0, 0]  # control, control errors, canary, canary errors
    series: list[RolloutPoint] = [RolloutPoint(0.0, rollout.percent, 0, 0, 0, 0)]
    reporter.begin(key, title, len(STAGES))
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
        stage = STAGES.index(percent) if percent in STAGES else 0
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
        changes=_changes(status, offset),
        series=tuple(series),
        rolled_back=rolled_back[0] if rolled_back else None,
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
    """Roll out a change as good as the old code; expect 1 -> 5 -> 25 -> 50 -> 100."""
    key = "promotion"
    run = _drive_rollout(
        "pricing-v3-good",
        BASE_ERROR,
        seed=seed + 1,
        params=params,
        reporter=reporter,
        key=key,
        title="2 · good change, promoted stage by stage",
    )
    percents = (STAGES[0], *(c.to_percent for c in run.changes))
    final = percents[-1]
    reporter.end(
        key,
        " → ".join(f"{p:g}" for p in percents)
        + f"% ({run.status}) in {run.virtual_seconds / 3600:.1f} virtual hours,"
        f" {run.requests:,} requests",
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
    )


# ------------------------------------------------------------------ the outage
