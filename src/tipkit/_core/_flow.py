"""I/O written once as a flow, run by a thin sync and a thin async driver.

A *flow* is a generator that yields :class:`Call` operations and gets each
one's result sent back (or its exception thrown in, so the flow decides what
a failure does); what it returns is the driver's result. :func:`drive` runs a
call as ``target.name(*args, **kwargs)``; :func:`adrive` awaits the async
twin named by tipkit's convention, ``a`` before the name after any leading
underscores (``increment`` → ``aincrement``, ``close`` → ``aclose``,
``_attempt`` → ``_aattempt``). So an async driver never calls a blocking
method, and the logic between the calls exists once.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple, TypeVar

__all__ = ["Call", "Flow", "adrive", "async_name", "drive"]

T = TypeVar("T")


class Call(NamedTuple):
    """``target.name(*args, **kwargs)``, or awaited ``target.a<name>(...)`` when async."""

    target: Any
    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}  # noqa: RUF012  # never mutated: passed as **kwargs


Flow = Generator[Call, Any, T]


def async_name(name: str) -> str:
    """Return the async twin's name: ``get`` → ``aget``, ``_attempt`` → ``_aattempt``."""
    bare = name.lstrip("_")
    return f"{name[: len(name) - len(bare)]}a{bare}"


def drive(flow: Flow[T]) -> T:
    """Run *flow* with blocking calls, in the calling thread."""
    try:
        op = next(flow)
        while True:
            try:
                result = getattr(op.target, op.name)(*op.args, **op.kwargs)
            except Exception as exc:  # the flow decides what a failure does
                op = flow.throw(exc)
            else:
                op = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]  # the flow's declared return


async def adrive(flow: Flow[T]) -> T:
    """Run *flow* awaiting each call's async twin: nothing blocks the event loop."""
    try:
        op = next(flow)
        while True:
            try:
                call = getattr(op.target, async_name(op.name))
                result = await call(*op.args, **op.kwargs)
            except Exception as exc:  # the flow decides what a failure does
                op = flow.throw(exc)
            else:
                op = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]  # the flow's declared return
