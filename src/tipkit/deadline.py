"""The current deadline: a time budget that follows the work through calls and tasks.

::

    from tipkit import deadline

    with deadline.deadline(2.0):
        sock.settimeout(deadline.remaining())   # cooperating code reads the budget
        ...

A deadline lives in a :class:`~contextvars.ContextVar`, so it follows the work
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

from contextvars import ContextVar, Token
from datetime import timedelta
from types import TracebackType

from tipkit._core._deadline import CURRENT, Deadline
from tipkit._core._durations import to_seconds
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import DeadlineExceededError

__all__ = [
    "Deadline",
    "DeadlineScope",
    "check",
    "current",
    "deadline",
    "expired",
    "remaining",
]


def current() -> Deadline | None:
    """Return the deadline in force in this context, or ``None``."""
    return CURRENT.get()


def remaining() -> float | None:
    """Return the seconds left before the current deadline, or ``None`` if there is none.

    Never negative: ``0.0`` once the deadline has passed. ``None`` fits APIs
    where it means "no timeout" (``socket.settimeout``, ``queue.get``); note that
    ``socket.settimeout(0.0)`` means non-blocking, so call :func:`check` first.
    Reads the deadline's own clock.
    """
    dl = CURRENT.get()
    if dl is None:
        return None
    return max(0.0, dl.remaining())


def expired() -> bool:
    """Return whether the current deadline (if any) has passed."""
    dl = CURRENT.get()
    return dl is not None and dl.expired()


def check() -> None:
    """Raise :class:`~tipkit.errors.DeadlineExceededError` if the current deadline has passed.

    The cheap check cooperating code calls between steps of long work.
    """
    dl = CURRENT.get()
    if dl is not None and dl.expired():
        raise exceeded(dl, "the deadline passed")


def exceeded(dl: Deadline, what: str) -> DeadlineExceededError:
    """Return the error for deadline *dl* (internal helper shared with Timeout)."""
    label = f" ({dl.name})" if dl.name else ""
    return DeadlineExceededError(
        f"{what}: deadline of {dl.timeout}s{label} exceeded",
        name=dl.name,
        timeout=dl.timeout,
    )


def push(
    seconds: float, name: str | None, clock: Clock
) -> tuple[Token[Deadline | None], Deadline]:
    """Set a deadline *seconds* from now unless an earlier one is in force.

    Returns the token to reset with and the deadline now in force (the earlier
    of the two). Deadlines on different clocks are compared by time remaining.
    """
    outer = CURRENT.get()
    if outer is not None and outer.remaining() <= seconds:
        return CURRENT.set(outer), outer
    dl = Deadline(clock, clock.monotonic() + seconds, timeout=seconds, name=name)
    return CURRENT.set(dl), dl


# The open scopes of this thread / task: (scope, token to restore, rest), linked.
_Entered = tuple["DeadlineScope", "Token[Deadline | None]", "_Entered | None"]
_ENTERED: ContextVar[_Entered | None] = ContextVar(
    "tipkit_deadline_scopes", default=None
)


class DeadlineScope:
    """A deadline in force for a ``with`` (or ``async with``) block.

    Made by :func:`deadline`. Entering it binds the :class:`Deadline` in force
    (the earliest of this one and any outer one); leaving restores the outer
    deadline. One scope object may be entered from many threads and tasks at
    once: what each entry must restore is kept per context, never on the
    scope. Nothing is cancelled: see :class:`tipkit.timeout.Timeout` for
    enforcement.
    """

    __slots__ = ("_clock", "_seconds", "name")

    def __init__(self, seconds: float, name: str | None, clock: Clock) -> None:
        self._seconds = seconds
        self.name = name
        self._clock = clock

    def __repr__(self) -> str:
        return f"<deadline {self._seconds}s name={self.name!r}>"

    def __enter__(self) -> Deadline:
        token, dl = push(self._seconds, self.name, self._clock)
        _ENTERED.set((self, token, _ENTERED.get()))
        return dl

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        node = _ENTERED.get()
        if node is None or node[0] is not self:
            raise RuntimeError(
                f"{self!r} exited without a matching enter in this context "
                "(deadlines must be left in the reverse order of entering)"
            )
        _ENTERED.set(node[2])
        CURRENT.reset(node[1])

    async def __aenter__(self) -> Deadline:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def deadline(
    seconds: float | timedelta, *, name: str | None = None, clock: Clock = SYSTEM_CLOCK
) -> DeadlineScope:
    """Return a context manager that sets a deadline *seconds* from entry.

    Nested deadlines take the earliest. The deadline only informs: cooperating
    code reads :func:`remaining` or calls :func:`check`, and tipkit's guards
    refuse to admit calls past it.

    Raises:
        TypeError: *seconds* is not a number or timedelta, or *clock* is not a clock.
        ValueError: *seconds* is negative, NaN or infinite.
    """
    secs = to_seconds(seconds, "deadline: seconds")
    if secs < 0:
        raise ValueError(f"deadline: seconds must be >= 0, got {seconds!r}")
    if not isinstance(clock, Clock):
        raise TypeError(f"deadline: clock must be a tipkit Clock, got {clock!r}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"deadline: name must be a str or None, got {name!r}")
    return DeadlineScope(secs, name, clock)
