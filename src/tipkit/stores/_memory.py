"""MemoryStore: the in-process Store."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tipkit._core import _fork
from tipkit._core._tokens import check_bucket_args, take
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.stores._audit import MemoryAudit, MemoryAuditMethods
from tipkit.stores._inline import inline_twin
from tipkit.stores._protocol import (
    JSON,
    Entry,
    OnError,
    Snapshot,
    TokenTake,
    check_on_error,
)
from tipkit.stores._watch import Watch

if TYPE_CHECKING:
    from tipkit.stores._watch import Callback

__all__ = ["MemoryStore"]


def _encode(value: JSON, where: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{where}: value must be JSON-compatible, got {value!r}: {exc}"
        ) from exc


class MemoryStore(MemoryAuditMethods):
    """The in-process :class:`~tipkit.stores.Store`, and the default everywhere.

    Thread-safe (one lock, held only for the dictionary operation) and fork-safe.
    Values are copied in and out as JSON, exactly as a networked store would, so
    mutating a value read from the store changes nothing in it. Time to live and
    token buckets use *clock* (``monotonic()``). Nothing here fails or blocks,
    so *on_error* (``"fail_open"`` or ``"fail_closed"``) is only carried for the
    primitives using the store, as ``RedisStore`` carries its own; the async
    methods run inline. With ``push=False``, :meth:`watch` never calls back and
    users of the store rely on their refresh interval alone (as with a
    ``RedisStore(push=False)``, or another process's writes).
    """

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        on_error: OnError = "fail_open",
        push: bool = True,
    ) -> None:
        self._clock = clock
        self.on_error: OnError = check_on_error(on_error)
        self.push = bool(push)
        self._lock = _fork.new_lock()
        # namespace -> key -> (encoded value, version, expires_at or None)
        self._entries: dict[str, dict[str, tuple[str, int, float | None]]] = {}
        self._versions: dict[str, int] = {}
        self._counters: dict[str, tuple[dict[str, float], float | None]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._watches: dict[str, list[Watch]] = {}
        self._audit = MemoryAudit(clock)  # the audit log (tipkit.audit)
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()

    def __repr__(self) -> str:
        return (
            f"<MemoryStore namespaces={len(self._entries)} "
            f"counters={len(self._counters)} buckets={len(self._buckets)}>"
        )

    # -- entries ---------------------------------------------------------------
    def _live(
        self, namespace: str, now: float
    ) -> dict[str, tuple[str, int, float | None]]:
        ns = self._entries.get(namespace)
        if ns is None:
            return {}
        expired = [k for k, (_, _, exp) in ns.items() if exp is not None and exp <= now]
        for k in expired:
            del ns[k]
        return ns

    def _bump(self, namespace: str) -> int:
        version = self._versions.get(namespace, 0) + 1
        self._versions[namespace] = version
        return version

    def get(self, namespace: str, key: str) -> Entry | None:
        """Return the entry at *key* in *namespace*, or ``None``."""
        with self._lock:
            found = self._live(namespace, self._clock.monotonic()).get(key)
        if found is None:
            return None
        return Entry(json.loads(found[0]), found[1])

    def set(
        self, namespace: str, key: str, value: JSON, *, ttl: float | None = None
    ) -> int:
        """Write *value*; return its new version."""
        encoded = _encode(value, f"{namespace}/{key}")
        with self._lock:
            now = self._clock.monotonic()
            ns = self._entries.setdefault(namespace, {})
            version = self._bump(namespace)
            ns[key] = (encoded, version, None if ttl is None else now + ttl)
        if self._watches:
            self._notify(namespace)
        return version

    def compare_and_set(
        self,
        namespace: str,
        key: str,
        value: JSON,
        *,
        version: int,
        ttl: float | None = None,
    ) -> int | None:
        """Write *value* only if the entry's version is *version* (0: absent)."""
        encoded = _encode(value, f"{namespace}/{key}")
        with self._lock:
            now = self._clock.monotonic()
            ns = self._live(namespace, now)
            current = ns.get(key)
            if (current[1] if current is not None else 0) != version:
                return None
            ns = self._entries.setdefault(namespace, ns)
            new = self._bump(namespace)
            ns[key] = (encoded, new, None if ttl is None else now + ttl)
        if self._watches:
            self._notify(namespace)
        return new

    def delete(self, namespace: str, key: str) -> bool:
        """Remove *key*; return whether it existed."""
        with self._lock:
            ns = self._live(namespace, self._clock.monotonic())
            if key not in ns:
                return False
            del ns[key]
            self._bump(namespace)
        if self._watches:
            self._notify(namespace)
        return True

    def snapshot(self, namespace: str) -> Snapshot:
        """Return every live entry of *namespace* and its version, atomically."""
        with self._lock:
            ns = dict(self._live(namespace, self._clock.monotonic()))
            version = self._versions.get(namespace, 0)
        return Snapshot(
            version, {k: Entry(json.loads(v), ver) for k, (v, ver, _) in ns.items()}
        )

    def version(self, namespace: str) -> int:
        """Return the namespace's version (0 if never written)."""
        return self._versions.get(namespace, 0)

    # -- change notifications ----------------------------------------------------
    def watch(self, namespace: str, callback: Callback) -> Watch:
        """Call *callback* (no arguments) after each write to *namespace*.

        The callback runs in the writing thread, after the write and outside
        the store's lock, so every user of this store in the process sees a
        write at once. Callbacks must be quick; one that raises is logged on
        the ``tipkit`` logger. A bound method is held weakly. Returns a
        :class:`~tipkit.stores.Subscription`; ``cancel()`` ends it. With
        ``push=False`` the watch is inert.
        """
        watch = Watch(namespace, callback, self._unwatch)
        if self.push:
            with self._lock:
                self._watches.setdefault(namespace, []).append(watch)
        return watch

    def _unwatch(self, watch: Watch) -> None:
        with self._lock:
            found = self._watches.get(watch.namespace, [])
            if watch in found:
                found.remove(watch)
            if not found:
                self._watches.pop(watch.namespace, None)

    def _notify(self, namespace: str) -> None:
        with self._lock:
            watches = list(self._watches.get(namespace, ()))
        for watch in watches:
            if not watch.fire():
                self._unwatch(watch)

    # -- counters --------------------------------------------------------------
    def increment(
        self,
        key: str,
        amounts: Mapping[str, float],
        *,
        ttl: float | None = None,
    ) -> dict[str, float]:
        """Add each amount to its field of *key*; return all fields' new totals."""
        for field, amount in amounts.items():
            if isinstance(amount, bool) or not isinstance(amount, int | float):
                raise TypeError(
                    f"increment {key}/{field}: amount must be a number, got {amount!r}"
                )
        with self._lock:
            now = self._clock.monotonic()
            fields, expires = self._counters.get(key, ({}, None))
            if expires is not None and expires <= now:
                fields = {}
            for field, amount in amounts.items():
                fields[field] = fields.get(field, 0) + amount
            self._counters[key] = (fields, now + ttl if ttl is not None else None)
            return dict(fields)

    def counters(self, key: str) -> dict[str, float]:
        """Return every field of the counters at *key* (empty if none)."""
        with self._lock:
            fields, expires = self._counters.get(key, ({}, None))
            if expires is not None and expires <= self._clock.monotonic():
                del self._counters[key]
                return {}
            return dict(fields)

    # -- token buckets -----------------------------------------------------------
    def take_tokens(
        self,
        key: str,
        tokens: float,
        *,
        rate: float,
        capacity: float,
        max_wait: float = 0.0,
    ) -> TokenTake:
        """Refill the bucket at *key* on this store's clock, then take *tokens*."""
        check_bucket_args(tokens, rate, capacity, max_wait)
        with self._lock:
            now = self._clock.monotonic()
            level, last = self._buckets.get(key, (capacity, now))
            level, result = take(level, last, now, tokens, rate, capacity, max_wait)
            if level >= capacity:
                # A full bucket is the same as no bucket: forget it (the TTL).
                self._buckets.pop(key, None)
            else:
                # max(): a clock that stepped back must not move the refill origin back.
                self._buckets[key] = (level, max(last, now))
            return result

    def close(self) -> None:
        """Do nothing: an in-process store holds no connections."""

    # -- async twins: the operations never block, so they run inline ------------
    aget = inline_twin(get)
    aset = inline_twin(set)  # noqa: A003  # the method above, not the builtin
    acompare_and_set = inline_twin(compare_and_set)
    adelete = inline_twin(delete)
    asnapshot = inline_twin(snapshot)
    aversion = inline_twin(version)
    aincrement = inline_twin(increment)
    acounters = inline_twin(counters)
    atake_tokens = inline_twin(take_tokens)
