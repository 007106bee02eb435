"""The Store protocol: how shared state is read and written.

Shared state (kill switches and overrides, rollout stages and outcome counts,
token buckets given ``store=``) lives behind this small protocol. Every
operation is designed to be one atomic round trip on a server such as Redis:

* **namespaced entries with versions**: ``get``/``set``/``compare_and_set``/
  ``delete`` on ``(namespace, key)``; every write bumps the namespace's version
  and stamps the entry with it, so ``snapshot(namespace)`` reads a whole namespace
  (one hash in Redis) as one consistent picture and ``version(namespace)`` says
  cheaply whether anything changed;
* **counters**: ``increment(key, {field: amount, ...})`` adds to several counters
  of one key at once (batched outcome counts);
* **token buckets**: ``take_tokens`` refills and takes in one step, on the store's
  own clock (Redis: the server's ``TIME``), so clients with skewed clocks cannot
  take more than their share;
* **time to live** on entries, counters and buckets, measured on the store's clock.

Values are JSON-compatible: ``None``, ``bool``, ``int``, ``float``, ``str``, and
lists and string-keyed dicts of those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = ["JSON", "Entry", "Snapshot", "Store", "TokenTake"]

JSON = Any
"""A JSON-compatible value (mypy cannot express the recursive type usefully)."""


class Entry(NamedTuple):
    """A stored value and the namespace version at which it was last written."""

    value: JSON
    version: int


class Snapshot(NamedTuple):
    """Every live entry of a namespace, read atomically."""

    version: int
    entries: dict[str, Entry]

    def values(self) -> dict[str, JSON]:
        """Return ``{key: value}`` without versions."""
        return {k: e.value for k, e in self.entries.items()}


class TokenTake(NamedTuple):
    """The outcome of :meth:`Store.take_tokens`.

    Attributes:
        admitted: the tokens were taken (now, or reserved for ``wait`` seconds from now).
        wait: seconds the caller must wait before using reserved tokens (0 when
            they were there).
        tokens: tokens left in the bucket after the operation (negative while
            reservations are outstanding).
        retry_after: when not admitted, seconds until the request could be served;
            0 when admitted.
    """

    admitted: bool
    wait: float
    tokens: float
    retry_after: float


@runtime_checkable
class Store(Protocol):
    """Shared state, one atomic operation per call, with sync and async twins.

    Implementations are thread-safe. A backend failure raises
    :class:`tipkit.errors.StoreError` with the backend's exception as
    ``__cause__``; what a primitive then does (fail open or closed, keep the
    last known state) is the primitive's documented policy.
    """

    def get(self, namespace: str, key: str) -> Entry | None:
        """Return the entry at *key* in *namespace*, or ``None``."""
        ...

    def set(
        self, namespace: str, key: str, value: JSON, *, ttl: float | None = None
    ) -> int:
        """Write *value*; return its new version."""
        ...

    def compare_and_set(
        self,
        namespace: str,
        key: str,
        value: JSON,
        *,
        version: int,
        ttl: float | None = None,
    ) -> int | None:
        """Write *value* only if the entry's version is *version* (0: absent).

        Returns the new version, or ``None`` when the entry changed meanwhile.
        """
        ...

    def delete(self, namespace: str, key: str) -> bool:
        """Remove *key*; return whether it existed."""
        ...

    def snapshot(self, namespace: str) -> Snapshot:
        """Return every live entry of *namespace* and its version, atomically."""
        ...

    def version(self, namespace: str) -> int:
        """Return the namespace's version (0 if never written)."""
        ...

    def increment(
        self,
        key: str,
        amounts: Mapping[str, float],
        *,
        ttl: float | None = None,
    ) -> dict[str, float]:
        """Add each amount to its field of *key*; return all fields' new totals."""
        ...

    def counters(self, key: str) -> dict[str, float]:
        """Return every field of the counters at *key* (empty if none)."""
        ...

    def take_tokens(
        self,
        key: str,
        tokens: float,
        *,
        rate: float,
        capacity: float,
        max_wait: float = 0.0,
    ) -> TokenTake:
        """Refill the bucket at *key* on the store's clock, then take *tokens*.

        A bucket that does not exist is full. If the tokens are not there but
        would be within *max_wait* seconds, they are reserved (the level goes
        negative) and ``wait`` says how long to wait. A negative *tokens* gives
        tokens back (a cancelled reservation), never beyond *capacity*. Idle
        buckets expire once they would have refilled to capacity.
        """
        ...

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...

    async def aget(self, namespace: str, key: str) -> Entry | None:
        """Async twin of :meth:`get`."""
        ...

    async def aset(
        self, namespace: str, key: str, value: JSON, *, ttl: float | None = None
    ) -> int:
        """Async twin of :meth:`set`."""
        ...

    async def acompare_and_set(
        self,
        namespace: str,
        key: str,
        value: JSON,
        *,
        version: int,
        ttl: float | None = None,
    ) -> int | None:
        """Async twin of :meth:`compare_and_set`."""
        ...

    async def adelete(self, namespace: str, key: str) -> bool:
        """Async twin of :meth:`delete`."""
        ...

    async def asnapshot(self, namespace: str) -> Snapshot:
        """Async twin of :meth:`snapshot`."""
        ...

    async def aversion(self, namespace: str) -> int:
        """Async twin of :meth:`version`."""
        ...

    async def aincrement(
        self,
        key: str,
        amounts: Mapping[str, float],
        *,
        ttl: float | None = None,
    ) -> dict[str, float]:
        """Async twin of :meth:`increment`."""
        ...

    async def acounters(self, key: str) -> dict[str, float]:
        """Async twin of :meth:`counters`."""
        ...

    async def atake_tokens(
        self,
        key: str,
        tokens: float,
        *,
        rate: float,
        capacity: float,
        max_wait: float = 0.0,
    ) -> TokenTake:
        """Async twin of :meth:`take_tokens`."""
        ...
