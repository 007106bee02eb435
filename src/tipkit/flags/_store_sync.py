"""The store collaborator of :class:`~tipkit.flags.Flags`: one snapshot of shared state.

Kill switches, overrides and run-time split weights live in a store under one
namespace (``kill/<flag>``, ``override/<flag>``, ``split/<flag>``).
:class:`StoreSync` holds them as one immutable :class:`StoreState`, re-read at
most every ``refresh_interval`` seconds, at once when the store's ``watch``
says the namespace was written, and at once when another ``Flags`` sharing the
store object writes through :func:`notify_peers`.

Reading is split sans-I/O: :meth:`StoreSync.refresh` (sync store methods) and
:meth:`StoreSync.arefresh` (the store's async methods, for the event loop) only
fetch; :meth:`StoreSync.apply` turns what they fetched into state. A store
failure keeps the last known state (a kill stays in force) and is reported once
per outage (``StoreUnavailable`` / ``StoreRecovered``, policy ``keep_last``).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final

from tipkit.clock import Clock
from tipkit.stores import Entry, Snapshot, Store
from tipkit.stores._durable import Durable
from tipkit.stores._events import Outage

__all__ = [
    "KILL",
    "OVERRIDE",
    "SPLIT",
    "Splits",
    "StoreState",
    "StoreSync",
    "notify_peers",
    "read_splits",
]

KILL: Final = "kill/"
OVERRIDE: Final = "override/"
SPLIT: Final = "split/"

_INF = float("inf")

# Run-time splits as stored: {flag: {rule id or None: {variant: thousandths}}}.
Splits = dict[str, dict[str | None, dict[str, int]]]

# StoreSyncs sharing one store object, so a kill or override written through
# one Flags is seen by every one of them on its next evaluation (in process),
# even over a store whose watch does not push.
_PEERS: dict[int, weakref.WeakSet[StoreSync]] = {}
_PEERS_LOCK = threading.Lock()


def _new_peers_lock() -> None:  # pragma: no cover - runs in forked children only
    global _PEERS_LOCK  # noqa: PLW0603  # a lock held by another thread at fork is dead
    _PEERS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_new_peers_lock)


def notify_peers(store: object) -> None:
    """Expire the snapshot of every :class:`StoreSync` over *store* (this process)."""
    with _PEERS_LOCK:
        peers = list(_PEERS.get(id(store), ()))
    for peer in peers:
        if peer.store is store:
            peer.expire()


class StoreState:
    """What the store said, as of one read: immutable once built."""

    __slots__ = ("kills", "overrides", "splits", "version")

    def __init__(
        self,
        version: int,
        kills: frozenset[str],
        overrides: dict[str, Any],
        splits: Splits | None = None,
    ) -> None:
        self.version = version
        self.kills = kills
        self.overrides = overrides
        self.splits: Splits = {} if splits is None else splits


def read_splits(value: object) -> dict[str | None, dict[str, int]]:
    """Return a stored ``split/<flag>`` entry as ``{rule id or None: weights}``.

    Another process (or a hand edit) may have written anything: what is not a
    mapping of variant to non-negative int thousandths is left out here, and the
    rest is checked against the flag when applied.
    """
    out: dict[str | None, dict[str, int]] = {}
    if not isinstance(value, dict):
        return out
    for target, weights in value.items():
        if not isinstance(target, str) or not isinstance(weights, dict):
            continue
        if all(
            isinstance(n, str) and w.__class__ is int and w >= 0
            for n, w in weights.items()
        ):
            out[target or None] = dict(weights)
    return out


def _state_of(snap: Snapshot) -> StoreState:
    entries = snap.entries
    # A revive or a cleared override is written as a tombstone (False, None),
    # so a pending one can be replayed with compare-and-set: both read absent.
    kills = frozenset(
        k[len(KILL) :] for k, e in entries.items() if k.startswith(KILL) and e.value
    )
    overrides = {
        k[len(OVERRIDE) :]: e.value.get("value")
        for k, e in entries.items()
        if k.startswith(OVERRIDE) and isinstance(e.value, dict)
    }
    splits = {
        k[len(SPLIT) :]: read_splits(e.value)
        for k, e in entries.items()
        if k.startswith(SPLIT)
    }
    return StoreState(snap.version, kills, overrides, splits)


class StoreSync:
    """Keep one :class:`StoreState` of *namespace* in *store*, refreshed when due.

    *on_change* is called (no arguments, from the writing thread or the
    store's listener) when the snapshot must be re-read before the next
    evaluation. Not locked itself: its owner runs one refresh at a time.
    """

    __slots__ = (
        "__weakref__",
        "_on_change",
        "_outage",
        "_remerge",
        "_watch",
        "durable",
        "interval",
        "namespace",
        "next",
        "read",
        "state",
        "store",
    )

    def __init__(
        self,
        store: Store,
        namespace: str,
        interval: float,
        clock: Clock,
        on_change: Callable[[], object],
    ) -> None:
        """Watch *namespace* in *store*; *on_change* must be a bound method."""
        self.store = store
        self.namespace = namespace
        self.interval = interval
        self.state = StoreState(-1, frozenset(), {})
        self.read = Snapshot(-1, {})
        """The namespace as last read (version -1: never read)."""
        self._remerge = False
        # Due at once: the first evaluation reads the store, on the path it runs
        # on (sync or async), so building a Flags never blocks on the store.
        self.next = -_INF
        # Weak: the owner holds this object; a strong callback would be a cycle.
        self._on_change = weakref.WeakMethod(on_change)
        self._outage = Outage(namespace, "flags", "keep_last", clock=clock)
        # Kills, revives, overrides and splits act here at once and reach the
        # store when it answers (local-first): see tipkit.stores._durable.
        self.durable = Durable(
            store, namespace, outage=self._outage, clock=clock, on_change=self._local
        )
        with _PEERS_LOCK:
            _PEERS.setdefault(id(store), weakref.WeakSet()).add(self)
        # A store that pushes change notifications (RedisStore, MemoryStore)
        # expires the snapshot as soon as any process writes the namespace.
        # The store holds this bound method weakly.
        self._watch = store.watch(namespace, self.expire)

    def _local(self) -> None:
        # What this process wrote changed: serve it without waiting for a read.
        self._remerge = True
        callback = self._on_change()
        if callback is not None:
            callback()

    def take_remerge(self) -> bool:
        """Rebuild the state if local actions changed; return whether it did."""
        if not self._remerge:
            return False
        self._remerge = False
        self.state = self._merged()
        return True

    def base(self, key: str) -> int | None:
        """Return the version of *key* as last read (0: absent, ``None``: never read)."""
        if self.read.version < 0:
            return None
        entry = self.read.entries.get(key)
        return 0 if entry is None else entry.version

    def _merged(self) -> StoreState:
        read = self.read
        overlay = self.durable.overlay()
        if not overlay:
            return _state_of(read)
        entries = dict(read.entries)
        entries.update((k, Entry(v, 0)) for k, v in overlay.items())
        return _state_of(Snapshot(read.version, entries))

    def expire(self) -> None:
        """Make the snapshot due now (a write happened); thread-safe."""
        self.next = -_INF
        self.durable.recheck()
        callback = self._on_change()
        if callback is not None:
            callback()

    def refresh(self, now: float) -> bool:
        """Re-read the store with its sync methods; return whether the state changed.

        Blocks for one or two store round trips (bounded by the store's
        timeout). Never raises: a failure keeps the last state.
        """
        self.next = now + self.interval
        store, ns = self.store, self.namespace
        try:
            unchanged = store.version(ns) == self.state.version
            snap = None if unchanged else store.snapshot(ns)
        except Exception as exc:
            return self._failed(exc)
        return self.apply(snap)

    async def arefresh(self, now: float) -> bool:
        """:meth:`refresh` with the store's async methods: never blocks the loop.

        Awaits one or two store round trips (bounded by the store's timeout).
        Never raises but a cancellation: a failure keeps the last state, and a
        cancelled refresh is due again at once.
        """
        self.next = now + self.interval
        store, ns = self.store, self.namespace
        try:
            unchanged = await store.aversion(ns) == self.state.version
            snap = None if unchanged else await store.asnapshot(ns)
        except Exception as exc:
            return self._failed(exc)
        except BaseException:
            self.next = -_INF  # cancelled: the next evaluation tries again
            raise
        return self.apply(snap)

    def _failed(self, exc: Exception) -> bool:
        # Keep the last known kills and overrides: a store outage must not
        # revive a killed flag. Logged and published once per outage.
        self._outage.failed(exc)
        return self.take_remerge()

    def apply(self, snap: Snapshot | None) -> bool:
        """Take a fetched snapshot (``None``: unchanged); return whether state changed."""
        self._outage.ok()
        if snap is None:
            return self.take_remerge()
        self.read = snap
        self.durable.observe(snap)
        self._remerge = False
        self.state = self._merged()
        return True
