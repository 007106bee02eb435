"""Deadlines: the object, the one error, the one check.

The deadline in force lives in the scope stack (:mod:`tipkit._core._scope`):
``node[3]`` of its innermost node. Every part of tipkit that refuses work past a
deadline raises the error built by :func:`exceeded`, so the message, ``name`` and
``timeout`` read the same from every primitive.

Hot paths read the deadline inline (one ``ContextVar.get``, one index)::

    node = _scope.top()
    if node is not None:
        dl = node[3]
        if dl is not None and dl.expired():
            raise exceeded(dl, f"{guard!r} could not admit the call")

and everything else calls :func:`check`.
"""

from __future__ import annotations

from typing import Any

from tipkit._core import _scope
from tipkit.clock import Clock
from tipkit.errors import DeadlineExceededError

__all__ = ["CURRENT", "Deadline", "check", "current", "exceeded", "refusal"]


class Deadline:
    """An absolute point on a clock by which the current work must finish."""

    __slots__ = ("at", "clock", "name", "timeout")

    def __init__(
        self, clock: Clock, at: float, *, timeout: float, name: str | None = None
    ) -> None:
        self.clock = clock
        self.at = at
        self.timeout = timeout
        self.name = name

    @classmethod
    def after(cls, seconds: float, *, name: str | None, clock: Clock) -> Deadline:
        """Return the deadline *seconds* from now on *clock* (reads the clock once)."""
        return cls(clock, clock.monotonic() + seconds, timeout=seconds, name=name)

    def remaining(self) -> float:
        """Return seconds left (negative once passed)."""
        return self.at - self.clock.monotonic()

    def expired(self) -> bool:
        """Return whether the deadline has passed."""
        return self.clock.monotonic() >= self.at

    def __repr__(self) -> str:
        name = self.name or ""
        return (
            f"<Deadline {name} timeout={self.timeout} remaining={self.remaining():.6f}>"
        )


current = _scope.current_deadline


def exceeded(dl: Deadline, what: str) -> DeadlineExceededError:
    """Return the error for work refused or cut short by deadline *dl*.

    *what* says what could not happen, e.g. ``"<Bulkhead 'db' ...> could not
    admit the call"``. The one builder of :class:`DeadlineExceededError` in
    tipkit: the message reads ``"{what}: deadline of {timeout}s ({name}) exceeded"``.
    """
    label = f" ({dl.name})" if dl.name else ""
    return DeadlineExceededError(
        f"{what}: deadline of {dl.timeout}s{label} exceeded",
        name=dl.name,
        timeout=dl.timeout,
    )


def refusal(dl: Deadline, guard: object) -> DeadlineExceededError:
    """Return the error for *guard* refusing to admit a call past *dl*."""
    return exceeded(dl, f"{guard!r} could not admit the call")


def check(what: str = "the deadline passed") -> None:
    """Raise :func:`exceeded` if the deadline in force has passed (reads its clock)."""
    node = _scope.top()
    if node is not None:
        dl = node[3]
        if dl is not None and dl.expired():
            raise exceeded(dl, what)


class _Current:
    """``CURRENT``: the ContextVar-like view of the deadline kept for older callers.

    ``get()`` returns the deadline in force; ``set(dl)`` makes *dl* the deadline
    in force (exactly, not the earliest) until ``reset(token)``. New code reads
    :func:`current` or ``_scope.top()[3]`` and enters deadlines through
    :func:`tipkit.deadline.deadline`.
    """

    __slots__ = ()

    get = staticmethod(current)

    def set(self, dl: Deadline | None) -> Any:
        """Push *dl* as the deadline in force; return the token for :meth:`reset`."""
        token = object()
        node = _scope.top()
        if node is None:
            _scope.STACK.set((token, None, None, dl, None, None))
        else:
            # An explicit set wins over the inherited deadline: keep the mark only.
            _scope.STACK.set((token, None, node, dl, node[4], (dl, None)))
        return token

    def reset(self, token: Any) -> None:
        """Undo the :meth:`set` that returned *token*."""
        _scope.pop(token)


CURRENT = _Current()
"""Deprecated inside tipkit: use :func:`current`, ``_scope.top()`` and :func:`check`."""
