"""Sliding windows over call outcomes: the last *n* calls, or the last *n* seconds.

:class:`CountWindow` and :class:`TimeWindow` are descriptions (value objects a
user passes as ``window=``); each breaker builds its own live window from one
with ``_new()``. The live windows keep running totals (``calls``, ``failures``,
``slows``) so that recording an outcome and reading the rates are O(1). They are
not thread-safe: the breaker calls them with its lock held.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import ClassVar

__all__ = ["CountWindow", "TimeWindow", "Window"]


class _Description:
    """A window description: a value object equal to another of its class and size."""

    __slots__ = ()

    _field: ClassVar[str]
    """The slot holding the description's one number (``size``, ``seconds``)."""

    def _key(self) -> int:
        return int(getattr(self, self._field))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Description)
            and type(other) is type(self)
            and other._key() == self._key()
        )

    def __hash__(self) -> int:
        return hash((type(self), self._key()))


class CountWindow(_Description):
    """A sliding window over the last *size* call outcomes.

    A ring buffer with running totals: recording an outcome is O(1) and memory is
    *size* bytes. This object is only a description; each breaker builds its own
    window from it, so one ``CountWindow`` may configure many breakers.

    Raises:
        TypeError: *size* is not an int.
        ValueError: *size* is less than 1.
    """

    __slots__ = ("size",)
    _field = "size"

    def __init__(self, size: int = 100) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"CountWindow: size must be an int, got {size!r}")
        if size < 1:
            raise ValueError(f"CountWindow: size must be >= 1, got {size!r}")
        self.size = size

    def __repr__(self) -> str:
        return f"CountWindow({self.size})"

    def _new(self) -> _CountRing:
        return _CountRing(self.size)


class TimeWindow(_Description):
    """A sliding window over the outcomes of the last *seconds* seconds.

    Outcomes are aggregated in one-second buckets (resilience4j's partial
    aggregation): recording is O(1) amortised, memory is *seconds* buckets, and
    the window covers the current partial second plus the ``seconds - 1`` whole
    seconds before it. A description only; each breaker builds its own window.

    Raises:
        TypeError: *seconds* is not a whole number of seconds (int or timedelta).
        ValueError: *seconds* is less than 1.
    """

    __slots__ = ("seconds",)
    _field = "seconds"

    def __init__(self, seconds: int | timedelta = 60) -> None:
        value: float
        if isinstance(seconds, timedelta):
            value = seconds.total_seconds()
        elif isinstance(seconds, bool) or not isinstance(seconds, int):
            raise TypeError(
                "TimeWindow: seconds must be a whole number of seconds (int or "
                f"timedelta), got {seconds!r}"
            )
        else:
            value = seconds
        if value != int(value):
            raise TypeError(
                "TimeWindow: seconds must be a whole number of seconds (buckets are "
                f"one second wide), got {seconds!r}"
            )
        if value < 1:
            raise ValueError(f"TimeWindow: seconds must be >= 1, got {seconds!r}")
        self.seconds = int(value)

    def __repr__(self) -> str:
        return f"TimeWindow(seconds={self.seconds})"

    def _new(self) -> _TimeBuckets:
        return _TimeBuckets(self.seconds)


class _CountRing:
    """Outcome codes in a ring (bit 0 failure, bit 1 slow, bit 2 present)."""

    __slots__ = ("_buf", "_i", "_size", "calls", "failures", "slows")

    def __init__(self, size: int) -> None:
        self._size = size
        self._buf = bytearray(size)
        self._i = 0
        self.calls = 0
        self.failures = 0
        self.slows = 0

    def add(self, now: float, failed: int, slow: int) -> None:  # noqa: ARG002  # the window protocol: time windows need now
        i = self._i
        old = self._buf[i]
        if old:
            self.failures += failed - (old & 1)
            self.slows += slow - ((old >> 1) & 1)
        else:
            self.calls += 1
            self.failures += failed
            self.slows += slow
        self._buf[i] = 4 | failed | (slow << 1)
        i += 1
        self._i = 0 if i == self._size else i

    def add_success(self) -> int:
        """Record one plain success; return the code it replaced (0: a new slot)."""
        i = self._i
        old = self._buf[i]
        if old != 4:
            if old:
                self.failures -= old & 1
                self.slows -= (old >> 1) & 1
            else:
                self.calls += 1
            self._buf[i] = 4
        i += 1
        self._i = 0 if i == self._size else i
        return old

    def add_successes(self, n: int) -> None:
        if n >= self._size:
            self._buf = bytearray(b"\x04") * self._size
            self.calls = self._size
            self.failures = self.slows = 0
            return
        buf, i, size = self._buf, self._i, self._size
        for _ in range(n):
            old = buf[i]
            if old != 4:
                if old:
                    self.failures -= old & 1
                    self.slows -= (old >> 1) & 1
                else:
                    self.calls += 1
                buf[i] = 4
            i += 1
            if i == size:
                i = 0
        self._i = i

    def expire(self, now: float) -> None:
        """Nothing expires by time in a count window."""

    def clear(self) -> None:
        self._buf = bytearray(self._size)
        self._i = 0
        self.calls = self.failures = self.slows = 0


class _TimeBuckets:
    """Per-second (calls, failures, slows) buckets with running totals."""

    __slots__ = (
        "_calls",
        "_fails",
        "_head",
        "_n",
        "_secs",
        "_slows",
        "calls",
        "failures",
        "slows",
    )

    def __init__(self, seconds: int) -> None:
        self._n = seconds
        self._secs = [-1] * seconds
        self._calls = [0] * seconds
        self._fails = [0] * seconds
        self._slows = [0] * seconds
        self._head = -1  # the latest second seen
        self.calls = self.failures = self.slows = 0

    def expire(self, now: float) -> None:
        sec = math.floor(now)
        head = self._head
        if sec <= head:
            return
        n = self._n
        # Clear every bucket that falls out of the window between head and sec;
        # at most n of them, so the cost per call is O(1) amortised and O(n) worst.
        for s in range(max(head + 1, sec - n + 1), sec + 1):
            j = s % n
            if self._secs[j] != -1:
                self.calls -= self._calls[j]
                self.failures -= self._fails[j]
                self.slows -= self._slows[j]
                self._calls[j] = self._fails[j] = self._slows[j] = 0
            self._secs[j] = s
        self._head = sec

    def add(self, now: float, failed: int, slow: int) -> None:
        self.expire(now)
        j = self._head % self._n
        self._calls[j] += 1
        self._fails[j] += failed
        self._slows[j] += slow
        self.calls += 1
        self.failures += failed
        self.slows += slow

    def clear(self) -> None:
        n = self._n
        self._secs = [-1] * n
        self._calls = [0] * n
        self._fails = [0] * n
        self._slows = [0] * n
        self.calls = self.failures = self.slows = 0
        self._head = -1


Window = CountWindow | TimeWindow
