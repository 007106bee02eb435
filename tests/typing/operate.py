"""Call shapes of the operators' API: type-checked by mypy, never run."""

from __future__ import annotations

from tipkit.breaker import BreakerControlled, CircuitBreaker
from tipkit.registry import Component, components
from tipkit.rollout import Rollout, RolloutControlled
from tipkit.stores import MemoryStore
from tipkit.stores._action import Action


def operator_actions(breaker: CircuitBreaker, rollout: Rollout) -> None:
    """Every control takes actor= and reason=; the old positional reason stays."""
    breaker.force_open(actor="alice", reason="provider down")
    breaker.disable(reason="noisy")
    breaker.reset()
    rollout.pause("freeze", actor="alice")
    rollout.resume(reason="thaw")
    rollout.advance("manual")
    rollout.promote(actor="bob", reason="ship it")
    rollout.rollback("bad canary")
    pending: list[Action] = rollout.pending()
    found: list[Component] = components(MemoryStore(), "flags")
    events: tuple[type[BreakerControlled], type[RolloutControlled]] = (
        BreakerControlled,
        RolloutControlled,
    )
    _ = (pending, found, events)
