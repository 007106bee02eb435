"""What an experiment reports: counters, events, kept mismatches, results."""

from __future__ import annotations

import operator

from tests.experiment_support import (
    double,
    double_v2,
    make,
)

from tipkit.experiment import (
    Experiment,
    ExperimentCallbackFailed,
    ExperimentCompared,
    ExperimentResult,
    Observation,
)
from tipkit.telemetry import _names as n
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock, capture_events


def test_keep_mismatches_is_bounded() -> None:
    """Only the last keep_mismatches disagreements are kept, oldest first."""
    exp = make(candidate=lambda x: -x, keep_mismatches=3)
    for i in range(1, 11):
        exp(i)
    assert [8, 9, 10] == [m.args[0] for m in exp.mismatches()]
    assert 10 == exp.stats()["mismatched"]
    none_kept = make(candidate=lambda x: -x, keep_mismatches=0)
    none_kept(1)
    assert [] == none_kept.mismatches()


def test_mismatches_can_be_filtered_by_candidate() -> None:
    """mismatches(name) returns one candidate's disagreements."""
    exp = make(candidate={"a": lambda x: -x, "b": double})
    exp(1)
    assert ["a"] == [m.candidate for m in exp.mismatches("a")]
    assert [] == exp.mismatches("b")


def test_events_export_only_name_candidate_and_outcome() -> None:
    """Exported attributes never carry values, arguments, context or messages."""
    exp = make(
        candidate=lambda x: {"card": "4111-1111"},
        context={"email": "alice@example.com"},
        clean=lambda v: v,
    )
    with capture_events(ExperimentCompared) as events:
        exp("secret-arg")
    (event,) = events
    assert {
        n.EXPERIMENT_NAME: "exp",
        n.EXPERIMENT_CANDIDATE: "candidate",
        n.OUTCOME: "mismatched",
    } == event.otel_attributes()
    assert event.result is not None
    assert ("secret-arg",) == event.result.args
    failed = ExperimentCallbackFailed("exp", "publish", "RuntimeError")
    assert {
        n.EXPERIMENT_NAME: "exp",
        n.EXPERIMENT_CALLBACK: "publish",
        n.ERROR_TYPE: "RuntimeError",
    } == failed.otel_attributes()


def test_counters_carry_name_candidate_and_outcome() -> None:
    """tipkit.experiment.comparisons counts by experiment, candidate and outcome."""
    exp = Experiment("counted", control=double, candidate=double_v2, clock=FakeClock())
    for i in range(7):
        exp(i)
    readings = {
        r.attributes[n.OUTCOME]: r.value
        for r in REGISTRY.snapshot(n.EXPERIMENT_COMPARISONS)
        if r.attributes.get(n.EXPERIMENT_NAME) == "counted" and r.value
    }
    assert {"matched": 5, "mismatched": 2} == readings


def test_result_helpers() -> None:
    """Observation and result helpers describe what happened."""
    ok = Observation("control", 1, None, 0.1, 1)
    err = Observation("candidate", None, ValueError("x"), 0.1)
    slow = Observation("candidate", None, None, 2.0, timed_out=True)
    assert (False, True) == (ok.raised, err.raised)
    assert "1" == ok.describe()
    assert "raised ValueError('x')" == err.describe()
    assert "timed out after 2s" == slow.describe()
    result = ExperimentResult("e", ok, {}, {"a": "ignored", "b": "matched"}, {}, (), {})
    assert result.matched
    assert () == result.disagreeing
    assert operator.eq is make().__init__.__kwdefaults__["compare"]
