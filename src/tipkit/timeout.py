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
import functools
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, ClassVar, ParamSpec, TypeVar

from tipkit._core import _deadline
from tipkit._core._deadline import Deadline
from tipkit._core._durations import to_seconds
from tipkit._core._guard import Guard
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.deadline import exceeded, push
from tipkit.errors import DeadlineExceededError
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY
from tipkit.telemetry._events import BUS, AttributeValue, Event

__all__ = ["TimedOut", "Timeout"]

P = ParamSpec("P")
R = TypeVar("R")


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


class _Scope:
    """One entry of a Timeout: the deadline token, the deadline, the asyncio timer."""

    __slots__ = ("deadline", "timer", "token")

    def __init__(
        self,
        token: Token[Deadline | None],
        deadline: Deadline,
        timer: asyncio.Timeout | None = None,
    ) -> None:
        self.token = token
        self.deadline = deadline
        self.timer = timer


_SCOPES: ContextVar[tuple[tuple[object, _Scope], ...]] = ContextVar(
    "tipkit_timeout_scopes", default=()
)


class Timeout(Guard[_Scope]):
    """Bound a call to *seconds*: cancel async work, set a deadline for sync work.

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

    __slots__ = ("_inc_failure", "_inc_success", "_inc_timeout", "name", "seconds")

    def __init__(
        self,
        seconds: float | timedelta,
        *,
        name: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(clock=clock)
        secs = to_seconds(seconds, "Timeout: seconds")
        if secs <= 0:
            raise ValueError(f"Timeout: seconds must be > 0, got {seconds!r}")
        if name is not None and (not isinstance(name, str) or not name):  # type: ignore[redundant-expr]  # callers without type checking pass anything
            raise TypeError(
                f"Timeout: name must be a non-empty str or None, got {name!r}"
            )
        self.seconds = secs
        self.name = name or "timeout"
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

    # -- the shared steps --------------------------------------------------------------
    def _begin(self) -> _Scope:
        outer = _deadline.CURRENT.get()
        if outer is not None and outer.expired():
            self._inc_timeout.inc()
            raise exceeded(outer, f"{self!r} could not start the call")
        token, dl = push(self.seconds, self.name, self._clock)
        return _Scope(token, dl)

    def _timed_out(self, dl: Deadline, *, cancelled: bool) -> DeadlineExceededError:
        self._inc_timeout.inc()
        if TimedOut.listened:
            BUS.publish(TimedOut(self.name, dl.timeout, cancelled))
        what = "the call was cancelled" if cancelled else "the call returned too late"
        return exceeded(dl, f"{self!r}: {what}")

    def _end(self, scope: _Scope, error: BaseException | None) -> None:
        """Restore the outer deadline; raise if the call returned past its deadline."""
        _deadline.CURRENT.reset(scope.token)
        if error is not None:
            self._inc_failure.inc()
            return
        if scope.deadline.expired():
            raise self._timed_out(scope.deadline, cancelled=False)
        self._inc_success.inc()

    def _timer(self, scope: _Scope) -> asyncio.Timeout:
        return asyncio.timeout(max(0.0, scope.deadline.remaining()))

    def _cancelled(self, scope: _Scope, exc: TimeoutError) -> DeadlineExceededError:
        _deadline.CURRENT.reset(scope.token)
        err = self._timed_out(scope.deadline, cancelled=True)
        err.__cause__ = exc
        return err

    # -- faces ---------------------------------------------------------------------------
    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.call(fn, *args, **kwargs)

        return guarded

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            return await self.acall(fn, *args, **kwargs)

        return guarded

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` with this timeout's deadline in force.

        Raises:
            DeadlineExceededError: the deadline had passed before the call, or
                the call returned after it (its result is discarded).
        """
        scope = self._begin()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._end(scope, exc)
            raise
        self._end(scope, None)
        return result

    async def acall(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)``, cancelling it when the deadline passes.

        Raises:
            DeadlineExceededError: the deadline had passed before the call, or
                the work was cancelled at the deadline, or it returned after it.
        """
        scope = self._begin()
        timer = self._timer(scope)
        try:
            async with timer:
                result = await fn(*args, **kwargs)
        except TimeoutError as exc:
            if timer.expired():
                raise self._cancelled(scope, exc) from exc
            self._end(scope, exc)
            raise
        except BaseException as exc:
            self._end(scope, exc)
            raise
        self._end(scope, None)
        return result

    def __enter__(self) -> Deadline:
        scope = self._begin()
        _SCOPES.set((*_SCOPES.get(), (self, scope)))
        return scope.deadline

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end(self._pop_scope(), exc)

    async def __aenter__(self) -> Deadline:
        scope = self._begin()
        scope.timer = timer = self._timer(scope)
        await timer.__aenter__()
        _SCOPES.set((*_SCOPES.get(), (self, scope)))
        return scope.deadline

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope = self._pop_scope()
        timer = scope.timer
        assert timer is not None  # set by __aenter__
        try:
            await timer.__aexit__(exc_type, exc, tb)
        except TimeoutError as timeout_exc:
            raise self._cancelled(scope, timeout_exc) from timeout_exc
        self._end(scope, exc)

    def _pop_scope(self) -> _Scope:
        stack = _SCOPES.get()
        for i in range(len(stack) - 1, -1, -1):
            owner, scope = stack[i]
            if owner is self:
                _SCOPES.set(stack[:i] + stack[i + 1 :])
                return scope
        raise RuntimeError(f"{self!r} exited without a matching enter in this context")
