"""The audit capability of a store: an append-only log of operator and safety actions.

:class:`AuditStore` is a capability protocol of its own (as ``CounterStore``
and ``TokenStore`` are): a store that implements it keeps an append-only list
of records, each stamped with an id and the *store's* time when it was
appended. :class:`~tipkit.stores.MemoryStore` keeps a bounded list
(:data:`MEMORY_AUDIT_MAX` records, the oldest dropped); ``RedisStore`` keeps a
Redis Stream (``XADD``, the id is the server's time), trimmed only when its
``audit_retention`` is set (``XADD ... MAXLEN ~ n``).

Records are JSON objects; what goes in them is :mod:`tipkit.audit`'s business.
:meth:`AuditStore.audited_compare_and_set` writes an entry and appends its
record as one atomic step (a ``MULTI``/``EXEC`` transaction watched on the
namespace in Redis): either both happen or neither, so an audit log replayed
in order gives the final state, and a store that goes away mid-action leaves
nothing half-written.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, runtime_checkable

from tipkit.stores._inline import inline_twin
from tipkit.stores._protocol import JSON

if TYPE_CHECKING:
    from tipkit.clock import Clock

__all__ = [
    "MEMORY_AUDIT_MAX",
    "AuditEntry",
    "AuditStore",
    "MemoryAudit",
    "check_retention",
    "encode_record",
    "id_time",
    "next_id",
    "parse_id",
]

MEMORY_AUDIT_MAX: Final = 10_000
"""Records a :class:`~tipkit.stores.MemoryStore` keeps by default (oldest dropped)."""


class AuditEntry(NamedTuple):
    """One stored audit record: its id, the store's time (epoch seconds) and the record."""

    id: str
    time: float
    record: dict[str, JSON]


def parse_id(entry_id: str) -> tuple[int, int]:
    """Return ``(milliseconds, sequence)`` of an id like Redis's ``"1767225600000-0"``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def id_time(entry_id: str) -> float:
    """Return the store's time (epoch seconds) an id like ``"1767225600000-0"`` stamps."""
    return parse_id(entry_id)[0] / 1000


def encode_record(record: Mapping[str, JSON]) -> str:
    """Return *record* as compact JSON (``ValueError`` for NaN or infinity)."""
    return json.dumps(dict(record), allow_nan=False, separators=(",", ":"))


def next_id(last: str | None, now: float) -> str:
    """Return the id after *last* at wall time *now*: never smaller, as Redis's ``*``."""
    ms = int(now * 1000)
    if last is not None:
        last_ms, last_seq = parse_id(last)
        if ms <= last_ms:
            return f"{last_ms}-{last_seq + 1}"
    return f"{ms}-0"


def check_retention(retention: object) -> int | None:
    """Return *retention* (records kept, ``None``: all) or raise ``ValueError``."""
    if retention is None:
        return None
    if isinstance(retention, bool) or not isinstance(retention, int) or retention < 1:
        raise ValueError(
            f"audit_retention must be a positive number of records or None, "
            f"got {retention!r}"
        )
    return retention


@runtime_checkable
class AuditStore(Protocol):
    """An append-only log of records stamped with the store's time.

    Thread-safe; a backend failure raises :class:`tipkit.errors.StoreError`.
    """

    def append_audit(self, record: Mapping[str, JSON]) -> AuditEntry:
        """Append *record*; return it with its id and the store's time."""
        ...

    def read_audit(
        self, *, after: str | None = None, since: float | None = None
    ) -> list[AuditEntry]:
        """Return records in order: those after id *after*, at or after time *since*."""
        ...

    def audited_compare_and_set(
        self,
        namespace: str,
        key: str,
        value: JSON,
        *,
        version: int,
        record: Mapping[str, JSON],
        ttl: float | None = None,
    ) -> tuple[int, AuditEntry] | None:
        """Compare-and-set an entry and append *record*, atomically.

        Returns the entry's new version and the appended record, or ``None``
        (nothing written, nothing appended) when the entry changed meanwhile.
        """
        ...

    async def aappend_audit(self, record: Mapping[str, JSON]) -> AuditEntry:
        """Async :meth:`append_audit`, bounded by the store's timeout."""
        ...


class MemoryAudit:
    """The bounded, in-process audit list of one :class:`~tipkit.stores.MemoryStore`.

    Ids follow Redis's form (``<ms>-<seq>`` of the store clock's ``time()``)
    and never go backwards. Thread-safe.
    """

    __slots__ = ("_clock", "_entries", "_last", "lock")

    def __init__(self, clock: Clock, maxlen: int = MEMORY_AUDIT_MAX) -> None:
        self._clock = clock
        self._entries: deque[tuple[str, float, str]] = deque(maxlen=maxlen)
        self._last: str | None = None
        # Held across an audited write and its append, so their order is one.
        self.lock = threading.RLock()

    @property
    def maxlen(self) -> int | None:
        """How many records are kept."""
        return self._entries.maxlen

    def resize(self, maxlen: int | None) -> None:
        """Keep at most *maxlen* records from now on (``None``: the default bound)."""
        with self.lock:
            size = MEMORY_AUDIT_MAX if maxlen is None else maxlen
            self._entries = deque(self._entries, maxlen=size)

    def append(self, record: Mapping[str, JSON]) -> AuditEntry:
        """Append *record* (copied as JSON); return it stamped."""
        encoded = encode_record(record)
        with self.lock:
            now = self._clock.time()
            entry_id = next_id(self._last, now)
            self._last = entry_id
            stamp = id_time(entry_id)
            self._entries.append((entry_id, stamp, encoded))
        return AuditEntry(entry_id, stamp, json.loads(encoded))

    def read(
        self, *, after: str | None = None, since: float | None = None
    ) -> list[AuditEntry]:
        """Return the records after id *after*, at or after *since*, in order."""
        with self.lock:
            entries = list(self._entries)
        floor = parse_id(after) if after is not None else None
        return [
            AuditEntry(i, t, json.loads(r))
            for i, t, r in entries
            if (floor is None or parse_id(i) > floor) and (since is None or t >= since)
        ]


def memory_audited_cas(  # noqa: PLR0917  # the protocol method's arguments, passed on
    store: Any,
    audit: MemoryAudit,
    namespace: str,
    key: str,
    value: JSON,
    version: int,
    record: Mapping[str, JSON],
    ttl: float | None,
) -> tuple[int, AuditEntry] | None:
    """Compare-and-set on a MemoryStore and append, in one order (nothing fails here)."""
    with audit.lock:
        new = store.compare_and_set(namespace, key, value, version=version, ttl=ttl)
        if new is None:
            return None
        return new, audit.append(record)


class MemoryAuditMethods:
    """The :class:`AuditStore` methods of :class:`~tipkit.stores.MemoryStore`.

    A mixin over the store's ``_audit`` (a :class:`MemoryAudit`).
    """

    _audit: MemoryAudit

    @property
    def audit_retention(self) -> int | None:
        """How many audit records are kept (the oldest are dropped beyond it)."""
        return self._audit.maxlen

    @audit_retention.setter
    def audit_retention(self, retention: int | None) -> None:
        self._audit.resize(check_retention(retention))

    def append_audit(self, record: Mapping[str, JSON]) -> AuditEntry:
        """Append *record* to the bounded audit list; return it stamped."""
        return self._audit.append(record)

    def read_audit(
        self, *, after: str | None = None, since: float | None = None
    ) -> list[AuditEntry]:
        """Return the audit records after id *after*, at or after *since*, in order."""
        return self._audit.read(after=after, since=since)

    def audited_compare_and_set(
        self,
        namespace: str,
        key: str,
        value: JSON,
        *,
        version: int,
        record: Mapping[str, JSON],
        ttl: float | None = None,
    ) -> tuple[int, AuditEntry] | None:
        """Compare-and-set an entry and append *record*, in one order."""
        return memory_audited_cas(
            self, self._audit, namespace, key, value, version, record, ttl
        )

    aappend_audit = inline_twin(append_audit)
