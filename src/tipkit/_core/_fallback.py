"""The fallback part: answer an error with a value, counted and evented.

It lives in the core because ``compose(..., fallback=)`` and the guards'
``fallback=`` hook build one; the public face is :mod:`tipkit.fallback`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, ParamSpec, TypeVar, overload

from tipkit._core._callonly import CallOnly
from tipkit._core._decorate import check_decoratable
from tipkit.errors import RejectedError
from tipkit.telemetry._counters import REGISTRY, Counter
from tipkit.telemetry._events import BUS, AttributeValue, Event
from tipkit.telemetry._traced import error_type

__all__ = [
    "FALLBACK_CALLS",
    "FALLBACK_NAME",
    "NO_FALLBACK",
    "ExcTypes",
    "Fallback",
    "FallbackUsed",
    "make",
]

P = ParamSpec("P")
R = TypeVar("R")
V = TypeVar("V")

FALLBACK_CALLS = "tipkit.fallback.calls"  # {call}, by error.type
FALLBACK_NAME = "tipkit.fallback.name"

ExcTypes = type[BaseException] | tuple[type[BaseException], ...]


class _NoFallback:
    """The default of every ``fallback=`` option: no fallback (``None`` is a value)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_FALLBACK"


NO_FALLBACK: Any = _NoFallback()


@dataclass(frozen=True, slots=True)
class FallbackUsed(Event):
    """A call failed with an error the fallback answers; its value was returned.

    Attributes:
        error: the exception replaced (in process only; exported telemetry
            carries its type name).
    """

    error: BaseException

    otel_name: ClassVar[str] = "tipkit.fallback.used"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the fallback's name and the error's type name."""
        return {FALLBACK_NAME: self.name, "error.type": error_type(self.error)}


def _check_on(on: object) -> tuple[type[BaseException], ...]:
    types = on if isinstance(on, tuple) else (on,)
    if not types:
        raise ValueError("fallback: fallback_on=() would answer nothing")
    for t in types:
        if not (isinstance(t, type) and issubclass(t, Exception)):
            raise TypeError(
                f"fallback: fallback_on must hold Exception subclasses, got {t!r}"
            )
    return types


class Fallback(CallOnly, Generic[V]):
    """Return a fallback value when the wrapped work raises one of ``fallback_on``.

    Made by :func:`tipkit.fallback.fallback`. Thread-safe and asyncio-safe: no
    per-call state.
    """

    __slots__ = ("_counters", "_fn", "_on", "name", "value")

    _no_block: ClassVar[str] = (
        "replaces a result, which a `with` block has not: decorate a "
        "function or use call()/acall()"
    )

    # compose() refuses `with` for parts that must replace the block's result.
    _reruns: ClassVar[bool] = True
    _composition_role: ClassVar[str] = "fallback"

    def __init__(
        self, value: V | Callable[[Exception], V], on: ExcTypes, name: str
    ) -> None:
        if inspect.iscoroutinefunction(value):
            raise TypeError("fallback: the fallback function must be synchronous")
        self.value = value
        self._fn: Callable[[Exception], V] | None = value if callable(value) else None
        self._on = _check_on(on)
        if not isinstance(name, str) or not name:  # type: ignore[redundant-expr]  # untyped callers
            raise TypeError(f"fallback: name must be a non-empty str, got {name!r}")
        self.name = name
        self._counters: dict[str, Counter] = {}

    def __repr__(self) -> str:
        on = ", ".join(t.__qualname__ for t in self._on)
        return f"<fallback {self.name!r} on=({on}) value={self.value!r}>"

    @property
    def used(self) -> int:
        """How many errors this fallback has answered."""
        return sum(c.value for c in self._counters.values())

    def answers(self, exc: BaseException) -> bool:
        """Return whether *exc* is answered by the fallback."""
        return isinstance(exc, self._on)

    def answer(self, exc: Exception) -> V:
        """Count *exc* and return the fallback value for it.

        Raises:
            Exception: whatever the fallback function raises (chained to *exc*).
        """
        kind = error_type(exc)
        counter = self._counters.get(kind)
        if counter is None:
            counter = self._counters[kind] = REGISTRY.counter(
                FALLBACK_CALLS, {FALLBACK_NAME: self.name, "error.type": kind}
            )
        counter.inc()
        if FallbackUsed.listened:
            BUS.publish(FallbackUsed(self.name, exc))
        fn = self._fn
        if fn is None:
            return self.value  # type: ignore[return-value]  # not callable: the value itself
        return fn(exc)

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R | V]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R | V]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate *fn* (plain or ``async def``) with this fallback."""
        check_decoratable(fn, self)
        on = self._on
        answer = self.answer
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def afallen(*args: P.args, **kwargs: P.kwargs) -> Any:
                try:
                    return await fn(*args, **kwargs)
                except on as exc:
                    return answer(exc)  # type: ignore[arg-type]  # on holds Exception subclasses

            return afallen

        @functools.wraps(fn)
        def fallen(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                return fn(*args, **kwargs)
            except on as exc:
                return answer(exc)  # type: ignore[arg-type]  # on holds Exception subclasses

        return fallen

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R | V:
        """Run ``fn(*args, **kwargs)``; return the fallback value on an answered error."""
        try:
            return fn(*args, **kwargs)
        except self._on as exc:
            return self.answer(exc)  # type: ignore[arg-type]  # on holds Exception subclasses

    async def acall(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R | V:
        """Await ``fn(*args, **kwargs)``; return the fallback value on an answered error."""
        try:
            return await fn(*args, **kwargs)
        except self._on as exc:
            return self.answer(exc)  # type: ignore[arg-type]  # on holds Exception subclasses


def make(
    value: object, on: ExcTypes | None, name: str, owner: str
) -> Fallback[Any] | None:
    """Return the part a ``fallback=``/``fallback_on=`` option pair asks for, or ``None``.

    *on* defaults to tipkit's refusals (:class:`~tipkit.errors.RejectedError`).

    Raises:
        TypeError: *on* given without a fallback; a bad value, named by *owner*.
    """
    if value is NO_FALLBACK:
        if on is not None:
            raise TypeError(f"{owner}: fallback_on= needs fallback=")
        return None
    return Fallback(value, RejectedError if on is None else on, name)
