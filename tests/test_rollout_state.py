"""The rollout's state machine: pure transitions of the stored state."""

import copy

import pytest

from tipkit._judge import ErrorRateCheck, Judge
from tipkit.errors import RolloutStateError
from tipkit.rollout._state import (
    HISTORY_MAX,
    Transition,
    check_stages,
    decide,
    manual,
    new_state,
    view,
)

STAGES = (1.0, 5.0, 50.0, 100.0)


def state(**changes):
    doc = new_state("f", STAGES, 1000.0)
    doc.update(changes)
    return doc


def verdict(decision, *, elapsed=0.0):
    """Return a real verdict of the given decision (FAIL, PASS or INCONCLUSIVE)."""
    j = Judge(
        [ErrorRateCheck(pass_below=0.05)], min_samples=100, min_stage_duration=0.0
    )
    j.start_stage(0.5, 0.0)
    canary_bad = 300 if decision == "FAIL" else 1
    n = 50 if decision == "INCONCLUSIVE" else 1000
    for i in range(n):
        j.record(True, i < canary_bad, 0.0)
        j.record(False, i < 1, 0.0)
    v = j.evaluate(elapsed)
    assert decision == v.decision
    return v


def test_a_new_state_starts_running_at_the_first_stage():
    """Stage 0, attempt 1, one "started" entry; a first stage of 100 % is complete."""
    doc = new_state("f", STAGES, 1000.0)
    assert ("running", 0, 1, 1000.0) == (
        doc["status"],
        doc["stage"],
        doc["attempt"],
        doc["stage_started"],
    )
    assert [("started", 1.0)] == [(h["action"], h["percent"]) for h in doc["history"]]
    assert "completed" == new_state("f", (100.0,), 0.0)["status"]


def test_view_derives_share_and_judging():
    """A rolled-back state serves 0 %; only a running or paused split is judged."""
    v = view(state(stage=2), STAGES)
    assert (50.0, 50_000, True, True) == (v.percent, v.cut, v.running, v.judging)
    rolled = view(state(status="rolled_back", stage=2), STAGES)
    assert (0.0, 0, False) == (rolled.percent, rolled.cut, rolled.judging)
    full = view(state(stage=3, status="completed"), STAGES)
    assert (100.0, False) == (full.percent, full.judging)


def test_advance_moves_one_stage_and_the_last_completes():
    """Each advance applies to the stage it was decided in, once; 100 % completes."""
    doc = state()
    step = Transition("advance", "passed", 2000.0, expected=(1, 0))
    after = step.apply(doc, STAGES)
    assert after is not None
    assert (1, 2000.0, "advanced") == (
        after["stage"],
        after["stage_started"],
        after["history"][-1]["action"],
    )
    assert step.apply(after, STAGES) is None  # decided for stage 0: stale now
    last = Transition("advance", "passed", 3000.0, expected=(1, 2)).apply(
        state(stage=2), STAGES
    )
    assert last is not None
    assert ("completed", 3, 100.0) == (
        last["status"],
        last["stage"],
        last["history"][-1]["percent"],
    )


def test_transitions_leave_their_input_alone_and_keep_a_bounded_history():
    """apply() returns a new state; the history keeps its last HISTORY_MAX entries."""
    doc = state()
    doc["history"] = [{"action": "held"}] * HISTORY_MAX
    before = copy.deepcopy(doc)
    after = Transition("hold", "slow", 5.0).apply(doc, STAGES)
    assert before == doc
    assert after is not None
    assert HISTORY_MAX == len(after["history"])
    assert "held" == after["history"][-1]["action"]
    assert "slow" == after["history"][-1]["reason"]


@pytest.mark.parametrize(
    ("action", "status", "expected"),
    [
        ("rollback", "running", "rolled_back"),
        ("rollback", "paused", "rolled_back"),
        ("rollback", "rolled_back", None),
        ("pause", "running", "paused"),
        ("pause", "paused", None),
        ("resume", "paused", "running"),
        ("resume", "running", None),
        ("restart", "rolled_back", "running"),
        ("restart", "running", None),
    ],
)
def test_each_transition_applies_only_from_its_statuses(action, status, expected):
    """A transition on a state it does not apply to returns None (someone moved first)."""
    after = Transition(action, "why", 9.0, before=5.0).apply(
        state(status=status, stage=1), STAGES
    )
    assert expected == (None if after is None else after["status"])


def test_rollback_remembers_the_share_and_restart_is_a_new_attempt():
    """Rollback keeps rolled_back_from; restart goes to stage 0 of attempt + 1."""
    rolled = Transition("rollback", "bad", 9.0, before=5.0).apply(
        state(stage=1), STAGES
    )
    assert rolled is not None
    assert (5.0, 0.0) == (rolled["rolled_back_from"], rolled["history"][-1]["percent"])
    again = Transition("restart", "fixed", 10.0).apply(rolled, STAGES)
    assert again is not None
    assert (0, 2, 10.0, "restarted") == (
        again["stage"],
        again["attempt"],
        again["stage_started"],
        again["history"][-1]["action"],
    )


def test_decide_maps_verdicts_to_transitions():
    """FAIL rolls back (paused too); PASS advances a running rollout only."""
    fail, ok = verdict("FAIL"), verdict("PASS")
    kw = {"max_stage_duration": None, "on_inconclusive": "hold", "held": False}
    for status in ("running", "paused"):
        step = decide(state(status=status), fail, 1.0, before=1.0, **kw)
        assert step is not None
        assert ("rollback", fail) == (step.action, step.verdict)
    step = decide(state(), ok, 1.0, before=1.0, **kw)
    assert step is not None
    assert ("advance", (1, 0)) == (step.action, step.expected)
    assert step.reason.startswith("passed: ")
    assert decide(state(status="paused"), ok, 1.0, before=1.0, **kw) is None


@pytest.mark.parametrize("policy", ["hold", "pause", "rollback"])
def test_an_inconclusive_stage_is_handed_to_the_policy_once(policy):
    """After max_stage_duration: the policy's transition, unless already held."""
    slow = verdict("INCONCLUSIVE", elapsed=61.0)
    kw = {"max_stage_duration": 60.0, "on_inconclusive": policy}
    step = decide(state(), slow, 1.0, held=False, before=1.0, **kw)
    assert step is not None
    assert policy == step.action
    assert "inconclusive after 61s" in step.reason
    assert decide(state(), slow, 1.0, held=True, before=1.0, **kw) is None
    early = verdict("INCONCLUSIVE", elapsed=59.0)
    assert decide(state(), early, 1.0, held=False, before=1.0, **kw) is None


def test_manual_controls_check_the_status():
    """advance/pause refuse a finished rollout; resume restarts a rolled-back one."""
    kw = {"verdict": None, "before": 0.0, "name": "r"}
    with pytest.raises(RolloutStateError, match="resume\\(\\) restarts it"):
        manual("advance", state(status="rolled_back"), "x", 1.0, **kw)
    with pytest.raises(RolloutStateError, match="it is completed"):
        manual("pause", state(status="completed"), "x", 1.0, **kw)
    with pytest.raises(RolloutStateError, match="nothing to resume"):
        manual("resume", state(status="completed"), "x", 1.0, **kw)
    assert (
        "restart"
        == manual("resume", state(status="rolled_back"), "x", 1.0, **kw).action
    )
    assert (1, 2) == manual("advance", state(stage=2), "x", 1.0, **kw).expected


def test_stages_are_checked():
    """Stages are increasing percentages in (0, 100] with at most 3 decimals."""
    assert (0.5, 100.0) == check_stages([0.5, 100])
    for bad, match in (
        ([5, 1], "increase"),
        ([0.0001], "3 decimals"),
        ([], "at least"),
    ):
        with pytest.raises(ValueError, match=match):
            check_stages(bad)
    with pytest.raises(TypeError, match="percentages"):
        check_stages([True])
