"""Judging one candidate run against the control's: the outcome, and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tipkit.experiment._result import Observation, Outcome

__all__ = ["Judge", "same_error"]


def same_error(control: BaseException, candidate: BaseException) -> bool:
    """Return whether two exceptions match: same type and same ``args``.

    The default ``compare_errors=``.
    """
    return type(control) is type(candidate) and control.args == candidate.args


class Judge:
    """Turn a control and a candidate observation into an :data:`Outcome`.

    Calls the user's ``compare``, ``compare_errors`` and ``ignore`` callables;
    one that raises is reported to *failed* with its option name and proves
    nothing: a raising comparator is a mismatch, a raising ignorer ignores
    nothing. Never raises itself. Holds no state: thread-safe.
    """

    __slots__ = ("_compare", "_compare_errors", "_failed", "_ignore")

    def __init__(
        self,
        compare: Callable[[Any, Any], object],
        compare_errors: Callable[[BaseException, BaseException], object],
        ignore: tuple[Callable[[Observation, Observation], object], ...],
        failed: Callable[[str, BaseException], None],
    ) -> None:
        self._compare = compare
        self._compare_errors = compare_errors
        self._ignore = ignore
        self._failed = failed

    def outcome(self, control: Observation, cand: Observation) -> Outcome:
        """Return the outcome of *cand* against *control*."""
        if cand.timed_out:
            return "timeout"
        outcome: Outcome
        if cand.exception is not None:
            if control.exception is None:
                outcome = "candidate_error"
            else:
                outcome = self._agree(
                    "compare_errors",
                    self._compare_errors,
                    control.exception,
                    cand.exception,
                )
        elif control.exception is not None:
            outcome = "mismatched"
        else:
            outcome = self._agree("compare", self._compare, control.value, cand.value)
        if outcome != "matched":
            for ignorer in self._ignore:
                try:
                    if ignorer(control, cand):
                        return "ignored"
                except Exception as exc:
                    self._failed("ignore", exc)
        return outcome

    def _agree(
        self, which: str, fn: Callable[[Any, Any], object], a: Any, b: Any
    ) -> Outcome:
        # A comparator that fails proves nothing: count it and call it a mismatch.
        try:
            return "matched" if fn(a, b) else "mismatched"
        except Exception as exc:
            self._failed(which, exc)
            return "mismatched"
