"""What a retry tells listeners: an attempt is scheduled, or retrying gave up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from tipkit.telemetry import _names as names
from tipkit.telemetry._events import AttributeValue, Event
from tipkit.telemetry._traced import error_type

__all__ = ["GiveUpReason", "RetryGaveUp", "RetryScheduled"]

GiveUpReason = Literal["attempts", "timeout", "deadline", "budget", "not_retriable"]


@dataclass(frozen=True, slots=True)
class RetryScheduled(Event):
    """An attempt failed with a retriable error; the next one runs after ``wait``.

    Attributes:
        attempt: the number of the attempt that is scheduled (2 for the first retry).
        wait: seconds slept before it.
        error: the exception of the failed attempt (in process only: exported
            telemetry carries its type name, never its message).
    """

    attempt: int
    wait: float
    error: BaseException

    otel_name: ClassVar[str] = "tipkit.retry.scheduled"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return name, attempt, wait and the error's type name."""
        return {
            names.RETRY_NAME: self.name,
            "tipkit.retry.attempt": self.attempt,
            "tipkit.retry.wait": self.wait,
            names.ERROR_TYPE: error_type(self.error),
        }


@dataclass(frozen=True, slots=True)
class RetryGaveUp(Event):
    """Retrying stopped; the last error is raised to the caller.

    Attributes:
        attempts: attempts made.
        error: the last attempt's exception, which is re-raised.
        reason: ``"attempts"`` (all used), ``"timeout"`` (the next wait would
            reach this retry's deadline), ``"deadline"`` (an outer tipkit
            deadline ends first) or ``"budget"`` (the retry budget is spent:
            raised at once, never slept for).
    """

    attempts: int
    error: BaseException
    reason: GiveUpReason

    otel_name: ClassVar[str] = "tipkit.retry.gave_up"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return name, attempts, reason and the error's type name."""
        return {
            names.RETRY_NAME: self.name,
            "tipkit.retry.attempts": self.attempts,
            "tipkit.retry.reason": self.reason,
            names.ERROR_TYPE: error_type(self.error),
        }
