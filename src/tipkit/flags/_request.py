"""The per-request evaluation context: set once, used by every evaluation given none.

One :class:`~contextvars.ContextVar` holds a linked stack of contexts (the
innermost wins). An evaluation whose context is ``None`` reads it (one
``ContextVar.get`` on that path only: an evaluation given a context never
looks). It follows the work as every ContextVar does: into called functions and
asyncio tasks created inside the block, not into plain threads (use
``contextvars.copy_context().run`` or :func:`asyncio.to_thread`).
"""

from __future__ import annotations

from contextvars import ContextVar
from types import TracebackType
from typing import Any

__all__ = ["REQUEST", "current_request_context", "request_context"]

# A node is (context, node below): entering pushes, leaving pops the innermost.
REQUEST: ContextVar[tuple[Any, Any] | None] = ContextVar(
    "tipkit.flags.request_context", default=None
)


def current_request_context() -> Any:
    """Return the context set by the innermost :func:`request_context`, or ``None``."""
    node = REQUEST.get()
    return None if node is None else node[0]


class request_context:  # noqa: N801  # used as a function: `with request_context(ctx):`
    """Make *context* the evaluation context of every flag evaluation given none.

    ::

        with request_context(EvaluationContext("user-42", {"plan": "pro"})):
            flags.is_enabled("new-checkout")          # evaluated for user-42

    Works as ``with`` and ``async with``; blocks nest (the innermost wins) and
    an explicit context passed to an evaluation always wins over it. One
    object may be entered from many threads and tasks at once: what each entry
    undoes lives in its own context, never on the object. *context* is any
    context an evaluation accepts (a targeting key, a mapping, an
    :class:`~tipkit.flags.EvaluationContext`); it is not copied, so build it
    once per request and do not mutate it. Reads no clock; never blocks.
    """

    __slots__ = ("context",)

    def __init__(self, context: Any) -> None:
        self.context = context

    def __repr__(self) -> str:
        return f"request_context({self.context!r})"

    def __enter__(self) -> Any:
        REQUEST.set((self.context, REQUEST.get()))
        return self.context

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        node = REQUEST.get()
        # Leaving out of order (rare) pops this object's innermost entry only.
        above: list[Any] = []
        while node is not None and node[0] is not self.context:
            above.append(node[0])
            node = node[1]
        if node is None:
            return
        node = node[1]
        for ctx in reversed(above):
            node = (ctx, node)
        REQUEST.set(node)

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
