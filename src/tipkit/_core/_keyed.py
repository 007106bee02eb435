"""Keyed guards: one decision per key (a per-tenant limit), the faces still written once.

A keyed guard's core takes the key: ``_step_key(key, now, pending)``,
``_release_key(key, ticket, error, now)``, optionally ``_abandon_key`` and an
async first step ``_astep_key(key, now, pending)`` (``None`` unless deciding
does I/O). Its faces are :class:`~tipkit._core._guard.Guard`'s, reached through
a small guard bound to one key::

    with limiter.limit("acme"): ...
    async with limiter.limit("acme"): ...
    limiter.call("acme", fn, *args)
    await limiter.acall("acme", fn, *args)

    @limiter(key=lambda request: request.tenant)
    def handle(request): ...

A bound guard is built per use (a few hundred nanoseconds); it keeps no state
of its own, so binding the same key twice is harmless.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, ParamSpec, TypeVar

from tipkit._core._check import check_callable, check_clock
from tipkit._core._decorate import check_decoratable
from tipkit._core._guard import Guard
from tipkit._core._wait import Wait
from tipkit.clock import SYSTEM_CLOCK, Clock

__all__ = ["Keyed"]

K = TypeVar("K")
T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")


class Keyed(Generic[K, T]):
    """Base of a guard whose decision takes a key; subclasses supply ``_step_key``.

    Thread-safe and asyncio-safe to the extent the subclass's core is.
    """

    __slots__ = ("__weakref__", "_clock")

    _clock: Clock
    _astep_key: Callable[[Any, float, Wait | None], Awaitable[Any]] | None = None
    _holds: bool = True
    """As ``Guard._holds``: ``False`` when a ticket holds nothing (a spent token)."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = check_clock(clock)

    # -- the core, supplied by subclasses ----------------------------------------------
    def _step_key(self, key: K, now: float, pending: Wait | None) -> T | Wait:
        raise NotImplementedError

    def _release_key(
        self, key: K, ticket: T, error: BaseException | None, now: float
    ) -> None:
        raise NotImplementedError

    def _abandon_key(self, key: K, pending: Wait, now: float) -> None:
        """Give back what *pending* reserved; the default reserves nothing."""

    # -- the faces, through a guard bound to one key ------------------------------------
    def limit(self, key: K) -> Guard[T]:
        """Return this guard for *key*: ``with``, ``async with``, decorator, ``call``."""
        return _Bound(self, key)

    def call(
        self, key: K, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Run ``fn(*args, **kwargs)`` guarded for *key* and return its result."""
        return _Bound(self, key).call(fn, *args, **kwargs)

    async def acall(
        self,
        key: K,
        fn: Callable[P, Awaitable[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Await ``fn(*args, **kwargs)`` guarded for *key* and return its result."""
        return await _Bound(self, key).acall(fn, *args, **kwargs)

    def __call__(
        self, fn: Callable[P, Any] | None = None, /, *, key: Callable[..., K]
    ) -> Any:
        """Decorate *fn*: each call is guarded for ``key(*args, **kwargs)``.

        Usable as ``@g(key=...)`` or ``g(fn, key=...)``.

        Raises:
            TypeError: *key* is not callable, or *fn* is not a plain or
                ``async def`` function.
        """
        check_callable(key, f"{self!r}: key")

        def decorate(fn: Callable[P, Any]) -> Callable[P, Any]:
            check_decoratable(fn, self)
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def aguarded(*args: P.args, **kwargs: P.kwargs) -> Any:
                    bound = _Bound(self, key(*args, **kwargs))
                    return await bound.acall(fn, *args, **kwargs)

                return aguarded

            @functools.wraps(fn)
            def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
                return _Bound(self, key(*args, **kwargs)).call(fn, *args, **kwargs)

            return guarded

        return decorate if fn is None else decorate(fn)


class _Bound(Guard[T]):
    """A keyed guard for one key: its core is the owner's core for that key."""

    __slots__ = ("_astep", "_holds", "_key", "_owner")

    def __init__(self, owner: Keyed[Any, T], key: Any) -> None:
        self._clock = owner._clock  # checked by the owner
        self._owner = owner
        self._key = key
        self._holds = owner._holds
        astep = owner._astep_key
        self._astep = None if astep is None else functools.partial(astep, key)

    def __repr__(self) -> str:
        return f"{self._owner!r}.limit({self._key!r})"

    @property
    def _composition_role(self) -> str | None:
        """The owner's role, for compose()'s order check."""
        role = getattr(self._owner, "_composition_role", None)
        return role if isinstance(role, str) else None

    def _step(self, now: float, pending: Wait | None) -> T | Wait:
        return self._owner._step_key(self._key, now, pending)

    def _release(self, ticket: T, error: BaseException | None, now: float) -> None:
        self._owner._release_key(self._key, ticket, error, now)

    def _abandon(self, pending: Wait, now: float) -> None:
        self._owner._abandon_key(self._key, pending, now)
