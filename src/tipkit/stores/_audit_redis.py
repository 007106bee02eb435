"""The :class:`~tipkit.stores._audit.AuditStore` methods of ``RedisStore``: a Redis Stream.

The log is the stream ``<prefix>audit``. ``XADD`` with the id ``*`` makes the
server stamp each record with its own time (the id's milliseconds), so records
written by clients with skewed clocks still sort by when the server applied
them. The stream is trimmed only when ``audit_retention`` is set
(``MAXLEN ~ n``: at least the last *n* records are kept). With AOF
(``appendonly yes``) the stream survives a server restart like any other key;
without persistence it is lost with the rest of the data.

An audited compare-and-set is ``WATCH`` on the namespace's hash, a read of
the entry's version, then ``MULTI`` / the compare-and-set script / ``XADD`` /
``EXEC``: the server applies both or, if the namespace changed meanwhile or the
connection dropped before ``EXEC``, neither. On Redis Cluster the namespace
hashes and the stream share a hash tag (``{tipkit}:audit``, see
``RedisStore.cluster``), and the audited compare-and-set is one script on that
slot (``AUDITED_CAS``), atomic as the transaction is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from tipkit._core._flow import Call, Flow, adrive, drive
from tipkit.stores._audit import (
    AuditEntry,
    check_retention,
    encode_record,
    id_time,
    parse_id,
)
from tipkit.stores._protocol import JSON
from tipkit.stores._redis_conn import ERRORS, fail, redis
from tipkit.stores._redis_lua import SCRIPTS, check_version, entry, ttl_us

if TYPE_CHECKING:
    from tipkit.stores._redis_conn import Clients
    from tipkit.stores._redis_lua import Script

__all__ = ["RedisAuditMethods"]

_FIELD = "r"


def _stamped(raw_id: bytes | str, fields: Mapping[Any, Any]) -> AuditEntry:
    entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
    raw = fields.get(_FIELD.encode(), fields.get(_FIELD))
    record = json.loads(raw) if raw is not None else {}
    return AuditEntry(entry_id, id_time(entry_id), record)


class RedisAuditMethods:
    """A mixin giving ``RedisStore`` the audit log (see the module docs)."""

    prefix: str
    cluster: bool = False
    _control: str
    _scripts: dict[str, Script]
    _clients: Clients
    _audit_retention: int | None = None

    def _ns(self, namespace: str) -> str:  # pragma: no cover - RedisStore's
        raise NotImplementedError

    @property
    def audit_key(self) -> str:
        """The Redis key of the audit stream."""
        return f"{self._control}audit"

    @property
    def audit_retention(self) -> int | None:
        """Records the stream keeps (``None``, the default: all, never trimmed)."""
        return self._audit_retention

    @audit_retention.setter
    def audit_retention(self, retention: int | None) -> None:
        self._audit_retention = check_retention(retention)

    def _xadd_args(self, record: Mapping[str, JSON]) -> dict[str, Any]:
        args: dict[str, Any] = {"fields": {_FIELD: encode_record(record)}}
        if self._audit_retention is not None:
            args.update(maxlen=self._audit_retention, approximate=True)
        return args

    def _append(self, record: Mapping[str, JSON]) -> Flow[AuditEntry]:
        args = self._xadd_args(record)
        try:
            raw_id = yield Call(self, "_xadd", (args,))
        except ERRORS as exc:
            raise fail("append_audit", self.audit_key, exc) from exc
        return _stamped(raw_id, args["fields"])

    def _xadd(self, args: dict[str, Any]) -> bytes:
        def xadd() -> Any:
            return self._clients.sync.xadd(self.audit_key, **args)

        # Gated: a store known not to answer refuses it at once (StoreHealth).
        return cast(
            "bytes", self._clients.health.run("append_audit", self.audit_key, xadd)
        )

    async def _axadd(self, args: dict[str, Any]) -> bytes:
        async def xadd() -> Any:
            client = await self._clients.aclient()
            return await client.xadd(self.audit_key, **args)

        return cast(
            "bytes",
            await self._clients.health.arun("append_audit", self.audit_key, xadd),
        )

    def append_audit(self, record: Mapping[str, JSON]) -> AuditEntry:
        """``XADD`` *record* to the audit stream; return it with the server's id and time."""
        return drive(self._append(record))

    async def aappend_audit(self, record: Mapping[str, JSON]) -> AuditEntry:
        """Async :meth:`append_audit`, bounded by the store's timeout."""
        return await adrive(self._append(record))

    def read_audit(
        self, *, after: str | None = None, since: float | None = None
    ) -> list[AuditEntry]:
        """Return the records after id *after*, at or after *since* (server time)."""
        low = "-"
        if after is not None:
            low = "(" + after
        if since is not None:
            floor = f"{max(int(since * 1000), 0)}-0"
            if after is None or parse_id(floor) > parse_id(after):
                low = floor
        try:
            raw = self._clients.sync.xrange(self.audit_key, min=low, max="+")
        except ERRORS as exc:
            raise fail("read_audit", self.audit_key, exc) from exc
        return [
            _stamped(i, f)
            for i, f in cast("list[tuple[bytes, dict[bytes, bytes]]]", raw)
        ]

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
        """Compare-and-set an entry and ``XADD`` *record* in one transaction.

        Returns ``None`` (nothing written, nothing appended) when the entry's
        version is not *version* or the namespace changed before ``EXEC``.
        """
        nskey = self._ns(namespace)
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"))
        args = self._xadd_args(record)
        if self.cluster:
            return self._audited_script(nskey, key, encoded, version, args, ttl)
        cas = SCRIPTS["compare_and_set"]
        try:
            client: redis.Redis = self._clients.sync
            with client.pipeline(transaction=True) as pipe:
                pipe.watch(nskey)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                current = entry(pipe.eval(SCRIPTS["get"].source, 1, nskey, ":" + key))
                if (0 if current is None else current.version) != version:
                    pipe.unwatch()
                    return None
                pipe.multi()
                pipe.eval(
                    cas.source,
                    1,
                    nskey,
                    ":" + key,
                    encoded,
                    ttl_us(ttl),
                    check_version(version),
                )
                pipe.xadd(self.audit_key, **args)
                new, raw_id = pipe.execute()
        except redis.exceptions.WatchError as exc:
            if isinstance(exc.__cause__, ERRORS) or "occurred while watching" in str(
                exc
            ):
                # redis-py's word for a connection lost mid-transaction
                raise fail("audited_compare_and_set", nskey, exc) from exc
            return None
        except ERRORS as exc:
            raise fail("audited_compare_and_set", nskey, exc) from exc
        if new is None:  # pragma: no cover - the WATCH makes the script agree
            return None
        return int(new), _stamped(raw_id, args["fields"])

    def _audited_script(  # noqa: PLR0917 - private, called once, in order
        self,
        nskey: str,
        key: str,
        encoded: str,
        version: int,
        args: Mapping[str, Any],
        ttl: float | None,
    ) -> tuple[int, AuditEntry] | None:
        # One script on the shared slot: a cluster has no WATCH across nodes,
        # and needs none here (both keys are on one slot, the script is atomic).
        maxlen = "" if self._audit_retention is None else str(self._audit_retention)
        done = self._clients.run_keys(
            self._scripts["audited"],
            (nskey, self.audit_key),
            ":" + key,
            encoded,
            ttl_us(ttl),
            check_version(version),
            args["fields"][_FIELD],
            maxlen,
        )
        if done is None:
            return None
        return int(done[0]), _stamped(done[1], args["fields"])
