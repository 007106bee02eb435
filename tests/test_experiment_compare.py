"""Judging a candidate against the control: outcomes, comparators, ignorers."""

from __future__ import annotations

from typing import Any

import pytest
from tests.experiment_support import (
    double,
    failing,
    make,
)

from tipkit.experiment import (
    Observation,
    same_error,
)
from tipkit.experiment._compare import Judge


def test_control_raises_and_candidate_returns_is_a_mismatch() -> None:
    """A control error against a candidate value is a mismatch, and the error still propagates."""
    exp = make(failing, candidate=double)
    with pytest.raises(ValueError, match="bad 1"):
        exp(1)
    assert exp.stats()["mismatched"] == 1


def test_errors_of_different_args_mismatch_and_compare_errors_decides() -> None:
    """Errors match by type and args by default; compare_errors= replaces the rule."""

    def other(x: int) -> int:
        raise ValueError("other")

    default = make(failing, candidate=other)
    with pytest.raises(ValueError, match="bad"):
        default(1)
    assert default.stats()["mismatched"] == 1
    by_type = make(
        failing, candidate=other, compare_errors=lambda a, b: type(a) is type(b)
    )
    with pytest.raises(ValueError, match="bad"):
        by_type(1)
    assert by_type.stats()["matched"] == 1
    assert same_error(ValueError("x"), ValueError("x"))
    assert not same_error(ValueError("x"), KeyError("x"))


def test_ignore_turns_known_differences_into_ignored() -> None:
    """An ignorer that accepts the difference makes the outcome ignored."""

    def rounding(control: Observation, candidate: Observation) -> bool:
        return abs(control.value - candidate.value) <= 1

    exp = make(candidate=lambda x: x * 2 + (x % 3 == 0), ignore=[rounding])
    for i in range(1, 7):
        exp(i)
    assert {"matched": 4, "ignored": 2} == {k: v for k, v in exp.stats().items() if v}


def test_raising_ignorer_does_not_ignore() -> None:
    """An ignorer that raises is skipped; the others still decide."""

    def boom(control: Observation, candidate: Observation) -> bool:
        raise RuntimeError("nope")

    exp = make(candidate=lambda x: -x, ignore=[boom])
    exp(1)
    assert exp.stats()["mismatched"] == 1
    assert {"ignore": 1} == exp.errors()
    both = make(candidate=lambda x: -x, ignore=[boom, lambda c, o: True])
    both(1)
    assert both.stats()["ignored"] == 1


def test_raising_comparator_result_truthiness_is_isolated() -> None:
    """A comparator returning something without a truth value counts as a mismatch."""

    class NoTruth:
        def __bool__(self) -> bool:
            raise ValueError("ambiguous")

    exp = make(candidate=double, compare=lambda a, b: NoTruth())
    assert 2 == exp(1)
    assert exp.stats()["mismatched"] == 1
    assert {"compare": 1} == exp.errors()


def test_judge_calls_a_timed_out_candidate_timeout_without_comparing() -> None:
    """A late candidate is a timeout: no comparator or ignorer is asked."""
    asked: list[str] = []

    def compare(a: Any, b: Any) -> bool:
        asked.append("compare")
        return True

    def failed(callback: str, exc: BaseException) -> None:
        asked.append(callback)  # pragma: no cover

    judge = Judge(compare, same_error, (lambda c, o: True,), failed).outcome
    control = Observation("control", 1)
    assert "timeout" == judge(control, Observation("c", 1, timed_out=True))
    assert [] == asked
    assert "matched" == judge(control, Observation("c", 1))
    assert ["compare"] == asked
