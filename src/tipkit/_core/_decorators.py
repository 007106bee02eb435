"""The decorator closures of :class:`~tipkit._core._guard.Guard`, written once.

``Guard._wrap_sync``/``_wrap_async`` pick one per decorated function: *plain*
for a guard class without hooks (it pays nothing for them), *hooked* for one
with fast-path or async hooks, *admit_only* when its tickets hold nothing
(``_holds = False``). Each closure inlines the deadline check (one
``ContextVar`` read and one index; a call would cost ~25 ns) and binds what it
needs as closure cells. The hook contract is in :mod:`tipkit._core._guard`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from tipkit._core import _scope
from tipkit._core._deadline import refusal
from tipkit._core._wait import Wait

if TYPE_CHECKING:
    from tipkit._core._guard import Guard

__all__ = [
    "async_admit_only",
    "async_hooked",
    "async_plain",
    "async_ticket",
    "sync_admit_only",
    "sync_hooked",
    "sync_plain",
    "sync_ticket",
]

P = ParamSpec("P")
R = TypeVar("R")

_top = _scope.top

# Stand-ins for an absent hook, so the closures test nothing per call: C
# callables, cheaper than a branch plus a Python call. NoneType() returns None
# ("take the generic path"); ().__contains__(ticket) returns False for any
# ticket, hashable or not ("call _release").
_no_fast_admit: Callable[[], None] = type(None)
_no_fast_release: Callable[[object], bool] = ().__contains__


def sync_plain(guard: Guard[Any], fn: Callable[P, R]) -> Callable[P, R]:
    step = guard._step
    release = guard._release
    wait = guard._wait_sync
    now = guard._clock.monotonic

    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        node = _top()
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise refusal(dl, guard)
        ticket = step(now(), None)
        if type(ticket) is Wait:
            ticket = wait(ticket)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            release(ticket, exc, now())
            raise
        release(ticket, None, now())
        return result

    return guarded


def async_plain(
    guard: Guard[Any], fn: Callable[P, Awaitable[R]]
) -> Callable[P, Coroutine[Any, Any, R]]:
    step = guard._step
    release = guard._release
    wait = guard._wait_async
    now = guard._clock.monotonic

    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        node = _top()
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise refusal(dl, guard)
        ticket = step(now(), None)
        if type(ticket) is Wait:
            ticket = await wait(ticket)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            release(ticket, exc, now())
            raise
        release(ticket, None, now())
        return result

    return guarded


def sync_hooked(guard: Guard[Any], fn: Callable[P, R]) -> Callable[P, R]:
    if guard._fast_reads_ticket:
        return sync_ticket(guard, fn)
    admit = guard._fast_admit or _no_fast_admit
    fast_release = guard._fast_release or _no_fast_release
    step = guard._step
    release = guard._release
    wait = guard._wait_sync
    now = guard._clock.monotonic

    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        node = _top()
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise refusal(dl, guard)
        ticket = admit()
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


def sync_ticket(guard: Guard[Any], fn: Callable[P, R]) -> Callable[P, R]:  # noqa: C901  # one closure: the hot path is inlined on purpose
    """The hooked closure of a guard that hands out ``_fast_ticket`` (the closed breaker).

    A fast ticket's success is one branch on ``ticks`` (``_fast_ticks``), then
    ``ticket.tick()`` and ``guard._fast_count.inc()``: C calls only. Tickets
    from ``_step`` go the general way, in their own branch. A timed fast ticket
    (``_timed_release``) gets the clock readings around the call: its success goes
    to ``guard._timed_release(ticket, start, end)``, and to ``_release((ticket,
    start), error, end)`` when that returns ``False`` or the call raised; no
    ``_step`` call.
    """
    timed_release = guard._timed_release
    timed = timed_release is not None
    ticks = guard._fast_ticks and not timed
    fast_release = guard._fast_release or _no_fast_release
    step = guard._step
    release = guard._release
    wait = guard._wait_sync
    now = guard._clock.monotonic

    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:  # noqa: C901, PLR0912  # as above
        node = _top()
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise refusal(dl, guard)
        ticket: Any = guard._fast_ticket  # type: ignore[attr-defined]  # the contract of _fast_reads_ticket
        if ticket is None:
            ticket = step(now(), None)
            if type(ticket) is Wait:
                ticket = wait(ticket)
        elif ticks:
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                release(ticket, exc, now())
                raise
            tick = ticket.tick
            if tick is not None:
                tick()
                guard._fast_count.inc()  # type: ignore[attr-defined]  # the contract of _fast_ticks
                return result
            if not fast_release(ticket):
                release(ticket, None, now())
            return result
        elif timed:
            start = now()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                release((ticket, start), exc, now())
                raise
            end = now()
            if not timed_release(ticket, start, end):  # type: ignore[misc]  # set with timed
                release((ticket, start), None, end)
            return result
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            release(ticket, exc, now())
            raise
        if not fast_release(ticket):
            release(ticket, None, now())
        return result

    return guarded


def async_hooked(  # noqa: C901  # one closure: the hot path is inlined on purpose
    guard: Guard[Any], fn: Callable[P, Awaitable[R]]
) -> Callable[P, Coroutine[Any, Any, R]]:
    if guard._fast_reads_ticket:
        return async_ticket(guard, fn)
    admit = guard._fast_admit or _no_fast_admit
    fast_release = guard._fast_release or _no_fast_release
    astep = guard._astep
    arelease = guard._arelease
    step = guard._step
    release = guard._release
    wait = guard._wait_async
    now = guard._clock.monotonic

    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        node = _top()
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise refusal(dl, guard)
        ticket = admit()
        if ticket is None:
            at = now()
            ticket = step(at, None) if astep is None else await astep(at, None)
            if type(ticket) is Wait:
                ticket = await wait(ticket)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            if arelease is None:
                release(ticket, exc, now())
            else:
                await arelease(ticket, exc, now())
            raise
        if not fast_release(ticket):
            if arelease is None:
                release(ticket, None, now())
            else:
                await arelease(ticket, None, now())
        return result

    return guarded


def async_ticket(  # noqa: C901, PLR0915  # one closure: the hot path is inlined on purpose
    guard: Guard[Any], fn: Callable[P, Awaitable[R]]
) -> Callable[P, Coroutine[Any, Any, R]]:
    """The async :func:`sync_ticket`: ``_astep``/``_arelease`` off the fast branch."""
    timed_release = guard._timed_release
    timed = timed_release is not None
    ticks = guard._fast_ticks and not timed
    fast_release = guard._fast_release or _no_fast_release
    astep = guard._astep
    arelease = guard._arelease
    step = guard._step
    release = guard._release
    wait = guard._wait_async
    now = guard._clock.monotonic

    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:  # noqa: C901, PLR0912, PLR0915  # as above
        node = _top()
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise refusal(dl, guard)
        ticket: Any = guard._fast_ticket  # type: ignore[attr-defined]  # the contract of _fast_reads_ticket
        if ticket is None:
            at = now()
            ticket = step(at, None) if astep is None else await astep(at, None)
            if type(ticket) is Wait:
                ticket = await wait(ticket)
        elif ticks:
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                if arelease is None:
                    release(ticket, exc, now())
                else:
                    await arelease(ticket, exc, now())
                raise
            tick = ticket.tick
            if tick is not None:
                tick()
                guard._fast_count.inc()  # type: ignore[attr-defined]  # as in sync_ticket
                return result
            if not fast_release(ticket):
                if arelease is None:
                    release(ticket, None, now())
                else:
                    await arelease(ticket, None, now())
            return result
        elif timed:
            start = now()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                if arelease is None:
                    release((ticket, start), exc, now())
                else:
                    await arelease((ticket, start), exc, now())
                raise
            end = now()
            if not timed_release(ticket, start, end):  # type: ignore[misc]  # set with timed
                if arelease is None:
                    release((ticket, start), None, end)
                else:
                    await arelease((ticket, start), None, end)
            return result
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            if arelease is None:
                release(ticket, exc, now())
            else:
                await arelease(ticket, exc, now())
            raise
        if not fast_release(ticket):
            if arelease is None:
                release(ticket, None, now())
            else:
                await arelease(ticket, None, now())
        return result

    return guarded


def sync_admit_only(guard: Guard[Any], fn: Callable[P, R]) -> Callable[P, R]:
    reads_ticket = guard._fast_reads_ticket
    admit = guard._fast_admit or _no_fast_admit
    step = guard._step
    wait = guard._wait_sync
    now = guard._clock.monotonic

    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        node = _top()
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise refusal(dl, guard)
        ticket: Any = (
            guard._fast_ticket  # type: ignore[attr-defined]  # the contract of _fast_reads_ticket
            if reads_ticket
            else admit()
        )
        if ticket is None:
            ticket = step(now(), None)
            if type(ticket) is Wait:
                wait(ticket)
        return fn(*args, **kwargs)

    return guarded


def async_admit_only(
    guard: Guard[Any], fn: Callable[P, Awaitable[R]]
) -> Callable[P, Coroutine[Any, Any, R]]:
    reads_ticket = guard._fast_reads_ticket
    admit = guard._fast_admit or _no_fast_admit
    astep = guard._astep
    step = guard._step
    wait = guard._wait_async
    now = guard._clock.monotonic

    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        node = _top()
        if node is not None:
            dl = node[3]
            if dl is not None and dl.expired():
                raise refusal(dl, guard)
        ticket: Any = (
            guard._fast_ticket  # type: ignore[attr-defined]  # the contract of _fast_reads_ticket
            if reads_ticket
            else admit()
        )
        if ticket is None:
            at = now()
            ticket = step(at, None) if astep is None else await astep(at, None)
            if type(ticket) is Wait:
                await wait(ticket)
        return await fn(*args, **kwargs)

    return guarded
