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
* ``_entered(ticket)`` (optional): what ``with guard as x`` binds (default ``None``).

The core never sleeps, never awaits and never reads the clock itself. This module
writes every face once, for all primitives: decorator (sync and ``async def``),
``with``, ``async with``, ``call`` and ``acall``. Only the two drivers that
interpret a ``Wait`` differ between sync and async. No primitive overrides a
face; a primitive that needs a faster path, holds nothing, or must do its I/O
asynchronously supplies the hooks below.

Hooks (all optional)
--------------------

Reading the clock costs a call per reading and a Python method call about
25 ns. The hooks let a primitive skip what its common case does not need.

``_fast_admit(self) -> ticket | None``
    Admit the call *without reading the clock and without waiting*, or return
    ``None`` to take the generic path (``_step(clock.monotonic(), None)``,
    which may wait, reject, or admit). Never raise: refusals are decided by
    ``_step``. Saves the clock read before the call.

``_fast_reads_ticket = True`` and an attribute ``_fast_ticket``
    The attribute variant of ``_fast_admit`` for a lock-free admission: the
    faces read ``self._fast_ticket`` (the ticket to hand out while the fast path
    is open, else ``None``) instead of calling ``_fast_admit``: about 10 ns
    instead of about 30. (The closed breaker.)

``_fast_ticks = True`` (with ``_fast_reads_ticket``) and an attribute ``_fast_count``
    The attribute variant of ``_fast_release`` for a lock-free success: a
    ticket read from ``_fast_ticket`` has an attribute ``tick``, ``None`` or a
    zero-argument callable (a C call, ideally) that records a success
    lock-free; when it is not ``None`` the decorators call it and then
    ``self._fast_count.inc()`` (a telemetry Counter, looked up per call so
    ``synthetic()`` can divert it) instead of calling ``_fast_release``: no
    Python call on the success path. (The closed breaker's window ticks.) A
    ticket whose ``tick`` is ``None``, and every ticket from ``_step``, go to
    ``_fast_release``/``_release`` as usual. ``with``/``call`` use
    ``_fast_release``.

``_timed_release(ticket, start, end) -> bool`` (with ``_fast_reads_ticket``)
    Set (not ``None``) when the outcome of a fast ticket needs the call's
    start time (slow-call detection, a time window): the faces read the clock
    at admission. The decorators record a success with ``_timed_release(ticket,
    start, end)`` (no tuple, one call; ``False``: not taken, go on to
    ``_release``); every other outcome, and every face but the decorators,
    pairs the ticket with its start and releases ``(ticket, start)``, what
    ``_step(start, None)`` would have returned for it, as usual
    (``_fast_release``/``_release``). Takes precedence over ``_fast_ticks``;
    the decorators read it once, so an instance sets it in ``__init__``.
    Saves the ``_step`` call of a guard that must time its calls. (The timed
    closed breaker.)

``_fast_release(self, ticket) -> bool``
    The call returned normally: record the success *without reading the clock*
    and return ``True``, or return ``False`` to have the face call
    ``_release(ticket, None, now)`` (or ``_arelease``). It receives every ticket
    the face got, from the fast admission or from ``_step``. Never raise. Saves
    the clock read after the call.

``_holds = False``
    The ticket holds nothing (a spent token): the faces never release it, not
    even on failure; ``with`` keeps nothing in the scope stack and its exit does
    nothing; no clock is read after the call.

``async _astep(self, now, pending) -> ticket | Wait`` (``None`` by default)
    The *first* step of the async faces when deciding needs I/O (a store-backed
    guard reading its store with the store's async methods). The async faces
    await it instead of calling ``_step`` (after the fast admission, if any);
    the steps after a ``Wait`` still call ``_step``, so a pending step must do
    no I/O. The sync faces always call ``_step``.

``async _arelease(self, ticket, error, now)`` (``None`` by default)
    The async faces await it instead of calling ``_release`` (failures
    included; ``_fast_release`` is still tried first on success).

Which hooks a class has is decided once, when the class is created (any hook
name defined by the class or a base below :class:`Guard`, as a method, a class
attribute or a slot); a guard class without hooks gets the plain faces and
pays nothing for them. The decorator faces look the hooks up on the instance
once, at decoration time, so an instance may set them in ``__init__`` (slots)
and choose per instance; ``with``/``call`` look them up per call.

Failures (the call raised) always go through ``_release(ticket, exc, now)``
(or ``_arelease``), so ``_release`` must accept every ticket the fast hooks hand
out. Hooks run concurrently from many threads and tasks with no lock held by
the face: each must be thread-safe on its own; none may sleep, and only
``_astep``/``_arelease`` may await.

Every face checks the deadline in force before admitting (fast path included)
and never waits past it; the error is :func:`tipkit._core._deadline.exceeded`.

Fallback
--------

A guard built with ``fallback=`` (``Guard.__init__(fallback=part)``, a
:class:`~tipkit._core._fallback.Fallback`) answers the errors that part answers
(by default its own :class:`~tipkit.errors.RejectedError`) with the part's value
in the decorator and ``call``/``acall`` faces; a ``with`` block has no value to
replace and raises as usual. The decorator faces wrap their closure in the part
at decoration time, and ``call``/``acall`` consult it only once an exception is
raised, so a guard without one pays nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, ClassVar, Generic, ParamSpec, TypeVar

from tipkit._core import _decorators, _hooked, _scope
from tipkit._core._check import check_clock
from tipkit._core._deadline import refusal
from tipkit._core._decorate import Decorates, check_decoratable
from tipkit._core._fallback import Fallback
from tipkit._core._wait import Wait, Waiter
from tipkit.clock import SYSTEM_CLOCK, Clock

__all__ = ["Guard", "Wait", "Waiter", "check_decoratable"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# Open `with` tickets live in the one scope stack (_scope), as (guard, ticket)
# entries of this thread / task context, never on the guard itself, so one guard
# entered from many threads and tasks is safe. The faces push and pop inline.
_top = _scope.top
_set_top = _scope.STACK.set

_PLAIN = (Decorates, Generic, object)

_HOOKS = (
    "_fast_admit",
    "_fast_release",
    "_fast_reads_ticket",
    "_fast_ticks",
    "_fast_ticket",
    "_timed_release",
    "_holds",
    "_astep",
    "_arelease",
)

# Kept for importers: the error a guard raises for a call past the deadline.
_expired_deadline = refusal


class _GuardType(type):
    """Guard's metaclass: a class that supplies any hook gets the hooked faces.

    Decided once, when the class is created, from its namespace (methods,
    class attributes, ``__slots__``) and its bases: such a class gets
    :class:`_HookedFaces` (the faces of :mod:`._hooked`) as its first base,
    so a guard class without hooks keeps faces that test nothing per call,
    and no primitive's own namespace holds a face.
    """

    def __new__(
        mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kwargs: Any
    ) -> _GuardType:
        hooked = _supplies_hooks(bases, ns)
        faces = globals().get("_HookedFaces")
        if (
            hooked
            and faces is not None
            and not any(issubclass(b, faces) for b in bases)
        ):
            bases = (faces, *bases)
        cls = super().__new__(mcls, name, bases, ns, **kwargs)
        cls._hooked = hooked  # type: ignore[attr-defined]  # Guard declares it
        return cls


def _supplies_hooks(bases: tuple[type, ...], ns: dict[str, Any]) -> bool:
    slots = ns.get("__slots__", ())
    own = set(ns) | ({slots} if isinstance(slots, str) else set(slots))
    if own.intersection(_HOOKS):
        return True
    return any(
        name in vars(klass)
        for base in bases
        for klass in base.__mro__
        if klass.__module__ != __name__ and klass not in _PLAIN
        for name in _HOOKS
    )


class Guard(Decorates, Generic[T], metaclass=_GuardType):
    """Base of every per-call guard: subclasses supply ``_step`` and ``_release``.

    Thread-safe and asyncio-safe to the extent the subclass's core is: the faces
    keep no per-call state on ``self``.
    """

    __slots__ = ("__weakref__", "_clock", "_fallback")

    _clock: Clock
    _fallback: Fallback[Any] | None

    def __init__(
        self, *, clock: Clock = SYSTEM_CLOCK, fallback: Fallback[Any] | None = None
    ) -> None:
        self._clock = check_clock(clock)
        self._fallback = fallback

    def _answering(self, exc: BaseException) -> Fallback[Any] | None:
        """Return this guard's fallback if it answers *exc* (off the hot path)."""
        # getattr: a subclass that never ran Guard.__init__ has no fallback.
        part: Fallback[Any] | None = getattr(self, "_fallback", None)
        return part if part is not None and part.answers(exc) else None

    # -- the core, supplied by subclasses ------------------------------------------
    def _step(self, now: float, pending: Wait | None) -> T | Wait:
        raise NotImplementedError

    def _release(self, ticket: T, error: BaseException | None, now: float) -> None:
        raise NotImplementedError

    def _abandon(self, pending: Wait, now: float) -> None:
        """Give back what *pending* reserved; the default reserves nothing."""

    _entered: Callable[[Any], Any] | None = None
    """Subclasses may set a method ``_entered(ticket)`` returning what ``with g as x`` binds."""

    # -- optional hooks (see the module docstring) ------------------------------------
    _hooked: ClassVar[bool] = False
    """Set per class at class creation: whether any hook below is supplied."""
    _fast_admit: Callable[[], T | None] | None = None
    _fast_release: Callable[[T], bool] | None = None
    _fast_reads_ticket: bool = False
    _fast_ticks: bool = False
    _timed_release: Callable[[Any, float, float], bool] | None = None
    _holds: bool = True
    _astep: Callable[[float, Wait | None], Awaitable[T | Wait]] | None = None
    _arelease: Callable[[T, BaseException | None, float], Awaitable[None]] | None = None

    def _try_fast(self) -> Any:
        """Return a ticket from the fast admission hooks, or ``None``."""
        if self._fast_reads_ticket:
            ticket = self._fast_ticket  # type: ignore[attr-defined]  # the contract of _fast_reads_ticket
            if ticket is not None and self._timed_release is not None:
                return (ticket, self._clock.monotonic())
            return ticket
        admit = self._fast_admit
        return None if admit is None else admit()

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
        astep = self._astep
        now = clock.monotonic()
        step = self._step(now, None) if astep is None else await astep(now, None)
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
                raise refusal(dl, self)

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
            raise refusal(dl, self)
        return remaining

    # The admissions and faces below are those of a guard class without hooks;
    # a class with hooks gets _hooked's instead (see __init_subclass__).
    def _admit_sync(self) -> T:
        """Check the deadline, then step (and wait)."""
        node = _top()  # _check_deadline, inline: call() is a hot path
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise refusal(dl, self)
        return self._acquire_sync()

    async def _admit_async(self) -> T:
        """Check the deadline, then step (and wait)."""
        node = _top()  # as in _admit_sync
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise refusal(dl, self)
        return await self._acquire_async()

    # -- decorator face: Decorates.__call__ dispatches here, once per function ------
    # The closures live in _decorators: plain (no hooks), hooked, and admit-only
    # (the ticket holds nothing), chosen here once per decorated function.
    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        if not self._hooked:
            guarded = _decorators.sync_plain(self, fn)
        elif self._holds:
            guarded = _decorators.sync_hooked(self, fn)
        else:
            guarded = _decorators.sync_admit_only(self, fn)
        part = getattr(self, "_fallback", None)
        return guarded if part is None else part(guarded)

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        if not self._hooked:
            guarded = _decorators.async_plain(self, fn)
        elif self._holds:
            guarded = _decorators.async_hooked(self, fn)
        else:
            guarded = _decorators.async_admit_only(self, fn)
        part = getattr(self, "_fallback", None)
        return guarded if part is None else part(guarded)

    # -- call / acall faces ---------------------------------------------------------
    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` under this guard and return its result."""
        # The try blocks cost nothing until something raises (zero-cost
        # exceptions); only then is the fallback consulted.
        try:
            ticket = self._admit_sync()
        except BaseException as exc:
            part = self._answering(exc)
            if part is None:
                raise
            return part.answer(exc)  # type: ignore[arg-type, no-any-return]  # answers() holds Exception subclasses; its value stands in for R
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._release(ticket, exc, self._clock.monotonic())
            part = self._answering(exc)
            if part is None:
                raise
            return part.answer(exc)  # type: ignore[arg-type, no-any-return]  # as above
        self._release(ticket, None, self._clock.monotonic())
        return result

    async def acall(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)`` under this guard and return its result."""
        try:
            ticket = await self._admit_async()
        except BaseException as exc:
            part = self._answering(exc)
            if part is None:
                raise
            return part.answer(exc)  # type: ignore[arg-type, no-any-return]  # as in call()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._release(ticket, exc, self._clock.monotonic())
            part = self._answering(exc)
            if part is None:
                raise
            return part.answer(exc)  # type: ignore[arg-type, no-any-return]  # as in call()
        self._release(ticket, None, self._clock.monotonic())
        return result

    # -- with / async with faces: the ticket is an entry of the scope stack ---------
    def __enter__(self) -> Any:
        node = _top()
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise refusal(dl, self)
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


class _HookedFaces(Guard[Any]):
    """The faces of a guard class that supplies hooks (see :class:`_GuardType`)."""

    __slots__ = ()

    _admit_sync = _hooked.admit_sync
    _admit_async = _hooked.admit_async
    call = _hooked.call
    acall = _hooked.acall
    __enter__ = _hooked.enter
    __exit__ = _hooked.exit_
    __aenter__ = _hooked.aenter
    __aexit__ = _hooked.aexit
