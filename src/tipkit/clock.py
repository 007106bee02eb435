"""Time, injected: the one module of tipkit that reads or waits on real time.

Every time-dependent primitive takes ``clock=`` (keyword-only) and reads the time
through it, once per decision. The default is :data:`SYSTEM_CLOCK`. Tests pass
:class:`tipkit.testing.FakeClock`, which never sleeps.
"""

from __future__ import annotations

import asyncio
import threading
import time as _time
from typing import Any, Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What tipkit needs to know about time.

    ``monotonic()`` measures durations and drives every state machine; ``time()`` is
    wall-clock seconds since the epoch, used only for timestamps that must survive a
    restart or be compared across hosts (rollout history, for instance).
    """

    def monotonic(self) -> float:
        """Return seconds on a clock that never goes backwards."""
        ...

    def time(self) -> float:
        """Return wall-clock seconds since the Unix epoch."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for *seconds*."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for *seconds*."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time` and real sleeps.

    Stateless and thread-safe. ``monotonic`` and ``time`` are the C functions
    themselves, so reading the clock on a hot path costs one C call.
    """

    __slots__ = ()

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)
    sleep = staticmethod(_time.sleep)

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for *seconds* with :func:`asyncio.sleep`."""
        await asyncio.sleep(seconds)

    def wait_event(self, event: threading.Event, timeout: float) -> bool:
        """Block until *event* is set or *timeout* seconds pass; return whether set.

        Guards that wait *on* something (a bulkhead slot) use this instead of
        polling. Clocks without this method get a plain ``sleep(timeout)``.
        """
        return event.wait(timeout)

    async def await_future(self, future: asyncio.Future[Any], timeout: float) -> bool:
        """Suspend until *future* is done or *timeout* seconds pass; return whether done."""
        done, _ = await asyncio.wait((future,), timeout=timeout)
        return bool(done)

    def __repr__(self) -> str:
        return "<SystemClock>"


SYSTEM_CLOCK: Clock = SystemClock()
"""The default clock of every primitive."""
