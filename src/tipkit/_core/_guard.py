"""The guard base: one pure decision, every face written once.

A primitive implements a small synchronous core:

* ``_step(now, pending)``: decide at *now*. Return a ticket (any object but
  ``None``: the call may run) or a :class:`Wait` (try again later). *pending* is
  the previous ``Wait`` of the same call, or ``None`` on the first step, so a
  guard can keep per-call state (a reservation, a deadline) in ``Wait.state``.
  Raise a :class:`~tipkit.errors.RejectedError` to refuse.
* ``_release(ticket, error, now)``: record the outcome at *now* (the end time:
  slow-call detection and time windows need it). *error* is the exception the
  call raised, or ``None``.
* ``_abandon(pending, now)`` (optional): the caller stopped waiting (cancelled,
  interrupted, deadline); give back whatever ``pending`` reserved.

The core never sleeps, never awaits and never reads the clock itself. This module
writes every face once, for all primitives: decorator (sync and ``async def``),
``with``, ``async with``, ``call`` and ``acall``. Only the two drivers that
interpret a ``Wait`` differ between sync and async. No primitive overrides a
face; a primitive that needs a faster path supplies the hooks below.

Fast-path hooks (optional; the decorator faces call them)
-----------------------------------------------------------

Reading the clock costs two calls per guarded call, a method call about 20 ns.
A primitive whose common case needs neither may supply:

``_fast_admit(self) -> ticket | None``
    Admit the call *without reading the clock and without waiting*, or return
    ``None`` to take the generic path, ``_step(clock.monotonic(), None)``
    (which may wait, reject, or admit). It must not raise and must not block
    beyond a short lock; it saves the clock read before the call. A refusal is
    always decided by ``_step``: return ``None``, never raise.

``_fast_ticket`` (attribute variant of ``_fast_admit``)
    A guard whose fast admission is one lock-free read sets the class
    attribute ``_fast_reads_ticket = True`` and keeps an instance attribute
    ``_fast_ticket``: the ticket to hand out while the fast path is open (the
    breaker's closed phase), else ``None``. The decorator reads it inline
    (about 10 ns) instead of calling ``_fast_admit`` (about 30 ns).

``_fast_release(self, ticket) -> bool``
    Record that the call admitted with *ticket* returned normally, *without
    reading the clock*; return ``True`` when done, ``False`` to have the face
    call ``_release(ticket, None, clock.monotonic())`` instead (when the
    outcome needs the end time after all). It receives every ticket the
    decorator got, from ``_fast_admit``/``_fast_ticket`` or from ``_step``, and
    must not raise. It saves the clock read after the call.

A failure (the call raised) always goes through ``_release(ticket, exc, now)``,
so ``_release`` must accept every ticket the fast hooks hand out. The hooks are
called concurrently from many threads and tasks with no lock held by the face:
each must be thread-safe on its own, and neither may sleep or await. They are
looked up once, when a function is decorated: a guard without hooks gets the
generic closures and pays nothing for them. ``with``/``async with``/``call``/
``acall`` always take the generic path (they are not the per-call hot path).
Every face checks the current deadline (:func:`tipkit._core._deadline.check`)
before admitting, fast path included.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, overload

from tipkit._core import _scope
from tipkit._core._deadline import Deadline, exceeded
from tipkit._core._scope import check_decoratable
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import DeadlineExceededError

__all__ = ["Guard", "Wait", "Waiter", "check_decoratable"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# Open `with` tickets live in the one scope stack (_scope), as (guard, ticket)
# entries of this thread / task context, never on the guard itself, so one guard
# entered from many threads and tasks is safe. The faces push and pop inline.
_top = _scope.top
_set_top = _scope.STACK.set


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


# Stand-ins for an absent hook, so the fast faces test nothing per call: C
# callables, cheaper than a branch plus a Python call. NoneType() returns None
# ("take the generic path"); ().__contains__(ticket) returns False for any
# ticket, hashable or not ("call _release").
_no_fast_admit: Callable[[], None] = type(None)
_no_fast_release: Callable[[object], bool] = ().__contains__


def _expired_deadline(dl: Deadline, guard: object) -> DeadlineExceededError:
    """Return the error for *guard* refusing a call past *dl* (kept for importers)."""
    return exceeded(dl, f"{guard!r} could not admit the call")


class Guard(Generic[T]):
    """Base of every per-call guard: subclasses supply ``_step`` and ``_release``.

    Thread-safe and asyncio-safe to the extent the subclass's core is: the faces
    keep no per-call state on ``self``.
    """

    __slots__ = ("__weakref__", "_clock")

    _clock: Clock

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if not isinstance(clock, Clock):
            raise TypeError(
                f"clock must provide monotonic(), time(), sleep() and asleep(), got {clock!r}"
            )
        self._clock = clock

    # -- the core, supplied by subclasses ------------------------------------------
    def _step(self, now: float, pending: Wait | None) -> T | Wait:
        raise NotImplementedError

    def _release(self, ticket: T, error: BaseException | None, now: float) -> None:
        raise NotImplementedError

    def _abandon(self, pending: Wait, now: float) -> None:
        """Give back what *pending* reserved; the default reserves nothing."""

    _entered: Callable[[Any], Any] | None = None
    """Subclasses may set a method ``_entered(ticket)`` returning what ``with g as x`` binds."""

    # -- optional fast-path hooks (see the module docstring) --------------------------
    _fast_admit: Callable[[], T | None] | None = None
    _fast_release: Callable[[T], bool] | None = None
    _fast_reads_ticket: bool = False
    """``True``: the decorators read the instance attribute ``_fast_ticket`` inline."""

    # -- the two drivers --------------------------------------------------------------
    def _acquire_sync(self) -> T:
        clock = self._clock
        step = self._step(clock.monotonic(), None)
        if type(step) is Wait:
            return self._wait_sync(step)
        return step  # type: ignore[return-value]  # narrowed by the `type(step) is Wait` test

    def _wait_sync(self, step: Wait) -> T:
        clock = self._clock
        while True:
            seconds = self._cap_wait(step)
            try:
                if step.waiter is None:
                    clock.sleep(seconds)
                else:
                    step.waiter.wait_sync(seconds, clock)
                self._check_deadline()
                nxt = self._step(clock.monotonic(), step)
            except BaseException:
                self._abandon(step, clock.monotonic())
                raise
            if type(nxt) is not Wait:
                return nxt  # type: ignore[return-value]  # narrowed by the test above
            step = nxt

    async def _acquire_async(self) -> T:
        clock = self._clock
        step = self._step(clock.monotonic(), None)
        if type(step) is Wait:
            return await self._wait_async(step)
        return step  # type: ignore[return-value]  # narrowed by the `type(step) is Wait` test

    async def _wait_async(self, step: Wait) -> T:
        clock = self._clock
        while True:
            seconds = self._cap_wait(step)
            try:
                if step.waiter is None:
                    await clock.asleep(seconds)
                else:
                    await step.waiter.wait_async(seconds, clock)
                self._check_deadline()
                nxt = self._step(clock.monotonic(), step)
            except BaseException:
                self._abandon(step, clock.monotonic())
                raise
            if type(nxt) is not Wait:
                return nxt  # type: ignore[return-value]  # narrowed by the test above
            step = nxt

    def _check_deadline(self) -> None:
        """Raise if the deadline in force has passed: this guard admits nothing past it."""
        node = _top()
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise _expired_deadline(dl, self)

    def _cap_wait(self, step: Wait) -> float:
        """Return how long to wait for *step*, refusing waits past the deadline.

        A plain wait that would end after the current deadline fails at once (it
        could only end in a deadline error); a wait on a waiter is shortened to the
        deadline, since it may be woken sooner.
        """
        dl = _scope.current_deadline()
        if dl is None:
            return step.seconds
        remaining = dl.remaining()
        if step.seconds <= remaining:
            return step.seconds
        if step.waiter is None or remaining <= 0:
            self._abandon(step, self._clock.monotonic())
            raise _expired_deadline(dl, self)
        return remaining

    def _admit_sync(self) -> T:
        node = _top()  # _check_deadline, inline: call() is a hot path
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise _expired_deadline(dl, self)
        return self._acquire_sync()

    async def _admit_async(self) -> T:
        node = _top()  # as in _admit_sync
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise _expired_deadline(dl, self)
        return await self._acquire_async()

    # -- decorator face -------------------------------------------------------------
    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate *fn* (a plain or ``async def`` function) with this guard.

        Raises:
            TypeError: *fn* is a generator or async generator function.
        """
        check_decoratable(fn, self)
        fast = (
            self._fast_reads_ticket
            or self._fast_admit is not None
            or self._fast_release is not None
        )
        if inspect.iscoroutinefunction(fn):
            return self._wrap_async_fast(fn) if fast else self._wrap_async(fn)
        return self._wrap_sync_fast(fn) if fast else self._wrap_sync(fn)

    # The four closures below inline the deadline check (one ContextVar read and
    # one index; see _check_deadline) rather than call it: a call costs ~25 ns.
    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        step = self._step
        release = self._release
        wait = self._wait_sync
        now = self._clock.monotonic
        guard = self

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            node = _top()
            if node is not None:
                dl = node[3]
                if dl is not None and dl.expired():
                    raise _expired_deadline(dl, guard)
            ticket = step(now(), None)
            if type(ticket) is Wait:
                ticket = wait(ticket)
            # mypy cannot narrow `T | Wait` by `type(x) is Wait`; isinstance would cost
            # ~10 ns per call on the hot path, so the two ignores below stand.
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                release(ticket, exc, now())  # type: ignore[arg-type]  # see above
                raise
            release(ticket, None, now())  # type: ignore[arg-type]  # see above
            return result

        return guarded

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        step = self._step
        release = self._release
        wait = self._wait_async
        now = self._clock.monotonic
        guard = self

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            node = _top()
            if node is not None:
                dl = node[3]
                if dl is not None and dl.expired():
                    raise _expired_deadline(dl, guard)
            ticket = step(now(), None)
            if type(ticket) is Wait:
                ticket = await wait(ticket)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                release(ticket, exc, now())  # type: ignore[arg-type]  # as in _wrap_sync
                raise
            release(ticket, None, now())  # type: ignore[arg-type]  # as in _wrap_sync
            return result

        return guarded

    def _wrap_sync_fast(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Build the sync decorator for a guard with fast-path hooks."""
        guard = self
        reads_ticket = self._fast_reads_ticket
        admit = self._fast_admit or _no_fast_admit
        fast_release = self._fast_release or _no_fast_release
        step = self._step
        release = self._release
        wait = self._wait_sync
        now = self._clock.monotonic

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            node = _top()
            if node is not None:
                dl = node[3]
                if dl is not None and dl.expired():
                    raise _expired_deadline(dl, guard)
            # Any: mypy cannot narrow `T | Wait` by `type(x) is Wait` (see _wrap_sync).
            ticket: Any = (
                guard._fast_ticket  # type: ignore[attr-defined]  # the contract of _fast_reads_ticket
                if reads_ticket
                else admit()
            )
            if ticket is None:
                ticket = step(now(), None)
                if type(ticket) is Wait:
                    ticket = wait(ticket)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                release(ticket, exc, now())
                raise
            if not fast_release(ticket):
                release(ticket, None, now())
            return result

        return guarded

    def _wrap_async_fast(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        """Build the async decorator for a guard with fast-path hooks."""
        guard = self
        reads_ticket = self._fast_reads_ticket
        admit = self._fast_admit or _no_fast_admit
        fast_release = self._fast_release or _no_fast_release
        step = self._step
        release = self._release
        wait = self._wait_async
        now = self._clock.monotonic

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            node = _top()
            if node is not None:
                dl = node[3]
                if dl is not None and dl.expired():
                    raise _expired_deadline(dl, guard)
            # Any: mypy cannot narrow `T | Wait` by `type(x) is Wait` (see _wrap_sync).
            ticket: Any = (
                guard._fast_ticket  # type: ignore[attr-defined]  # as in _wrap_sync_fast
                if reads_ticket
                else admit()
            )
            if ticket is None:
                ticket = step(now(), None)
                if type(ticket) is Wait:
                    ticket = await wait(ticket)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                release(ticket, exc, now())
                raise
            if not fast_release(ticket):
                release(ticket, None, now())
            return result

        return guarded

    # -- call / acall faces ---------------------------------------------------------
    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` under this guard and return its result."""
        ticket = self._admit_sync()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._release(ticket, exc, self._clock.monotonic())
            raise
        self._release(ticket, None, self._clock.monotonic())
        return result

    async def acall(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)`` under this guard and return its result."""
        ticket = await self._admit_async()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._release(ticket, exc, self._clock.monotonic())
            raise
        self._release(ticket, None, self._clock.monotonic())
        return result

    # -- with / async with faces: the ticket is an entry of the scope stack ---------
    def __enter__(self) -> Any:
        node = _top()
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise _expired_deadline(dl, self)
        ticket = self._step(self._clock.monotonic(), None)
        if type(ticket) is Wait:
            ticket = self._wait_sync(ticket)
            node = _top()
        # One inline push (see _scope.push): the ticket inherits deadline and mark.
        if node is None:
            _set_top((self, ticket, None, None, None, None))
        else:
            _set_top((self, ticket, node, node[3], node[4], None))
        return None if self._entered is None else self._entered(ticket)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        node = _top()
        if node is not None and node[0] is self:
            _set_top(node[2])
            ticket = node[1]
        else:
            ticket = _scope.pop(self)[1]
        self._release(ticket, exc, self._clock.monotonic())

    async def __aenter__(self) -> Any:
        ticket = await self._admit_async()
        _scope.push(self, ticket)
        return None if self._entered is None else self._entered(ticket)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release(_scope.pop(self)[1], exc, self._clock.monotonic())
