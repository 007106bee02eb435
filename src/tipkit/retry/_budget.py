"""Retry budgets: how many retries a whole service may send, not one call.

A per-call retry policy cannot see that every call is retrying: a dependency at
100% failure then receives ``attempts`` times its normal traffic. A
:class:`RetryBudget` is shared by every retry policy (and hedge) that names it,
and admits a retry only while two rules hold (Finagle's and Envoy's budgets,
with both of their guarantees):

1. **the window rule**: retries in the last ``window`` seconds stay under
   ``ratio`` x first attempts in that window plus ``min_per_second`` x
   ``window``;
2. **the balance rule**: each first attempt deposits ``ratio`` tokens, time
   deposits ``min_per_second`` tokens a second, a retry spends one; the
   balance starts at (and never holds more than) ``min_per_second`` x
   ``window`` plus ``ratio`` x first attempts in the window.

The balance rule makes the whole-run bound exact: over any run, retries <=
``ratio`` x first attempts + ``min_per_second`` x elapsed seconds + one window's
floor (``min_per_second`` x ``window``). The window rule caps a burst.

The decision is pure and clock-driven: :meth:`RetryBudget.record_first` and
:meth:`RetryBudget.try_retry` take ``now``, a reading of the caller's clock.
Counts live in ``buckets`` slots of ``window / buckets`` seconds each; a first
attempt is one C-level counter increment (no lock) unless it crosses into a new
slot. Fleet sharing (``store=``) lives in :mod:`tipkit.retry._budget_store`.
"""

from __future__ import annotations

import itertools
import math
from datetime import timedelta
from typing import TYPE_CHECKING

from tipkit._core import _fork
from tipkit._core._durations import to_seconds
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.telemetry._counters import REGISTRY

if TYPE_CHECKING:
    from tipkit.retry._budget_store import FleetShare
    from tipkit.stores import CounterStore

__all__ = ["BUDGET_DECISIONS", "RetryBudget"]

BUDGET_DECISIONS = "tipkit.retry_budget.decisions"  # {decision}, by result
BUDGET_NAME = "tipkit.retry_budget.name"


def _positive(value: float | timedelta, arg: str, *, zero: bool) -> float:
    if isinstance(value, bool):
        raise TypeError(f"RetryBudget: {arg} must be a number, got {value!r}")
    if isinstance(value, timedelta):
        secs = to_seconds(value, f"RetryBudget: {arg}")
    elif isinstance(value, int | float):
        secs = float(value)
    else:
        raise TypeError(f"RetryBudget: {arg} must be a number, got {value!r}")
    if not math.isfinite(secs) or secs < 0 or (secs == 0 and not zero):
        need = ">= 0" if zero else "> 0"
        raise ValueError(f"RetryBudget: {arg} must be finite and {need}, got {value!r}")
    return secs


class RetryBudget:
    """Cap retries at a share of first attempts, across every policy that names it.

    ::

        budget = RetryBudget(ratio=0.1, min_per_second=10)

        @retry(on=ConnectionError, budget=budget)
        def fetch(): ...

    Args:
        name: names the budget in metrics and ``repr`` (default ``"retry"``).
        ratio: retries allowed per first attempt (default 0.1: at most 10% more
            load; Finagle's and gRPC's default).
        min_per_second: retries always allowed per second, so a service with
            little traffic can still retry (default 10, Finagle's).
        window: seconds of history the budget counts (default 10.0).
        buckets: slots the window is counted in (default 10): a first attempt
            counts for between ``window - window/buckets`` and ``window`` seconds.
        store: a :class:`~tipkit.stores.CounterStore` to share the budget across
            processes (see :mod:`tipkit.retry._budget_store`).
        sync_interval: with *store*, seconds between two exchanges with it.
        clock: the clock the retry policies read; used only by :meth:`snapshot`.

    Thread-safe: the counts are updated under one short lock (a first attempt
    inside the current slot takes no lock at all). Never blocks, never sleeps.
    With *store*, a due exchange runs inside :meth:`try_retry` (bounded by the
    store's timeout; a failing store keeps the local counts: fail open to this
    process's own budget).
    """

    __slots__ = (
        "__weakref__",
        "_balance",
        "_buckets",
        "_denied",
        "_edge",
        "_fleet",
        "_inc_allowed",
        "_inc_denied",
        "_last",
        "_lock",
        "_mark",
        "_pending",
        "_per",
        "_slot",
        "_width",
        "clock",
        "min_per_second",
        "name",
        "ratio",
        "window",
    )

    def __init__(
        self,
        name: str = "retry",
        *,
        ratio: float = 0.1,
        min_per_second: float = 10.0,
        window: float | timedelta = 10.0,
        buckets: int = 10,
        store: CounterStore | None = None,
        sync_interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(name, str) or not name:  # type: ignore[redundant-expr]  # callers without type checking pass anything
            raise TypeError(f"RetryBudget: name must be a non-empty str, got {name!r}")
        self.name = name
        self.ratio = _positive(ratio, "ratio", zero=True)
        self.min_per_second = _positive(min_per_second, "min_per_second", zero=True)
        self.window = _positive(window, "window", zero=False)
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:  # type: ignore[redundant-expr]  # untyped callers pass anything
            raise ValueError(
                f"RetryBudget: buckets must be an int >= 1, got {buckets!r}"
            )
        if not isinstance(clock, Clock):
            raise TypeError(
                f"clock must provide monotonic(), time(), sleep() and asleep(), got {clock!r}"
            )
        self.clock = clock
        self._width = self.window / buckets
        self._per = (
            buckets / self.window
        )  # slots per second: now * _per is exact for whole slots
        # Each slot: [slot index, first attempts, retries].
        self._buckets: list[list[float]] = [[-1, 0, 0] for _ in range(buckets)]
        self._lock = _fork.new_lock()
        _fork.register(self)
        self._pending = itertools.count()  # first attempts not yet folded in
        self._mark = 0
        self._slot = -1
        self._edge = -math.inf  # the end of the current slot: crossing it folds
        self._balance = self.min_per_second * self.window
        self._last: float | None = None
        self._denied = 0
        self._fleet: FleetShare | None = None
        if store is not None:
            from tipkit.retry._budget_store import FleetShare  # noqa: PLC0415  # only with a store

            self._fleet = FleetShare(store, name, self.window, buckets, sync_interval)
        attrs = {BUDGET_NAME: name}
        self._inc_allowed = REGISTRY.counter(
            BUDGET_DECISIONS, {**attrs, "tipkit.result": "allowed"}
        ).inc
        self._inc_denied = REGISTRY.counter(
            BUDGET_DECISIONS, {**attrs, "tipkit.result": "denied"}
        ).inc

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()

    def __repr__(self) -> str:
        return (
            f"<RetryBudget {self.name!r} ratio={self.ratio:g} "
            f"min_per_second={self.min_per_second:g} window={self.window:g}s "
            f"denied={self._denied}>"
        )

    # -- the decision ------------------------------------------------------------------
    def record_first(self, now: float) -> None:
        """Count a first attempt made at *now* (a reading of the caller's clock).

        Thread-safe; inside the current slot it is one atomic counter increment.
        """
        if now >= self._edge:
            with self._lock:
                self._fold(now)
        self._pending.__next__()

    def try_retry(self, now: float) -> bool:
        """Spend one retry at *now* if both rules allow it; return whether allowed.

        Counted either way (``tipkit.retry_budget.decisions``). Thread-safe.
        """
        fleet = self._fleet
        with self._lock:
            self._fold(now)
            firsts, retries = self._window_counts()
            if fleet is not None:
                firsts += fleet.firsts
                retries += fleet.retries
            floor = self.min_per_second * self.window
            allowed = (
                self._balance >= 1.0 and retries + 1 <= self.ratio * firsts + floor
            )
            if allowed:
                self._balance -= 1.0
                self._buckets[self._slot % len(self._buckets)][2] += 1
            else:
                self._denied += 1
        (self._inc_allowed if allowed else self._inc_denied)()
        return allowed

    def _fold(self, now: float) -> None:
        """Bring the slots and the balance up to *now*; call under the lock."""
        taken = self._pending.__next__()  # counts itself: hence the +1 below
        firsts = taken - self._mark
        self._mark = taken + 1
        slot = int(now * self._per)
        if slot > self._slot:
            if firsts and self._slot >= 0:
                # They were counted before this slot began: credit the old slot.
                self._bucket(self._slot)[1] += firsts
                self._balance += self.ratio * firsts
                firsts = 0
            self._slot = slot
            self._edge = (slot + 1) * self._width
            self._bucket(slot)
        if firsts:
            self._bucket(self._slot)[1] += firsts
            self._balance += self.ratio * firsts
        last = self._last
        if last is not None and now > last:
            self._balance += self.min_per_second * (now - last)
        if last is None or now > last:
            self._last = now
        window_firsts, _ = self._window_counts()
        cap = self.min_per_second * self.window + self.ratio * window_firsts
        self._balance = min(self._balance, cap)

    def _bucket(self, slot: int) -> list[float]:
        bucket = self._buckets[slot % len(self._buckets)]
        if bucket[0] != slot:
            bucket[0], bucket[1], bucket[2] = slot, 0, 0
        return bucket

    def _window_counts(self) -> tuple[float, float]:
        oldest = self._slot - len(self._buckets)
        firsts = retries = 0.0
        for slot, f, r in self._buckets:
            if slot > oldest:
                firsts += f
                retries += r
        return firsts, retries

    # -- fleet sharing: the retry drivers call these before a decision ------------------
    def _local_counts(self, now: float) -> tuple[int, list[tuple[int, float, float]]]:
        with self._lock:
            self._fold(now)
            slots = [(int(s), f, r) for s, f, r in self._buckets if s >= 0]
            return self._slot, slots

    def exchange_if_due(self, now: float) -> None:
        """With a store, send this process's counts and read the fleet's, when due.

        May block for the store's timeout; a failing store keeps the last fleet
        counts (logged). Does nothing without a store. Not for the event loop:
        async code awaits :meth:`aexchange_if_due`.
        """
        fleet = self._fleet
        if fleet is not None and fleet.due(now):
            fleet.exchange(now, *self._local_counts(now))

    async def aexchange_if_due(self, now: float) -> None:
        """Async :meth:`exchange_if_due`: awaits the store's async methods only."""
        fleet = self._fleet
        if fleet is not None and fleet.due(now):
            await fleet.aexchange(now, *self._local_counts(now))

    # -- live state --------------------------------------------------------------------
    @property
    def denied(self) -> int:
        """Retries this budget refused since it was built (this process)."""
        return self._denied

    def snapshot(self) -> dict[str, float]:
        """Return the window's first attempts, retries and the balance, as of now."""
        with self._lock:
            self._fold(self.clock.monotonic())
            firsts, retries = self._window_counts()
            return {"firsts": firsts, "retries": retries, "balance": self._balance}
