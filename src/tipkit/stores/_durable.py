"""Durable, local-first safety actions: a pending-write queue any primitive can use.

A kill, a revive, an override, a split, a rollback or a breaker opening must act
here at once and reach the fleet when the store answers: an outage delays it,
never loses it. :class:`Durable` is that mechanism, for every primitive:

* :meth:`Durable.submit` writes now (one unconditional ``set``: the store
  answered, so this write is the newest) and, when the store fails, keeps the
  action **pending**; :meth:`Durable.enqueue` only queues (no I/O: for event
  loops and code holding a lock). The primitive serves :meth:`Durable.overlay`
  on top of what it read, so the action is in force locally at once.
* One daemon thread per process (started only while something is pending)
  retries every pending action every ``RETRY`` seconds, so a queued action
  reaches the store within ``RETRY`` plus one store timeout of the store
  answering again, with no call needed in the process that made it. A replayed
  action is a **compare-and-set** on the version this process last saw: if
  someone else wrote the key meanwhile, their newer write wins and the conflict
  is reported (:class:`ActionConflict`, a WARNING), never silently dropped. A
  replay finding the same value already there is a success.
* **Restart without persistence.** An epoch entry (``__epoch__``, a random id)
  is written in the namespace beside the first action. A namespace read without
  it, or with another one, means the store lost its state: the primitive calls
  :meth:`Durable.observe` with what it read, and every fact this process still
  knows (what it wrote or read last: a kill, an override, an open breaker) is
  written back with compare-and-set on "absent" (**anti-entropy**), once per
  loss, reported by :class:`StoreStateLost`. Keys without an epoch read use
  :meth:`Durable.absent` (a key known present is read absent before its time
  to live ran out).

Events (``_events``): ``ActionPending``, ``ActionFlushed``, ``ActionConflict``,
``StoreStateLost``; failures count in the primitive's own ``Outage`` (one report).

Thread-safe; fork-safe (a child keeps its pending actions, starts its own flusher).
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Final

from tipkit._core import _fork
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import StoreError
from tipkit.stores._action import Action
from tipkit.stores._events import (
    ActionConflict,
    ActionFlushed,
    ActionPending,
    Outage,
    StoreStateLost,
    report_lost,
    report_pending,
    report_settled,
)
from tipkit.stores._protocol import JSON, KeyValueStore, Snapshot

__all__ = [
    "EPOCH",
    "RETRY",
    "Action",
    "ActionConflict",
    "ActionFlushed",
    "ActionPending",
    "Durable",
    "StoreStateLost",
    "flush_all",
]

logger = logging.getLogger("tipkit")

EPOCH: Final = "__epoch__"
"""The key of a namespace's epoch entry (a random id written at first use)."""

RETRY: Final = 0.5
"""Seconds between replays of pending actions while any is pending."""


# ---------------------------------------------------------------------- durable


class Durable:
    """Pending safety writes, replay with compare-and-set, epoch and anti-entropy.

    Args:
        store: the key-value store.
        namespace: the namespace the actions write.
        outage: the primitive's outage tracker (one report per outage).
        clock: reads ``monotonic()`` for times to live and delays.
        on_change: called (no arguments, any thread) when :meth:`overlay`
            changed or the store should be re-read; held weakly if bound.
        epoch: keep an epoch entry in the namespace (primitives that read the
            whole namespace); ``False`` relies on :meth:`absent`.
        resolve: ``resolve(ours, theirs) -> bool``, asked when a replay finds
            another value: ``True`` writes ours over theirs (compare-and-set), e.g.
            a rollback over a rollout freshly created elsewhere. Default: theirs.
    """

    def __init__(
        self,
        store: KeyValueStore,
        namespace: str,
        *,
        outage: Outage,
        clock: Clock = SYSTEM_CLOCK,
        on_change: Callable[[], object] | None = None,
        epoch: bool = True,
        resolve: Callable[[JSON, JSON], bool] | None = None,
    ) -> None:
        self.store = store
        self._resolve = resolve
        self.namespace = namespace
        self.outage = outage
        self._clock = clock
        self._use_epoch = epoch
        self._lock = _fork.new_lock()
        self._flushing = _fork.new_lock()
        self._pending: dict[str, Action] = {}
        self._reporting: list[Action] = []  # settled, their event not yet out
        self._unseen: dict[str, Action] = {}
        self._facts: dict[str, tuple[JSON, float | None]] = {}
        self.epoch: str | None = None
        self._epoch_due = False
        self._verify = False
        self.lost = 0
        """How many times this process saw the store lose the namespace."""
        self._on_change: Callable[[], Callable[[], object] | None]
        if on_change is None:
            self._on_change = lambda: None
        elif hasattr(on_change, "__self__"):
            self._on_change = weakref.WeakMethod(on_change)
        else:
            self._on_change = lambda: on_change
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()
        self._flushing = _fork.new_lock()

    def __repr__(self) -> str:
        return f"<Durable {self.namespace!r} pending={len(self._pending)}>"

    # -- what the primitive serves -------------------------------------------------
    def pending(self) -> list[Action]:
        """Return the actions not yet in the store, oldest first.

        An action leaves this list after its ``ActionFlushed`` or
        ``ActionConflict`` was published and its callbacks ran: code that waits
        for an empty list has seen every event.
        """
        with self._lock:
            actions = [*self._reporting, *self._pending.values()]
        return sorted(actions, key=lambda a: a.since)

    def overlay(self) -> dict[str, JSON]:
        """Return ``{key: value}`` of actions in force here but maybe not yet read back."""
        with self._lock:
            out = {k: a.value for k, a in self._unseen.items()}
            out.update((k, a.value) for k, a in self._pending.items())
            return out

    def _changed(self) -> None:
        callback = self._on_change()
        if callback is not None:
            try:
                callback()
            except Exception:
                logger.exception("tipkit: a durable change callback raised")

    # -- acting ------------------------------------------------------------------------
    def submit(
        self, key: str, value: JSON, *, base: int | None, ttl: float | None = None
    ) -> Action:
        """Write *value* at *key* now; keep it pending if the store fails. Never raises.

        Blocks for one store round trip (two with the epoch at first use), each
        bounded by the store's timeout; none while the store is known down (queued
        at once). *base*: the entry's version as last read (``None``: never); a
        replay is a compare-and-set on it. *ttl*: seconds the value lives (a
        breaker opening); a pending action past it is dropped.
        """
        action = self._queue(key, value, base, ttl, fresh=not self.outage.down)
        self._changed()
        if not action.fresh:  # known down: the flusher writes it when it answers
            self._pended(action)
            return action
        with self._flushing:
            self._write_epoch_if_due()
            if action.state == "pending":
                self._try(action, replay=False)
        action.fresh = False  # from now on the flusher may replay it
        if action.state == "pending":
            self._pended(action)
        return action

    def enqueue(
        self,
        key: str,
        value: JSON,
        *,
        base: int | None,
        ttl: float | None = None,
        failed: bool = False,
    ) -> Action:
        """Queue *value* at *key* for the flusher thread: no I/O, never blocks.

        *failed*: the caller's own write of it just failed: it is reported
        pending now (``ActionPending``; ``ActionFlushed`` once written).
        """
        action = self._queue(key, value, base, ttl)
        self._changed()
        if failed:
            self._pended(action)
        else:
            _FLUSHER.wake(self)
        return action

    def _queue(
        self,
        key: str,
        value: JSON,
        base: int | None,
        ttl: float | None,
        *,
        fresh: bool = False,
    ) -> Action:
        now = self._clock.monotonic()
        action = Action(key, value, base, None if ttl is None else now + ttl, now)
        action.fresh = fresh
        with self._lock:
            mine = self._unseen.get(key)
            if mine is not None and (base is None or mine.version > base):
                # This process's own write, not yet read back, is no one else's.
                action.base = mine.version
            older = self._pending.get(key)
            if older is not None:
                # Replaying the newest only: it carries the version the first one saw.
                action.base = older.base
                action.since = older.since
                action.queued = older.queued
                older._settle("written" if older.value == value else "conflict")
            self._pending[key] = action
            self._facts[key] = (value, action.expires)
            if self._use_epoch and self.epoch is None:
                self._epoch_due = True
        return action

    def _pended(self, action: Action) -> None:
        with self._lock:
            first = not action.queued
            action.queued = True
        if first:
            report_pending(self.outage, action.key)
        _FLUSHER.wake(self)

    # -- what the primitive read ---------------------------------------------------------
    def observe(self, snap: Snapshot) -> None:
        """Take a namespace read: prune what it shows, learn facts, detect a lost store.

        No I/O: a write-back is queued for the flusher thread.
        """
        entries = snap.entries
        epoch = entries.get(EPOCH)
        lost = 0
        with self._lock:
            for key, action in list(self._unseen.items()):
                seen = entries.get(key)
                if seen is not None and seen.version >= action.version:
                    del self._unseen[key]
            if self._use_epoch:
                lost = self._epoch_read(
                    None if epoch is None else str(epoch.value), entries
                )
            if not lost:
                now = self._clock.monotonic()
                self._facts = {
                    k: (e.value, None) for k, e in entries.items() if k != EPOCH
                }
                self._facts.update(
                    (k, (a.value, a.expires))
                    for k, a in self._pending.items()
                    if a.expires is None or a.expires > now
                )
        if lost:
            self._report_lost(lost)

    def _epoch_read(self, epoch: str | None, entries: Mapping[str, object]) -> int:
        """Compare a read epoch with the known one (lock held); return facts to write back."""
        if epoch is None:
            if self.epoch is not None:
                self.epoch = None
                return self._lost_locked()
            if any(k != EPOCH for k in entries):
                self._epoch_due = True  # entries written without one (older code)
            return 0
        known, self.epoch = self.epoch, epoch
        return 0 if known is None or known == epoch else self._lost_locked()

    def absent(self, key: str) -> None:
        """Say *key* was read absent: write back a live fact of it (anti-entropy)."""
        now = self._clock.monotonic()
        with self._lock:
            fact = self._facts.get(key)
            if fact is None or key in self._pending:
                return
            value, expires = fact
            if expires is not None and expires - now < 0.001:
                del self._facts[key]
                return
            action = Action(key, value, 0, expires, now)
            action.queued = True
            self._pending[key] = action
            self.lost += 1
        self._report_lost(1)

    def recheck(self) -> None:
        """Have the flusher thread read the epoch: a lost store is seen with no call.

        Called when the namespace was written or the store's watch reconnected.
        No I/O in the caller; nothing to do until this process knows an epoch.
        """
        if self.epoch is not None and not self._verify:
            self._verify = True
            _FLUSHER.wake(self)

    def ahead_of(self, key: str, version: int) -> bool:
        """Whether our own write of *key* (pending, or unread) is newer than *version*.

        A read showing it (or newer) retires it. No I/O; for one-key readers.
        """
        with self._lock:
            if key in self._pending:
                return True
            mine = self._unseen.get(key)
            if mine is None:
                return False
            if version >= mine.version:
                del self._unseen[key]
                return False
            return True

    def learn(self, key: str, value: JSON, ttl: float | None = None) -> None:
        """Remember *value* at *key* as a fact (read or adopted here); no I/O."""
        expires = None if ttl is None else self._clock.monotonic() + ttl
        with self._lock:
            self._facts[key] = (value, expires)

    def forget(self, key: str) -> None:
        """Drop the fact at *key* (it no longer holds: a breaker closed)."""
        with self._lock:
            self._facts.pop(key, None)

    def _lost_locked(self) -> int:
        now = self._clock.monotonic()
        self.lost += 1
        self._epoch_due = True
        for key, (value, expires) in self._facts.items():
            if expires is not None and expires <= now:
                continue
            older = self._pending.get(key)
            if older is not None:
                older.base = 0
                continue
            action = Action(key, value, 0, expires, now)
            action.queued = True
            self._pending[key] = action
        for action in self._pending.values():
            action.base = 0
        self._unseen.clear()
        return max(1, len(self._pending))

    def _report_lost(self, facts: int) -> None:
        report_lost(self.outage, facts)
        _FLUSHER.wake(self)

    # -- writing ---------------------------------------------------------------------------
    def flush(self) -> bool:
        """Replay every pending action now; return whether none is left pending.

        Blocks for a few store round trips, each bounded by the store's timeout;
        stops at the first failure. Never raises.
        """
        with self._flushing:
            if not self._write_epoch_if_due():
                self._pended_all()
                return False
            for action in self.pending():
                if action.fresh:
                    continue  # its submitter is writing it (a replay would race it)
                if action.state == "pending" and not self._try(action, replay=True):
                    self._pended_all()
                    return False
        with self._lock:
            return not self._pending and not self._epoch_due

    def _pended_all(self) -> None:
        # A replay failed: every action queued without a failed write of its own
        # (enqueue()) is now known to wait for the store. Reported once each.
        with self._lock:
            news = [a for a in self._pending.values() if not (a.queued or a.fresh)]
            for action in news:
                action.queued = True
        for action in news:
            report_pending(self.outage, action.key)

    def _write_epoch_if_due(self) -> bool:
        if not (self._epoch_due or self._verify):
            return True
        store, ns = self.store, self.namespace
        try:
            entry = store.get(ns, EPOCH)
            if entry is None:
                fresh = uuid.uuid4().hex
                if store.compare_and_set(ns, EPOCH, fresh, version=0) is None:
                    entry = store.get(ns, EPOCH)
                epoch = fresh if entry is None else str(entry.value)
            else:
                epoch = str(entry.value)
        except StoreError as exc:
            self.outage.failed(exc)
            return False
        self.outage.ok()
        with self._lock:
            lost = self.epoch is not None and self.epoch != epoch
            self.epoch = epoch
            self._epoch_due = self._verify = False
            count = self._lost_locked() if lost else 0
        if count:
            self._epoch_due = False
            self._report_lost(count)
        return True

    def _try(self, action: Action, *, replay: bool) -> bool:
        """Write one action; return ``False`` if the store failed (it stays pending)."""
        now = self._clock.monotonic()
        ttl = None
        if action.expires is not None:
            ttl = action.expires - now
            if ttl < 0.001:
                self._settled(action, "expired", now)
                return True
        try:
            version = self._write(action, ttl, replay=replay)
        except StoreError as exc:
            self.outage.failed(exc)
            return False
        self.outage.ok()
        if version is None:
            self._settled(action, "conflict", now)
        else:
            action.version = version
            self._settled(action, "written", now)
        return True

    def _write(self, action: Action, ttl: float | None, *, replay: bool) -> int | None:
        """Do one action's round trips; return its version (``None``: theirs won)."""
        store, ns, key, value = self.store, self.namespace, action.key, action.value
        if not replay:
            return store.set(ns, key, value, ttl=ttl)
        version = None
        if action.base is not None:
            version = store.compare_and_set(
                ns, key, value, version=action.base, ttl=ttl
            )
        elif store.get(ns, key) is None:
            version = store.compare_and_set(ns, key, value, version=0, ttl=ttl)
        if version is not None:
            return version
        current = store.get(ns, key)
        if current is not None and current.value == value:
            return current.version
        if current is not None and self._wins(value, current.value):
            return store.compare_and_set(
                ns, key, value, version=current.version, ttl=ttl
            )
        return None

    def _wins(self, ours: JSON, theirs: JSON) -> bool:
        try:
            return self._resolve is not None and bool(self._resolve(ours, theirs))
        except Exception:
            logger.exception("tipkit: a durable resolve callback raised")
            return False

    def _settled(self, action: Action, state: str, now: float) -> None:
        with self._lock:
            if self._pending.get(action.key) is action:
                del self._pending[action.key]
                self._reporting.append(action)
            if state == "written":
                self._unseen[action.key] = action
            elif state == "conflict":
                self._facts.pop(action.key, None)
        action._settle(state)
        report_settled(self.outage, action, state, now - action.since)
        with self._lock:
            if action in self._reporting:
                self._reporting.remove(action)
        self._changed()

    def busy(self) -> bool:
        """Whether something waits for the flusher."""
        return bool(self._pending) or self._epoch_due or self._verify


# ---------------------------------------------------------------------- flusher


class _Flusher:
    """One daemon thread per process replaying every :class:`Durable` with work.

    Runs only while some durable has pending actions; waits on an event (never
    sleeps), so a new action wakes it at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._work: weakref.WeakSet[Durable] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self.interval = RETRY

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        if self._work:
            self._start()

    def wake(self, durable: Durable) -> None:
        with self._lock:
            self._work.add(durable)
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._start()

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="tipkit-durable-flush", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.clear()
            with self._lock:
                work = list(self._work)
            for durable in work:
                try:
                    flushed = durable.flush()
                except (
                    Exception
                ):  # a bug must not end the thread replaying every action
                    logger.exception("tipkit: replaying pending actions raised")
                    flushed = False
                if flushed:
                    with self._lock:
                        if not durable.busy():
                            self._work.discard(durable)
            del work
            with self._lock:
                if not self._work:
                    self._thread = None
                    return
            self._wake.wait(self.interval)

    def flush_all(self) -> bool:
        with self._lock:
            work = list(self._work)
        return [d.flush() for d in work].count(False) == 0  # every one tried


_FLUSHER = _Flusher()
_fork.register(_FLUSHER)


def flush_all() -> bool:
    """Replay every pending action of this process now; return whether all went.

    For a graceful shutdown (and tests): blocks for the round trips, each
    bounded by its store's timeout. Never raises.
    """
    return _FLUSHER.flush_all()
