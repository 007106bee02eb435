"""Marking test traffic: ``synthetic()`` and how its marker reaches every signal.

The marker lives in a :class:`~contextvars.ContextVar`, so it follows the code
inside the block, including asyncio tasks created there (they copy the context),
and nothing else. Spans made by :func:`~tipkit.telemetry.traced`, span events,
log events and histogram points read it when they are built: they already pay for
building attributes.

Counters are the hard part: a primitive creates its counters at construction and
its hot path pays one ``inc()`` (a C call) that cannot look at the context. So,
while at least one ``synthetic()`` block is open anywhere in the process, every
registry counter's ``inc`` is swapped for a small router that sends increments
made inside a synthetic block to a *twin* counter: same name, same attributes,
plus ``user_agent.synthetic.type``. When the last block closes the C fast path is
put back. Real traffic therefore costs nothing extra unless a probe is running
at that moment (then about 0.1 µs per count), in-process totals
(``REGISTRY.value(name)``) still include probe traffic, and exported series keep
probe traffic apart by the attribute. ``Counter.add(n)`` (bulk counts, used off
the hot path) is not routed.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Any, Final, Literal, ParamSpec, TypeVar, overload

from tipkit.telemetry._counters import REGISTRY, Counter
from tipkit.telemetry._names import SYNTHETIC_TYPE

__all__ = ["KINDS", "SyntheticKind", "current_synthetic", "synthetic"]

P = ParamSpec("P")
R = TypeVar("R")

SyntheticKind = Literal["test", "bot"]
KINDS: Final = ("test", "bot")
"""The values OpenTelemetry defines for ``user_agent.synthetic.type``."""

CURRENT: ContextVar[str | None] = ContextVar("tipkit_synthetic", default=None)

_lock = threading.Lock()
_open = 0
# counter -> its C fast path, for every counter whose inc is routed now.
_routed: dict[Counter, Callable[[], int]] = {}


def current_synthetic() -> str | None:
    """Return the synthetic traffic type of the current context, or ``None``."""
    return CURRENT.get()


def _router(counter: Counter, fast: Callable[[], int]) -> Callable[[], int]:
    twins: dict[str, Counter] = {}

    def inc() -> int:
        kind = CURRENT.get()
        if kind is None:
            return fast()
        twin = twins.get(kind)
        if twin is None:
            twin = twins[kind] = REGISTRY.counter(
                counter.name, {**counter.attributes, SYNTHETIC_TYPE: kind}
            )
        return twin.inc()

    return inc


def _route_all() -> None:
    # Counters created since the last sweep are routed too; twins never are.
    for counter in list(
        REGISTRY._counters.values()
    ):  # same package: private by convention
        if counter in _routed or SYNTHETIC_TYPE in counter.attributes:
            continue
        fast = counter.inc
        _routed[counter] = fast
        counter.inc = _router(counter, fast)


def _route_new(counter: Counter) -> None:
    # A counter first created inside an open block (a flag's first evaluation
    # in a probe, say) must count that block's traffic apart too.
    with _lock:
        if (
            _open > 0
            and counter not in _routed
            and SYNTHETIC_TYPE not in counter.attributes
        ):
            fast = counter.inc
            _routed[counter] = fast
            counter.inc = _router(counter, fast)


REGISTRY.on_created = _route_new


def _unroute_all() -> None:
    for counter, fast in _routed.items():
        counter.inc = fast
    _routed.clear()


def _enter() -> None:
    global _open  # noqa: PLW0603  # one process-wide count of open blocks, under _lock
    with _lock:
        _open += 1
        _route_all()


def _exit() -> None:
    global _open  # noqa: PLW0603  # see _enter
    with _lock:
        _open -= 1
        if _open == 0:
            _unroute_all()


def _after_fork_in_child() -> None:  # pragma: no cover - exercised only in forks
    global _lock  # noqa: PLW0603  # a lock held by another thread at fork is dead
    _lock = threading.Lock()


class _Synthetic:
    """Context manager and decorator made by :func:`synthetic`."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<synthetic kind={self.kind!r} open_blocks={_open}>"

    def __enter__(self) -> str:
        _enter()
        _TOKENS.set((*_TOKENS.get(), CURRENT.set(self.kind)))
        return self.kind

    def __exit__(self, *exc: object) -> None:
        stack = _TOKENS.get()
        _TOKENS.set(stack[:-1])
        CURRENT.reset(stack[-1])
        _exit()

    async def __aenter__(self) -> str:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        if not callable(fn):
            raise TypeError(f"synthetic() decorates callables, got {fn!r}")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"cannot decorate generator function {fn.__qualname__} with "
                "synthetic(): use `with synthetic():` inside the generator instead"
            )
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with self:
                    return await fn(*args, **kwargs)

            return awrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            with self:
                return fn(*args, **kwargs)

        return wrapper


# Tokens of the blocks open in this context, so one _Synthetic object can be
# entered from many threads and tasks at once.
_TOKENS: ContextVar[tuple[Any, ...]] = ContextVar("tipkit_synthetic_tokens", default=())


def synthetic(kind: SyntheticKind = "test") -> _Synthetic:
    """Mark everything inside the block (or decorated call) as synthetic traffic.

    Spans made by :func:`~tipkit.telemetry.traced`, span and log events, counters
    and histograms tipkit exports inside the block carry
    ``user_agent.synthetic.type=<kind>``. The mark follows the context: asyncio
    tasks created inside the block inherit it; threads do not, unless started
    with ``contextvars.copy_context().run`` (``asyncio.to_thread`` copies it).

    Works as ``with``, ``async with`` and as a decorator of plain and ``async def``
    functions; blocks nest (the innermost kind wins). Thread-safe; reads no clock.

    Raises:
        ValueError: *kind* is not ``"test"`` or ``"bot"`` (the values OpenTelemetry
            defines; a closed set keeps metric cardinality bounded).
    """
    if kind not in KINDS:
        raise ValueError(f"synthetic(kind=...) must be one of {KINDS}, got {kind!r}")
    return _Synthetic(kind)


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_after_fork_in_child)
