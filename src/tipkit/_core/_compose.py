"""compose(): several guards as one, outermost first, in an order that works.

Parts say what they are through a class attribute ``_composition_role`` (one of
:data:`ROLES`); ``compose`` refuses the orders listed in :data:`REFUSED` unless
told ``order="as-given"``. Everything is decided when composing: the composite's
faces are the nested parts, with nothing added per call.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, ExitStack
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar

from tipkit._core import _scope
from tipkit._core._decorate import Decorates
from tipkit._core._fallback import NO_FALLBACK, ExcTypes, make
from tipkit.errors import ConfigError

__all__ = ["DOCUMENTED_ORDER", "REFUSED", "ROLES", "Composite", "compose"]

ROLES = (
    "traced",
    "fallback",
    "retry",
    "hedge",
    "breaker",
    "ratelimit",
    "limit",
    "timeout",
    "inject",
)
"""The roles a part may declare (``_composition_role``), outermost first."""

DOCUMENTED_ORDER = (
    "traced -> fallback -> retry (with its budget) -> hedge -> breaker -> "
    "rate limit -> adaptive limit / bulkhead -> timeout -> fault injection -> call"
)

REFUSED: dict[tuple[str, str], str] = {
    ("breaker", "retry"): (
        "the breaker would see one outcome per group of attempts and every "
        "call it lets through would hit the dependency once per attempt"
    ),
    ("ratelimit", "retry"): (
        "every retry would run on the one token the first attempt took, so the "
        "limit would not bound what reaches the dependency"
    ),
    ("limit", "retry"): (
        "every retry would run in the one slot the first attempt took, so the "
        "limit would neither bound nor measure the attempts"
    ),
    ("hedge", "retry"): (
        "each hedged attempt would retry on its own, multiplying the load by "
        "attempts x hedges, outside the retry budget"
    ),
    ("inject", "breaker"): (
        "the injected faults would never reach the breaker, which is what the "
        "fault injection should exercise"
    ),
}
"""``(outer role, inner role)``: orders that cannot work, and why."""

P = ParamSpec("P")
R = TypeVar("R")


class Composite(Decorates):
    """Guards applied as one: ``compose(a, b)(f)`` is ``a(b(f))``.

    Offers every face its parts offer. A part that must re-run the guarded work
    (a retry) cannot live in a ``with`` block, which runs once: entering such a
    composite raises ``TypeError`` pointing to ``retry_context``.
    """

    __slots__ = ("_exempt", "guards")

    def __init__(
        self, guards: tuple[Any, ...], exempt: frozenset[tuple[int, int]] = frozenset()
    ) -> None:
        self.guards = guards
        # (i, j) pairs of parts an inner compose(..., order="as-given") kept as given.
        self._exempt = exempt

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
            if _role(guard) == "fallback":
                raise TypeError(
                    f"{self!r} contains {guard!r}, which replaces the result, and "
                    "a `with` block has none: decorate a function or use "
                    "call()/acall()."
                )
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


def _role(guard: object) -> str | None:
    role = getattr(guard, "_composition_role", None)
    return role if isinstance(role, str) else None


def _check_order(guards: tuple[Any, ...], exempt: frozenset[tuple[int, int]]) -> None:
    roles = [_role(g) for g in guards]
    for i, outer in enumerate(roles):
        if outer is None:
            continue
        for j in range(i + 1, len(roles)):
            inner = roles[j]
            why = REFUSED.get((outer, inner)) if inner is not None else None
            if why is not None and (i, j) not in exempt:
                raise ConfigError(
                    f"compose(): {guards[i]!r} ({outer}) is outside {guards[j]!r} "
                    f"({inner}): {why}. The documented order, outermost first: "
                    f"{DOCUMENTED_ORDER}. Reorder the parts, or pass "
                    'order="as-given" to keep this order.',
                    source="compose()",
                    field="order",
                )


def compose(
    *guards: Any,
    order: Literal["checked", "as-given"] = "checked",
    fallback: Any = NO_FALLBACK,
    fallback_on: ExcTypes | None = None,
    name: str = "compose",
) -> Composite:
    """Return one guard made of *guards*, the first outermost.

    ``compose(a, b)(f) == a(b(f))``; ``with compose(a, b):`` enters ``a`` then
    ``b`` and exits in reverse. The documented order (outermost first), which
    docs/composition.md justifies part by part: traced, fallback, retry (with
    its budget), hedge, breaker, rate limit, adaptive limit or bulkhead, timeout
    per attempt, fault injection.

    Args:
        guards: the parts, outermost first; a composite given as a part is
            flattened into this one.
        order: ``"checked"`` (default) refuses an order that cannot work: a
            breaker, rate limit, bulkhead or adaptive limit outside a retry, a
            hedge outside a retry, fault injection outside the breaker it should
            exercise. ``"as-given"`` keeps any order (a benchmark comparing
            orders, a deliberate experiment).
        fallback: a value, or a synchronous ``(exc) -> value``, returned instead
            of raising an error in *fallback_on*; the fallback part goes just
            inside the leading telemetry parts (so a span still records the
            refusal), outside everything else. See :mod:`tipkit.fallback`.
        fallback_on: what the fallback answers (default: tipkit's refusals,
            :class:`~tipkit.errors.RejectedError`).
        name: names the fallback in metrics and events.

    Raises:
        TypeError: no guards, or something that is not a decorator.
        ValueError: *order* is neither ``"checked"`` nor ``"as-given"``.
        ConfigError: a checked order that cannot work (``field="order"``): the
            message names both parts, why, and the documented order.
    """
    if not guards:
        raise TypeError("compose() needs at least one guard")
    if order not in ("checked", "as-given"):
        raise ValueError(
            f'compose(): order must be "checked" or "as-given", got {order!r}'
        )
    flat: list[Any] = []
    exempt: set[tuple[int, int]] = set()
    for i, guard in enumerate(guards):
        if isinstance(guard, Composite):
            base = len(flat)
            exempt.update((base + a, base + b) for a, b in guard._exempt)  # same module
            flat.extend(guard.guards)
        elif callable(guard):
            flat.append(guard)
        else:
            raise TypeError(f"compose() argument {i} is not a guard: {guard!r}")
    part = make(fallback, fallback_on, name, "compose()")
    if part is not None:
        at = 0
        while at < len(flat) and _role(flat[at]) == "traced":
            at += 1
        flat.insert(at, part)
        exempt = {(a + (a >= at), b + (b >= at)) for a, b in exempt}
    parts = tuple(flat)
    if order == "as-given":
        n = len(parts)
        return Composite(
            parts, frozenset((a, b) for a in range(n) for b in range(a + 1, n))
        )
    _check_order(parts, frozenset(exempt))
    return Composite(parts, frozenset(exempt))
