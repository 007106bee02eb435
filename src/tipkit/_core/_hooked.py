"""The faces of a guard class that supplies hooks: every hook honoured, once.

:class:`~tipkit._core._guard.Guard` writes lean faces for a guard class without
hooks. When a class supplies any hook (see :mod:`tipkit._core._guard`),
Guard's metaclass gives it these instead, once, at class creation (as the
methods of ``_guard._HookedFaces``, inserted as its first base): the
``with``/``async with``/``call``/``acall`` faces and the two admissions.
They look the hooks up on the instance per call (an instance may set them in
``__init__``) and inline the fast admission, so a token bucket's ``async with``
awaits nothing on its fast path. The decorator closures are in
:mod:`tipkit._core._decorators`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from tipkit._core import _scope
from tipkit._core._deadline import refusal
from tipkit._core._wait import Wait

if TYPE_CHECKING:
    from tipkit._core._guard import Guard

__all__ = [
    "acall",
    "admit_async",
    "admit_sync",
    "aenter",
    "aexit",
    "call",
    "enter",
    "exit_",
]

P = ParamSpec("P")
R = TypeVar("R")

_top = _scope.top
_set_top = _scope.STACK.set


def _check_deadline(guard: Guard[Any]) -> None:
    node = _top()
    if node is not None:
        dl = node[3]
        if dl is not None and dl.expired():
            raise refusal(dl, guard)


def admit_sync(guard: Guard[Any]) -> Any:
    """Check the deadline, then admit: fast hooks first, else step (and wait)."""
    _check_deadline(guard)
    # Guard._try_fast, inline: a Python call is a tenth of this face's cost.
    if guard._fast_reads_ticket:
        ticket = guard._fast_ticket  # type: ignore[attr-defined]  # the contract of _fast_reads_ticket
        if ticket is not None and guard._timed_release is not None:
            ticket = (ticket, guard._clock.monotonic())
    else:
        admit = guard._fast_admit
        ticket = None if admit is None else admit()
    if ticket is not None:
        return ticket
    return guard._acquire_sync()


async def admit_async(guard: Guard[Any]) -> Any:
    """Check the deadline, then admit: fast hooks, else ``_astep``/``_step`` (and wait)."""
    _check_deadline(guard)
    # Guard._try_fast, inline: a Python call is a tenth of this face's cost.
    if guard._fast_reads_ticket:
        ticket = guard._fast_ticket  # type: ignore[attr-defined]  # the contract of _fast_reads_ticket
        if ticket is not None and guard._timed_release is not None:
            ticket = (ticket, guard._clock.monotonic())
    else:
        admit = guard._fast_admit
        ticket = None if admit is None else admit()
    if ticket is not None:
        return ticket
    return await guard._acquire_async()


def settle_sync(guard: Guard[Any], ticket: Any, error: BaseException | None) -> None:
    """Record the outcome of a call a sync face ran (unless the ticket holds nothing)."""
    if not guard._holds:
        return
    if error is None:
        fast = guard._fast_release
        if fast is not None and fast(ticket):
            return
    guard._release(ticket, error, guard._clock.monotonic())


async def settle_async(
    guard: Guard[Any], ticket: Any, error: BaseException | None
) -> None:
    """Record the outcome of a call an async face ran: ``_arelease`` if supplied."""
    if not guard._holds:
        return
    if error is None:
        fast = guard._fast_release
        if fast is not None and fast(ticket):
            return
    arelease = guard._arelease
    if arelease is not None:
        await arelease(ticket, error, guard._clock.monotonic())
    else:
        guard._release(ticket, error, guard._clock.monotonic())


def call(
    guard: Guard[Any], fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> R:
    """Run ``fn(*args, **kwargs)`` under this guard and return its result."""
    # As Guard.call: the fallback is consulted only once something raised.
    try:
        ticket = admit_sync(guard)
    except BaseException as exc:
        part = guard._answering(exc)
        if part is None:
            raise
        return part.answer(exc)  # type: ignore[arg-type, no-any-return]  # as in Guard.call
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        settle_sync(guard, ticket, exc)
        part = guard._answering(exc)
        if part is None:
            raise
        return part.answer(exc)  # type: ignore[arg-type, no-any-return]  # as in Guard.call
    settle_sync(guard, ticket, None)
    return result


async def acall(
    guard: Guard[Any],
    fn: Callable[P, Awaitable[R]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """Await ``fn(*args, **kwargs)`` under this guard and return its result."""
    try:
        ticket = await admit_async(guard)
    except BaseException as exc:
        part = guard._answering(exc)
        if part is None:
            raise
        return part.answer(exc)  # type: ignore[arg-type, no-any-return]  # as in Guard.call
    try:
        result = await fn(*args, **kwargs)
    except BaseException as exc:
        await settle_async(guard, ticket, exc)
        part = guard._answering(exc)
        if part is None:
            raise
        return part.answer(exc)  # type: ignore[arg-type, no-any-return]  # as in Guard.call
    await settle_async(guard, ticket, None)
    return result


def enter(guard: Guard[Any]) -> Any:
    """``with guard:``: admit (fast hooks first) and keep the ticket unless it holds nothing."""
    node = _top()
    if node is not None:
        dl = node[3]
        if dl is not None and dl.expired():
            raise refusal(dl, guard)
    # Guard._try_fast, inline: a Python call is a tenth of this face's cost.
    if guard._fast_reads_ticket:
        ticket = guard._fast_ticket  # type: ignore[attr-defined]  # the contract of _fast_reads_ticket
        if ticket is not None and guard._timed_release is not None:
            ticket = (ticket, guard._clock.monotonic())
    else:
        admit = guard._fast_admit
        ticket = None if admit is None else admit()
    if ticket is None:
        ticket = guard._step(guard._clock.monotonic(), None)
        if type(ticket) is Wait:
            ticket = guard._wait_sync(ticket)
            node = _top()
    if guard._holds:
        # One inline push (see _scope.push): the ticket inherits deadline and mark.
        if node is None:
            _set_top((guard, ticket, None, None, None, None))
        else:
            _set_top((guard, ticket, node, node[3], node[4], None))
    entered = guard._entered
    return None if entered is None else entered(ticket)


def exit_(
    guard: Guard[Any],
    exc_type: type[BaseException] | None,  # noqa: ARG001  # the context-manager protocol
    exc: BaseException | None,
    tb: TracebackType | None,  # noqa: ARG001  # same
) -> None:
    """Leave ``with guard:``: release through the fast hook when it takes the success."""
    if not guard._holds:
        return
    node = _top()
    if node is not None and node[0] is guard:
        _set_top(node[2])
        ticket = node[1]
    else:
        ticket = _scope.pop(guard)[1]
    if exc is None:
        fast = guard._fast_release
        if fast is not None and fast(ticket):
            return
    guard._release(ticket, exc, guard._clock.monotonic())


async def aenter(guard: Guard[Any]) -> Any:
    """``async with guard:``: admission inline (awaiting a helper coroutine costs)."""
    node = _top()
    if node is not None:
        dl = node[3]
        if dl is not None and dl.expired():
            raise refusal(dl, guard)
    # Guard._try_fast, inline: a Python call is a tenth of this face's cost.
    if guard._fast_reads_ticket:
        ticket = guard._fast_ticket  # type: ignore[attr-defined]  # the contract of _fast_reads_ticket
        if ticket is not None and guard._timed_release is not None:
            ticket = (ticket, guard._clock.monotonic())
    else:
        admit = guard._fast_admit
        ticket = None if admit is None else admit()
    if ticket is None:
        now = guard._clock.monotonic()
        astep = guard._astep
        ticket = guard._step(now, None) if astep is None else await astep(now, None)
        if type(ticket) is Wait:
            ticket = await guard._wait_async(ticket)
    if guard._holds:
        _scope.push(guard, ticket)
    entered = guard._entered
    return None if entered is None else entered(ticket)


async def aexit(
    guard: Guard[Any],
    exc_type: type[BaseException] | None,  # noqa: ARG001  # the context-manager protocol
    exc: BaseException | None,
    tb: TracebackType | None,  # noqa: ARG001  # same
) -> None:
    """Leave ``async with guard:``: fast release, ``_arelease`` or ``_release``."""
    if guard._holds:
        await settle_async(guard, _scope.pop(guard)[1], exc)
