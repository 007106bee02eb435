"""Marking test traffic: ``synthetic()`` and how its marker reaches every signal.

The marker lives in tipkit's scope stack (:mod:`tipkit._core._scope`, one
:class:`~contextvars.ContextVar`), so it follows the code inside the block,
including asyncio tasks created there (they copy the context), and nothing
else. Spans made by :func:`~tipkit.telemetry.traced`, span events, log events
and histogram points read it when they are built: they already pay for
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

import os
import threading
from collections.abc import Callable
from typing import Final, Literal

from tipkit._core import _scope
from tipkit._core._scope import Node, Scope
from tipkit.telemetry._counters import REGISTRY, Counter
from tipkit.telemetry._names import SYNTHETIC_TYPE

__all__ = ["KINDS", "SyntheticKind", "current_synthetic", "synthetic"]

SyntheticKind = Literal["test", "bot"]
KINDS: Final = ("test", "bot")
"""The values OpenTelemetry defines for ``user_agent.synthetic.type``."""


class _MarkView:
    """``CURRENT.get()``: the mark in force, for callers written before the scope stack.

    Deprecated: tipkit itself reads :func:`current_synthetic`; kept so older
    callers of this private name keep working.
    """

    __slots__ = ()

    get = staticmethod(_scope.current_synthetic)


CURRENT = _MarkView()

_lock = threading.Lock()
_open = 0
# Every counter whose inc() is diverted to a router now (never a twin).
_routed: list[Counter] = []


def current_synthetic() -> str | None:
    """Return the synthetic traffic type of the current context, or ``None``."""
    return _scope.current_synthetic()


top = _scope.top


def _router(counter: Counter) -> Callable[[], int]:
    fast = counter.fast_inc
    twins: dict[str, Counter] = {}

    def inc() -> int:
        node = top()
        kind = None if node is None else node[4]
        if kind is None:
            return fast()
        twin = twins.get(kind)
        if twin is None:
            twin = twins[kind] = REGISTRY.counter(
                counter.name, {**counter.attributes, SYNTHETIC_TYPE: kind}
            )
        return twin.inc()

    return inc


def _route(counter: Counter) -> None:
    """Divert *counter* to a router (lock held); twins and routed counters stay."""
    if not counter.diverted and SYNTHETIC_TYPE not in counter.attributes:
        counter.divert(_router(counter))
        _routed.append(counter)


def _route_new(counter: Counter) -> None:
    # A counter first created inside an open block (a flag's first evaluation
    # in a probe, say) must count that block's traffic apart too.
    with _lock:
        if _open > 0:
            _route(counter)


REGISTRY.on_created = _route_new


def _enter() -> None:
    global _open  # noqa: PLW0603  # one process-wide count of open blocks, under _lock
    with _lock:
        _open += 1
        # Counters created since the last sweep are routed too; twins never are.
        for counter in REGISTRY.counters():
            _route(counter)


def _exit() -> None:
    global _open  # noqa: PLW0603  # see _enter
    with _lock:
        _open -= 1
        if _open == 0:
            for counter in _routed:
                counter.restore()
            _routed.clear()


def _after_fork_in_child() -> None:  # pragma: no cover - exercised only in forks
    global _lock  # noqa: PLW0603  # a lock held by another thread at fork is dead
    _lock = threading.Lock()


class _Synthetic(Scope):
    """The scope made by :func:`synthetic`: ``with``, ``async with``, decorator, call."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<synthetic kind={self.kind!r} open_blocks={_open}>"

    def _open(self) -> tuple[None, None, str]:
        _enter()
        return None, None, self.kind

    def _close(self, node: Node, error: BaseException | None) -> None:  # noqa: ARG002  # the Scope protocol
        _exit()

    def _entered(self, node: Node) -> str:  # noqa: ARG002  # the Scope protocol
        return self.kind


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
