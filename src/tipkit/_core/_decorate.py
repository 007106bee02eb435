"""The decorator face, typed once: dispatch on ``async def`` at decoration time.

Every decorator in tipkit (guards, scopes, ``compose``, ``traced``, retry)
inherits :class:`Decorates`: one typed ``__call__`` for plain and ``async def``
functions that refuses what cannot be decorated, then hands the function to
``_wrap_sync`` or ``_wrap_async``, chosen once (as stamina does), never per call.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

__all__ = ["Decorates", "check_decoratable"]

P = ParamSpec("P")
R = TypeVar("R")


def check_decoratable(fn: object, what: object) -> None:
    """Refuse what a decorator cannot wrap, at decoration time.

    Raises:
        TypeError: *fn* is not callable, or is a (async) generator function: the
            wrapper would only cover the generator's creation, not its iteration.
    """
    if not callable(fn):
        raise TypeError(f"{what!r} decorates callables, got {fn!r}")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(
            f"cannot decorate generator function {name} with {what!r}: it "
            "would only cover creating the generator, not running it. Use "
            "a `with` block (or `async with`) inside the generator instead."
        )


class Decorates:
    """Mixin: ``obj(fn)`` wraps a plain or ``async def`` function.

    Subclasses supply ``_wrap_sync(fn)`` and ``_wrap_async(fn)``.
    """

    __slots__ = ()

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate *fn*, a plain or ``async def`` function.

        Raises:
            TypeError: *fn* is not callable, or is a generator function.
        """
        check_decoratable(fn, self)
        if inspect.iscoroutinefunction(fn):
            return self._wrap_async(fn)
        return self._wrap_sync(fn)

    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        raise NotImplementedError

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        raise NotImplementedError
