"""What an experiment observes and reports: observations, results, mismatches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from tipkit.errors import TipkitError

__all__ = [
    "CONTROL",
    "DISAGREE",
    "OUTCOMES",
    "ExperimentResult",
    "Mismatch",
    "MismatchError",
    "Observation",
    "Outcome",
]

Outcome = Literal[
    "matched", "mismatched", "ignored", "candidate_error", "timeout", "skipped"
]
OUTCOMES: Final[tuple[Outcome, ...]] = (
    "matched",
    "mismatched",
    "ignored",
    "candidate_error",
    "timeout",
    "skipped",
)
"""Every outcome of a candidate run, in the order reports list them."""

DISAGREE: Final = frozenset({"mismatched", "candidate_error"})
CONTROL: Final = "control"
"""The control's name in results (no candidate may take it)."""


class Observation(NamedTuple):
    """What one behaviour (the control or a candidate) did on one call.

    A named tuple: built on every sampled call, it must be cheap.

    Attributes:
        name: ``"control"`` or the candidate's name.
        value: the return value (``None`` if it raised or timed out).
        exception: the exception it raised, or ``None``.
        duration: seconds it ran, on the experiment's clock.
        cleaned: ``clean(value)`` if a cleaner is set (``None`` if the cleaner
            failed), else ``value``: what to show or publish.
        timed_out: it ran past the experiment's ``timeout`` (or was cancelled
            at it).
    """

    name: str
    value: Any = None
    exception: BaseException | None = None
    duration: float = 0.0
    cleaned: Any = None
    timed_out: bool = False

    @property
    def raised(self) -> bool:
        """Whether the behaviour raised."""
        return self.exception is not None

    def describe(self) -> str:
        """Return a short text: the cleaned value's repr or the exception's."""
        if self.timed_out:
            return f"timed out after {self.duration:.3g}s"
        if self.exception is not None:
            return f"raised {self.exception!r}"
        return repr(self.cleaned)


class ExperimentResult(NamedTuple):
    """Everything one sampled call of an experiment observed (a named tuple).

    Kept in process (``publish=``, events' ``result``); only the experiment's
    name, candidate names and outcomes are ever exported.

    Attributes:
        name: the experiment.
        control: the control's observation.
        candidates: each candidate's observation, by name (skipped candidates
            are absent).
        outcomes: each candidate's outcome, by name.
        context: the static and per-call context.
        args, kwargs: the call's arguments (shared with the control, not copied).
    """

    name: str
    control: Observation
    candidates: Mapping[str, Observation]
    outcomes: Mapping[str, Outcome]
    context: Mapping[str, Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]

    @property
    def matched(self) -> bool:
        """Whether every candidate matched (or its difference was ignored)."""
        return all(o in {"matched", "ignored"} for o in self.outcomes.values())

    @property
    def disagreeing(self) -> tuple[str, ...]:
        """Names of candidates whose outcome is ``mismatched`` or ``candidate_error``."""
        return tuple(n for n, o in self.outcomes.items() if o in DISAGREE)


def _call_text(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One call where a candidate disagreed with the control (kept in process only).

    Attributes:
        experiment: the experiment's name.
        candidate: the candidate's name.
        outcome: ``mismatched`` or ``candidate_error``.
        args, kwargs: the call's arguments.
        control, observed: the control's and the candidate's observations (their
            ``cleaned`` values are what to show).
        context: the call's context.
    """

    experiment: str
    candidate: str
    outcome: Outcome
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    control: Observation
    observed: Observation
    context: Mapping[str, Any]

    def __str__(self) -> str:
        return (
            f"{self.experiment}/{self.candidate} {self.outcome} on "
            f"({_call_text(self.args, self.kwargs)}): control "
            f"{self.control.describe()}, candidate {self.observed.describe()}"
        )


class MismatchError(TipkitError, AssertionError):
    """A candidate disagreed with the control under ``raise_on_mismatch=True``.

    For tests only. Also an :class:`AssertionError`, so test runners show it as a
    failed assertion. The control's exception, if any, is ``__cause__``.

    Attributes:
        result: the :class:`ExperimentResult`.
    """

    def __init__(self, result: ExperimentResult) -> None:
        lines = [
            f"experiment {result.name!r}: candidate {name!r} {result.outcomes[name]} "
            f"on ({_call_text(result.args, result.kwargs)}): control "
            f"{result.control.describe()}, candidate "
            f"{result.candidates[name].describe()}"
            for name in result.disagreeing
        ]
        super().__init__("\n".join(lines))
        self.result = result
