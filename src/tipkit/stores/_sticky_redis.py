"""``RedisStickyStore``: sticky assignments in one Redis hash per unit, with a TTL.

The hash ``<prefix><unit>`` maps each slot (``<flag>__<epoch>``) to a variant
name; every write renews the hash's TTL (``HSET`` then ``EXPIRE`` in one
``MULTI``), so a unit seen within *ttl* keeps its assignments. Reads are one
``HGETALL``. Calls are bounded by *timeout* (no retries beyond one reconnect)
and raise :class:`~tipkit.errors.StoreError` on failure: the flag engine
counts that and buckets as if there were no store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import redis
import redis.asyncio

from tipkit._core._durations import to_seconds
from tipkit.stores._redis_conn import Clients
from tipkit.stores._redis_target import Target
from tipkit.stores._sticky import DEFAULT_TTL

__all__ = ["RedisStickyStore"]


def _decoded(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }


class RedisStickyStore:
    """Sticky assignments in Redis: a hash per unit under *prefix*, expiring after *ttl*.

    *url_or_client* is a Redis URL or a ``redis.Redis`` / ``redis.asyncio.Redis``
    client (the other flavour is made like it). Thread-safe; async methods use
    one async client per event loop.
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis | redis.asyncio.Redis,
        *,
        prefix: str = "tipkit:sticky:",
        ttl: float | timedelta = DEFAULT_TTL,
        timeout: float | timedelta = 0.25,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {prefix!r}")
        self.prefix = prefix
        self.ttl = to_seconds(ttl, "ttl", allow_zero=False)
        self.timeout = to_seconds(timeout, "timeout", allow_zero=False)
        target = Target(url_or_client, cluster=False, sentinel=None, service_name=None)
        self._clients = Clients(target, self.timeout, {})  # no scripts: HGETALL, MULTI
        self.url = self._clients.url

    def __repr__(self) -> str:
        return (
            f"<RedisStickyStore url={self.url!r} prefix={self.prefix!r} ttl={self.ttl}>"
        )

    def _key(self, unit: str) -> str:
        return self.prefix + unit

    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def _get_call(self, unit: str) -> tuple[str, str, Callable[[Any], Any]]:
        key = self._key(unit)
        return "sticky.get", key, lambda c: c.hgetall(key)

    def _save_call(
        self, unit: str, slot: str, variant: str
    ) -> tuple[str, str, Callable[[Any], Any]]:
        # One operation for both clients: an async pipeline's execute() returns
        # the awaitable that Clients.acall awaits.
        key, ms = self._key(unit), self._ttl_ms()

        def write(client: Any) -> Any:
            pipe = client.pipeline(transaction=True)
            pipe.hset(key, slot, variant)
            pipe.pexpire(key, ms)
            return pipe.execute()

        return "sticky.save", key, write

    def get_assignments(self, unit: str) -> Mapping[str, str]:
        """Return *unit*'s assignments (one ``HGETALL``); raises ``StoreError``."""
        return _decoded(self._clients.call(*self._get_call(unit)))

    def save_assignment(self, unit: str, slot: str, variant: str) -> None:
        """Set *slot* to *variant* in *unit*'s hash and renew its TTL; raises ``StoreError``."""
        self._clients.call(*self._save_call(unit, slot, variant))

    async def aget_assignments(self, unit: str) -> Mapping[str, str]:
        """:meth:`get_assignments` with the async client."""
        return _decoded(await self._clients.acall(*self._get_call(unit)))

    async def asave_assignment(self, unit: str, slot: str, variant: str) -> None:
        """:meth:`save_assignment` with the async client."""
        await self._clients.acall(*self._save_call(unit, slot, variant))

    def close(self) -> None:
        """Close the sync client if it was made here."""
        self._clients.close()

    async def aclose(self) -> None:
        """Close the running event loop's async client, if it was made here."""
        await self._clients.aclose()
