"""The events an experiment publishes: names and outcomes only, never values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from tipkit.experiment._result import ExperimentResult
from tipkit.telemetry import _names as names
from tipkit.telemetry._events import AttributeValue, Event

__all__ = ["ExperimentCallbackFailed", "ExperimentCompared"]


def _exporting(**fields: str) -> Callable[[Event], dict[str, AttributeValue]]:
    """Return an ``otel_attributes`` that exports the experiment's name and *fields*.

    *fields* maps each event field to its exported attribute key: all an
    experiment's event may export (names and outcomes, never values).
    """

    def otel_attributes(self: Event) -> dict[str, AttributeValue]:
        """Return the experiment's name and the event's exported fields."""
        attributes: dict[str, AttributeValue] = {names.EXPERIMENT_NAME: self.name}
        for field, key in fields.items():
            attributes[key] = getattr(self, field)
        return attributes

    return otel_attributes


@dataclass(frozen=True, slots=True)
class ExperimentCompared(Event):
    """A candidate's run was judged (one event per candidate per sampled call).

    Exported with the experiment's name, the candidate's name and the outcome
    only; ``result`` stays in process.

    Attributes:
        name: the experiment.
        candidate: the candidate's name.
        outcome: one of :data:`~tipkit.experiment.OUTCOMES`.
        result: the whole result; ``None`` for a ``timeout`` reported while the
            candidate was still running (the result follows to ``publish=`` when
            it returns).
    """

    candidate: str
    outcome: str
    result: ExperimentResult | None = None

    otel_name: ClassVar[str] = "tipkit.experiment.compared"

    otel_attributes = _exporting(
        candidate=names.EXPERIMENT_CANDIDATE, outcome=names.OUTCOME
    )


@dataclass(frozen=True, slots=True)
class ExperimentCallbackFailed(Event):
    """A callback of the experiment raised; the caller was not affected.

    A failed ``compensate`` means a candidate's side effect may not be undone.

    Attributes:
        name: the experiment.
        callback: which one: ``compare``, ``compare_errors``, ``ignore``,
            ``clean``, ``run_if``, ``sample_key``, ``call_context``,
            ``before_run``, ``publish`` or ``compensate``.
        error_type: the exception's class name (never its message).
    """

    callback: str
    error_type: str

    otel_name: ClassVar[str] = "tipkit.experiment.callback_failed"

    otel_attributes = _exporting(
        callback=names.EXPERIMENT_CALLBACK, error_type=names.ERROR_TYPE
    )
