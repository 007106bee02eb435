"""Fleet sharing: breakers of one name in many processes open and close together.

``CircuitBreaker(name, ..., store=store, share="state")`` gives the breaker a
:class:`FleetSync`, a collaborator that owns every store call the breaker
makes. Each process still counts outcomes in its own window (windows are not
merged: that would cost a round trip per call); what is shared is the
*decision*:

* when a breaker of this process opens, is forced open or closes, it writes
  ``{"state": ...}`` to ``breakers/<name>`` in the store (an OPEN entry expires
  after the breaker's open duration, on the store's clock, so a stale opening
  never reaches a process started later), right after the transition and
  outside the breaker's lock;
* every breaker re-reads that entry at most every ``refresh_interval`` seconds,
  on its own calls (one clock reading and one float comparison per call, as the
  flags snapshot does; no timer thread), and at once when the store's ``watch``
  says the namespace was written;
* a newer entry (its store version is above the last one seen) is adopted:
  ``open`` moves a CLOSED or HALF_OPEN breaker to OPEN (for its own
  ``open_duration``, from when it saw it), ``forced_open`` moves any breaker but
  a DISABLED one to FORCED_OPEN, and ``closed`` closes an OPEN, HALF_OPEN or
  FORCED_OPEN one. Adopted transitions publish ``BreakerStateChanged`` with
  reason ``"shared_state"`` and are not written back.

Sync faces read and write with the store's sync methods, async faces with its
async methods (``aget``/``aset``), so an event loop never waits on a socket.
Each store call blocks (or suspends) its caller for at most the store's
timeout. A store failure never changes the breaker's behaviour, whatever the
store's ``on_error`` says: the breaker keeps its local state (policy
``"keep_last"``), publishes ``StoreUnavailable`` once per outage and
``StoreRecovered`` after it, and tries again on its next refresh.

An opening (or a forced opening, or a close) that cannot be written is not
lost: it is queued in a :class:`~tipkit.stores._durable.Durable` (no I/O on the
caller's path) and replayed with compare-and-set when the store answers, an
opening only for what is left of its open duration. An entry is adopted when it
differs from the last one seen (not only when its version is higher: a store
restarted empty counts versions from 1 again), and an opening this process
wrote that reads absent before its time ran out (a store that lost its state)
is written back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta

from tipkit._core import _fork
from tipkit._core._check import check_seconds
from tipkit._core._flow import Call, Flow, adrive, drive
from tipkit.breaker._events import (
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    REASON_SHARED,
    BreakerState,
)
from tipkit.breaker._machine import Move
from tipkit.clock import Clock
from tipkit.errors import StoreError
from tipkit.stores._durable import Durable
from tipkit.stores._events import Outage
from tipkit.stores._protocol import JSON, Entry, KeyValueStore

__all__ = ["NAMESPACE", "FleetSync", "adoptable"]

NAMESPACE = "breakers"
_SHARED = {
    "open": OPEN,
    "forced_open": FORCED_OPEN,
    "closed": CLOSED,
    "disabled": DISABLED,  # `tipkit ops breakers disable` reaches every process
}
_PUBLISHED = (OPEN, FORCED_OPEN, CLOSED, DISABLED)
SKEW = 0.5
"""Seconds an adopted opening is forgotten before its ``until``: clock skew between hosts."""


def adoptable(shared: BreakerState, current: BreakerState) -> bool:
    """Return whether a breaker in state *current* adopts the fleet's *shared* state."""
    # DISABLED is shared too (an operator's `disable`), so the operator's next
    # word (force open, reset) ends it everywhere; an automatic opening does not.
    if shared is DISABLED:
        return current is not DISABLED
    if shared is OPEN:
        return current is CLOSED or current is HALF_OPEN
    if shared is FORCED_OPEN:
        return current is not FORCED_OPEN
    return current is not CLOSED


class FleetSync:
    """Read and write one breaker's shared state in a key-value store.

    *adopt* is called with ``(state, now)`` when a newer shared state is read
    (it takes the breaker's lock). Thread-safe and asyncio-safe: one thread or
    task reads the store at a time (the others keep deciding on the local
    state, never waiting), and the breaker hands transitions over with
    :meth:`note` under its lock and writes them with :meth:`push` or
    :meth:`apush` after releasing it.

    Raises:
        ValueError: *share* is not ``"state"``, or *refresh_interval* < 0.
        TypeError: *store* is not a :class:`~tipkit.stores.KeyValueStore`.
    """

    __slots__ = (
        "__weakref__",
        "_adopt",
        "_clock",
        "_outage",
        "_reading",
        "_seen",
        "_subscription",
        "durable",
        "interval",
        "name",
        "next",
        "outbox",
        "store",
    )

    def __init__(
        self,
        name: str,
        store: KeyValueStore,
        share: str | None,
        refresh_interval: float | timedelta,
        *,
        adopt: Callable[[BreakerState, float], None],
        clock: Clock,
    ) -> None:
        if share != "state":
            raise ValueError(
                f"CircuitBreaker {name!r}: store= needs share='state' (the only "
                f"shared mode; windows stay per process), got share={share!r}"
            )
        if not isinstance(store, KeyValueStore):
            raise TypeError(
                f"CircuitBreaker {name!r}: store must implement "
                f"tipkit.stores.KeyValueStore, got {store!r}"
            )
        interval = check_seconds(
            refresh_interval, f"CircuitBreaker {name!r}: refresh_interval", minimum=0
        )
        self.name = name
        self.store = store
        self.interval = interval
        self.next = -math.inf
        """The clock reading from which the shared state is due to be read again."""
        self._adopt = adopt
        self._seen: tuple[int, JSON] = (0, None)
        self.outbox: Move | None = None
        """The transition noted for the fleet and not yet written (or ``None``)."""
        self._reading = _fork.new_lock()
        self._clock = clock
        self._outage = Outage(name, "breaker", "keep_last", clock=clock)
        self.durable = Durable(
            store, NAMESPACE, outage=self._outage, clock=clock, epoch=False
        )
        """Transitions written while the store failed, replayed when it answers."""
        # A bound method is held weakly by the store: watching keeps nothing alive.
        self._subscription = store.watch(NAMESPACE, self._changed)
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._reading = _fork.new_lock()

    def __repr__(self) -> str:
        return f"<FleetSync {NAMESPACE}/{self.name} every {self.interval}s via {self.store!r}>"

    def _changed(self) -> None:
        self.next = -math.inf

    # -- reading ----------------------------------------------------------------------
    def pull(self, now: float) -> None:
        """Read the shared state and adopt it; blocks up to the store's timeout.

        Returns at once, reading nothing, while another thread or task reads it.
        A store failure is reported as an outage and changes nothing.
        """
        drive(self._pull(now))

    async def apull(self, now: float) -> None:
        """Async :meth:`pull`: awaits ``store.aget``, up to the store's timeout."""
        await adrive(self._pull(now))

    def _pull(self, now: float) -> Flow[None]:
        """The one body of :meth:`pull` and :meth:`apull` (a flow of store calls)."""
        if not self._reading.acquire(blocking=False):
            return
        try:
            self.next = now + self.interval
            try:
                entry = yield Call(self.store, "get", (NAMESPACE, self.name))
            except StoreError as exc:
                self._outage.failed(exc)
                return
            self._take(entry, now)
        finally:
            self._reading.release()

    def _take(self, entry: Entry | None, now: float) -> None:
        self._outage.ok()
        if entry is None:
            self.durable.absent(self.name)  # an opening of ours the store lost
            return
        seen = (entry.version, entry.value)
        if seen == self._seen or self.durable.ahead_of(self.name, entry.version):
            return  # nothing new, or ours is pending (replays with CAS) or unread
        self._seen = seen
        value = entry.value
        state = (
            _SHARED.get(str(value.get("state"))) if isinstance(value, dict) else None
        )
        if state is not None:
            self._adopt(state, now)
            self._learn(state, value)

    def _learn(self, state: BreakerState, value: dict[str, JSON]) -> None:
        """Know an adopted state as this process's own: written back if the store loses it.

        Every process that knows an opening restores it after an empty restart
        (anti-entropy), not only the one that wrote it. An opening is known
        until the wall-clock ``until`` its writer put in it, less ``SKEW`` (so a
        process whose clock runs behind never writes back an opening that
        expired on the store: it would open the fleet's breakers again); one
        written without ``until`` (an older tipkit) is not learnt. A forced
        opening or a disable holds until an operator's next word; a close is
        forgotten.
        """
        if state is CLOSED:
            self.durable.forget(self.name)
            return
        if state is not OPEN:
            self.durable.learn(self.name, value)
            return
        until = value.get("until")
        if isinstance(until, int | float) and not isinstance(until, bool):
            left = until - self._clock.time() - SKEW
            if left > 0:
                self.durable.learn(self.name, value, left)

    # -- writing ----------------------------------------------------------------------
    def note(self, moves: list[Move]) -> None:
        """Keep the last of *moves* the fleet should hear of (the breaker's lock held)."""
        for move in moves:
            if move.reason != REASON_SHARED and move.to_state in _PUBLISHED:
                self.outbox = move

    def _take_outbox(self) -> tuple[str, dict[str, JSON], float | None] | None:
        move, self.outbox = self.outbox, None
        if move is None:
            return None
        ttl = None if move.open_for is None else max(move.open_for, 0.001)
        value: dict[str, JSON] = {"state": move.to_state.value}
        if ttl is not None:
            # When the opening ends, in wall-clock seconds: a process that only
            # adopts it learns how long it holds (see _learn), not its own guess.
            value["until"] = round(self._clock.time() + ttl, 3)
        if self.durable.overlay():
            # An earlier transition is pending: queue behind it, never overtake it.
            self.durable.enqueue(self.name, value, base=self._seen[0], ttl=ttl)
            return None
        return self.name, value, ttl

    def push(self) -> None:
        """Write the noted transition; blocks up to the store's timeout.

        A store failure is reported as an outage and the transition queued
        (replayed with compare-and-set when the store answers; never raises).
        """
        drive(self._push())

    async def apush(self) -> None:
        """Async :meth:`push`: awaits ``store.aset``, up to the store's timeout."""
        await adrive(self._push())

    def _push(self) -> Flow[None]:
        """The one body of :meth:`push` and :meth:`apush` (a flow of store calls)."""
        item = self._take_outbox()
        if item is None:
            return
        key, value, ttl = item
        try:
            version = yield Call(
                self.store, "set", (NAMESPACE, key, value), {"ttl": ttl}
            )
        except StoreError as exc:
            self._outage.failed(exc)
            # Our own write failed: pending now (ActionPending; ActionFlushed when written).
            self.durable.enqueue(key, value, base=self._seen[0], ttl=ttl, failed=True)
            return
        self._wrote(version, value, ttl)

    def _wrote(self, version: int, value: JSON, ttl: float | None) -> None:
        self._outage.ok()
        self._seen = (version, value)
        if value.get("state") == "closed":
            self.durable.forget(self.name)
        else:
            self.durable.learn(
                self.name, value, ttl
            )  # written back if the store loses it
