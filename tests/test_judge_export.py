"""Every verdict exported: gauges of bound and margin, a counter, a JudgeVerdict event."""

from __future__ import annotations

import math
import random

import pytest

from tipkit._judge import ErrorRateCheck, LatencyCheck
from tipkit._judge._export import JudgeVerdict, VerdictExport, check_decision
from tipkit.flags import Flags, InMemoryProvider
from tipkit.rollout import Rollout, RolloutRolledBack
from tipkit.stores import MemoryStore
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock, capture_events


def _rollout(name: str, checks: list, clock: FakeClock) -> Rollout:
    flags = Flags(InMemoryProvider(), store=MemoryStore(clock=clock), clock=clock)
    return Rollout(
        name,
        flags=flags,
        stages=[10, 50, 100],
        min_samples=200,
        min_stage_duration=0.0,
        checks=checks,
        clock=clock,
    )


def _drive(rollout: Rollout, clock: FakeClock, canary_error: float, n: int) -> None:
    rng = random.Random(7)
    for _ in range(n):
        with rollout.observe(f"u{rng.getrandbits(48)}") as arm:
            clock.advance(0.01)
            if rng.random() < (canary_error if arm.is_canary else 0.01):
                arm.fail()
        if rollout.status().status != "running":
            return


def test_a_failing_dry_run_check_is_exported_and_never_acts() -> None:
    """A 30 %-error canary under a dry-run error check: FAIL reported everywhere, no rollback."""
    clock = FakeClock()
    name = "export-dry-run"
    rollout = _rollout(
        name, [LatencyCheck(threshold=1.0), ErrorRateCheck(dry_run=True)], clock
    )
    with capture_events(JudgeVerdict, RolloutRolledBack) as events:
        _drive(rollout, clock, 0.30, 60_000)
    assert "completed" == rollout.status().status
    assert [] == [e for e in events if isinstance(e, RolloutRolledBack)]
    dry = [e for e in events if isinstance(e, JudgeVerdict) and e.dry_run]
    fails = [e for e in dry if e.decision == "FAIL"]
    assert fails, dry
    first = fails[0]
    assert ("error_rate", name, True) == (first.check, first.name, first.dry_run)
    assert first.lower is not None
    assert first.lower > first.max_increase
    assert first.margin is not None
    assert first.upper is not None
    assert first.canary_bad > 0.1 * first.canary_count
    attrs = first.otel_attributes()
    assert ("dry_run", "FAIL") == (attrs[names.MODE], attrs[names.ROLLOUT_DECISION])
    counted = REGISTRY.value(
        names.JUDGE_VERDICTS,
        {
            names.ROLLOUT_NAME: name,
            names.MODE: "dry_run",
            names.ROLLOUT_DECISION: "FAIL",
        },
    )
    assert counted >= len(fails)
    passed_latency = [
        e for e in events if isinstance(e, JudgeVerdict) and not e.dry_run
    ]
    assert "PASS" in {e.decision for e in passed_latency}


def test_gauges_report_the_last_verdicts_bounds_and_margins() -> None:
    """bound{side} and margin{side} equal the last verdict's numbers, per check and stage."""
    clock = FakeClock()
    name = "export-gauges"
    rollout = _rollout(name, [ErrorRateCheck()], clock)
    _drive(rollout, clock, 0.01, 3_000)
    verdict = rollout.status().verdict
    assert verdict is not None
    r = verdict.checks[0]
    bounds = {
        g.attributes[names.JUDGE_SIDE]: g
        for g in REGISTRY.gauges(names.JUDGE_BOUND)
        if g.attributes[names.ROLLOUT_NAME] == name
    }
    margins = {
        g.attributes[names.JUDGE_SIDE]: g.value
        for g in REGISTRY.gauges(names.JUDGE_MARGIN)
        if g.attributes[names.ROLLOUT_NAME] == name
    }
    assert (r.upper, r.lower) == (bounds["upper"].value, bounds["lower"].value)
    assert {"upper": r.margin, "lower": 0.0} == margins
    assert {
        names.ROLLOUT_NAME: name,
        names.ROLLOUT_GUARD: "error_rate",
        names.ROLLOUT_PERCENT: rollout.percent,
        names.JUDGE_SIDE: "upper",
        names.MODE: "enforce",
    } == bounds["upper"].attributes
    total = REGISTRY.value(names.JUDGE_VERDICTS, {names.ROLLOUT_NAME: name})
    assert total > 0


def test_events_are_published_on_changes_only() -> None:
    """The same verdict twice at the same stage publishes one event per check."""
    from tipkit._judge import Judge

    judge = Judge([ErrorRateCheck(), ErrorRateCheck(dry_run=True)], min_samples=100)
    judge.start_stage(0.5, 0.0)
    judge.set_stage_counts([1_000, 1_000], [[10, 10], [10, 10]])
    export = VerdictExport("export-changes")
    with capture_events(JudgeVerdict) as events:
        export.record(judge.evaluate(0.0), 50.0)
        export.record(judge.evaluate(1.0), 50.0)
        export.record(judge.evaluate(2.0), 100.0)
    assert [(False, 50.0), (True, 50.0), (False, 100.0), (True, 100.0)] == [
        (e.dry_run, e.percent) for e in events
    ]
    assert {"INCONCLUSIVE"} == {e.decision for e in events}
    assert 6 == REGISTRY.value(
        names.JUDGE_VERDICTS, {names.ROLLOUT_NAME: "export-changes"}
    )


def test_check_decision_and_infinite_bounds_are_not_exported() -> None:
    """Before data the bounds are infinite: no bound gauge, the margins still reported."""
    from tipkit._judge import Judge

    judge = Judge([ErrorRateCheck()])
    judge.start_stage(0.5, 0.0)
    v = judge.evaluate(0.0)
    assert "INCONCLUSIVE" == check_decision(v.checks[0])
    export = VerdictExport("export-empty")
    assert [] == export.readings(margins=False)
    export.record(v, 50.0)
    assert [] == export.readings(margins=False)
    assert math.isinf(v.checks[0].upper)
    assert [0.0] == [
        value
        for value, attrs in export.readings(margins=True)
        if attrs[names.JUDGE_SIDE] == "lower"
    ]
    with pytest.raises(AttributeError):
        export.name2 = "x"  # type: ignore[attr-defined]
