"""The store protocols: how shared state is read and written.

Shared state lives behind three narrow capability protocols, one per kind of
state, so a primitive asks only for what it uses and a backend implements only
what it can serve:

* :class:`KeyValueStore`: **namespaced entries with versions**:
  ``get``/``set``/``compare_and_set``/``delete`` on ``(namespace, key)``; every
  write bumps the namespace's version and stamps the entry with it, so
  ``snapshot(namespace)`` reads a whole namespace (one hash in Redis) as one
  consistent picture and ``version(namespace)`` says cheaply whether anything
  changed; ``watch(namespace, callback)`` calls back when anyone writes it.
  Used by flags (kills, overrides), shared breakers and rollouts.
* :class:`CounterStore`: **counters**: ``increment(key, {field: amount, ...})``
  adds to several counters of one key at once (batched outcome counts).
  Used by rollouts that judge on the fleet's counts.
* :class:`TokenStore`: **token buckets**: ``take_tokens`` refills and takes in
  one step, on the store's own clock (Redis: the server's ``TIME``), so clients
  with skewed clocks cannot take more than their share. Used by rate limiters.

:class:`Store` is all three (what :class:`~tipkit.stores.MemoryStore` and
``RedisStore`` implement), and what ``store=`` accepted before the split.

Every operation is designed to be one atomic round trip on a server such as
Redis, with time to live measured on the store's clock. Every protocol declares
``on_error``, the failure policy the store carries for the primitives using it.
Async methods exist where an async face of a primitive calls them; each is
truly non-blocking (it awaits the server) and bounded by the store's timeout.

Values are JSON-compatible: ``None``, ``bool``, ``int``, ``float``, ``str``, and
lists and string-keyed dicts of those.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from tipkit._core._tokens import TokenTake  # defined with the arithmetic

__all__ = [
    "JSON",
    "ON_ERROR",
    "CounterStore",
    "Entry",
    "KeyValueStore",
    "OnError",
    "Snapshot",
    "Store",
    "Subscription",
    "TokenStore",
    "TokenTake",
    "check_on_error",
]

JSON = Any
"""A JSON-compatible value (mypy cannot express the recursive type usefully)."""

OnError = Literal["fail_open", "fail_closed"]
"""What the primitives using a store do while it fails (see ``on_error``)."""

ON_ERROR: tuple[OnError, ...] = ("fail_open", "fail_closed")


def check_on_error(on_error: object) -> OnError:
    """Return *on_error* if it is a policy, else raise ``ValueError`` naming it."""
    if on_error == "fail_open":
        return "fail_open"
    if on_error == "fail_closed":
        return "fail_closed"
    raise ValueError(f"on_error must be 'fail_open' or 'fail_closed', got {on_error!r}")


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


@runtime_checkable
class Subscription(Protocol):
    """What :meth:`KeyValueStore.watch` returns: ``cancel()`` ends the watch."""

    def cancel(self) -> None:
        """Stop calling the callback. Idempotent and thread-safe."""
        ...


class _Policied(Protocol):
    """A store that carries a failure policy (every capability protocol has one)."""

    @property
    def on_error(self) -> OnError:
        """The failure policy this store carries for the primitives using it."""
        ...


@runtime_checkable
class KeyValueStore(_Policied, Protocol):
    """Namespaced, versioned entries with compare-and-set, snapshots and watches.

    Implementations are thread-safe. A backend failure raises
    :class:`tipkit.errors.StoreError` with the backend's exception as
    ``__cause__``; what a primitive then does (keep the last known state,
    fail open or closed) is the primitive's documented policy.
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

    def watch(self, namespace: str, callback: Callable[[], object]) -> Subscription:
        """Call *callback* (no arguments) after *namespace* is written, by anyone.

        Best effort: a user of a watch keeps refreshing on its own interval,
        which bounds staleness when a notification is lost. Callbacks must be
        quick and must not raise; a bound method is held weakly.
        """
        ...

    async def aget(self, namespace: str, key: str) -> Entry | None:
        """Async :meth:`get`: awaits the server, bounded by the store's timeout."""
        ...

    async def aset(
        self, namespace: str, key: str, value: JSON, *, ttl: float | None = None
    ) -> int:
        """Async :meth:`set`: awaits the server, bounded by the store's timeout."""
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
        """Async :meth:`compare_and_set`, bounded by the store's timeout."""
        ...

    async def asnapshot(self, namespace: str) -> Snapshot:
        """Async :meth:`snapshot`: awaits the server, bounded by the store's timeout."""
        ...

    async def aversion(self, namespace: str) -> int:
        """Async :meth:`version`: awaits the server, bounded by the store's timeout."""
        ...


@runtime_checkable
class CounterStore(_Policied, Protocol):
    """Counters: several named fields per key, added to atomically.

    Thread-safe; failures raise :class:`tipkit.errors.StoreError`.
    """

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

    async def aincrement(
        self,
        key: str,
        amounts: Mapping[str, float],
        *,
        ttl: float | None = None,
    ) -> dict[str, float]:
        """Async :meth:`increment`: awaits the server, bounded by the store's timeout."""
        ...


@runtime_checkable
class TokenStore(_Policied, Protocol):
    """Token buckets refilled and taken in one atomic step on the store's clock.

    Thread-safe; failures raise :class:`tipkit.errors.StoreError`.
    """

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

    async def atake_tokens(
        self,
        key: str,
        tokens: float,
        *,
        rate: float,
        capacity: float,
        max_wait: float = 0.0,
    ) -> TokenTake:
        """Async :meth:`take_tokens`: awaits the server, bounded by its timeout."""
        ...


@runtime_checkable
class Store(KeyValueStore, CounterStore, TokenStore, Protocol):
    """Every capability: entries, counters and token buckets, sync and async.

    What :class:`~tipkit.stores.MemoryStore` and ``RedisStore`` implement, and
    what ``store=`` accepted before the capabilities were split: a value of this
    type can be passed to every primitive. Thread-safe; a backend failure raises
    :class:`tipkit.errors.StoreError` with the backend's exception as
    ``__cause__``.
    """

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...

    async def adelete(self, namespace: str, key: str) -> bool:
        """Async :meth:`delete` (no primitive needs it; kept for callers of ``Store``)."""
        ...

    async def acounters(self, key: str) -> dict[str, float]:
        """Async :meth:`counters` (no primitive needs it; kept for callers of ``Store``)."""
        ...
