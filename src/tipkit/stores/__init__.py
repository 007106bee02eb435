"""Where shared state lives: the :class:`Store` protocol and its implementations.

* :class:`MemoryStore`: in process, the default.
* ``RedisStore``: a real Redis server, for fleets (``pip install 'tipkit[redis]'``).

A primitive keeps its state in its own core unless given ``store=``: the
in-process hot path never pays for the protocol.
"""

from __future__ import annotations

from tipkit.stores._memory import MemoryStore
from tipkit.stores._protocol import JSON, Entry, Snapshot, Store, TokenTake

__all__ = ["JSON", "Entry", "MemoryStore", "Snapshot", "Store", "TokenTake"]
