"""Timeout: bound how long a call may take.

::

    @Timeout(2.0)
    async def fetch(url): ...          # cancelled after 2 s: DeadlineExceededError

    @Timeout(2.0)
    def fetch_sync(url): ...           # see below: sync code is not interrupted

**Async code** is cancelled: the awaited work runs under :func:`asyncio.timeout`
and, when the time is up, is cancelled at its current ``await``; the caller gets
:class:`~tipkit.errors.DeadlineExceededError` (also a ``TimeoutError``).

**Sync code cannot be interrupted safely** in Python: a blocking socket read, a
``time.sleep``, a C extension or a busy loop runs to its end, and killing a
thread or raising from a signal handler leaves locks and state half-changed.
So for sync code a ``Timeout`` sets a deadline (:mod:`tipkit.deadline`) that
cooperating code reads (``sock.settimeout(deadline.remaining())``,
``deadline.check()`` between steps), that every tipkit guard inside enforces
(no guard admits a call or waits past it), and checks it when the call returns:
a call that returns after its deadline raises ``DeadlineExceededError`` and its
result is discarded (its side effects have happened). An exception raised by
the call passes through unchanged.

Nested timeouts and deadlines take the earliest. Time is read from the injected
``clock``; async cancellation is scheduled on the event loop's clock for the
time remaining on ``clock``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import ClassVar

from tipkit._core import _scope
from tipkit._core._check import check_clock, check_name, check_seconds
from tipkit._core._deadline import Deadline, exceeded
from tipkit._core._scope import Node, Scope
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import DeadlineExceededError
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY
from tipkit.telemetry._events import BUS, AttributeValue, Event

__all__ = ["TimedOut", "Timeout"]


@dataclass(frozen=True, slots=True)
class TimedOut(Event):
    """A call under a :class:`Timeout` ran out of time.

    Attributes:
        timeout: the deadline's timeout in seconds (the earliest in force).
        cancelled: ``True`` when async work was cancelled; ``False`` when sync
            (or uncancellable) work returned after its deadline.
    """

    timeout: float
    cancelled: bool

    otel_name: ClassVar[str] = "tipkit.timeout.timed_out"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the timeout name, its seconds and whether work was cancelled."""
        return {
            names.TIMEOUT_NAME: self.name,
            "tipkit.timeout.seconds": self.timeout,
            "tipkit.timeout.cancelled": self.cancelled,
        }


class Timeout(Scope):
    """Bound a call to *seconds*: cancel async work, set a deadline for sync work.

    A scope, not a guard: it admits every call and puts a deadline in force
    around it (the faces come from :class:`~tipkit._core._scope.Scope`:
    decorator, ``with``/``async with`` binding the :class:`Deadline` in force,
    ``call``/``acall``). ``compose()`` accepts it like any guard.

    Args:
        seconds: the time budget of each call (float seconds or timedelta, > 0).
        name: names the timeout in errors, events and counters (default:
            ``"timeout"``).
        clock: the clock the deadline is read on (default: the system clock).

    Raises:
        TypeError, ValueError: an argument is invalid; the message names it.

    Calls raise :class:`~tipkit.errors.DeadlineExceededError` when they run out
    of time, or at once when a deadline in force has already passed. Stateless
    between calls, so thread-safe and asyncio-safe.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_inc_failure",
        "_inc_success",
        "_inc_timeout",
        "name",
        "seconds",
    )
    _composition_role = "timeout"  # compose() checks the order of parts by role

    def __init__(
        self,
        seconds: float | timedelta,
        *,
        name: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._clock = check_clock(clock)
        self.seconds = check_seconds(seconds, "Timeout: seconds", above=0)
        self.name = check_name(name, "Timeout: name", optional=True) or "timeout"
        counter = REGISTRY.counter
        attrs = {names.TIMEOUT_NAME: self.name}
        # Keep the Counters and call counter.inc(): telemetry.synthetic() routes it.
        self._inc_success = counter(
            names.TIMEOUT_CALLS, {**attrs, names.OUTCOME: "success"}
        )
        self._inc_failure = counter(
            names.TIMEOUT_CALLS, {**attrs, names.OUTCOME: "failure"}
        )
        self._inc_timeout = counter(
            names.TIMEOUT_CALLS, {**attrs, names.OUTCOME: "timeout"}
        )

    def __repr__(self) -> str:
        return f"<Timeout {self.name!r} seconds={self.seconds}>"

    # -- the scope: what every face runs ------------------------------------------------
    def _open(self) -> tuple[None, Deadline, None]:
        """Refuse to start past the deadline in force; else put this one in force."""
        node = _scope.top()
        if node is not None:
            outer = node[3]
            if outer is not None and outer.expired():
                self._inc_timeout.inc()
                raise exceeded(outer, f"{self!r} could not start the call")
        clock = self._clock
        seconds = self.seconds
        return (
            None,
            Deadline(
                clock, clock.monotonic() + seconds, timeout=seconds, name=self.name
            ),
            None,
        )

    def _entered(self, node: Node) -> Deadline:
        return _in_force(node)

    def _close(self, node: Node, error: BaseException | None) -> None:
        """Count the outcome; raise if the call returned past its deadline."""
        if error is not None:
            self._inc_failure.inc()
            return
        dl = node[3]
        if dl is not None and dl.expired():  # never None: this node set one
            raise self._timed_out(dl, cancelled=False)
        self._inc_success.inc()

    async def _aopen(self, node: Node) -> asyncio.Timeout:
        """Cancel the awaited work when the deadline in force passes (loop timer)."""
        timer = asyncio.timeout(max(0.0, _in_force(node).remaining()))
        await timer.__aenter__()
        return timer

    async def _aclose(
        self,
        node: Node,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the timer; report work it cancelled as a timeout."""
        timer: asyncio.Timeout = node[1]  # what _aopen returned
        try:
            await timer.__aexit__(exc_type, exc, tb)
        except TimeoutError as timeout_exc:
            raise self._timed_out(_in_force(node), cancelled=True) from timeout_exc

    def _timed_out(self, dl: Deadline, *, cancelled: bool) -> DeadlineExceededError:
        self._inc_timeout.inc()
        if TimedOut.listened:
            BUS.publish(TimedOut(self.name, dl.timeout, cancelled))
        what = "the call was cancelled" if cancelled else "the call returned too late"
        return exceeded(dl, f"{self!r}: {what}")


def _in_force(node: Node) -> Deadline:
    """Return the deadline in force at a Timeout's own node (never None: it sets one)."""
    dl = node[3]
    assert dl is not None  # a Timeout's node sets a deadline
    return dl
