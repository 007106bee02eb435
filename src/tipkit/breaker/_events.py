"""The breaker's states, its metrics snapshot and the events it publishes."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from tipkit._core._mode import Mode
from tipkit.telemetry import _names as names
from tipkit.telemetry._events import AttributeValue, Event

__all__ = [
    "BreakerMetrics",
    "BreakerState",
    "BreakerStateChanged",
    "CallRejected",
]


class BreakerState(enum.Enum):
    """The states of a :class:`~tipkit.breaker.CircuitBreaker`.

    ``CLOSED``, ``OPEN`` and ``HALF_OPEN`` are driven by outcomes; ``FORCED_OPEN``
    and ``DISABLED`` are set by an operator
    (:meth:`~tipkit.breaker.CircuitBreaker.force_open`,
    :meth:`~tipkit.breaker.CircuitBreaker.disable`) and left only by another
    operator call.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN
FORCED_OPEN = BreakerState.FORCED_OPEN
DISABLED = BreakerState.DISABLED

# Why a breaker changed state (BreakerStateChanged.reason).
REASON_FAILURE_RATE = "failure_rate"
REASON_SLOW_CALL_RATE = "slow_call_rate"
REASON_OPEN_DURATION_ELAPSED = "open_duration_elapsed"
REASON_TRIALS_PASSED = "trials_passed"
REASON_HALF_OPEN_TIMEOUT = "half_open_timeout"
REASON_FORCED_OPEN = "forced_open"
REASON_DISABLED = "disabled"
REASON_RESET = "reset"
REASON_SHARED = "shared_state"
"""An adopted transition, first made by a breaker of the same name elsewhere."""


@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """A snapshot of a breaker's window and lifetime counts.

    Attributes:
        state: the state when the snapshot was taken.
        mode: ``"enforce"`` or ``"shadow"``.
        failure_rate: failures / calls in the window, or ``None`` while fewer
            than ``minimum_calls`` outcomes are in it (in half-open: over the
            trial calls completed so far).
        slow_call_rate: slow calls / calls, likewise (``None`` also when slowness
            is not recorded).
        calls: outcomes in the window (in half-open: trial outcomes).
        successes: successful calls in the window (slow or not).
        failures: failed calls in the window (slow or not).
        slow_calls: slow calls in the window (successful or failed).
        ignored: calls whose outcome was ignored, since the breaker was built.
        rejected: calls rejected, since the breaker was built (enforce mode).
        would_reject: calls let through in shadow mode that enforcement would
            have rejected, since the breaker was built.
        times_opened: consecutive openings since the breaker last closed.
        retry_after: seconds until an open breaker lets a trial through, ``0.0``
            when it would now, ``None`` when not open (or forced open).
    """

    state: BreakerState
    mode: Mode
    failure_rate: float | None
    slow_call_rate: float | None
    calls: int
    successes: int
    failures: int
    slow_calls: int
    ignored: int
    rejected: int
    would_reject: int
    times_opened: int
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class BreakerStateChanged(Event):
    """A breaker moved from one state to another.

    Attributes:
        from_state: the state left.
        to_state: the state entered.
        reason: why (``"failure_rate"``, ``"slow_call_rate"``,
            ``"open_duration_elapsed"``, ``"trials_passed"``,
            ``"trial_failure_rate"``, ``"trial_slow_call_rate"``,
            ``"half_open_timeout"``, ``"forced_open"``, ``"disabled"``,
            ``"reset"``, or ``"shared_state"`` for a transition adopted from the
            fleet).
        metrics: the metrics that led to the change, taken just before it
            (``metrics.state`` is *from_state*; for a half-open verdict they
            cover the trial calls).
        shadow: the breaker was in shadow mode (it decided, but enforced nothing).
        runbook: the breaker's runbook URL, if any.
    """

    from_state: BreakerState
    to_state: BreakerState
    reason: str
    metrics: BreakerMetrics
    shadow: bool = False
    runbook: str | None = None

    otel_name: ClassVar[str] = "tipkit.breaker.state_changed"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the breaker name, both states, the reason, mode and runbook."""
        attrs: dict[str, AttributeValue] = {
            names.BREAKER_NAME: self.name,
            "tipkit.breaker.from_state": self.from_state.value,
            names.STATE: self.to_state.value,
            "tipkit.breaker.reason": self.reason,
            names.MODE: "shadow" if self.shadow else "enforce",
        }
        if self.runbook is not None:
            attrs[names.RUNBOOK] = self.runbook
        return attrs


@dataclass(frozen=True, slots=True)
class CallRejected(Event):
    """A breaker rejected a call (or, in shadow mode, would have).

    Attributes:
        retry_after: seconds until a call may be let through, or ``None`` when
            unknown (forced open, or half-open with every trial permit taken).
        state: the breaker state that rejected the call.
        shadow: the call was let through anyway (shadow mode).
        runbook: the breaker's runbook URL, if any.
    """

    retry_after: float | None
    state: BreakerState = OPEN
    shadow: bool = False
    runbook: str | None = None

    otel_name: ClassVar[str] = "tipkit.breaker.call_rejected"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the breaker name, state, mode, retry_after and runbook."""
        attrs: dict[str, AttributeValue] = {
            names.BREAKER_NAME: self.name,
            names.STATE: self.state.value,
            names.MODE: "shadow" if self.shadow else "enforce",
        }
        if self.retry_after is not None:
            attrs["tipkit.retry_after"] = self.retry_after
        if self.runbook is not None:
            attrs[names.RUNBOOK] = self.runbook
        return attrs
