"""The audit log: who did what to which safety control, when, and why.

Every state-changing safety action (a kill, a revive, an override, a split, a
rollout's pause / resume / promote / rollback, a breaker forced open, disabled
or reset, a tripwire's kill, an automatic rollback) is appended to the store's
audit log as one :class:`AuditRecord`: its id, the *store's* time, the actor
(a person, or ``"tipkit:<component>"`` for automatic actions), the action, the
target, the reason, the state before and after, and the runbook URL when the
target has one. The log lives in the store (:class:`~tipkit.stores._audit.AuditStore`):
a Redis Stream in ``RedisStore`` (server time, trimmed only by an explicit
``audit_retention``), a bounded list in ``MemoryStore``.

Each appended record is also published as an :class:`ActionAudited` event, so
it is exported as an OpenTelemetry log record by :func:`tipkit.telemetry.instrument`
(with ``log_events``) and reaches :class:`tipkit.alerts.Webhook`. Records hold
flag keys, names and numbers only, never evaluation contexts (the PII rules of
``docs/telemetry.md``).

Reading: :func:`read` (filtered by target, actor, time) and :func:`to_jsonl`
(one JSON object per line). :func:`replay` folds records into the state they
describe: replaying a whole log gives the final state of every audited target.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any, ClassVar, Final

from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import StoreError
from tipkit.stores._audit import AuditEntry, AuditStore
from tipkit.telemetry._events import BUS, AttributeValue, Event

__all__ = [
    "ActionAudited",
    "AuditRecord",
    "actor_or_default",
    "check_reason",
    "flush_pending",
    "parse_since",
    "pending",
    "read",
    "record",
    "replay",
    "to_jsonl",
]

logger = logging.getLogger("tipkit")

FIELDS: Final = (
    "id",
    "time",
    "actor",
    "action",
    "target",
    "reason",
    "before",
    "after",
    "runbook",
)
"""The fields of every record, in the order :func:`to_jsonl` writes them."""

_REASON_MAX: Final = 1000
_ACTOR_MAX: Final = 200


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited action, as stored.

    Attributes:
        id: the store's id (Redis Stream id ``"<ms>-<seq>"``): sorts in append order.
        time: when the store appended it (epoch seconds, the store's clock).
        actor: who: an operator, or ``"tipkit:<component>"`` for automatic actions.
        action: what, e.g. ``"flag.kill"``, ``"rollout.rollback"``, ``"breaker.open"``.
        target: which control: ``"flag:<key>"``, ``"rollout:<name>"``, ``"breaker:<name>"``.
        reason: why, in the actor's words (or the judge's).
        before, after: the target's state before and after (JSON objects).
        runbook: the target's runbook URL, if it has one.
        made_at: when the action was made, by the acting process's wall clock,
            if it differs from *time* (an action queued during an outage and
            applied later); ``None`` otherwise.
        details: numbers behind an automatic action (the judge's bound, rates).
    """

    id: str
    time: float
    actor: str
    action: str
    target: str
    reason: str
    before: dict[str, Any]
    after: dict[str, Any]
    runbook: str | None = None
    made_at: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-compatible dict (the export format)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in FIELDS}
        if self.made_at is not None:
            out["made_at"] = self.made_at
        if self.details:
            out["details"] = self.details
        return out

    @property
    def when(self) -> str:
        """The store time as an ISO 8601 UTC string."""
        return (
            datetime.fromtimestamp(self.time).astimezone().isoformat(timespec="seconds")
        )


@dataclass(frozen=True, slots=True)
class ActionAudited(Event):
    """A safety action was appended to the audit log.

    Attributes:
        name: the target (``"flag:<key>"`` ...).
        record: the :class:`AuditRecord` (its reason is exported only to
            in-process listeners such as webhooks, never as a telemetry attribute).
    """

    record: AuditRecord

    otel_name: ClassVar[str] = "tipkit.audit.action"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the target, action, actor and ids (no reason text, no state)."""
        r = self.record
        attrs: dict[str, AttributeValue] = {
            "tipkit.name": r.target,
            "tipkit.audit.action": r.action,
            "tipkit.audit.actor": r.actor,
            "tipkit.audit.id": r.id,
        }
        if r.runbook:
            attrs["tipkit.runbook"] = r.runbook
        return attrs


def check_reason(reason: object, what: str = "reason") -> str:
    """Return *reason* stripped, or raise ``ValueError`` if it is empty or not a string."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError(
            f"{what} must be a non-empty string saying why, got {reason!r}"
        )
    text = reason.strip()
    if len(text) > _REASON_MAX:
        raise ValueError(f"{what} is longer than {_REASON_MAX} characters")
    return text


def actor_or_default(actor: object) -> str:
    """Return *actor*, or the operating-system user running this process."""
    if actor is None:
        try:
            actor = getpass.getuser()
        except (OSError, KeyError):  # no user database entry (a container)
            actor = f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    if not isinstance(actor, str) or not actor.strip() or len(actor) > _ACTOR_MAX:
        raise ValueError(f"actor must be a non-empty name, got {actor!r}")
    return actor.strip()


def _from_entry(entry: AuditEntry) -> AuditRecord:
    r = entry.record
    return AuditRecord(
        id=entry.id,
        time=entry.time,
        actor=str(r.get("actor", "")),
        action=str(r.get("action", "")),
        target=str(r.get("target", "")),
        reason=str(r.get("reason", "")),
        before=dict(r.get("before") or {}),
        after=dict(r.get("after") or {}),
        runbook=r.get("runbook"),
        made_at=r.get("made_at"),
        details=dict(r.get("details") or {}),
    )


def stored(
    *,
    actor: str,
    action: str,
    target: str,
    reason: str,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    runbook: str | None = None,
    made_at: float | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the JSON object appended to the store for one action."""
    out: dict[str, Any] = {
        "actor": actor,
        "action": action,
        "target": target,
        "reason": reason,
        "before": dict(before),
        "after": dict(after),
    }
    if runbook:
        out["runbook"] = runbook
    if made_at is not None:
        out["made_at"] = made_at
    if details:
        out["details"] = dict(details)
    return out


def published(entry: AuditEntry) -> AuditRecord:
    """Turn an appended entry into its record and publish :class:`ActionAudited`."""
    rec = _from_entry(entry)
    if ActionAudited.listened:
        BUS.publish(ActionAudited(rec.target, rec))
    return rec


# Records that could not be appended (the store was down), per store object,
# appended in order on the next record() or flush_pending() that reaches it.
_PENDING: dict[int, tuple[AuditStore, list[dict[str, Any]]]] = {}
_PENDING_LOCK = threading.Lock()
_PENDING_MAX: Final = 1000


def record(
    store: object,
    *,
    actor: str | None,
    action: str,
    target: str,
    reason: str | None,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    runbook: str | None = None,
    made_at: float | None = None,
    details: Mapping[str, Any] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> AuditRecord | None:
    """Append one action to *store*'s audit log; never raises on a store failure.

    A store that is not an :class:`~tipkit.stores._audit.AuditStore` records
    nothing (``None``). When the store fails, the record is kept in this
    process with *made_at* set to the wall clock (*clock*), and appended before
    the next record for that store (or by :func:`flush_pending`): the log then
    says both when the action was made and when the store took it. Returns the
    record as stored, or ``None`` when it is pending or there is no log.
    Thread-safe.
    """
    if not isinstance(store, AuditStore):
        return None
    doc = stored(
        actor=actor_or_default(actor),
        action=action,
        target=target,
        reason=(reason or "").strip() or "(no reason given)",
        before=before,
        after=after,
        runbook=runbook,
        made_at=made_at,
        details=details,
    )
    if flush_pending(store):
        try:
            return published(store.append_audit(doc))
        except StoreError as exc:
            logger.warning("tipkit: audit record of %s kept for later: %s", target, exc)
    if "made_at" not in doc:
        doc["made_at"] = clock.time()
    with _PENDING_LOCK:
        _, queue = _PENDING.setdefault(id(store), (store, []))
        if len(queue) >= _PENDING_MAX:
            logger.error(
                "tipkit: audit records pending beyond %d: oldest dropped", _PENDING_MAX
            )
            del queue[0]
        queue.append(doc)
    return None


def pending(store: object) -> int:
    """Return how many audit records of *store* wait for it to answer."""
    with _PENDING_LOCK:
        found = _PENDING.get(id(store))
    return 0 if found is None else len(found[1])


def flush_pending(store: AuditStore) -> bool:
    """Append the records kept while *store* failed; return whether none is left."""
    with _PENDING_LOCK:
        found = _PENDING.get(id(store))
        if found is None or found[0] is not store:
            return True
        queue = found[1]
        while queue:
            try:
                published(store.append_audit(queue[0]))
            except StoreError:
                return False
            del queue[0]
        del _PENDING[id(store)]
    return True


def read(
    store: object,
    target: str | None = None,
    actor: str | None = None,
    since: float | timedelta | str | None = None,
    *,
    after: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> list[AuditRecord]:
    """Return the audit records of *store*, oldest first.

    Args:
        store: an :class:`~tipkit.stores._audit.AuditStore` (``MemoryStore``,
            ``RedisStore``).
        target: only this target: ``"flag:checkout"``, or a bare key/name
            (``"checkout"``) matching any kind.
        actor: only this actor.
        since: only records at or after this time: epoch seconds, a
            ``timedelta`` or a duration string (``"90s"``, ``"15m"``, ``"1h"``,
            ``"2d"``) back from *clock*'s ``time()``.
        after: only records after this id (what ``--follow`` polls with).
        clock: where *since* durations count back from (``time()``).

    Raises:
        TypeError: *store* keeps no audit log.
        ValueError: *since* is not a time or a duration.
        StoreError: the store could not be read.
    """
    if not isinstance(store, AuditStore):
        raise TypeError(f"{store!r} keeps no audit log (not an AuditStore)")
    floor = parse_since(since, clock)
    out = []
    for entry in store.read_audit(after=after, since=floor):
        rec = _from_entry(entry)
        if target is not None and not _matches(rec.target, target):
            continue
        if actor is not None and rec.actor != actor:
            continue
        out.append(rec)
    return out


def _matches(have: str, want: str) -> bool:
    return have == want or (":" not in want and have.partition(":")[2] == want)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_since(since: float | timedelta | str | None, clock: Clock) -> float | None:
    """Return *since* as epoch seconds (see :func:`read`); ``None`` stays ``None``."""
    if since is None:
        return None
    if isinstance(since, timedelta):
        return clock.time() - since.total_seconds()
    if isinstance(since, str):
        match = _DURATION.match(since)
        if match is None:
            try:
                return datetime.fromisoformat(since).timestamp()
            except ValueError:
                raise ValueError(
                    f"since must be a duration like 15m, 1h, 2d or an ISO time, "
                    f"got {since!r}"
                ) from None
        return clock.time() - float(match[1]) * _UNITS[match[2]]
    if isinstance(since, bool) or not isinstance(since, int | float):
        raise TypeError(f"since must be a time or a duration, got {since!r}")
    return float(since)


def to_jsonl(records: Iterable[AuditRecord], out: IO[str] | None = None) -> str:
    """Return *records* as JSON Lines (one object per record); also write to *out*."""
    text = "".join(
        json.dumps(r.as_dict(), sort_keys=False, separators=(",", ":")) + "\n"
        for r in records
    )
    if out is not None:
        out.write(text)
    return text


def replay(records: Iterable[AuditRecord]) -> dict[str, dict[str, Any]]:
    """Fold *records* in order into ``{target: state}``: each ``after`` updates its target.

    Replaying a complete log gives the final state of every audited target
    (each record's ``after`` holds the parts of the state its action set).
    """
    state: dict[str, dict[str, Any]] = {}
    for rec in records:
        state.setdefault(rec.target, {}).update(rec.after)
    return state
