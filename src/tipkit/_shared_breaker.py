"""Circuit breakers that share their state through a store: the fleet opens together.

``CircuitBreaker(name, ..., store=store, share="state")`` returns a
:class:`SharedBreaker`. Each process still counts outcomes in its own window
(windows are not merged: that would cost a round trip per call); what is shared
is the *decision*:

* when a breaker of this process opens, is forced open or closes, it writes
  ``{"state": ...}`` to ``breakers/<name>`` in the store (an OPEN entry expires
  after the breaker's open duration, on the store's clock, so a stale opening
  never reaches a process started later), right after the transition and
  outside the breaker's lock;
* every breaker re-reads that entry at most every ``refresh_interval`` seconds,
  on its own calls (one clock reading and one float comparison per call, as the
  flags snapshot does; no timer thread), and at once when a store that pushes
  changes (``RedisStore.watch``) says the namespace was written;
* a newer entry (its store version is above the last one seen) is adopted:
  ``open`` moves a CLOSED or HALF_OPEN breaker to OPEN (for its own
  ``open_duration``, from when it saw it), ``forced_open`` moves any breaker but
  a DISABLED one to FORCED_OPEN, and ``closed`` closes an OPEN, HALF_OPEN or
  FORCED_OPEN one. Adopted transitions publish ``BreakerStateChanged`` with
  reason ``"shared_state"`` and are not written back.

A store failure never changes the breaker's behaviour: it keeps its local state,
publishes ``StoreUnavailable`` once per outage and ``StoreRecovered`` after it,
and tries again on the next refresh.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from tipkit._core import _fork
from tipkit._core._durations import to_seconds
from tipkit.breaker import (
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    BreakerState,
    CircuitBreaker,
    Ticket,
    _Phase,
)
from tipkit.errors import StoreError
from tipkit.stores._events import Outage
from tipkit.stores._protocol import Store
from tipkit.telemetry._events import BUS, Event

if TYPE_CHECKING:
    from tipkit.stores._redis import Watch

__all__ = ["NAMESPACE", "REASON_SHARED", "SharedBreaker"]

P = ParamSpec("P")
R = TypeVar("R")

NAMESPACE = "breakers"
REASON_SHARED = "shared_state"
_SHARED = {"open": OPEN, "forced_open": FORCED_OPEN, "closed": CLOSED}


class SharedBreaker(CircuitBreaker):
    """A :class:`~tipkit.breaker.CircuitBreaker` whose transitions the fleet shares.

    Built by ``CircuitBreaker(..., store=..., share="state")``; see the module
    docs for what is shared and how fast. Thread-safe: the store is read by one
    thread at a time (others keep deciding on the local state) and written
    outside the breaker's lock. Reads the breaker's clock (``monotonic()``)
    once more per call than an unshared breaker.
    """

    __slots__ = (
        "_adopting",
        "_outage",
        "_outbox",
        "_seen",
        "_shared_interval",
        "_shared_next",
        "_store",
        "_sync_lock",
        "_watch",
    )

    def _init_shared(
        self,
        store: Store | None,
        share: str | None,
        refresh_interval: float | timedelta,
    ) -> None:
        if share != "state":
            raise ValueError(
                f"CircuitBreaker {self.name!r}: store= needs share='state' (the "
                f"only shared mode; windows stay per process), got share={share!r}"
            )
        if not isinstance(store, Store):
            raise TypeError(
                f"CircuitBreaker {self.name!r}: store must implement "
                f"tipkit.stores.Store, got {store!r}"
            )
        interval = to_seconds(refresh_interval, "CircuitBreaker: refresh_interval")
        if interval < 0:
            raise ValueError(
                f"CircuitBreaker {self.name!r}: refresh_interval must be >= 0, "
                f"got {refresh_interval!r}"
            )
        self._store = store
        self._shared_interval = interval
        self._shared_next = -math.inf
        self._seen = 0
        self._outbox: tuple[BreakerState, float | None] | None = None
        self._adopting = False
        self._sync_lock = _fork.new_lock()
        self._outage = Outage(self.name, "breaker", "keep_last", clock=self._clock)
        watch = getattr(store, "watch", None)
        self._watch: Watch | None = (
            watch(NAMESPACE, self._shared_changed) if watch else None
        )

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._sync_lock = _fork.new_lock()

    @property
    def store(self) -> Store:
        """The store the state is shared through."""
        return self._store

    def _shared_changed(self) -> None:
        self._shared_next = -math.inf

    # -- reading and adopting the shared state -----------------------------------
    def sync(self) -> None:
        """Read the shared state now and adopt it (normally done when due)."""
        self._sync(self._clock.monotonic())

    def _sync(self, now: float) -> None:
        if not self._sync_lock.acquire(blocking=False):
            return  # another thread is reading it; decide on the local state
        try:
            self._shared_next = now + self._shared_interval
            try:
                entry = self._store.get(NAMESPACE, self.name)
            except StoreError as exc:
                self._outage.failed(exc)
                return
            self._outage.ok()
            if entry is None or entry.version <= self._seen:
                return
            self._seen = entry.version
            value = entry.value
            state = (
                _SHARED.get(str(value.get("state")))
                if isinstance(value, dict)
                else None
            )
            if state is not None:
                self._adopt(state, now)
        finally:
            self._sync_lock.release()

    def _adopt(self, state: BreakerState, now: float) -> None:
        events: list[Event] = []
        with self._lock:
            current = self._state
            if state is OPEN:
                wanted = current is CLOSED or current is HALF_OPEN
            elif state is FORCED_OPEN:
                wanted = current is not FORCED_OPEN and current is not DISABLED
            else:
                wanted = current in (OPEN, HALF_OPEN, FORCED_OPEN)
            if wanted:
                self._adopting = True
                try:
                    self._transition(state, REASON_SHARED, now, events)
                finally:
                    self._adopting = False
        for event in events:
            BUS.publish(event)

    # -- publishing this process's transitions --------------------------------------
    def _transition(
        self, to: BreakerState, reason: str, now: float, events: list[Event]
    ) -> None:
        super()._transition(to, reason, now, events)
        if not self._adopting and to in _PUBLISHED:
            # Written after the lock is released (see _flush): a slow store must
            # not stall the decisions of other threads.
            self._outbox = (to, self._open_until - now if to is OPEN else None)

    def _flush(self) -> None:
        item, self._outbox = self._outbox, None
        if item is None:
            return
        to, ttl = item
        try:
            version = self._store.set(
                NAMESPACE,
                self.name,
                {"state": to.value},
                ttl=None if ttl is None else max(ttl, 0.001),
            )
        except StoreError as exc:
            self._outage.failed(exc)
            return
        self._outage.ok()
        self._seen = max(self._seen, version)

    def _release(self, ticket: Ticket, error: BaseException | None, now: float) -> None:
        super()._release(ticket, error, now)
        if self._outbox is not None:
            self._flush()

    def _record_ok(self, phase: _Phase, start: float, end: float) -> None:
        super()._record_ok(phase, start, end)
        if self._outbox is not None:
            self._flush()

    def _admit_slow(self, now: float) -> Ticket:
        try:
            return super()._admit_slow(now)
        finally:
            if self._outbox is not None:
                self._flush()

    def _operate(self, to: BreakerState, reason: str) -> None:
        super()._operate(to, reason)
        if self._outbox is not None:
            self._flush()

    # -- the faces: check the shared state when due, then decide as usual -------------
    def _step(self, now: float, pending: object) -> Ticket:
        if now >= self._shared_next:
            self._sync(now)
        return super()._step(now, pending)

    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        inner = super()._wrap_sync(fn)
        monotonic = self._clock.monotonic
        breaker = self

        @functools.wraps(fn)
        def shared(*args: P.args, **kwargs: P.kwargs) -> R:
            now = monotonic()
            if now >= breaker._shared_next:
                breaker._sync(now)
            return inner(*args, **kwargs)

        return shared

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        inner = super()._wrap_async(fn)
        monotonic = self._clock.monotonic
        breaker = self

        @functools.wraps(fn)
        async def shared(*args: P.args, **kwargs: P.kwargs) -> R:
            now = monotonic()
            if now >= breaker._shared_next:
                breaker._sync(now)
            return await inner(*args, **kwargs)

        return shared


_PUBLISHED = (OPEN, FORCED_OPEN, CLOSED)
