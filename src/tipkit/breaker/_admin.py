"""Who forced a breaker open, disabled or reset it, and why: the event and the audit record.

An operator's action on a breaker (:meth:`~tipkit.breaker.CircuitBreaker.force_open`,
``disable``, ``reset``) publishes one :class:`BreakerControlled` event with
its actor and reason, and, when the breaker is shared through a store that
keeps an audit log and the action names an actor or a reason, appends one
record (``breaker.open`` / ``breaker.disable`` / ``breaker.reset``, target
``breaker:<name>``, before/after ``{"state": ...}``, the runbook URL). A
breaker opening by itself is not an operator action: it publishes
:class:`~tipkit.breaker.BreakerStateChanged` only. Never raises a store error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from tipkit import audit
from tipkit.breaker._events import CLOSED, DISABLED, FORCED_OPEN, BreakerState
from tipkit.telemetry import _names as names
from tipkit.telemetry._events import BUS, AttributeValue, Event

__all__ = ["BreakerControlled", "controlled"]

_ACTIONS: Final = {FORCED_OPEN: "open", DISABLED: "disable", CLOSED: "reset"}


@dataclass(frozen=True, slots=True)
class BreakerControlled(Event):
    """An operator forced a breaker open, disabled it or reset it.

    Attributes:
        name: the breaker.
        action: ``"open"`` (``force_open``), ``"disable"`` or ``"reset"``.
        actor: who (``None``: not said).
        reason: why (``None``: not said).
        from_state, to_state: the breaker's state before and after.
        runbook: the breaker's runbook URL, if any.
    """

    action: str
    actor: str | None
    reason: str | None
    from_state: BreakerState
    to_state: BreakerState
    runbook: str | None = None

    otel_name: ClassVar[str] = "tipkit.breaker.controlled"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the breaker name, action, actor and states (no reason text)."""
        attrs: dict[str, AttributeValue] = {
            names.BREAKER_NAME: self.name,
            "tipkit.breaker.action": self.action,
            "tipkit.breaker.from_state": self.from_state.value,
            names.STATE: self.to_state.value,
        }
        if self.actor is not None:
            attrs["tipkit.audit.actor"] = self.actor
        if self.runbook is not None:
            attrs[names.RUNBOOK] = self.runbook
        return attrs


def controlled(
    breaker: Any,
    was: BreakerState,
    to: BreakerState,
    actor: str | None,
    reason: str | None,
) -> None:
    """Publish the event of an operator action on *breaker*; audit it if attributed.

    Blocks for one store append when audited (bounded by the store's
    timeout); a failing store keeps the record for later (``tipkit.audit``).
    """
    action = _ACTIONS[to]
    if BreakerControlled.listened:
        BUS.publish(
            BreakerControlled(
                breaker.name, action, actor, reason, was, to, breaker.runbook
            )
        )
    if actor is None and reason is None:
        return  # unattributed (code, tests): an event, no audit record
    audit.record(
        breaker.store,
        actor=actor,
        action=f"breaker.{action}",
        target=f"breaker:{breaker.name}",
        reason=reason,
        before={"state": was.value},
        after={"state": to.value},
        runbook=breaker.runbook,
    )
