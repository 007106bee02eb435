"""The one per-context stack, and the faces of a scope written once.

Every ``with`` in tipkit keeps what it must undo in this stack: a guard's ticket,
a deadline, a composite's exit stack, a traced span, a synthetic mark. The stack
lives in one :class:`~contextvars.ContextVar`, never on the object entered, so
one guard, timeout or ``traced`` object may be entered from many threads and
tasks at once. It follows the context: asyncio tasks created inside a block see
its entries (they copy the context), plain threads do not.

The stack is linked, so a push or a pop allocates one tuple and never copies.
A node is ``(owner, payload, rest, deadline, synthetic, own)``:

* ``owner`` is the object entered, ``payload`` what its exit needs;
* ``rest`` is the node below (``None`` at the bottom);
* ``deadline`` and ``synthetic`` are the deadline and the synthetic-traffic mark
  in force at this node, inherited from ``rest`` unless this node sets them (a
  deadline node keeps the earliest of its own and the inherited one), so reading
  either is one ``ContextVar.get`` and one index, however deep the stack;
* ``own`` is ``None`` for a node that sets nothing, else the pair
  ``(own deadline, own mark)`` it set, used only to rebuild nodes above an
  entry that leaves out of order.

Hot paths read ``top()`` and index the node inline (``node[3]`` is the deadline);
everything else uses the functions below. An entry normally leaves from the
top. When entries leave out of order (an ``ExitStack`` unwound by hand, generators
interleaving blocks), :func:`pop` removes the owner's innermost entry and rebuilds
the entries above it, each keeping what it set itself and inheriting the rest
from its new neighbour below: the one out-of-order rule for every kind of entry.

:class:`Scope` writes the faces of a scope once (decorator for ``def`` and
``async def``, ``with``, ``async with``, ``call``, ``acall``) over four small
hooks; :class:`~tipkit.timeout.Timeout`, :func:`~tipkit.deadline.deadline` and
:func:`~tipkit.telemetry.synthetic` are scopes. Guards (:mod:`._guard`) push
their tickets here too, inline, for speed.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from tipkit._core._decorate import Decorates, check_decoratable

if TYPE_CHECKING:
    from tipkit._core._deadline import Deadline

__all__ = [
    "STACK",
    "Node",
    "Scope",
    "check_decoratable",
    "count",
    "current_deadline",
    "current_synthetic",
    "pop",
    "push",
    "push_setting",
    "top",
]

P = ParamSpec("P")
R = TypeVar("R")

Node = tuple[
    object,  # owner
    Any,  # payload
    "Node | None",  # rest
    "Deadline | None",  # deadline in force
    "str | None",  # synthetic mark in force
    "tuple[Deadline | None, str | None] | None",  # what this node set itself
]

STACK: ContextVar[Node | None] = ContextVar("tipkit_scope", default=None)
top = STACK.get
"""Return the innermost node of this context, or ``None`` (a C call: hot paths use it)."""
_set = STACK.set


def current_deadline() -> Deadline | None:
    """Return the deadline in force in this context (the earliest), or ``None``."""
    node = top()
    return None if node is None else node[3]


def current_synthetic() -> str | None:
    """Return the synthetic-traffic mark in force in this context, or ``None``."""
    node = top()
    return None if node is None else node[4]


def push(owner: object, payload: Any) -> None:
    """Push an entry of *owner* that sets no deadline and no mark."""
    node = top()
    if node is None:
        _set((owner, payload, None, None, None, None))
    else:
        _set((owner, payload, node, node[3], node[4], None))


def _earliest(own: Deadline | None, below: Deadline | None) -> Deadline | None:
    # Deadlines on different clocks compare by the time they have left.
    if own is None:
        return below
    if below is None or below.remaining() > own.remaining():
        return own
    return below


def push_setting(
    owner: object,
    payload: Any,
    deadline: Deadline | None = None,
    synthetic: str | None = None,
) -> Node:
    """Push an entry that sets a deadline and/or a synthetic mark; return its node.

    The node's deadline is the earlier of *deadline* and the one in force (an
    inner, later deadline leaves the outer one in force); its mark is
    *synthetic*, or the one in force when *synthetic* is ``None``.
    """
    below = top()
    if below is None:
        node: Node = (owner, payload, None, deadline, synthetic, (deadline, synthetic))
    else:
        node = (
            owner,
            payload,
            below,
            _earliest(deadline, below[3]),
            below[4] if synthetic is None else synthetic,
            (deadline, synthetic),
        )
    _set(node)
    return node


def pop(owner: object) -> Node:
    """Remove and return the innermost entry of *owner* in this context.

    Raises:
        RuntimeError: *owner* has no entry in this context (exited without a
            matching enter, or entered in another thread or task).
    """
    node = top()
    if node is not None and node[0] is owner:
        _set(node[2])
        return node
    above: list[Node] = []
    while node is not None:
        if node[0] is owner:
            rest = node[2]
            for entry in reversed(above):
                rest = _rebuilt(entry, rest)
            _set(rest)
            return node
        above.append(node)
        node = node[2]
    raise RuntimeError(f"{owner!r} exited without a matching enter in this context")


def _rebuilt(node: Node, rest: Node | None) -> Node:
    """Return *node* moved onto *rest*: what it set stays, the rest is inherited anew."""
    below_deadline = None if rest is None else rest[3]
    below_mark = None if rest is None else rest[4]
    own = node[5]
    if own is None:
        return (node[0], node[1], rest, below_deadline, below_mark, None)
    deadline, mark = own
    return (
        node[0],
        node[1],
        rest,
        _earliest(deadline, below_deadline),
        below_mark if mark is None else mark,
        own,
    )


def count(kind: type) -> int:
    """Return how many entries of this context are owned by instances of *kind*."""
    n = 0
    node = top()
    while node is not None:
        if isinstance(node[0], kind):
            n += 1
        node = node[2]
    return n


class Scope(Decorates):
    """Base of a context that is in force for a block or a call; the faces, once.

    A subclass supplies:

    * ``_open() -> (payload, deadline, mark)``: start an entry; may raise to
      refuse (nothing is pushed then). The base pushes it with
      :func:`push_setting`.
    * ``_close(node, error)``: end the entry (already popped) after the work
      finished; *error* is what the work raised, or ``None``. May raise
      instead (a timeout reporting a late return).
    * ``_entered(node)`` (optional): what ``with scope as x`` binds; default
      the payload.
    * ``_aopen(node)`` / ``_aclose(node, exc_type, exc, tb)`` (optional
      coroutines): wrap the awaited work of the async faces (the timeout's
      cancellation timer). What ``_aopen`` returns becomes the entry's payload
      (``node[1]`` for ``_aclose`` and ``_close``), so the sync faces never
      build async state. ``_aclose`` may raise instead of returning, and then
      ``_close`` is not called.

    Thread-safe and asyncio-safe: per-entry state lives in the stack, never on
    the scope object.
    """

    __slots__ = ()

    # -- hooks ------------------------------------------------------------------------
    def _open(self) -> tuple[Any, Deadline | None, str | None]:
        raise NotImplementedError

    def _close(self, node: Node, error: BaseException | None) -> None:
        raise NotImplementedError

    def _entered(self, node: Node) -> Any:
        return node[1]

    _aopen: Callable[[Node], Awaitable[Any]] | None = None
    _aclose: (
        Callable[
            [
                Node,
                type[BaseException] | None,
                BaseException | None,
                TracebackType | None,
            ],
            Awaitable[None],
        ]
        | None
    ) = None

    def _push(self) -> Node:
        payload, deadline, mark = self._open()
        return push_setting(self, payload, deadline, mark)

    # -- with / async with ------------------------------------------------------------
    def __enter__(self) -> Any:
        return self._entered(self._push())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close(pop(self), exc)

    async def __aenter__(self) -> Any:
        node = self._push()
        if self._aopen is not None:
            try:
                payload = await self._aopen(node)
            except BaseException:
                pop(self)
                raise
            # Still on top: nothing is pushed between the push and here.
            node = (node[0], payload, *node[2:])
            _set(node)
        return self._entered(node)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        node = pop(self)
        if self._aclose is not None:
            await self._aclose(node, exc_type, exc, tb)
        self._close(node, exc)

    # -- call / acall -----------------------------------------------------------------
    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` inside this scope and return its result."""
        payload, deadline, mark = self._open()
        push_setting(self, payload, deadline, mark)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._close(pop(self), exc)
            raise
        # The entry is on top unless fn left a block open: pop's fast path, inline.
        node = top()
        if node is not None and node[0] is self:
            _set(node[2])
        else:
            node = pop(self)
        self._close(node, None)
        return result

    async def acall(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)`` inside this scope and return its result."""
        async with self:
            return await fn(*args, **kwargs)

    # -- decorator: Decorates.__call__ dispatches here, once per function ---------
    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        call = self.call

        @functools.wraps(fn)
        def scoped(*args: P.args, **kwargs: P.kwargs) -> R:
            return call(fn, *args, **kwargs)

        return scoped

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        acall = self.acall

        @functools.wraps(fn)
        async def ascoped(*args: P.args, **kwargs: P.kwargs) -> R:
            return await acall(fn, *args, **kwargs)

        return ascoped
