"""I/O written once as a flow, run by a thin sync and a thin async driver.

A *flow* is a generator that yields operations and gets each one's result
sent back (or its exception thrown in, so the flow decides what a failure
does); what it returns is the driver's result. An operation has ``run`` and
``arun`` (given the driver's extra arguments, e.g. a rollout's store).
:func:`drive` calls ``op.run()``, :func:`adrive` awaits ``op.arun()``. The
usual operation is a :class:`Call`: ``target.name(*args, **kwargs)``, whose
async twin is named by tipkit's convention, ``a`` before the name after any leading
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

    def run(self) -> Any:
        """Call ``target.name(*args, **kwargs)``."""
        return getattr(self.target, self.name)(*self.args, **self.kwargs)

    async def arun(self) -> Any:
        """Await ``target.a<name>(*args, **kwargs)``, the async twin."""
        call = getattr(self.target, async_name(self.name))
        return await call(*self.args, **self.kwargs)


Flow = Generator[Call, Any, T]


def async_name(name: str) -> str:
    """Return the async twin's name: ``get`` → ``aget``, ``_attempt`` → ``_aattempt``."""
    bare = name.lstrip("_")
    return f"{name[: len(name) - len(bare)]}a{bare}"


def drive(flow: Generator[Any, Any, T], *context: Any) -> T:
    """Run *flow* with blocking calls (``op.run(*context)``), in the calling thread."""
    try:
        op = next(flow)
        while True:
            try:
                result = op.run(*context)
            except Exception as exc:  # the flow decides what a failure does
                op = flow.throw(exc)
            else:
                op = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]  # the flow's declared return


async def adrive(flow: Generator[Any, Any, T], *context: Any) -> T:
    """Run *flow* awaiting ``op.arun(*context)``: nothing blocks the event loop."""
    try:
        op = next(flow)
        while True:
            try:
                result = await op.arun(*context)
            except Exception as exc:  # the flow decides what a failure does
                op = flow.throw(exc)
            else:
                op = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]  # the flow's declared return
