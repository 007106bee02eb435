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
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

try:
    import redis
    import redis.asyncio
    import redis.asyncio.retry
    import redis.backoff
    import redis.exceptions
    import redis.retry
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "tipkit.stores.RedisStore needs the redis client: pip install 'tipkit[redis]'"
    ) from exc

from tipkit.errors import StoreError
from tipkit.stores._redis_lua import SCRIPTS, Script, pack

__all__ = ["ERRORS", "Clients", "fail", "redis", "safe_url"]

ERRORS = (redis.exceptions.RedisError, OSError)
"""What a failing server raises through redis-py: turned into ``StoreError``."""


def fail(op: str, key: str, exc: BaseException) -> StoreError:
    """Return the ``StoreError`` for *op* on *key* failing with *exc* (the cause)."""
    return StoreError(f"RedisStore {op} {key!r} failed: {type(exc).__name__}: {exc}")


def no_retry_sync() -> redis.retry.Retry:
    # One attempt: a call must come back within `timeout`, never after a backoff.
    return redis.retry.Retry(redis.backoff.NoBackoff(), 0)


def no_retry_async() -> redis.asyncio.retry.Retry:
    return redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0)


def safe_url(url: str) -> str:
    """Return *url* without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{parts.username}@" if parts.username else "") + host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_PASSED_ON = (
    "host",
    "port",
    "db",
    "username",
    "password",
    "client_name",
    "socket_keepalive",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_check_hostname",
)


def client_params(client: Any) -> tuple[dict[str, Any] | None, str]:
    """Return the settings to build a twin of *client*, and a password-free URL.

    The settings are ``None`` when the client's pool finds its server by itself
    (Sentinel): a twin built from its settings would talk to the wrong server.
    """
    pool = client.connection_pool
    kwargs: dict[str, Any] = pool.connection_kwargs
    if type(pool).__name__ not in ("ConnectionPool", "BlockingConnectionPool"):
        return None, f"<{type(pool).__name__}>"
    cls = pool.connection_class.__name__
    params = {k: kwargs[k] for k in _PASSED_ON if k in kwargs}
    if "path" in kwargs:
        params = {k: v for k, v in params.items() if k not in ("host", "port")}
        params["unix_socket_path"] = kwargs["path"]
        return params, f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    scheme = "redis"
    if cls.startswith("SSL"):
        params["ssl"] = True
        scheme = "rediss"
    host = params.get("host", "localhost")
    url = f"{scheme}://{host}:{params.get('port', 6379)}/{params.get('db', 0)}"
    return params, url


async def close_with_loop(client: redis.asyncio.Redis) -> AsyncIterator[None]:
    # An async generator that has started is closed by the event loop's
    # shutdown_asyncgens() (asyncio.run does this), so the loop's client and its
    # connections are closed while the loop still runs.
    try:
        yield
    finally:
        await client.aclose()


class Clients:
    """The sync client, one async client per event loop, and pub/sub clients of a store.

    Given a URL, every client is made here with ``socket_timeout`` and
    ``socket_connect_timeout`` set to *timeout* and no retries, so a call
    returns or raises within *timeout* (twice that when it must reconnect).
    Given a client, that client is used as it is and the other flavour is made
    with the same address and credentials (not for Sentinel: refused).

    Thread-safe; async clients are closed when their event loop shuts down
    (as ``asyncio.run`` does) or by :meth:`aclose`.
    """

    __slots__ = (
        "_aclients",
        "_given_async",
        "_lock",
        "_params",
        "_sync",
        "_url",
        "owns_sync",
        "timeout",
        "url",
    )

    def __init__(
        self, url_or_client: str | redis.Redis | redis.asyncio.Redis, timeout: float
    ) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._sync: redis.Redis | None = None
        self._url: str | None = None
        self._params: dict[str, Any] | None = {}
        self.owns_sync = True
        # event loop -> (client, closer); weak so a finished loop's entry goes.
        self._aclients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            tuple[redis.asyncio.Redis, AsyncIterator[None]],
        ] = weakref.WeakKeyDictionary()
        self._given_async: redis.asyncio.Redis | None = None
        if isinstance(url_or_client, str):
            self._url = url_or_client
            self.url = safe_url(url_or_client)
        elif isinstance(url_or_client, redis.Redis):
            self._sync = url_or_client
            self.owns_sync = False
            self._params, self.url = client_params(url_or_client)
        elif isinstance(url_or_client, redis.asyncio.Redis):
            self._given_async = url_or_client
            self._params, self.url = client_params(url_or_client)
        else:
            raise TypeError(
                "url_or_client must be a Redis URL or a redis.Redis client, "
                f"got {url_or_client!r}"
            )

    def after_fork_in_child(self) -> None:
        """Re-create the lock (the pools reconnect in a forked child by themselves)."""
        self._lock = threading.Lock()

    def _make(
        self,
        flavour: str,
        cls: Callable[..., Any],
        retry: Any,
        socket_timeout: float,
    ) -> Any:
        options = {
            "retry": retry,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": self.timeout,
        }
        if self._url is not None:
            return cls.from_url(self._url, **options)  # type: ignore[attr-defined]  # both client classes have it
        if self._params is None:
            raise TypeError(
                f"RedisStore cannot make a {flavour} client like the one it was given "
                f"({self.url}): pass a {flavour} client to a RedisStore of its own"
            )
        return cls(**self._params, **options)

    @property
    def sync(self) -> redis.Redis:
        """The synchronous client, made on first use when none was given."""
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    self._sync = cast(
                        "redis.Redis",
                        self._make(
                            "redis.Redis", redis.Redis, no_retry_sync(), self.timeout
                        ),
                    )
                client = self._sync
        return client

    async def aclient(self) -> redis.asyncio.Redis:
        """The running event loop's async client, made (no I/O) on first use."""
        if self._given_async is not None:
            return self._given_async
        loop = asyncio.get_running_loop()
        found = self._aclients.get(loop)
        if found is not None:
            return found[0]
        client = cast(
            "redis.asyncio.Redis",
            self._make(
                "redis.asyncio.Redis",
                redis.asyncio.Redis,
                no_retry_async(),
                self.timeout,
            ),
        )
        closer = close_with_loop(client)
        with self._lock:
            self._aclients[loop] = (client, closer)
        # Start the generator so the loop knows it and closes it on shutdown.
        await anext(closer)
        return client

    def new_pubsub(self) -> Any:
        """Return a pub/sub on a client of its own (it holds its connection for good).

        Replies (subscribe confirmations) are bounded by at least a second.
        """
        if self._url is None and self._params is None:
            client = self.sync  # a client we were given and cannot copy (Sentinel)
        else:
            client = self._make(
                "redis.Redis", redis.Redis, no_retry_sync(), max(1.0, self.timeout)
            )
        return client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]  # redis-py leaves pubsub() unannotated

    def close(self) -> None:
        """Close the sync client if it was made here (a client passed in stays open)."""
        if self.owns_sync and self._sync is not None:
            self._sync.close()

    async def aclose(self) -> None:
        """Close the running event loop's async client, if it was made here."""
        with self._lock:
            found = self._aclients.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[1].aclose()  # type: ignore[attr-defined]  # an async generator

    # -- running scripts -----------------------------------------------------------
    def _load(self, client: redis.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        for script in SCRIPTS.values():
            pipe.script_load(script.source)
        pipe.execute()

    async def _aload(self, client: redis.asyncio.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        for script in SCRIPTS.values():
            pipe.script_load(script.source)
        await pipe.execute()

    def run(self, script: Script, key: str, *args: str) -> Any:
        """Run *script* on *key*: one round trip, ``StoreError`` on any failure."""
        if self.owns_sync:
            packed = pack(
                b"EVALSHA",
                script.sha.encode(),
                b"1",
                key.encode(),
                *(a.encode() for a in args),
            )
            return self.send(script, key, packed)
        client = self.sync
        try:
            for attempt in (1, 2):
                try:
                    try:
                        return client.evalsha(script.sha, 1, key, *args)
                    except redis.exceptions.NoScriptError:
                        self._load(client)
                        return client.evalsha(script.sha, 1, key, *args)
                except redis.exceptions.ConnectionError:
                    if attempt == 2:
                        raise
        except ERRORS as exc:
            raise fail(script.name, key, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def send(self, script: Script, key: str, packed: bytes) -> Any:
        """Send a packed EVALSHA on a pooled connection; read the reply.

        The client tipkit made has no retries and no hooks of the caller's, so
        its command machinery (argument encoding, retry wrapper, callbacks) is
        skipped: about a third of a local round trip. A client passed in goes
        through redis-py's own path, with its retry policy.
        """
        client = self.sync
        pool = client.connection_pool
        loaded = stale = False
        try:
            while True:
                conn: Any = pool.get_connection()
                # A pooled connection made before a server restart fails at once
                # (reset, broken pipe): retried once, on a fresh connection.
                reused = conn._sock is not None  # redis-py has no public flag
                try:
                    conn.send_packed_command((packed,), check_health=False)
                    return conn.read_response()
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
            raise fail(script.name, key, exc) from exc

    async def arun(self, script: Script, key: str, *args: str) -> Any:
        """Async :meth:`run`: awaits the server on this loop's client.

        Bounded as a whole by twice the timeout (one reconnect), however many
        tasks share the loop's pool; a connection error on a pooled connection
        (a server restarted) is retried once.
        """
        try:
            async with asyncio.timeout(2 * self.timeout):
                return await self._arun(script, key, args)
        except TimeoutError as exc:
            raise fail(script.name, key, exc) from exc
        except ERRORS as exc:
            raise fail(script.name, key, exc) from exc

    async def _arun(self, script: Script, key: str, args: tuple[str, ...]) -> Any:
        client = await self.aclient()
        for attempt in (1, 2):
            try:
                try:
                    return await client.evalsha(script.sha, 1, key, *args)
                except redis.exceptions.NoScriptError:
                    await self._aload(client)
                    return await client.evalsha(script.sha, 1, key, *args)
            except redis.exceptions.ConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def call(self, op: str, key: str, call: Callable[[Any], Any]) -> Any:
        """Run ``call(client)`` (one command); a pooled connection's error is retried once."""
        client = self.sync
        try:
            try:
                return call(client)
            except redis.exceptions.ConnectionError:
                return call(client)
        except ERRORS as exc:
            raise fail(op, key, exc) from exc

    async def acall(self, op: str, key: str, call: Callable[[Any], Any]) -> Any:
        """Await ``call(client)`` (one command) within twice the timeout."""
        try:
            async with asyncio.timeout(2 * self.timeout):
                client = await self.aclient()
                try:
                    return await call(client)
                except redis.exceptions.ConnectionError:
                    return await call(client)
        except (TimeoutError, *ERRORS) as exc:
            raise fail(op, key, exc) from exc
