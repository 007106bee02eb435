"""Where shared state lives: the store protocols and their implementations.

* :class:`KeyValueStore` (versioned entries, compare-and-set, snapshots, watches),
  :class:`CounterStore` (counters) and :class:`TokenStore` (token buckets): the
  narrow capabilities a primitive asks for; :class:`Store` is all of them.
* :class:`MemoryStore`: in process, the default.
* ``RedisStore``: a real Redis server, for fleets (``pip install 'tipkit[redis]'``).

A primitive keeps its state in its own core unless given ``store=``: the
in-process hot path never pays for the protocol.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from tipkit.stores._action import Action
from tipkit.stores._audit import AuditStore
from tipkit.stores._events import (
    ActionConflict,
    ActionFlushed,
    ActionPending,
    StoreRecovered,
    StoreStateLost,
    StoreUnavailable,
)
from tipkit.stores._memory import MemoryStore
from tipkit.stores._protocol import (
    JSON,
    CounterStore,
    Entry,
    KeyValueStore,
    OnError,
    Snapshot,
    Store,
    Subscription,
    TokenStore,
    TokenTake,
)
from tipkit.stores._sticky import MemoryStickyStore, StickyStore

if TYPE_CHECKING:
    from tipkit.stores._redis import RedisStore
    from tipkit.stores._sticky_redis import RedisStickyStore

__all__ = [
    "JSON",
    "Action",
    "ActionConflict",
    "ActionFlushed",
    "ActionPending",
    "AuditStore",
    "CounterStore",
    "Entry",
    "KeyValueStore",
    "MemoryStickyStore",
    "MemoryStore",
    "OnError",
    "Snapshot",
    "StickyStore",
    "Store",
    "StoreRecovered",
    "StoreStateLost",
    "StoreUnavailable",
    "Subscription",
    "TokenStore",
    "TokenTake",
]
if importlib.util.find_spec("redis") is not None:
    # Listed only when importable: `from tipkit.stores import *` must work without the extra.
    __all__ += ["RedisStickyStore", "RedisStore"]


def __getattr__(name: str) -> Any:
    # RedisStore imports the optional `redis` client: load it only when asked for.
    if name == "RedisStore":
        from tipkit.stores._redis import RedisStore  # noqa: PLC0415 - lazy on purpose

        return RedisStore
    if name == "RedisStickyStore":
        from tipkit.stores._sticky_redis import RedisStickyStore  # noqa: PLC0415 - lazy on purpose

        return RedisStickyStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
