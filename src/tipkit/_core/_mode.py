"""Enforce or shadow: how a guard acts on its own decisions.

In ``"shadow"`` mode a guard runs the same state machine, publishes the same
events and counters (marked ``shadow``) and reports ``would_reject``, but lets
every call through, so a new limit or breaker is proven on live traffic before
it enforces anything.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["MODES", "Mode", "check_mode"]

Mode = Literal["enforce", "shadow"]
MODES: tuple[str, ...] = get_args(Mode)


def check_mode(value: object, owner: str) -> Mode:
    """Return *value* as a :data:`Mode`.

    Raises:
        ValueError: *value* is not ``"enforce"`` or ``"shadow"``; the message
            names *owner*.
    """
    if value == "enforce":
        return "enforce"
    if value == "shadow":
        return "shadow"
    raise ValueError(f"{owner}: mode must be 'enforce' or 'shadow', got {value!r}")
