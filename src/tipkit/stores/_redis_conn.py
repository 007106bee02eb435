"""The redis-py clients of a RedisStore, and how a script reaches the server on them.

Clients are made lazily, bounded by the store's timeout, one async client per
event loop; a script runs by SHA and is loaded on ``NOSCRIPT``.

The one module that imports the optional ``redis`` client (with a clear
``ImportError`` naming the extra when it is missing).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from tipkit.stores import _redis_slots as slots
from tipkit.stores._redis_health import (
    PROBE,
    TIMEOUTS,
    Gate,
    abort,
    close_with_loop,
    connections_of,
    sentinels_of,
)
from tipkit.stores._redis_lua import Script, pack

# redis from _redis_target: it names the extra to install when the client is missing.
from tipkit.stores._redis_target import (
    ERRORS,
    Target,
    fail,
    no_retry_sync,
    redis,
    safe_url,
)

__all__ = ["ERRORS", "Clients", "fail", "redis", "safe_url"]


class Clients:
    """The sync client, one async client per event loop, and pub/sub clients of a store.

    Given a URL (or ``sentinel=``), every client is made here with
    ``socket_timeout`` and ``socket_connect_timeout`` set to *timeout* and no
    retries, so a call returns or raises within *timeout* (twice that when it
    must reconnect). Given a client, that client is used as it is and the other
    flavour is made with the same address and credentials: for a Redis Cluster
    client, from one of its nodes; for a Sentinel ``master_for`` client, from
    its sentinels and service name (``_redis_target.py``).

    Thread-safe; async clients are closed when their event loop shuts down
    (as ``asyncio.run`` does) or by :meth:`aclose`.
    """

    __slots__ = (
        "_aclients",
        "_aloading",
        "_loads",
        "_lock",
        "_pubsubs",
        "_sync",
        "fast",
        "health",
        "mode",
        "owns_sync",
        "scripts",
        "target",
        "timeout",
        "url",
        "via_cluster",
    )

    def __init__(
        self, target: Target, timeout: float, scripts: dict[str, Script]
    ) -> None:
        self.timeout = timeout
        # Shared by every primitive on this store: one timeout is waited once.
        self.health = Gate(min(timeout, PROBE), bound=2 * timeout)
        self.target = target
        self.mode = target.mode
        self.url = target.url
        self.scripts = scripts
        self._lock = threading.Lock()
        self._sync: Any = target.given_sync
        self.owns_sync = self._sync is None
        # The packed fast path needs one server behind one pool (not a cluster).
        self.fast = self.owns_sync and self.mode != "cluster"
        self._pubsubs = 0
        self.via_cluster = False  # cluster, after a timeout: see _redis_slots
        self._loads = 0  # script loads so far (async): see _aload
        self._aloading: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Lock
        ] = weakref.WeakKeyDictionary()
        # event loop -> (client, closer); weak so a finished loop's entry goes.
        self._aclients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            tuple[Any, AsyncIterator[None]],
        ] = weakref.WeakKeyDictionary()

    def after_fork_in_child(self) -> None:
        """Re-create the lock (the pools reconnect in a forked child by themselves)."""
        self._lock = threading.Lock()

    @property
    def sync(self) -> Any:
        """The synchronous client, made on first use when none was given."""
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    self._sync = self.target.make("sync", self.timeout, self.timeout)
                client = self._sync
        return client

    async def aclient(self, key: str | None = None) -> Any:
        """The running event loop's async client (a cluster's initialized on *key*'s node)."""
        given = self.target.given_async
        if given is not None:
            return given
        loop = asyncio.get_running_loop()
        found = self._aclients.get(loop)
        if found is not None:
            return found[0]
        if self.mode != "cluster":
            return await self._new_aclient(loop)
        # A cluster client must be initialized (slot map, one connection per
        # node) by one task: tasks racing through redis-py's lazy first-use
        # initialization interleaved commands on one connection, which the
        # server answers by closing it.
        with self._lock:
            lock = self._aloading.get(loop)
            if lock is None:
                lock = self._aloading[loop] = asyncio.Lock()
        async with lock:
            found = self._aclients.get(loop)
            if found is not None:
                return found[0]
            client = self.target.make("async", self.timeout, self.timeout)
            try:
                await slots.initialize(client, key)
            except BaseException:  # a hung node: what it opened is dropped now
                for conn in connections_of(client):
                    await abort(conn)
                raise
            return await self._new_aclient(loop, client)

    async def _new_aclient(
        self, loop: asyncio.AbstractEventLoop, client: Any = None
    ) -> Any:
        if client is None:
            client = self.target.make("async", self.timeout, self.timeout)
        closer = close_with_loop(client, 2 * self.timeout)
        with self._lock:
            self._aclients[loop] = (client, closer)
        # Start the generator so the loop knows it and closes it on shutdown.
        await anext(closer)
        return client

    def new_pubsub(self, channel: str, *, sharded: bool) -> Any:
        """Return a pub/sub on a client of its own (it holds its connection for good).

        On a cluster it is a plain client of the node that owns *channel*'s
        slot (sharded pub/sub is served there; a classic subscription works on
        any node), found from a fresh slot map after the first connection.
        Replies (subscribe confirmations) are bounded by at least a second.
        """
        read = max(1.0, self.timeout)
        if self.mode == "cluster":
            cluster = self.sync
            try:
                with self._lock:
                    self._pubsubs += 1
                    refresh = self._pubsubs > 1
                if refresh:  # a reconnection: the slot may have moved (failover)
                    cluster.nodes_manager.initialize()
                node = cluster.get_node_from_key(channel) if sharded else None
                node = node or cluster.get_default_node()
            except ERRORS as exc:
                raise redis.exceptions.ConnectionError(str(exc)) from exc
            client: Any = redis.Redis(
                **self.target.node_params(node),
                socket_timeout=read,
                socket_connect_timeout=self.timeout,
                retry=no_retry_sync(),
            )
        elif self.target.can_make:
            client = self.target.make("sync", self.timeout, read)
        else:
            client = self.sync  # a client we were given and cannot copy
        return client.pubsub(ignore_subscribe_messages=True)

    def close(self) -> None:
        """Close the sync client if it was made here (a client passed in stays open)."""
        if self.owns_sync and self._sync is not None:
            self._sync.close()
            for sentinel in sentinels_of(self._sync):
                sentinel.close()

    async def aclose(self) -> None:
        """Close the running event loop's async client, if it was made here."""
        with self._lock:
            found = self._aclients.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[1].aclose()  # type: ignore[attr-defined]  # an async generator

    # -- running scripts -----------------------------------------------------------
    def _load(self, client: Any) -> None:
        if self.mode == "cluster":
            # SCRIPT LOAD goes to every primary; a cluster pipeline refuses it.
            for script in self.scripts.values():
                client.script_load(script.source)
            return
        pipe = client.pipeline(transaction=False)
        for script in self.scripts.values():
            pipe.script_load(script.source)
        pipe.execute()

    async def _aload(self, client: Any, seen: int) -> None:
        # Many tasks meet NOSCRIPT together on a fresh server: one loads, the
        # others find the generation moved on and only retry their script (on
        # a cluster, a hundred concurrent SCRIPT LOADs to every primary made
        # redis-py's async cluster client drop connections).
        loop = asyncio.get_running_loop()
        with self._lock:
            lock = self._aloading.get(loop)
            if lock is None:
                lock = self._aloading[loop] = asyncio.Lock()
        async with lock:
            if self._loads != seen:
                return
            await self._aload_all(client)
            self._loads += 1

    async def _aload_all(self, client: Any) -> None:
        if self.mode == "cluster":
            for script in self.scripts.values():
                await client.script_load(script.source)
            return
        pipe = client.pipeline(transaction=False)
        for script in self.scripts.values():
            pipe.script_load(script.source)
        await pipe.execute()

    def run(self, script: Script, key: str, *args: str) -> Any:
        """Run *script* on *key*: one round trip, ``StoreError`` on any failure."""
        if not self.fast:
            return self.run_keys(script, (key,), *args)
        packed = pack(
            b"EVALSHA",
            script.sha.encode(),
            b"1",
            key.encode(),
            *(a.encode() for a in args),
        )
        return self.send(script, key, packed)

    def run_keys(self, script: Script, keys: tuple[str, ...], *args: str) -> Any:
        """Run *script* on *keys* through redis-py (a cluster client routes it by slot).

        A connection error is retried once: on a cluster, redis-py refreshes
        its slot map after it, so the retry reaches a new primary.
        """
        return self.health.run(
            script.name, keys[0], self._run_keys, script, keys, *args
        )

    def _run_keys(self, script: Script, keys: tuple[str, ...], *args: str) -> Any:
        n = len(keys)
        try:
            client = self.sync
            if self.mode == "cluster":
                out = slots.run_script(self, client, script, keys, args)
                if out is not slots.MISS:
                    return out
            for attempt in (1, 2):
                try:
                    try:
                        out = client.evalsha(script.sha, n, *keys, *args)
                    except redis.exceptions.NoScriptError:
                        self._load(client)
                        out = client.evalsha(script.sha, n, *keys, *args)
                except redis.exceptions.ConnectionError:
                    if attempt == 2:
                        raise
                else:
                    self.via_cluster = False  # got through: the map is fresh
                    return out
        except ERRORS as exc:
            raise fail(script.name, keys[0], exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def send_to_slot(
        self, script: Script, key: str, packed: bytes, args: tuple[str, ...]
    ) -> Any:
        """Cluster: send a packed EVALSHA to the primary that owns *key*'s slot.

        The slot map is the one redis-py keeps. A redirect (``MOVED``/``ASK``: the
        slot moved) or a broken connection goes through redis-py's cluster path
        instead, which follows the redirect and refreshes the map.
        """
        return self.health.run(
            script.name, key, self._send_to_slot, script, key, packed, args
        )

    def _send_to_slot(
        self, script: Script, key: str, packed: bytes, args: tuple[str, ...]
    ) -> Any:
        if self.via_cluster:  # a timeout before: redis-py's path refreshes the map
            return self._run_keys(script, (key,), *args)
        try:
            client = self.sync
        except ERRORS as exc:
            raise fail(script.name, key, exc) from exc
        try:
            node = client.nodes_manager.slots_cache[client.keyslot(key)][0]
            pool = node.redis_connection.connection_pool
        except (KeyError, IndexError, AttributeError):  # no map yet: redis-py's path
            return self._run_keys(script, (key,), *args)
        try:
            return self.send(script, key, packed, pool=pool, raw=True)
        except (
            redis.exceptions.MovedError,
            redis.exceptions.AskError,
            redis.exceptions.ConnectionError,
        ):
            return self._run_keys(script, (key,), *args)
        except ERRORS as exc:
            if isinstance(exc, TIMEOUTS):
                self.via_cluster = True
            raise fail(script.name, key, exc) from exc

    def send(  # noqa: C901  # the hot path: the health gate inlined on purpose
        self,
        script: Script,
        key: str,
        packed: bytes,
        *,
        pool: Any = None,
        raw: bool = False,
    ) -> Any:
        """Send a packed EVALSHA on a pooled connection; read the reply.

        The client tipkit made has no retries and no hooks of the caller's, so
        its command machinery (argument encoding, retry wrapper, callbacks) is
        skipped: about a third of a local round trip. A client passed in goes
        through redis-py's own path, with its retry policy. *raw*: redis-py's
        errors as they are, and no health gate (the caller holds it).
        """
        health = self.health
        if health.down and not raw:
            health.enter(script.name, key)  # the probe, or refused at once
        client = self.sync
        pool = pool or client.connection_pool
        loaded = stale = False
        try:
            while True:
                conn: Any = pool.get_connection()
                # A pooled connection made before a server restart fails at once
                # (reset, broken pipe): retried once, on a fresh connection.
                reused = conn._sock is not None  # redis-py has no public flag
                try:
                    conn.send_packed_command((packed,), check_health=False)
                    reply = conn.read_response()
                    break
                except redis.exceptions.NoScriptError:
                    if loaded:  # pragma: no cover - loaded just before
                        raise
                except redis.exceptions.ResponseError:
                    raise  # the connection is fine: the server answered
                except redis.exceptions.ConnectionError:
                    conn.disconnect()
                    if stale or not reused:
                        raise  # a timeout is not retried: it already took `timeout`
                    stale = True
                    # The other idle connections predate the restart (or the
                    # failover) too: drop them, so the retry gets a fresh one.
                    pool.disconnect(inuse_connections=False)
                    continue
                except BaseException:
                    # A half-read reply would poison the next user of this connection.
                    conn.disconnect()
                    raise
                finally:
                    pool.release(conn)
                self._load(client)
                loaded = True
        except ERRORS as exc:
            if raw:
                raise
            health.note(exc)
            raise fail(script.name, key, exc) from exc
        if health.down:  # the probe, or a call sent before the store was known down
            health.answered()
        return reply

    async def arun(self, script: Script, key: str, *args: str) -> Any:
        """Async :meth:`run` (see :meth:`arun_keys`)."""
        return await self.arun_keys(script, (key,), *args)

    async def arun_keys(self, script: Script, keys: tuple[str, ...], *args: str) -> Any:
        """Async :meth:`run`: awaits the server on this loop's client.

        Bounded as a whole by twice the timeout (one reconnect), however many
        tasks share the loop's pool; a connection error on a pooled connection
        (a server restarted) is retried once.
        """
        return await self.health.arun(
            script.name, keys[0], self._abound, script, keys, args
        )

    async def _abound(
        self, script: Script, keys: tuple[str, ...], args: tuple[str, ...]
    ) -> Any:
        try:
            async with asyncio.timeout(2 * self.timeout):
                return await self._arun(script, keys, args)
        except TimeoutError as exc:
            raise fail(script.name, keys[0], exc) from exc
        except ERRORS as exc:
            raise fail(script.name, keys[0], exc) from exc

    async def _arun(
        self, script: Script, keys: tuple[str, ...], args: tuple[str, ...]
    ) -> Any:
        client = await self.aclient(keys[0])
        n = len(keys)
        if self.mode == "cluster":
            out = await slots.adirect(self, client, script, keys, args)
            if out is not slots.MISS:
                return out
        for attempt in (1, 2):
            try:
                seen = self._loads
                try:
                    out = await client.evalsha(script.sha, n, *keys, *args)
                except redis.exceptions.NoScriptError:
                    await self._aload(client, seen)
                    out = await client.evalsha(script.sha, n, *keys, *args)
            except redis.exceptions.ConnectionError:
                if attempt == 2:
                    raise
            else:
                self.via_cluster = False  # got through: the map is fresh
                return out
        raise AssertionError("unreachable")  # pragma: no cover

    def call(self, op: str, key: str, call: Callable[[Any], Any]) -> Any:
        """Run ``call(client)`` (one command); a pooled connection's error is retried once."""
        return self.health.run(op, key, self._call, op, key, call)

    def _call(self, op: str, key: str, call: Callable[[Any], Any]) -> Any:
        try:
            client = self.sync
            if self.mode == "cluster":
                out = slots.direct(self, client, key, call)
                if out is not slots.MISS:
                    return out
            try:
                out = call(client)
            except redis.exceptions.ConnectionError:
                out = call(client)
        except ERRORS as exc:
            raise fail(op, key, exc) from exc
        self.via_cluster = False
        return out

    async def acall(self, op: str, key: str, call: Callable[[Any], Any]) -> Any:
        """Await ``call(client)`` (one command) within twice the timeout."""
        return await self.health.arun(op, key, self._acall, op, key, call)

    async def _acall(self, op: str, key: str, call: Callable[[Any], Any]) -> Any:
        try:
            async with asyncio.timeout(2 * self.timeout):
                client = await self.aclient(key)
                try:
                    return await call(client)
                except redis.exceptions.ConnectionError:
                    return await call(client)
        except (TimeoutError, *ERRORS) as exc:
            raise fail(op, key, exc) from exc
