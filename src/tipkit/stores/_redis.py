"""RedisStore: every store protocol on a real Redis server, shared by a whole fleet.

Imported only when :class:`RedisStore` is used (``from tipkit.stores import
RedisStore`` loads it lazily), so the ``redis`` client stays an optional extra.

Every operation is one round trip and atomic: a Lua script called by SHA
(``EVALSHA``, the scripts and the key layout are in ``_redis_lua.py``), loaded
with ``SCRIPT LOAD`` the first time the server says ``NOSCRIPT`` (a new or
restarted server, or after ``SCRIPT FLUSH``), or a single command. The clients
(bounded, never retrying) are made in ``_redis_conn.py``.

Every write to a namespace also ``PUBLISH``es its new version on a channel named
like the namespace's key, inside the same script: :meth:`RedisStore.watch`
subscribes to it (``_redis_listen.py``), so a kill switch written by one process
invalidates the cached flag state of every other process within a pub/sub
delivery, not a refresh interval. A publish nobody listens to costs the server
next to nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, cast

from tipkit._core import _fork
from tipkit._core._durations import to_seconds
from tipkit.stores._audit_redis import RedisAuditMethods
from tipkit.stores._memory import _encode
from tipkit.stores._protocol import (
    JSON,
    Entry,
    OnError,
    Snapshot,
    TokenTake,
    check_on_error,
)

# redis from _redis_conn: it names the extra to install when the client is missing.
from tipkit.stores._redis_conn import Clients, redis
from tipkit.stores._redis_listen import Listener
from tipkit.stores._redis_lua import (
    PACKED_MAX,
    SCRIPTS,
    SCRIPTS_CLASSIC,
    SHARDED_SCRIPTS,
    amount_args,
    bucket_args,
    check_version,
    entry,
    fields,
    number,
    pack,
    take_reply,
    ttl_ms,
    ttl_us,
)
from tipkit.stores._redis_lua import snapshot as snapshot_reply
from tipkit.stores._redis_target import Target
from tipkit.stores._watch import Callback, Watch

__all__ = ["OnError", "RedisStore", "Watch", "cluster_tag"]


def cluster_tag(prefix: str) -> str:
    """Return the prefix of a store's namespace and audit keys on a Redis Cluster.

    A prefix that has a hash tag (``"{checkout}:"``) is kept: every key of the
    store is then on that one slot. Otherwise the prefix, without its trailing
    colons, becomes the tag: ``"tipkit:"`` gives ``"{tipkit}:"``.
    """
    opened = prefix.find("{")
    if opened >= 0 and prefix.find("}", opened + 1) > opened + 1:
        return prefix
    return "{" + (prefix.rstrip(":") or "tipkit") + "}:"


def _version(raw: Any) -> int:
    return 0 if raw is None else int(cast("bytes", raw))


def _counters(raw: Any) -> dict[str, float]:
    return {k.decode(): number(v) for k, v in cast("dict[bytes, bytes]", raw).items()}


class RedisStore(RedisAuditMethods):
    """The :class:`~tipkit.stores.Store` on a real Redis server, for fleets.

    Args:
        url_or_client: a Redis URL (``redis://[user:password@]host:port/db``,
            ``rediss://`` for TLS, ``unix://path``, ``redis+cluster://``,
            ``redis+sentinel://``), or a ``redis.Redis``, ``redis.asyncio.Redis``
            or ``RedisCluster`` client, used as it is: with a client you pass,
            its own timeouts and retry policy apply.
        prefix: prepended to every Redis key tipkit writes. Give each
            application (or test) its own. A hash tag (``"{tipkit}:"``) puts
            every key on one Redis Cluster slot.
        timeout: seconds (or a ``timedelta``) bounding each connect and each
            reply on the clients tipkit creates, which never retry: a call
            returns or raises within ``timeout`` (twice that when it must
            reconnect first). The default, 0.25 s, is about three times
            the slowest reply measured from a healthy Redis on a 2-core
            machine kept busy by four CPU-bound processes and eight client
            threads (40,000 calls: p99.9 29 ms, max 79 ms; docs/fleet.md):
            a busy but healthy machine never trips it, a hung server costs
            a request at most a quarter second.
        on_error: what the primitives using this store do while it fails:
            ``"fail_open"`` (the default: limiters admit, flags keep the last
            state they read) or ``"fail_closed"`` (limiters refuse). The store
            itself always raises :class:`~tipkit.errors.StoreError`; this
            attribute is the policy it carries for its users.
        push: let :meth:`watch` subscribe to change notifications (the
            default), so flags, shared breakers and rollouts see a write by
            any process within a pub/sub delivery. ``False``: watches never
            fire and they rely on their refresh interval alone (no listener
            thread, one connection fewer per process).
        cluster: the URL names any node of a Redis Cluster (the same as a
            ``redis+cluster://`` URL, or passing a ``redis.cluster.RedisCluster``
            client). Namespaces and the audit stream then share the hash tag
            of the prefix (``{tipkit}:ns:flags``: one slot); buckets and
            counters are spread key by key (docs/fleet.md).
        sentinel: ``[(host, port), ...]`` of Redis Sentinels, with
            *service_name* the master they monitor (or a
            ``redis+sentinel://h1:p1,h2:p2/service/db`` URL, or a client from
            ``Sentinel(...).master_for(...)``): the store follows failovers.
        service_name: the Sentinel service (with *sentinel*).
        sharded_pubsub: on a cluster, publish with ``SPUBLISH`` and subscribe
            with ``SSUBSCRIBE`` on the primary owning the namespaces' slot (the
            default, Redis 7+); ``False``: classic ``PUBLISH``/``SUBSCRIBE``.

    Every operation is one round trip and atomic on the server (a Lua script
    by SHA, or one command). Expiry and token refill use the Redis server's
    clock (``TIME``), never the client's, so clients with skewed clocks agree.

    Raises :class:`~tipkit.errors.StoreError` (the redis exception as
    ``__cause__``) when the server cannot be reached, times out or answers
    with an error. Reconnection is automatic: the next call after the server
    comes back succeeds.

    Thread-safe (redis-py's connection pool) and fork-safe (the pool reconnects
    in a forked child). Async twins use ``redis.asyncio`` with one client per
    event loop, created on first use and closed when that loop shuts down (as
    ``asyncio.run`` does) or by :meth:`aclose`.
    """

    def __init__(
        self,
        url_or_client: str
        | redis.Redis
        | redis.asyncio.Redis
        | redis.cluster.RedisCluster
        | redis.asyncio.cluster.RedisCluster
        | None = None,
        *,
        prefix: str = "tipkit:",
        timeout: float | timedelta = 0.25,
        on_error: OnError = "fail_open",
        push: bool = True,
        cluster: bool = False,
        sentinel: Sequence[tuple[str, int]] | None = None,
        service_name: str | None = None,
        sharded_pubsub: bool = True,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {prefix!r}")
        if url_or_client is None and sentinel is None:
            raise TypeError("RedisStore needs a Redis URL, a client, or sentinel=")
        target = Target(
            url_or_client,
            cluster=bool(cluster),
            sentinel=sentinel,
            service_name=service_name,
        )
        self.timeout = to_seconds(timeout, "timeout", allow_zero=False)
        if self.timeout < 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.prefix = prefix
        self.on_error: OnError = check_on_error(on_error)
        self.push = bool(push)
        self.cluster = target.mode == "cluster"
        self.sharded_pubsub = self.cluster and bool(sharded_pubsub)
        # On a cluster the namespaces and the audit stream share one hash tag
        # (one slot, so the audited compare-and-set is one script); buckets and
        # counters are hashed key by key, spread over every primary.
        self._control = cluster_tag(prefix) if self.cluster else prefix
        if self.sharded_pubsub:
            self._scripts = SHARDED_SCRIPTS
        else:
            self._scripts = SCRIPTS_CLASSIC if self.cluster else SCRIPTS
        self._clients = Clients(target, self.timeout, self._scripts)
        self.url = self._clients.url
        self._lock = threading.Lock()
        self._listener: Listener | None = None
        self._packed: dict[
            tuple[str, float, float, float, float], tuple[bytes, tuple[str, ...]]
        ] = {}
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._clients.after_fork_in_child()
        if self._listener is not None:
            self._listener.restart_in_child()

    def __repr__(self) -> str:
        return (
            f"<RedisStore url={self.url!r} prefix={self.prefix!r} "
            f"timeout={self.timeout} on_error={self.on_error!r}>"
        )

    # -- clients -----------------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        """The synchronous client this store talks through.

        A ``redis.Redis`` (a ``redis.cluster.RedisCluster`` on a cluster, which
        has the same command methods), made on first use when the store was
        given a URL or an async client.
        """
        return cast("redis.Redis", self._clients.sync)

    def _new_pubsub(self) -> Any:
        return self._clients.new_pubsub(
            self._control_channel.decode(), sharded=self.sharded_pubsub
        )

    @property
    def _control_channel(self) -> bytes:
        # A channel the listener always holds, on the namespaces' slot (sharded).
        return f"{self._control}ctl".encode() if self.cluster else b"tipkit:ctl"

    def _ns(self, namespace: str) -> str:
        return f"{self._control}ns:{namespace}"

    def _counters_key(self, key: str) -> str:
        return f"{self.prefix}c:{key}"

    def _bucket_key(self, key: str) -> str:
        return f"{self.prefix}tb:{key}"

    # -- each command's script and arguments, once for the sync and async methods ------
    def _on_entry(self, script: str, namespace: str, key: str) -> tuple[Any, ...]:
        return (self._scripts[script], self._ns(namespace), ":" + key)

    def _set_args(
        self, namespace: str, key: str, value: JSON, ttl: float | timedelta | None
    ) -> tuple[Any, ...]:
        encoded = _encode(value, f"{namespace}/{key}")
        return (*self._on_entry("set", namespace, key), encoded, ttl_us(ttl))

    def _cas_args(
        self,
        namespace: str,
        key: str,
        value: JSON,
        version: int,
        ttl: float | timedelta | None,
    ) -> tuple[Any, ...]:
        encoded = _encode(value, f"{namespace}/{key}")
        return (
            *self._on_entry("compare_and_set", namespace, key),
            encoded,
            ttl_us(ttl),
            check_version(version),
        )

    def _increment_args(
        self, key: str, amounts: Mapping[str, float], ttl: float | timedelta | None
    ) -> tuple[Any, ...]:
        args = amount_args(key, amounts)
        return (self._scripts["increment"], self._counters_key(key), ttl_ms(ttl), *args)

    def _take_args(
        self, key: str, tokens: float, rate: float, capacity: float, max_wait: float
    ) -> tuple[Any, ...]:
        args = bucket_args(tokens, rate, capacity, max_wait)
        return (self._scripts["take_tokens"], self._bucket_key(key), *args)

    def _version_call(self, namespace: str) -> tuple[str, str, Any]:
        key = self._ns(namespace)
        return ("version", key, lambda c: c.hget(key, "version"))

    def _counters_call(self, key: str) -> tuple[str, str, Any]:
        rkey = self._counters_key(key)
        return ("counters", rkey, lambda c: c.hgetall(rkey))

    # -- entries -------------------------------------------------------------------
    def get(self, namespace: str, key: str) -> Entry | None:
        """Return the live entry at *key* in *namespace*, or ``None``."""
        return entry(self._clients.run(*self._on_entry("get", namespace, key)))

    def set(
        self,
        namespace: str,
        key: str,
        value: JSON,
        *,
        ttl: float | timedelta | None = None,
    ) -> int:
        """Write *value* (expiring after *ttl* seconds of server time); return its version."""
        return int(self._clients.run(*self._set_args(namespace, key, value, ttl)))

    def compare_and_set(
        self,
        namespace: str,
        key: str,
        value: JSON,
        *,
        version: int,
        ttl: float | timedelta | None = None,
    ) -> int | None:
        """Write *value* only if the entry's version is *version* (0: absent).

        Returns the new version, or ``None`` when the entry changed meanwhile.
        """
        new = self._clients.run(*self._cas_args(namespace, key, value, version, ttl))
        return None if new is None else int(new)

    def delete(self, namespace: str, key: str) -> bool:
        """Remove *key*; return whether it existed (and was live)."""
        return bool(self._clients.run(*self._on_entry("delete", namespace, key)))

    def snapshot(self, namespace: str) -> Snapshot:
        """Return every live entry of *namespace* and its version, atomically."""
        return snapshot_reply(
            self._clients.run(self._scripts["snapshot"], self._ns(namespace))
        )

    def version(self, namespace: str) -> int:
        """Return the namespace's version (0 if never written)."""
        return _version(self._clients.call(*self._version_call(namespace)))

    # -- counters --------------------------------------------------------------------
    def increment(
        self,
        key: str,
        amounts: Mapping[str, float],
        *,
        ttl: float | timedelta | None = None,
    ) -> dict[str, float]:
        """Add each amount to its field of *key*; return all fields' new totals.

        *ttl* (server time) applies to the whole key and is reset by each call;
        ``None`` removes it.
        """
        return fields(self._clients.run(*self._increment_args(key, amounts, ttl)))

    def counters(self, key: str) -> dict[str, float]:
        """Return every field of the counters at *key* (empty if none)."""
        return _counters(self._clients.call(*self._counters_call(key)))

    # -- token buckets -----------------------------------------------------------------
    def take_tokens(
        self,
        key: str,
        tokens: float,
        *,
        rate: float,
        capacity: float,
        max_wait: float = 0.0,
    ) -> TokenTake:
        """Refill the bucket at *key* on the Redis server's clock, then take *tokens*.

        The same arithmetic as :class:`~tipkit.stores.MemoryStore`, run inside
        one script: elapsed server time is clamped at 0 and the level at
        *capacity*, so neither a client's clock nor a server clock step can
        over-admit. Idle buckets expire once they would have refilled.
        """
        script = self._scripts["take_tokens"]
        clustered = self.cluster and self._clients.owns_sync
        if not self._clients.fast and not clustered:
            args = self._take_args(key, tokens, rate, capacity, max_wait)
            return take_reply(self._clients.run(*args), tokens, rate)
        # The same bucket sends the same command every time: build it once.
        packed_key = (key, tokens, rate, capacity, max_wait)
        found = self._packed.get(packed_key)
        if found is None:
            args = bucket_args(tokens, rate, capacity, max_wait)
            packed = pack(
                b"EVALSHA",
                script.sha.encode(),
                b"1",
                self._bucket_key(key).encode(),
                *(a.encode() for a in args),
            )
            if len(self._packed) >= PACKED_MAX:
                self._packed.clear()
            found = self._packed[packed_key] = (packed, args)
        if clustered:
            bkey = self._bucket_key(key)
            raw = self._clients.send_to_slot(script, bkey, found[0], found[1])
        else:
            raw = self._clients.send(script, key, found[0])
        return take_reply(raw, tokens, rate)

    # -- change notifications -------------------------------------------------------
    def watch(self, namespace: str, callback: Callback) -> Watch:
        """Call *callback* (no arguments) whenever *namespace* is written, by anyone.

        Every write to a namespace publishes its new version (see the module
        docs); a listener thread of this store, started on the first watch,
        calls the namespace's callbacks from that thread, typically within a
        millisecond of the write. It also calls every callback after each
        (re)connection, since writes made while it was disconnected were not
        delivered. Callbacks must be quick and must not raise (errors are
        logged on the ``tipkit`` logger); a bound method is held weakly, so
        watching does not keep its object alive. Flags, shared breakers and
        rollouts watch their namespaces by themselves.

        Delivery is best effort (pub/sub has no replay): users of a watch keep
        refreshing on their interval, which bounds staleness when a
        notification is lost.

        Returns a :class:`Watch`; ``watch.cancel()`` ends it. With
        ``push=False`` the watch is inert.
        """
        with self._lock:
            if self._listener is None:
                self._listener = Listener(
                    self._new_pubsub,
                    control=self._control_channel,
                    sharded=self.sharded_pubsub,
                )
            listener = self._listener
        channel = self._ns(namespace).encode()
        watch = Watch(namespace, callback, listener.remove, channel)
        if self.push:
            listener.add(watch)
        return watch

    @property
    def watching(self) -> bool:
        """Whether the server has subscribed every watched namespace (a write is heard)."""
        listener = self._listener
        return listener is not None and listener.ready.is_set()

    def close(self) -> None:
        """Close the connections tipkit opened (a client you passed stays open).

        Stops the watch listener. Async clients close with their event loop, or
        with :meth:`aclose`. Every call after it is refused at once
        (``StoreError``, no I/O): work still running on the store, such as a
        pending action's replay, fails fast instead of reconnecting.
        """
        self._clients.health.close()
        if self._listener is not None:
            self._listener.stop()
        self._clients.close()

    async def aclose(self) -> None:
        """Close the async client of the running event loop (if tipkit made one)."""
        await self._clients.aclose()

    # -- async twins ---------------------------------------------------------------------
    async def aget(self, namespace: str, key: str) -> Entry | None:
        """Async twin of :meth:`get`."""
        return entry(await self._clients.arun(*self._on_entry("get", namespace, key)))

    async def aset(
        self,
        namespace: str,
        key: str,
        value: JSON,
        *,
        ttl: float | timedelta | None = None,
    ) -> int:
        """Async twin of :meth:`set`."""
        return int(
            await self._clients.arun(*self._set_args(namespace, key, value, ttl))
        )

    async def acompare_and_set(
        self,
        namespace: str,
        key: str,
        value: JSON,
        *,
        version: int,
        ttl: float | timedelta | None = None,
    ) -> int | None:
        """Async twin of :meth:`compare_and_set`."""
        args = self._cas_args(namespace, key, value, version, ttl)
        new = await self._clients.arun(*args)
        return None if new is None else int(new)

    async def adelete(self, namespace: str, key: str) -> bool:
        """Async twin of :meth:`delete`."""
        return bool(await self._clients.arun(*self._on_entry("delete", namespace, key)))

    async def asnapshot(self, namespace: str) -> Snapshot:
        """Async twin of :meth:`snapshot`."""
        return snapshot_reply(
            await self._clients.arun(self._scripts["snapshot"], self._ns(namespace))
        )

    async def aversion(self, namespace: str) -> int:
        """Async twin of :meth:`version`."""
        return _version(await self._clients.acall(*self._version_call(namespace)))

    async def aincrement(
        self,
        key: str,
        amounts: Mapping[str, float],
        *,
        ttl: float | timedelta | None = None,
    ) -> dict[str, float]:
        """Async twin of :meth:`increment`."""
        args = self._increment_args(key, amounts, ttl)
        return fields(await self._clients.arun(*args))

    async def acounters(self, key: str) -> dict[str, float]:
        """Async twin of :meth:`counters`."""
        return _counters(await self._clients.acall(*self._counters_call(key)))

    async def atake_tokens(
        self,
        key: str,
        tokens: float,
        *,
        rate: float,
        capacity: float,
        max_wait: float = 0.0,
    ) -> TokenTake:
        """Async twin of :meth:`take_tokens`."""
        args = self._take_args(key, tokens, rate, capacity, max_wait)
        return take_reply(await self._clients.arun(*args), tokens, rate)
