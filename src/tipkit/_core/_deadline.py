"""The current deadline, carried in a ContextVar so it follows threads' and tasks' context."""

from __future__ import annotations

from contextvars import ContextVar

from tipkit.clock import Clock

__all__ = ["CURRENT", "Deadline"]


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


CURRENT: ContextVar[Deadline | None] = ContextVar("tipkit_deadline", default=None)
"""The innermost (earliest) deadline in force, or ``None``."""
