"""Tripwire: kill a flag when the code path it guards fails too often.

The canary-less sibling of :class:`tipkit.rollout.Rollout` (and re-exported
from :mod:`tipkit.rollout`): no control to compare against, just a threshold on
the guarded path's error rate over a window.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

from tipkit._core import _fork
from tipkit._core._guard import Guard
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.flags import Flags
from tipkit.stores._action import Action
from tipkit.telemetry import _names as names
from tipkit.telemetry._events import BUS, AttributeValue, Event

__all__ = ["FlagKilled", "Tripwire"]

logger = logging.getLogger("tipkit")


@dataclass(frozen=True, slots=True)
class FlagKilled(Event):
    """A tripwire killed a flag: the flagged path failed too often.

    Attributes:
        name: the flag key.
        reason: why, in plain words.
        error_rate: failures / calls over the window when it tripped.
        calls, failures: the window's counts.
        max_error_rate: the threshold.
        window: the window's length in seconds.
        runbook: the runbook URL, if any.
    """

    reason: str
    error_rate: float
    calls: int
    failures: int
    max_error_rate: float
    window: float
    runbook: str | None = None

    otel_name: ClassVar[str] = "feature_flag.killed"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the flag key, rate, counts and runbook."""
        attrs: dict[str, AttributeValue] = {
            names.FEATURE_FLAG_KEY: self.name,
            names.TRIPWIRE_ERROR_RATE: self.error_rate,
            names.TRIPWIRE_CALLS: self.calls,
            names.TRIPWIRE_FAILURES: self.failures,
        }
        if self.runbook is not None:
            attrs[names.RUNBOOK] = self.runbook
        return attrs


class Tripwire(Guard[float]):
    """Kill a flag when the code path it guards fails too often.

    Wrap the flagged (new) code path: as a decorator, ``with``, ``async with``
    or ``call``. Outcomes (an :class:`Exception` is a failure) are counted in
    *window*; once it holds at least *minimum_calls* and the error rate exceeds
    *max_error_rate*, ``flags.kill(key)`` is written to the store (every
    :class:`~tipkit.flags.Flags` sharing it serves the flag as disabled) and a
    :class:`FlagKilled` event says why. Humans re-enable the flag
    (``flags.revive(key)``); the tripwire then re-arms with an empty window.

    Args:
        flags: the :class:`~tipkit.flags.Flags` owning the flag.
        key: the flag key.
        max_error_rate: the tolerated failure share (0 < rate < 1).
        window: a :class:`tipkit.breaker.TimeWindow` or ``CountWindow``
            (default ``TimeWindow(60)``).
        minimum_calls: outcomes the window needs before it may trip.
        runbook: a URL carried by the event.
        clock: the clock (monotonic time drives the window).

    Thread-safe. Never raises into the guarded call: a failed kill is logged.
    Blocking: the kill (a store write through ``flags.kill``, bounded by the
    store's timeout) and, once tripped, the check whether the flag was revived
    (``flags.killed()``) run in the releasing thread for the sync faces; the
    async faces await them in a worker thread, so the event loop never waits
    on the store. Either way the flag is killed when the call that tripped the
    wire returns.
    """

    __slots__ = (
        "_armed",
        "_flags",
        "_lock",
        "_window",
        "key",
        "max_error_rate",
        "minimum_calls",
        "runbook",
        "window",
    )

    def _after_fork_in_child(self) -> None:
        """Re-create the lock in a forked worker (another thread may have held it)."""
        self._lock = threading.Lock()

    def __init__(
        self,
        flags: Flags,
        key: str,
        *,
        max_error_rate: float = 0.05,
        window: Any = None,
        minimum_calls: int = 100,
        runbook: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(clock=clock)
        from tipkit.breaker import CountWindow, TimeWindow  # noqa: PLC0415  # breaker is heavy

        if not isinstance(flags, Flags):
            raise TypeError(f"flags must be a tipkit.flags.Flags, got {flags!r}")
        if not key:
            raise ValueError(f"key must be a non-empty string, got {key!r}")
        if isinstance(max_error_rate, bool) or not (0.0 < float(max_error_rate) < 1.0):
            raise ValueError(
                f"max_error_rate must be in (0, 1), got {max_error_rate!r}"
            )
        if type(minimum_calls) is not int or minimum_calls < 1:
            raise ValueError(
                f"minimum_calls must be an int >= 1, got {minimum_calls!r}"
            )
        window = TimeWindow(60) if window is None else window
        if not isinstance(window, TimeWindow | CountWindow):
            raise TypeError(
                f"window must be a TimeWindow or CountWindow, got {window!r}"
            )
        self._flags = flags
        self.key = key
        self.max_error_rate = float(max_error_rate)
        self.window = window
        self.minimum_calls = minimum_calls
        self.runbook = runbook
        self._window = window._new()
        self._lock = threading.Lock()
        _fork.register(self)
        self._armed = True

    def __repr__(self) -> str:
        w = self._window
        return (
            f"<Tripwire {self.key!r} max_error_rate={self.max_error_rate} window={self.window!r}"
            f" minimum_calls={self.minimum_calls} calls={w.calls} failures={w.failures}"
            f" {'armed' if self._armed else 'tripped'}>"
        )

    @property
    def tripped(self) -> bool:
        """Whether this tripwire killed the flag and the flag is still killed."""
        self._rearm_if_revived()
        return not self._armed

    def _rearm_if_revived(self) -> None:
        if not self._armed and self.key not in self._flags.killed():
            with self._lock:
                self._window.clear()
                self._armed = True

    def _step(self, now: float, pending: object) -> float:  # noqa: ARG002  # Guard protocol
        return now

    def _release(
        self,
        ticket: float,  # noqa: ARG002  # Guard protocol
        error: BaseException | None,
        now: float,
    ) -> None:
        if error is not None and not isinstance(error, Exception):
            return  # cancelled or interrupted: not an outcome of the path
        if not self._armed:
            self._rearm_if_revived()
        event = self._count(error, now)
        if event is not None:
            self._kill(event)

    async def _arelease(
        self,
        ticket: float,  # noqa: ARG002  # Guard protocol
        error: BaseException | None,
        now: float,
    ) -> None:
        """Release for the async faces: the flags' reads and writes run in a worker thread."""
        if error is not None and not isinstance(error, Exception):
            return
        if not self._armed:
            await asyncio.to_thread(self._rearm_if_revived)
        event = self._count(error, now)
        if event is not None:
            await asyncio.to_thread(self._kill, event)

    def _count(self, error: BaseException | None, now: float) -> FlagKilled | None:
        """Count one outcome; return the event if it trips the wire (once)."""
        with self._lock:
            w = self._window
            w.add(now, 1 if error is not None else 0, 0)
            if not self._armed or w.calls < self.minimum_calls:
                return None
            rate = w.failures / w.calls
            if rate <= self.max_error_rate:
                return None
            self._armed = False
            return FlagKilled(
                self.key,
                f"error rate {rate:.4f} over the last {w.calls} calls exceeds "
                f"{self.max_error_rate:g}",
                rate,
                w.calls,
                w.failures,
                self.max_error_rate,
                float(getattr(self.window, "seconds", getattr(self.window, "size", 0))),
                self.runbook,
            )

    def _kill(self, event: FlagKilled) -> None:
        try:
            # Audited as an automatic action, the tripwire's numbers in its reason.
            action = self._flags.kill(
                self.key, actor="tipkit:tripwire", reason=event.reason
            )
        except Exception:
            logger.exception("tipkit: tripwire could not kill flag %r", self.key)
            return

        # FlagKilled only once the store has the kill: while it is pending (in
        # force here, ActionPending published) it is published when flushed.
        def settled(a: Action) -> None:
            if a.done and FlagKilled.listened:
                BUS.publish(event)

        action.on_settled(settled)
