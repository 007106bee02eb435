"""How a RedisStore meets a server that does not answer: one shared wait, a bounded close.

* :class:`Gate` is the store object's :class:`~tipkit.stores._events.StoreHealth`
  with the calls that consult it: once a call timed out, every primitive on the
  store (flags, rollouts, limiters, breakers, the audit log) is refused at once,
  without I/O, until a probe (one call at a time) is answered. A rollback in a
  blackhole therefore waits one store timeout, not one per store call.
* :func:`close_async` closes an event loop's async client within a bound and
  aborts the transports a hung server holds, so no connection is left to a
  finalizer (a ``ResourceWarning`` in some later, unrelated code).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from tipkit.errors import StoreError
from tipkit.stores._events import StoreHealth
from tipkit.stores._redis_target import ERRORS, redis

__all__ = [
    "PROBE",
    "TIMEOUTS",
    "Gate",
    "abort",
    "close_async",
    "close_with_loop",
    "connections_of",
    "sentinels_of",
]

TIMEOUTS = (redis.exceptions.TimeoutError, TimeoutError)
"""A server that did not answer in time (``StoreHealth.timed_out``)."""
_CAUGHT = (StoreError, *ERRORS)
PROBE = 0.25
"""At most this many seconds (or the timeout) between probes of a store known down."""


class Gate(StoreHealth):
    """A store's health and the calls that consult it (one per RedisStore object)."""

    __slots__ = ()

    def enter(self, op: str, key: str) -> bool:
        """While down: ``True`` if this call is the probe; else refuse it, no I/O."""
        if self.admit():
            return True
        if self.closed:
            raise StoreError(f"RedisStore {op} {key!r} not tried: the store is closed")
        cause = self.cause
        name = "TimeoutError" if cause is None else type(cause).__name__
        raise StoreError(
            f"RedisStore {op} {key!r} not tried: the server did not answer in "
            f"time ({name}); it is probed every {self.probe}s"
        ) from cause

    def note(self, exc: BaseException) -> None:
        """Learn from a failed call (an error reply is an answer)."""
        cause = exc.__cause__ if isinstance(exc, StoreError) else exc
        if cause is None:
            return  # refused by enter(): nothing new learnt
        if isinstance(cause, TIMEOUTS):
            self.timed_out(cause)
        elif isinstance(cause, redis.exceptions.ResponseError):
            self.answered()  # an error reply is an answer, whoever got it
        else:
            self.failed()

    @contextlib.contextmanager
    def watching(self, op: str, key: str) -> Iterator[None]:
        """Run the block unless the store is known down (then refuse it at once).

        The one body of :meth:`run` and :meth:`arun`: a store call is network
        I/O, so the generator's microsecond does not count.
        """
        if self.down:
            self.enter(op, key)  # the probe, or refused at once
        try:
            yield
        except _CAUGHT as exc:
            self.note(exc)
            raise
        # Answered: the store is up, also when this call was sent before the
        # store was known down (its reply held up, then let through). Left
        # down, the gate would refuse calls while the primitive that made this
        # one reports it recovered: a spurious outage after the real one.
        self.answered()

    def run(self, op: str, key: str, call: Callable[..., Any], *args: Any) -> Any:
        """Return ``call(*args)`` unless the store is known down (then refused at once)."""
        with self.watching(op, key):
            return call(*args)

    async def arun(
        self, op: str, key: str, call: Callable[..., Any], *args: Any
    ) -> Any:
        """Async :meth:`run`: await ``call(*args)`` unless the store is known down."""
        with self.watching(op, key):
            return await call(*args)


async def close_with_loop(
    client: redis.asyncio.Redis, bound: float
) -> AsyncIterator[None]:
    # An async generator that has started is closed by the event loop's
    # shutdown_asyncgens() (asyncio.run does this), so the loop's client and its
    # connections are closed while the loop still runs.
    try:
        yield
    finally:
        await close_async(client, bound)


async def close_async(client: Any, bound: float) -> None:
    """Close an async client and its sentinels within *bound* seconds; never leak a socket.

    The polite close runs first (bounded: a hung server never answers it);
    then every connection it left open has its transport aborted, so no
    finalizer warns later in some other code. redis-py's cluster client skips
    its own ``aclose()`` after a failed command (it waits to re-initialize), so
    its nodes are closed here directly.
    """
    clients = [client, *sentinels_of(client)]
    try:
        async with asyncio.timeout(bound):
            for one in clients:
                await one.aclose()
                manager = getattr(one, "nodes_manager", None)
                if manager is not None:
                    await manager.aclose()
                    await manager.aclose("startup_nodes")
    except (TimeoutError, *ERRORS):
        pass
    finally:
        for one in clients:
            for conn in connections_of(one):
                await abort(conn)


def connections_of(client: Any) -> list[Any]:
    """Every connection of an async client (a cluster client's, of every node)."""
    manager = getattr(client, "nodes_manager", None)
    if manager is not None:
        nodes = [*manager.nodes_cache.values(), *manager.startup_nodes.values()]
        return [c for node in nodes for c in getattr(node, "_connections", ())]
    pool = getattr(client, "connection_pool", None)
    return [
        *getattr(pool, "_available_connections", ()),
        *getattr(pool, "_in_use_connections", ()),
    ]


async def abort(conn: Any) -> None:
    """Drop *conn*'s socket now (``transport.abort()``), without waiting on its server."""
    writer = getattr(conn, "_writer", None)  # redis-py has no public handle
    if writer is None:
        return
    writer.transport.abort()
    with contextlib.suppress(Exception):
        await conn.disconnect(nowait=True)


def sentinels_of(client: Any) -> list[Any]:
    """The sentinel clients behind a ``master_for`` client tipkit made (or none)."""
    pool = getattr(client, "connection_pool", None)  # a cluster client has none
    manager = getattr(pool, "sentinel_manager", None)
    # Every one it was given: redis-py's own list may have lost one (_whole).
    found: Any = getattr(manager, "every", None) or getattr(manager, "sentinels", ())
    return list(found)
