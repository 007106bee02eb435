"""The process-wide testing mode: every retry instant and bounded."""

from __future__ import annotations

__all__ = ["TESTING", "is_testing", "set_testing"]


class _Testing:
    __slots__ = ("active", "attempts", "cap")

    def __init__(self) -> None:
        self.active = False
        self.attempts = 1
        self.cap = False

    def limit(self, attempts: int | None) -> int | None:
        """Return the most attempts for a retry configured with *attempts*."""
        if not self.active:
            return attempts
        if self.cap and attempts is not None:
            return min(self.attempts, attempts)
        return self.attempts


TESTING = _Testing()


class _TestingRestorer:
    """Returned by :func:`set_testing`; as a context manager, restores the previous mode."""

    __slots__ = ("_previous",)

    def __init__(self, previous: tuple[bool, int, bool]) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        TESTING.active, TESTING.attempts, TESTING.cap = self._previous

    def __repr__(self) -> str:
        return f"<set_testing restores active={self._previous[0]}>"


def set_testing(
    testing: bool, *, attempts: int = 1, cap: bool = False
) -> _TestingRestorer:
    """Make every retry in this process instant and bounded, for test suites.

    With *testing* true, no retry waits (the clock is not slept on) and each
    retried call makes *attempts* attempts (with *cap*, at most *attempts*: fewer
    if the retry is configured with fewer). Works as a plain call and as a
    context manager that restores the previous mode on exit::

        with set_testing(True, attempts=2):
            ...

    Not thread-local: it is a process-wide switch, like stamina's.

    Raises:
        TypeError, ValueError: *attempts* is not a positive int.
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        raise TypeError(f"set_testing: attempts must be an int, got {attempts!r}")
    if attempts < 1:
        raise ValueError(f"set_testing: attempts must be >= 1, got {attempts!r}")
    previous = (TESTING.active, TESTING.attempts, TESTING.cap)
    TESTING.active, TESTING.attempts, TESTING.cap = bool(testing), attempts, bool(cap)
    return _TestingRestorer(previous)


def is_testing() -> bool:
    """Return whether :func:`set_testing` mode is on."""
    return TESTING.active
