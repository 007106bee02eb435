"""The current deadline: a time budget that follows the work through calls and tasks.

::

    from tipkit import deadline

    with deadline.deadline(2.0):
        sock.settimeout(deadline.remaining())   # cooperating code reads the budget
        ...

A deadline lives in tipkit's scope stack (one :class:`~contextvars.ContextVar`
for every ``with`` in tipkit), so it follows the work
into called functions and into asyncio tasks created inside it (they copy the
context), but not into threads started with :mod:`threading` (use
``contextvars.copy_context().run`` or :func:`asyncio.to_thread`, which copies it).
Nested deadlines take the earliest: an inner ``deadline(5)`` inside a
``deadline(1)`` leaves 1 second.

Every tipkit guard refuses to admit a call once the current deadline has passed
(raising :class:`~tipkit.errors.DeadlineExceededError`) and never waits past it.
:class:`tipkit.timeout.Timeout` sets a deadline and also enforces it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tipkit._core import _scope
from tipkit._core._check import check_clock, check_seconds
from tipkit._core._deadline import Deadline, current
from tipkit._core._deadline import check as _check
from tipkit._core._scope import Node, Scope
from tipkit.clock import SYSTEM_CLOCK, Clock

__all__ = [
    "Deadline",
    "DeadlineScope",
    "check",
    "current",
    "deadline",
    "expired",
    "remaining",
]


def remaining() -> float | None:
    """Return the seconds left before the current deadline, or ``None`` if there is none.

    Never negative: ``0.0`` once the deadline has passed. ``None`` fits APIs
    where it means "no timeout" (``socket.settimeout``, ``queue.get``); note that
    ``socket.settimeout(0.0)`` means non-blocking, so call :func:`check` first.
    Reads the deadline's own clock.
    """
    dl = _scope.current_deadline()
    if dl is None:
        return None
    return max(0.0, dl.remaining())


def expired() -> bool:
    """Return whether the current deadline (if any) has passed."""
    dl = _scope.current_deadline()
    return dl is not None and dl.expired()


def check() -> None:
    """Raise :class:`~tipkit.errors.DeadlineExceededError` if the current deadline has passed.

    The cheap check cooperating code calls between steps of long work.
    """
    _check("the deadline passed")


class DeadlineScope(Scope):
    """A deadline in force for a ``with`` (or ``async with``) block, or for each call.

    Made by :func:`deadline`. Entering it binds the :class:`Deadline` in force
    (the earliest of this one and any outer one); leaving restores the outer
    deadline. As a decorator (or through ``call``/``acall``) each call runs
    under a fresh deadline. One scope object may be entered from many threads
    and tasks at once: each entry is kept in its own context's scope stack,
    never on the scope; entries may leave in any order. Nothing is cancelled:
    see :class:`tipkit.timeout.Timeout` for enforcement.
    """

    __slots__ = ("_clock", "_seconds", "name")

    def __init__(self, seconds: float, name: str | None, clock: Clock) -> None:
        self._seconds = seconds
        self.name = name
        self._clock = clock

    def __repr__(self) -> str:
        return f"<deadline {self._seconds}s name={self.name!r}>"

    def _open(self) -> tuple[None, Deadline, None]:
        return (
            None,
            Deadline.after(self._seconds, name=self.name, clock=self._clock),
            None,
        )

    def _close(self, node: Node, error: BaseException | None) -> None:
        """Nothing to undo: leaving the stack restored the outer deadline."""

    def _entered(self, node: Node) -> Any:
        return node[3]


def deadline(
    seconds: float | timedelta, *, name: str | None = None, clock: Clock = SYSTEM_CLOCK
) -> DeadlineScope:
    """Return a scope that sets a deadline *seconds* from entry (or from each call).

    Use it as ``with``/``async with`` (binding the :class:`Deadline` in force), as
    a decorator of plain and ``async def`` functions, or through ``call``/
    ``acall``. Nested deadlines take the earliest. The deadline only informs:
    cooperating code reads :func:`remaining` or calls :func:`check`, and tipkit's
    guards refuse to admit calls past it.

    Raises:
        TypeError: *seconds* is not a number or timedelta, or *clock* is not a clock.
        ValueError: *seconds* is negative, NaN or infinite.
    """
    secs = check_seconds(seconds, "deadline: seconds", minimum=0)
    check_clock(clock, "deadline: clock")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"deadline: name must be a str or None, got {name!r}")
    return DeadlineScope(secs, name, clock)
