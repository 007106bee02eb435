"""What a guard's step answers when a call may not run yet: :class:`Wait`, :class:`Waiter`.

A :class:`Wait` is "try again after *seconds*", optionally woken sooner by a
:class:`Waiter` (a freed bulkhead slot hands itself to the longest waiter).
The two drivers in :mod:`._guard` interpret them: sleep (or wait on the waiter)
through the injected clock, then step again.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tipkit.clock import Clock

__all__ = ["Wait", "Waiter"]


class Waiter:
    """Something a waiting call can be woken by (a freed bulkhead slot, say).

    ``notify()`` may be called from any thread, before or after the wait starts;
    a waiter is woken at most once. Sync waits block on a ``threading.Event``;
    async waits await a future on their own loop, woken thread-safely.
    """

    __slots__ = ("_event", "_future", "_lock", "_loop", "notified")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.notified = False
        self._event: threading.Event | None = None
        self._future: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def notify(self) -> None:
        """Wake the waiting call (idempotent, thread-safe)."""
        with self._lock:
            if self.notified:
                return
            self.notified = True
            event, future, loop = self._event, self._future, self._loop
        if event is not None:
            event.set()
        if future is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, future)

    def wait_sync(self, timeout: float, clock: Clock) -> bool:
        """Block until notified or *timeout* passes on *clock*; return whether notified."""
        with self._lock:
            if self.notified:
                return True
            event = self._event = threading.Event()
        wait_event = getattr(clock, "wait_event", None)
        if wait_event is not None:
            return bool(wait_event(event, timeout))
        clock.sleep(timeout)
        return self.notified

    async def wait_async(self, timeout: float, clock: Clock) -> bool:
        """Suspend until notified or *timeout* passes on *clock*; return whether notified."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.notified:
                return True
            future = self._future = loop.create_future()
            self._loop = loop
        await_future = getattr(clock, "await_future", None)
        if await_future is not None:
            return bool(await await_future(future, timeout))
        await clock.asleep(timeout)
        return self.notified


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Wait:
    """A guard's answer "not yet": wait *seconds* (or until *waiter* is notified).

    ``state`` is the guard's own per-call state, handed back to it on the next
    ``_step`` and to ``_abandon``.
    """

    __slots__ = ("seconds", "state", "waiter")

    def __init__(
        self, seconds: float, *, waiter: Waiter | None = None, state: Any = None
    ) -> None:
        self.seconds = seconds
        self.waiter = waiter
        self.state = state

    def __repr__(self) -> str:
        return f"<Wait {self.seconds}s waiter={self.waiter is not None} state={self.state!r}>"
