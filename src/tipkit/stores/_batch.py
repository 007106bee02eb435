"""Batched fleet-wide counters: count locally, add to the store every N or every T.

A rollout judged on the whole fleet's traffic needs the sum of every process's
outcome counts, but one round trip per request would put the store on the hot
path. :class:`CountBatcher` keeps the counts of this process since the last
flush and adds them to a store counters key with one ``increment`` (one round
trip, atomic) once ``every`` events were added or ``interval`` seconds passed;
the store answers with the fleet's totals, which is what a judge then reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from tipkit._core import _fork
from tipkit._core._durations import to_seconds
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import StoreError
from tipkit.stores._events import Outage
from tipkit.stores._protocol import CounterStore

__all__ = ["CountBatcher"]


class CountBatcher:
    """Add counts here, flush them to ``store.increment(key, ...)`` in batches.

    :meth:`add`/:meth:`flush` block for the round trip; :meth:`aadd`/:meth:`aflush`
    await ``store.aincrement`` instead, for async faces.

    Args:
        store: where the fleet's totals live.
        key: the counters key (one per rollout stage, for instance).
        every: flush once this many :meth:`add` calls are pending.
        interval: flush at the first :meth:`add` at least this many seconds
            after the last flush (so a quiet process still reports).
        ttl: time to live of the counters key (reset by each flush).
        name, component: name the owner in ``StoreUnavailable`` events.
        clock: read (``monotonic()``) once per :meth:`add`.

    Thread-safe: counts are merged under a lock; the round trip runs outside
    it, by the one thread that swapped the pending counts out. A failed flush
    keeps its counts for the next one (so nothing is lost while the store is
    down; a flush that timed out after the server applied it may be counted
    twice, an over-count bounded by one batch). Fork-safe: a forked child
    starts with nothing pending, so the parent's counts are sent once.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_lock",
        "_next_flush",
        "_outage",
        "_pending",
        "_pending_adds",
        "every",
        "interval",
        "key",
        "store",
        "totals",
        "ttl",
    )

    def __init__(
        self,
        store: CounterStore,
        key: str,
        *,
        every: int = 100,
        interval: float | timedelta = 1.0,
        ttl: float | timedelta | None = None,
        name: str | None = None,
        component: str = "rollout",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(store, CounterStore):
            raise TypeError(
                f"store must implement tipkit.stores.CounterStore, got {store!r}"
            )
        checked: object = every  # callers without type checking pass anything
        if isinstance(checked, bool) or not isinstance(checked, int) or checked < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        self.interval = to_seconds(interval, "interval")
        if self.interval < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval!r}")
        self.store = store
        self.key = key
        self.every = every
        self.ttl = None if ttl is None else to_seconds(ttl, "ttl")
        self._clock = clock
        self._lock = _fork.new_lock()
        self._pending: dict[str, float] = {}
        self._pending_adds = 0
        self._next_flush = clock.monotonic() + self.interval
        self._outage = Outage(name or key, component, "keep_last", clock=clock)
        self.totals: dict[str, float] = {}
        """The fleet's totals as of the last successful flush."""
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()
        self._pending = {}
        self._pending_adds = 0

    def __repr__(self) -> str:
        return (
            f"<CountBatcher {self.key!r} every={self.every} interval={self.interval:g}"
            f" pending={self._pending_adds} totals={self.totals!r}>"
        )

    @property
    def pending(self) -> dict[str, float]:
        """The counts added here and not yet in the store."""
        with self._lock:
            return dict(self._pending)

    def add(self, amounts: Mapping[str, float]) -> dict[str, float] | None:
        """Count *amounts*; flush when due. Return the fleet totals if it flushed.

        Blocks for one store round trip (bounded by the store's timeout) when it
        flushes; a failed flush keeps the counts (see :meth:`flush`).
        """
        return self.flush() if self._count(amounts) else None

    async def aadd(self, amounts: Mapping[str, float]) -> dict[str, float] | None:
        """Async :meth:`add`: a due flush awaits ``store.aincrement``, never blocking."""
        return await self.aflush() if self._count(amounts) else None

    def flush(self) -> dict[str, float] | None:
        """Add the pending counts to the store now; return the fleet totals.

        Returns ``None`` when the store failed (the counts stay pending, the
        outage is reported once). With nothing pending it just reads the totals.
        """
        batch, adds = self._swap()
        try:
            totals = self.store.increment(self.key, batch, ttl=self.ttl)
        except StoreError as exc:
            self._failed(batch, adds, exc)
            return None
        return self._flushed(totals)

    async def aflush(self) -> dict[str, float] | None:
        """Async :meth:`flush` through ``store.aincrement``: the same outcomes."""
        batch, adds = self._swap()
        try:
            totals = await self.store.aincrement(self.key, batch, ttl=self.ttl)
        except StoreError as exc:
            self._failed(batch, adds, exc)
            return None
        return self._flushed(totals)

    # The sync and async faces differ only in the awaited round trip: the
    # bookkeeping around it is these three steps.
    def _count(self, amounts: Mapping[str, float]) -> bool:
        """Merge *amounts* into the pending counts; return whether a flush is due."""
        now = self._clock.monotonic()
        with self._lock:
            pending = self._pending
            for field, amount in amounts.items():
                pending[field] = pending.get(field, 0) + amount
            self._pending_adds += 1
            return self._pending_adds >= self.every or now >= self._next_flush

    def _swap(self) -> tuple[dict[str, float], int]:
        with self._lock:
            batch, self._pending = self._pending, {}
            adds, self._pending_adds = self._pending_adds, 0
            self._next_flush = self._clock.monotonic() + self.interval
        return batch, adds

    def _failed(self, batch: dict[str, float], adds: int, exc: StoreError) -> None:
        self._outage.failed(exc)
        with self._lock:
            for field, amount in batch.items():
                self._pending[field] = self._pending.get(field, 0) + amount
            self._pending_adds += adds

    def _flushed(self, totals: dict[str, float]) -> dict[str, float]:
        self._outage.ok()
        self.totals = totals
        return totals
