"""compose(): several guards as one, outermost first."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, ExitStack
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from tipkit._core import _scope
from tipkit._core._decorate import Decorates

__all__ = ["Composite", "compose"]

P = ParamSpec("P")
R = TypeVar("R")


class Composite(Decorates):
    """Guards applied as one: ``compose(a, b)(f)`` is ``a(b(f))``.

    Offers every face its parts offer. A part that must re-run the guarded work
    (a retry) cannot live in a ``with`` block, which runs once: entering such a
    composite raises ``TypeError`` pointing to ``retry_context``.
    """

    __slots__ = ("guards",)

    def __init__(self, guards: tuple[Any, ...]) -> None:
        self.guards = guards

    def __repr__(self) -> str:
        inner = ", ".join(repr(g) for g in self.guards)
        return f"<compose {inner}>"

    def _nest(self, fn: Any) -> Any:
        """Decorate *fn* with every guard, the first one outermost."""
        for guard in reversed(self.guards):
            fn = guard(fn)
        return fn

    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        return self._nest(fn)  # type: ignore[no-any-return]  # each guard keeps the signature

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        return self._nest(fn)  # type: ignore[no-any-return]  # as in _wrap_sync

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` under every guard."""
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"{fn!r} is a coroutine function: use `await acall(...)`")
        return self(fn)(*args, **kwargs)

    async def acall(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)`` under every guard."""

        async def run() -> R:
            return await fn(*args, **kwargs)

        return await self(run)()

    def _check_block(self) -> None:
        for guard in self.guards:
            if getattr(guard, "_reruns", False):
                raise TypeError(
                    f"{self!r} contains {guard!r}, which must re-run the guarded "
                    "work: a `with` block runs once. Decorate a function or use "
                    "call()/acall(); for retrying a block, loop over "
                    "tipkit.retry.retry_context(...)."
                )
            if not hasattr(guard, "__enter__"):
                raise TypeError(f"{guard!r} cannot be used as a context manager")

    def __enter__(self) -> None:
        self._check_block()
        # One ExitStack per entry, kept in the scope stack like the guards' tickets.
        stack = ExitStack()
        with stack:
            for guard in self.guards:
                stack.enter_context(guard)
            _scope.push(self, stack.pop_all())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack: ExitStack = _scope.pop(self)[1]
        stack.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> None:
        self._check_block()
        stack = AsyncExitStack()
        async with stack:
            for guard in self.guards:
                await stack.enter_async_context(guard)
            _scope.push(self, stack.pop_all())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack: AsyncExitStack = _scope.pop(self)[1]
        await stack.__aexit__(exc_type, exc, tb)


def compose(*guards: Any) -> Composite:
    """Return one guard made of *guards*, the first outermost.

    ``compose(a, b)(f) == a(b(f))``; ``with compose(a, b):`` enters ``a`` then
    ``b`` and exits in reverse. Recommended order (outermost first): telemetry
    (``traced``), retry, breaker, rate limiter, bulkhead, timeout per attempt.

    Raises:
        TypeError: no guards, or something that is not a decorator.
    """
    if not guards:
        raise TypeError("compose() needs at least one guard")
    flat: list[Any] = []
    for i, guard in enumerate(guards):
        if isinstance(guard, Composite):
            flat.extend(guard.guards)
        elif callable(guard):
            flat.append(guard)
        else:
            raise TypeError(f"compose() argument {i} is not a guard: {guard!r}")
    return Composite(tuple(flat))
