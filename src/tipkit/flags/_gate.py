"""``Flags.gate``: run a function only when a flag is on, else its fallback."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast

from tipkit.flags._events import FlagEvaluated
from tipkit.flags._model import ErrorCode
from tipkit.flags._outcomes import OnceLog, error_outcome, publish

if TYPE_CHECKING:
    from tipkit.flags._engine import Flags

__all__ = ["Gate"]

P = ParamSpec("P")
R = TypeVar("R")

_FAILED: Any = object()


class Gate(Generic[P]):
    """The decorator :meth:`Flags.gate` returns (see there for the behaviour)."""

    __slots__ = (
        "_ctx_fn",
        "_default",
        "_fallback",
        "_flags",
        "_key",
        "_log",
        "_static",
    )

    def __init__(
        self,
        flags: Flags,
        log: OnceLog,
        key: str,
        *,
        fallback: Callable[P, Any] | None,
        context: Any,
        default: bool,
    ) -> None:
        self._flags = flags
        self._log = log
        self._key = key
        self._fallback = fallback
        self._ctx_fn: Callable[P, Any] | None = context if callable(context) else None
        self._static = None if callable(context) else context
        self._default = default

    def _context_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Return the context of one call, or ``_FAILED`` when its function raised."""
        if self._ctx_fn is None:
            return self._static
        try:
            return self._ctx_fn(*args, **kwargs)
        except Exception as exc:
            key = self._key
            self._log(
                f"gate:{key}",
                "tipkit: the context function of gate %r raised",
                key,
                exc,
            )
            out = error_outcome(
                key,
                ErrorCode.INVALID_CONTEXT,
                f"the context function raised {type(exc).__name__}",
            )
            out.counter.inc()
            if FlagEvaluated.listened:
                publish(self._default, out, None, self._log)
            return _FAILED

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Wrap *fn* (``def`` or ``async def``)."""
        flags, key, default, fallback = (
            self._flags,
            self._key,
            self._default,
            self._fallback,
        )
        context_of = self._context_of
        if inspect.iscoroutinefunction(fn):
            async_fn = cast("Callable[P, Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def agated(*args: P.args, **kwargs: P.kwargs) -> Any:
                ctx = context_of(args, kwargs)
                if ctx is _FAILED:
                    on = default
                else:
                    on = await flags.ais_enabled(key, ctx, default)
                if on:
                    return await async_fn(*args, **kwargs)
                if fallback is None:
                    return None
                result = fallback(*args, **kwargs)
                if inspect.isawaitable(result):
                    return await result
                return result

            return cast("Callable[P, R]", agated)

        @functools.wraps(fn)
        def gated(*args: P.args, **kwargs: P.kwargs) -> R:
            ctx = context_of(args, kwargs)
            if default if ctx is _FAILED else flags.is_enabled(key, ctx, default):
                return fn(*args, **kwargs)
            if fallback is None:
                return None  # type: ignore[return-value]  # documented: no fallback returns None
            return cast("R", fallback(*args, **kwargs))

        return gated
