"""A retry budget shared by a fleet: batched counters in a CounterStore.

All of the budget's store I/O and its failure policy live here. Each process
counts locally and, at most once per ``sync_interval``, adds what it counted
since the last exchange to one counter per window-long epoch
(``tipkit:retry_budget:<name>:<epoch>``; fields ``f<slot>`` and ``r<slot>`` hold
the first attempts and retries of each slot; expiring after three windows),
and reads the fleet's totals back from the same calls: at most two round
trips per exchange. The budget's window rule then counts the fleet's first attempts and
retries; its balance rule stays per process.

Bounded error: a process decides on fleet counts at most ``sync_interval``
seconds old, so over one window the fleet may overshoot the window rule by
what the other processes admitted in one interval; never by more. A failing
store keeps the last fleet counts (fail open to the local budget): what was
not sent is sent at the next interval (a failure between the two keys may count
one interval's deltas twice: more conservative, never less) and the error goes to the ``tipkit``
logger, never to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tipkit._core._flow import Call, Flow, adrive, drive
from tipkit.errors import StoreError
from tipkit.stores import CounterStore

__all__ = ["FleetShare"]

_log = logging.getLogger("tipkit")


class FleetShare:
    """The fleet's counts of one budget, and what this process has not sent yet.

    Used under no lock of the budget: two concurrent exchanges may both send a
    delta computed from the same ``_sent`` (the second sends zero); ``due``
    spaces them by ``sync_interval``.
    """

    __slots__ = (
        "_next",
        "_sent",
        "_store",
        "_unsent",
        "buckets",
        "firsts",
        "interval",
        "prefix",
        "retries",
        "window",
    )

    def __init__(
        self,
        store: CounterStore,
        name: str,
        window: float,
        buckets: int,
        interval: float,
    ) -> None:
        if not isinstance(store, CounterStore):
            raise TypeError(
                f"RetryBudget: store must be a CounterStore (increment/aincrement), got {store!r}"
            )
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)  # type: ignore[redundant-expr]  # untyped callers
            or interval <= 0
        ):
            raise ValueError(
                f"RetryBudget: sync_interval must be > 0, got {interval!r}"
            )
        self._store = store
        self.prefix = f"tipkit:retry_budget:{name}:"
        self.window = window
        self.buckets = buckets
        self.interval = float(interval)
        self._next = -float("inf")
        self._sent: dict[int, tuple[float, float]] = {}
        self._unsent: dict[int, tuple[float, float]] = {}
        self.firsts = 0.0  # the other processes' counts in the window, last read
        self.retries = 0.0

    def due(self, now: float) -> bool:
        """Return whether an exchange is due at *now*."""
        return now >= self._next

    def _plan(
        self, now: float, current: int, local: Iterable[tuple[int, float, float]]
    ) -> tuple[list[tuple[str, dict[str, float]]], float, float]:
        """Return the increments to send (key, fields) and this process's window totals."""
        self._next = now + self.interval
        oldest = current - self.buckets
        epochs: dict[int, dict[str, float]] = {
            e: {}
            for e in {
                max(0, current - self.buckets + 1) // self.buckets,
                current // self.buckets,
            }
        }
        mine_f = mine_r = 0.0
        sent = {}
        for slot, firsts, retries in local:
            if slot <= oldest:
                continue
            mine_f += firsts
            mine_r += retries
            sent_f, sent_r = self._sent.get(slot, (0.0, 0.0))
            fields = epochs.setdefault(slot // self.buckets, {})
            if firsts - sent_f:
                fields[f"f{slot}"] = firsts - sent_f
            if retries - sent_r:
                fields[f"r{slot}"] = retries - sent_r
            sent[slot] = (firsts, retries)
        self._unsent, self._sent = self._sent, sent
        plan = [
            (f"{self.prefix}{epoch}", fields or {f"f{current}": 0.0})
            for epoch, fields in epochs.items()
        ]
        return plan, mine_f, mine_r

    def _fleet(self, current: int, totals: dict[str, float]) -> tuple[float, float]:
        oldest = current - self.buckets
        firsts = retries = 0.0
        for field, value in totals.items():
            if int(field[1:]) <= oldest:
                continue
            if field[0] == "f":
                firsts += value
            else:
                retries += value
        return firsts, retries

    def _exchange(
        self, now: float, current: int, local: Iterable[tuple[int, float, float]]
    ) -> Flow[None]:
        """The exchange, once: ``increment`` each planned key, sum the fleet's totals."""
        plan, mine_f, mine_r = self._plan(now, current, local)
        fleet_f = fleet_r = 0.0
        try:
            for key, fields in plan:
                totals = yield Call(
                    self._store, "increment", (key, fields), {"ttl": 3 * self.window}
                )
                f, r = self._fleet(current, totals)
                fleet_f += f
                fleet_r += r
        except StoreError:
            self._failed()
            return
        self.firsts, self.retries = (
            max(0.0, fleet_f - mine_f),
            max(0.0, fleet_r - mine_r),
        )

    def exchange(
        self, now: float, current: int, local: Iterable[tuple[int, float, float]]
    ) -> None:
        """Send the deltas of every slot in the window, read the fleet's totals back."""
        drive(self._exchange(now, current, local))

    async def aexchange(
        self, now: float, current: int, local: Iterable[tuple[int, float, float]]
    ) -> None:
        """Async :meth:`exchange`: awaits ``aincrement`` only."""
        await adrive(self._exchange(now, current, local))

    def _failed(self) -> None:
        # What was not sent goes with the next exchange.
        self._sent = self._unsent
        _log.warning(
            "retry budget %r: store exchange failed; keeping the last fleet counts",
            self.prefix,
            exc_info=True,
        )
