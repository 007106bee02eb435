"""The buckets of a keyed limiter in this process, in bounded memory.

Why not a ``cachetools.LRUCache``: its eviction forgets the least recently used
key whatever its level, which would let a key that is still refilling burst
again; and its lookup is Python code around a dict (about 210 ns per lookup
against 75 ns for ``OrderedDict.get`` + ``move_to_end``, benchmarks/ratelimit.py).
The table needs a different rule (forget only full buckets) on the hot path, so
it keeps the ordered dict.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from tipkit._core import _fork
from tipkit._core._tokens import Level

__all__ = ["KeyTable"]


class KeyTable:
    """One :class:`~tipkit._core._tokens.Level` per key, at most ``max_keys`` of them.

    A bucket is forgotten only once it has refilled completely, because a full
    bucket and an absent one behave the same: eviction can never let a key
    burst again. When every bucket is still refilling, a *new* key gets none
    (:meth:`take` returns ``None``) until one has refilled.

    Lookups are O(1); a new key at ``max_keys`` costs at most one full sweep per
    refill of the first bucket to refill (the sweep learns when that is), so a
    flood of new keys is refused in O(1). Thread-safe: one lock around a few
    operations; never reads a clock (every method takes *now*).
    """

    __slots__ = (
        "__weakref__",
        "_buckets",
        "_capacity",
        "_lock",
        "_rate",
        "_sweep_after",
        "max_keys",
    )

    def __init__(self, rate: float, capacity: float, max_keys: int) -> None:
        self._rate = rate
        self._capacity = capacity
        self.max_keys = max_keys
        self._sweep_after = -math.inf
        self._lock = _fork.new_lock()
        # Least recently touched first.
        self._buckets: OrderedDict[str, Level] = OrderedDict()
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float, tokens: float) -> float | None:
        """Take *tokens* from *key*'s bucket at *now* if they are there.

        Returns the seconds until they are there (``0.0``: taken), or ``None``
        when *key* is new and all ``max_keys`` buckets are still refilling
        (nothing was taken or stored).
        """
        buckets = self._buckets
        lock = self._lock
        lock.acquire()
        try:
            level = buckets.get(key)
            if level is not None:
                buckets.move_to_end(key)
                return level.take(now, tokens)
            if len(buckets) >= self.max_keys and not self._evict(now):
                return None
            level = Level(self._rate, self._capacity, self._capacity, now)
            wait = level.take(now, tokens)
            if not wait:
                # A bucket that refused stays full: the same as no bucket, not stored.
                buckets[key] = level
            return wait
        finally:
            lock.release()

    def tokens(self, key: str, now: float) -> float:
        """Return the tokens *key* could take at *now* (``capacity`` if unknown)."""
        with self._lock:
            level = self._buckets.get(key)
            return self._capacity if level is None else level.at(now)

    def refills_in(self, now: float) -> float:
        """Return the seconds until the first bucket is full (after a ``None``)."""
        return max(self._sweep_after - now, 1e-9)

    def _evict(self, now: float) -> bool:
        """Forget buckets that have refilled, stalest first; return whether any was."""
        buckets = self._buckets
        evicted = False
        while buckets:
            key, level = next(iter(buckets.items()))
            if level.full_at() > now:
                break
            del buckets[key]
            evicted = True
        if evicted or now < self._sweep_after:
            return evicted
        # The stalest bucket may be busy while a fresher one refilled (it was
        # touched with more tokens left); a full sweep finds it. When none has,
        # the sweep learns the earliest time one will be full: a bucket's full
        # time only moves later as it is used, so until then no sweep can find
        # one, and new keys are refused in O(1) instead of re-sweeping per key.
        soonest = math.inf
        for key, level in list(buckets.items()):
            full_at = level.full_at()
            if full_at <= now:
                del buckets[key]
                evicted = True
            elif full_at < soonest:
                soonest = full_at
        if not evicted:
            self._sweep_after = soonest
        return evicted
