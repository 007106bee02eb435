"""Bulkhead: cap how many calls run at once.

One slow dependency then cannot take every thread, connection or task of the
process with it.

::

    db = Bulkhead("db", max_concurrent=10, max_wait=0.5)

    @db
    async def query(sql): ...

A call takes one of ``max_concurrent`` slots for as long as it runs. When every
slot is taken, it waits up to ``max_wait`` seconds, first come first served: a
freed slot is handed directly to the longest-waiting call, which is woken (never
polled); then it fails with :class:`~tipkit.errors.BulkheadFullError`. With
``max_wait=0`` (the default) a full bulkhead rejects at once.

Thread-safe and asyncio-safe: one bulkhead limits threads and tasks together;
its lock is held only around the slot bookkeeping. Time is read from the
injected ``clock`` (monotonic).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from tipkit._core import _fork
from tipkit._core._check import check_int, check_mode, check_name, check_seconds
from tipkit._core._fallback import NO_FALLBACK, ExcTypes, make
from tipkit._core._guard import Guard, Wait, Waiter
from tipkit._core._mode import Mode
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import BulkheadFullError
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY
from tipkit.telemetry._events import BUS, AttributeValue, Event

__all__ = ["Bulkhead", "BulkheadCallRejected"]


@dataclass(frozen=True, slots=True)
class BulkheadCallRejected(Event):
    """A bulkhead rejected a call (or, in shadow mode, would have).

    Attributes:
        max_concurrent: the bulkhead's limit.
        waited: seconds the call waited for a slot before giving up.
        shadow: the call was let through anyway (shadow mode).
        runbook: the bulkhead's runbook URL, if any.
    """

    max_concurrent: int
    waited: float = 0.0
    shadow: bool = False
    runbook: str | None = None

    otel_name: ClassVar[str] = "tipkit.bulkhead.call_rejected"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the bulkhead name, limit, wait, mode and runbook."""
        attrs: dict[str, AttributeValue] = {
            names.BULKHEAD_NAME: self.name,
            "tipkit.bulkhead.max_concurrent": self.max_concurrent,
            "tipkit.bulkhead.waited": self.waited,
            names.MODE: "shadow" if self.shadow else "enforce",
        }
        if self.runbook is not None:
            attrs[names.RUNBOOK] = self.runbook
        return attrs


class _Queued:
    """A call waiting for a slot.

    Holds its waiter, when it gives up, and whether a releasing call has handed
    it a slot.
    """

    __slots__ = ("gone", "granted", "since", "until", "waiter")

    def __init__(self, since: float, until: float) -> None:
        self.waiter = Waiter()
        self.since = since
        self.until = until
        self.granted = False
        self.gone = False  # left the queue by giving up


class _Ticket:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_HELD = _Ticket("slot")  # the call holds a slot
_OVERFLOW = _Ticket("shadow overflow")  # shadow mode: runs beyond the limit, no slot


class Bulkhead(Guard[_Ticket]):
    """Limit concurrent calls across threads and tasks, first come first served.

    Args:
        name: names the bulkhead in errors, events, counters and ``repr``.
        max_concurrent: slots; calls beyond this wait or are rejected (default 10).
        max_wait: seconds a call may wait for a slot (default 0.0: reject at once
            when full). Waiting is capped by the current deadline.
        mode: ``"enforce"`` (default) or ``"shadow"``: in shadow mode a call that
            finds every slot taken runs at once, without a slot, and is counted
            and reported as a would-be rejection; switchable live.
        runbook: URL carried by every event and error of this bulkhead.
        clock: the clock read for waits (default: the system clock).

    Raises:
        TypeError, ValueError: an argument is invalid; the message names it.

    Thread-safe and asyncio-safe.
    """

    __slots__ = (
        "_active",
        "_inc_acquired",
        "_inc_rejected",
        "_lock",
        "_max",
        "_max_wait",
        "_mode",
        "_overflow",
        "_queue",
        "_rejected",
        "_would_reject",
        "name",
        "runbook",
    )
    _composition_role = "limit"  # compose() checks the order of parts by role

    def __init__(
        self,
        name: str,
        *,
        max_concurrent: int = 10,
        max_wait: float | timedelta = 0.0,
        mode: Mode = "enforce",
        runbook: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        fallback: object = NO_FALLBACK,  # a value or (exc) -> value: tipkit.fallback
        fallback_on: ExcTypes | None = None,
    ) -> None:
        super().__init__(
            clock=clock, fallback=make(fallback, fallback_on, name, "Bulkhead")
        )
        self.name = check_name(name, "Bulkhead: name")
        self._max = check_int(max_concurrent, "Bulkhead: max_concurrent", minimum=1)
        self._max_wait = check_seconds(max_wait, "Bulkhead: max_wait", minimum=0)
        self._mode: Mode = check_mode(mode, f"Bulkhead {name!r}")
        self.runbook = check_name(runbook, "Bulkhead: runbook", optional=True)
        self._lock = _fork.new_lock()
        _fork.register(self)
        self._active = 0
        self._overflow = 0
        self._queue: collections.deque[_Queued] = collections.deque()
        self._rejected = 0
        self._would_reject = 0
        self._bind_counters()
        REGISTRY.register_gauge(names.BULKHEAD_ACTIVE, self, _active_gauge)

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()

    def _bind_counters(self) -> None:
        attrs = {names.BULKHEAD_NAME: self.name, names.MODE: self._mode}
        # Keep the Counters and call counter.inc(): telemetry.synthetic() routes it.
        self._inc_acquired = REGISTRY.counter(
            names.BULKHEAD_CALLS, {**attrs, names.RESULT: "acquired"}
        )
        self._inc_rejected = REGISTRY.counter(
            names.BULKHEAD_CALLS, {**attrs, names.RESULT: "rejected"}
        )

    # -- configuration and live state -------------------------------------------------
    @property
    def max_concurrent(self) -> int:
        """The number of slots."""
        return self._max

    @property
    def max_wait(self) -> float:
        """Seconds a call may wait for a slot."""
        return self._max_wait

    @property
    def mode(self) -> Mode:
        """``"enforce"`` or ``"shadow"``; assign to switch a live bulkhead."""
        return self._mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        self.set_mode(value)

    def set_mode(self, mode: Mode) -> None:
        """Switch between ``"enforce"`` and ``"shadow"``; calls in flight keep their slots.

        Raises:
            ValueError: *mode* is neither. Thread-safe.
        """
        checked = check_mode(mode, f"Bulkhead {self.name!r}")
        with self._lock:
            self._mode = checked
            self._bind_counters()

    @property
    def active(self) -> int:
        """Calls running now (in shadow mode including those beyond the limit)."""
        return self._active + self._overflow

    @property
    def available(self) -> int:
        """Free slots now."""
        return self._max - self._active

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot now."""
        return len(self._queue)

    @property
    def rejected(self) -> int:
        """Calls rejected since the bulkhead was built (enforce mode)."""
        return self._rejected

    @property
    def would_reject(self) -> int:
        """Calls let through in shadow mode that found every slot taken."""
        return self._would_reject

    def __repr__(self) -> str:
        shadow = f" would_reject={self._would_reject}" if self._mode == "shadow" else ""
        return (
            f"<Bulkhead {self.name!r} active={self.active}/{self._max} "
            f"waiting={self.waiting} max_wait={self._max_wait} mode={self._mode}"
            f"{shadow} rejected={self._rejected}>"
        )

    # -- the core -------------------------------------------------------------------------
    def _step(self, now: float, pending: Wait | None) -> _Ticket | Wait:
        lock = self._lock
        if pending is None:
            lock.acquire()
            if self._active < self._max and not self._queue:
                self._active += 1
                lock.release()
                self._inc_acquired.inc()
                return _HELD
            try:
                shadow = self._mode == "shadow"
                if shadow:
                    self._overflow += 1
                    self._would_reject += 1
                elif self._max_wait > 0:
                    queued = _Queued(now, now + self._max_wait)
                    self._queue.append(queued)
                    return Wait(self._max_wait, waiter=queued.waiter, state=queued)
                else:
                    self._rejected += 1
            finally:
                lock.release()
            return self._refuse(0.0, shadow=shadow)
        queued = pending.state
        with lock:
            if queued.granted:
                granted = True
            elif now >= queued.until:
                granted = False
                queued.gone = True
                self._queue.remove(queued)
                # The mode may have been switched while this call waited: what
                # it gets must match what was counted (an overflow runs, and
                # leaves through _release).
                shadow = self._mode == "shadow"
                if shadow:
                    self._overflow += 1
                    self._would_reject += 1
                else:
                    self._rejected += 1
            else:
                return Wait(queued.until - now, waiter=queued.waiter, state=queued)
        if granted:
            self._inc_acquired.inc()
            return _HELD
        return self._refuse(now - queued.since, shadow=shadow)

    def _refuse(self, waited: float, *, shadow: bool) -> _Ticket:
        """Count and report a rejection; raise it unless *shadow* (decided under the lock)."""
        self._inc_rejected.inc()
        if BulkheadCallRejected.listened:
            BUS.publish(
                BulkheadCallRejected(self.name, self._max, waited, shadow, self.runbook)
            )
        if shadow:
            return _OVERFLOW
        see = f" (runbook: {self.runbook})" if self.runbook else ""
        after = f" after waiting {waited:.3f}s" if waited else ""
        raise BulkheadFullError(
            f"bulkhead {self.name!r} is full: all {self._max} slots taken{after}{see}",
            name=self.name,
            runbook=self.runbook,
        )

    def _release(
        self,
        ticket: _Ticket,
        error: BaseException | None,  # noqa: ARG002  # the guard protocol: outcomes do not matter here
        now: float,  # noqa: ARG002  # same
    ) -> None:
        if ticket is _OVERFLOW:
            with self._lock:
                self._overflow -= 1
            return
        self._fast_release(ticket)

    def _abandon(self, pending: Wait, now: float) -> None:  # noqa: ARG002  # the guard protocol
        queued: _Queued = pending.state
        with self._lock:
            granted = queued.granted
            queued.granted = False  # a slot is passed on once only
            if not granted and not queued.gone:
                queued.gone = True
                self._queue.remove(queued)
        if granted:
            # Handed a slot just as it stopped waiting: pass the slot on.
            self._fast_release(_HELD)

    # -- fast-path hooks: the decorators take and free a slot without reading the clock
    def _fast_admit(self) -> _Ticket | None:
        """Take a free slot if no call is queued; else ``None`` (the generic path)."""
        lock = self._lock
        lock.acquire()
        if self._active < self._max and not self._queue:
            self._active += 1
            lock.release()
            self._inc_acquired.inc()
            return _HELD
        lock.release()
        return None

    def _fast_release(self, ticket: _Ticket) -> bool:
        """Free the slot of a finished call (no clock: the outcome does not matter).

        Return ``False`` for a shadow overflow ticket, which holds no slot: the
        face then calls :meth:`_release`. The freed slot goes straight to the
        longest waiter, so a newcomer cannot take it between the release and the
        waiter waking up.
        """
        if ticket is _OVERFLOW:
            return False
        lock = self._lock
        lock.acquire()
        queue = self._queue
        if not queue:
            self._active -= 1
            lock.release()
            return True
        queued = queue.popleft()
        queued.granted = True
        lock.release()
        queued.waiter.notify()
        return True


def _active_gauge(bulkhead: Bulkhead) -> list[tuple[float, dict[str, str]]]:
    return [(float(bulkhead.active), {names.BULKHEAD_NAME: bulkhead.name})]
