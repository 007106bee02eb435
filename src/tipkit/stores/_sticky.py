"""Sticky bucketing stores: where a user's sticky variant assignments are kept.

A *unit* is one bucketing identity, ``"<attribute>||<value>"`` (the attribute a
flag buckets by and its value, as GrowthBook names its assignment documents);
its assignments map a *slot* (``"<flag>__<sticky epoch>"``) to a variant name.
:class:`StickyStore` is the protocol ``Flags(sticky=...)`` uses;
:class:`MemoryStickyStore` keeps them in process (tests, one process), and
``RedisStickyStore`` (``stores/_sticky_redis.py``) in a Redis hash per unit
with a TTL, shared by a fleet. A store may raise on failure: the flag engine
catches it, counts it and buckets as if there were no store.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import timedelta
from typing import Protocol, runtime_checkable

from tipkit._core._durations import to_seconds
from tipkit.clock import SYSTEM_CLOCK, Clock

__all__ = ["MemoryStickyStore", "StickyStore"]

DEFAULT_TTL = 90 * 24 * 3600.0
"""How long a unit's assignments live after its last write (90 days)."""


@runtime_checkable
class StickyStore(Protocol):
    """Where sticky assignments live: one mapping of slot to variant per unit.

    The sync methods serve sync evaluations, the async ones async evaluations
    (never a sync call on an event loop). Each call is bounded in time; a
    failure may raise anything: the caller falls back to plain bucketing.
    """

    def get_assignments(self, unit: str) -> Mapping[str, str]:
        """Return the assignments of *unit* (``{}`` if none)."""
        ...

    def save_assignment(self, unit: str, slot: str, variant: str) -> None:
        """Record that *unit* was served *variant* in *slot*; renew the unit's TTL."""
        ...

    async def aget_assignments(self, unit: str) -> Mapping[str, str]:
        """:meth:`get_assignments` for async code."""
        ...

    async def asave_assignment(self, unit: str, slot: str, variant: str) -> None:
        """:meth:`save_assignment` for async code."""
        ...


class MemoryStickyStore:
    """Sticky assignments in this process: at most *max_units* units, least recent out.

    A unit's assignments expire *ttl* after its last write (read from *clock*).
    Thread-safe; never blocks on I/O; never raises.
    """

    __slots__ = ("_clock", "_lock", "_units", "max_units", "ttl")

    def __init__(
        self,
        *,
        ttl: float | timedelta = DEFAULT_TTL,
        max_units: int = 1_000_000,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.ttl = to_seconds(ttl, "ttl", allow_zero=False)
        if max_units < 1:
            raise ValueError(f"max_units must be a positive int, got {max_units!r}")
        self.max_units = max_units
        self._clock = clock
        self._lock = threading.Lock()
        self._units: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()

    def __repr__(self) -> str:
        return f"<MemoryStickyStore units={len(self._units)} ttl={self.ttl}>"

    def get_assignments(self, unit: str) -> Mapping[str, str]:
        """Return a copy of *unit*'s assignments (``{}`` if none or expired)."""
        now = self._clock.monotonic()
        with self._lock:
            found = self._units.get(unit)
            if found is None:
                return {}
            if found[0] <= now:
                del self._units[unit]
                return {}
            self._units.move_to_end(unit)
            return dict(found[1])

    def save_assignment(self, unit: str, slot: str, variant: str) -> None:
        """Record *variant* for *unit* in *slot* and renew the unit's expiry."""
        now = self._clock.monotonic()
        with self._lock:
            found = self._units.pop(unit, None)
            assigned = {} if found is None or found[0] <= now else found[1]
            assigned[slot] = variant
            self._units[unit] = (now + self.ttl, assigned)
            while len(self._units) > self.max_units:
                self._units.popitem(last=False)

    async def aget_assignments(self, unit: str) -> Mapping[str, str]:
        """:meth:`get_assignments` (no I/O: safe on an event loop)."""
        return self.get_assignments(unit)

    async def asave_assignment(self, unit: str, slot: str, variant: str) -> None:
        """:meth:`save_assignment` (no I/O: safe on an event loop)."""
        self.save_assignment(unit, slot, variant)
