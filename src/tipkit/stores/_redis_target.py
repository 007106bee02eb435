"""Where a RedisStore's server is: one node, a Redis Cluster, or a Sentinel-watched master.

:class:`Target` turns what the user gave (a URL, a client, ``cluster=True``,
``sentinel=[...]``) into factories for the clients tipkit makes itself: the sync
and async flavours, and the pub/sub connection of the watch listener.

URL forms (redis-py has no cluster or sentinel URL, so these are tipkit's, in the
form other Redis libraries use):

* ``redis://host:port/db`` (``rediss://`` TLS, ``unix://path``): one server; with
  ``cluster=True``, any node of a cluster (``RedisCluster.from_url``).
* ``redis+cluster://host:port`` (``rediss+cluster://``): the same as ``cluster=True``.
* ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``
  (``rediss+sentinel://``): the master that the sentinels name for *service*.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

try:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.retry
    import redis.asyncio.sentinel
    import redis.backoff
    import redis.cluster
    import redis.exceptions
    import redis.retry
    import redis.sentinel
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "tipkit.stores.RedisStore needs the redis client: pip install 'tipkit[redis]'"
    ) from exc

from tipkit.errors import StoreError

ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError)
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


__all__ = [
    "ERRORS",
    "Mode",
    "Target",
    "client_params",
    "fail",
    "no_retry_async",
    "no_retry_sync",
    "redis",
    "safe_url",
]

Mode = Literal["single", "cluster", "sentinel"]


def _whole(manager: Any) -> None:
    """Put back in *manager*'s list every sentinel it was given, once each, in order.

    redis-py's ``discover_master`` moves the sentinel that answered to the front
    with an index read before its (awaited, or blocking) round trip: two
    discoveries at once (50 tasks reconnecting during a failover, or threads)
    swap with a stale index, so one sentinel appears twice and another is gone.
    The lost one is never asked again, and its open connections are beyond
    ``close``: they were left to a finalizer (a ``ResourceWarning`` later).
    """
    kept: list[Any] = []
    for sentinel in [*manager.sentinels, *manager.every]:
        if not any(sentinel is k for k in kept):
            kept.append(sentinel)
    manager.sentinels[:] = kept


class _Sentinel(redis.sentinel.Sentinel):
    """redis-py's sync ``Sentinel`` whose list of sentinels stays whole (see :func:`_whole`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        self.every = tuple(self.sentinels)

    def discover_master(self, service_name: str) -> Any:
        try:
            return super().discover_master(service_name)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        finally:
            _whole(self)


class _AsyncSentinel(redis.asyncio.sentinel.Sentinel):
    """The async twin of :class:`_Sentinel`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        self.every = tuple(self.sentinels)

    async def discover_master(self, service_name: str) -> Any:
        try:
            return await super().discover_master(service_name)
        finally:
            _whole(self)


_CREDENTIALS = ("username", "password", "ssl", "client_name")


def _sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    parts = urlsplit(url)
    at = parts.netloc.rpartition("@")
    hosts = at[2]
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address must be host:port, got {item!r}")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(
            f"a sentinel URL ends with /<service>[/<db>], got {safe_url(url)!r}"
        )
    params: dict[str, Any] = {"db": int(path[1]) if len(path) == 2 else 0}
    if parts.username:
        params["username"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    if parts.scheme.startswith("rediss"):
        params["ssl"] = True
    return sentinels, unquote(path[0]), params


class Target:
    """The server(s) of one store, and how to make a client for them (no I/O here)."""

    __slots__ = (
        "_aclient_given",
        "_params",
        "_sentinels",
        "_service",
        "_sync_given",
        "_url",
        "mode",
        "url",
    )

    def __init__(
        self,
        url_or_client: object,
        *,
        cluster: bool,
        sentinel: Sequence[tuple[str, int]] | None,
        service_name: str | None,
    ) -> None:
        self.mode: Mode = "cluster" if cluster else "single"
        self._url: str | None = None
        self._params: dict[str, Any] | None = {}
        self._sentinels: list[tuple[str, int]] = []
        self._service = service_name or ""
        self._sync_given: Any = None
        self._aclient_given: Any = None
        if sentinel is not None:
            self._init_sentinel(url_or_client, sentinel, service_name)
        elif isinstance(url_or_client, str):
            self._init_url(url_or_client)
        else:
            self._init_client(url_or_client)

    # -- what was given --------------------------------------------------------------
    def _init_sentinel(
        self,
        given: object,
        sentinel: Sequence[tuple[str, int]],
        service_name: str | None,
    ) -> None:
        if given is not None:
            raise TypeError("pass either url_or_client or sentinel=, not both")
        if not service_name:
            raise ValueError("sentinel= needs service_name= (the monitored master)")
        self.mode = "sentinel"
        self._sentinels = [(str(h), int(p)) for h, p in sentinel]
        if not self._sentinels:
            raise ValueError("sentinel= needs at least one (host, port)")
        self._params = {}
        self.url = self._describe()

    def _init_url(self, url: str) -> None:
        scheme, sep, rest = url.partition("://")
        base, plus, kind = scheme.partition("+")
        if plus and kind == "sentinel":
            self.mode = "sentinel"
            self._sentinels, self._service, self._params = _sentinel_url(url)
            self.url = self._describe()
            return
        if plus and kind == "cluster":
            self.mode = "cluster"
            url = f"{base}{sep}{rest}"
        elif plus:
            raise ValueError(f"unknown Redis URL scheme {scheme!r}")
        self._url = url
        self.url = (
            safe_url(url) if self.mode == "single" else f"cluster:{safe_url(url)}"
        )

    def _init_client(self, client: object) -> None:
        if isinstance(
            client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster
        ):
            self.mode = "cluster"
            given: Any = client  # redis-py leaves the node accessors unannotated
            if isinstance(client, redis.cluster.RedisCluster):
                self._sync_given = client
                kwargs = dict(given.nodes_manager.connection_kwargs)
            else:
                self._aclient_given = client
                kwargs = dict(given.connection_kwargs)
            # An async client learns its nodes on first use: start from its seeds.
            node = given.get_default_node() or next(
                iter(given.nodes_manager.startup_nodes.values())
            )
            self._params = {k: kwargs[k] for k in _CREDENTIALS if k in kwargs}
            self._params.update(host=node.host, port=node.port)
            self.url = f"cluster:redis://{node.host}:{node.port}"
            return
        if isinstance(client, redis.Redis):
            self._sync_given = client
        elif isinstance(client, redis.asyncio.Redis):
            self._aclient_given = client
        else:
            raise TypeError(
                "url_or_client must be a Redis URL, a redis.Redis or a "
                f"redis.cluster.RedisCluster client, got {client!r}"
            )
        pool = client.connection_pool
        if hasattr(pool, "service_name") and hasattr(pool, "sentinel_manager"):
            self.mode = "sentinel"
            self._service = pool.service_name
            self._sentinels = [
                (s.connection_pool.connection_kwargs["host"],
                 s.connection_pool.connection_kwargs["port"])
                for s in pool.sentinel_manager.sentinels
            ]  # fmt: skip
            kwargs = pool.connection_kwargs
            self._params = {k: kwargs[k] for k in (*_CREDENTIALS, "db") if k in kwargs}
            self.url = self._describe()
            return
        self._params, self.url = client_params(client)

    def _describe(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self._sentinels)
        db = (self._params or {}).get("db", 0)
        return f"redis+sentinel://{hosts}/{self._service}/{db}"

    @property
    def can_make(self) -> bool:
        """Whether clients like the given one can be made (not for unknown pools)."""
        return (
            self.mode != "single" or self._url is not None or self._params is not None
        )

    @property
    def given_sync(self) -> Any:
        """The sync client the user passed, or ``None``."""
        return self._sync_given

    @property
    def given_async(self) -> Any:
        """The async client the user passed, or ``None``."""
        return self._aclient_given

    # -- factories ---------------------------------------------------------------------
    def make(
        self, flavour: Literal["sync", "async"], timeout: float, read: float
    ) -> Any:
        """Make a client: no retries of its own, connect within *timeout*, read within *read*."""
        options: dict[str, Any] = {
            "socket_timeout": read,
            "socket_connect_timeout": timeout,
            "retry": no_retry_sync() if flavour == "sync" else no_retry_async(),
        }
        if self.mode == "sentinel":
            return self._make_sentinel(flavour, options)
        if self.mode == "cluster":
            cls: Any = (
                redis.cluster.RedisCluster
                if flavour == "sync"
                else redis.asyncio.cluster.RedisCluster
            )
        else:
            cls = redis.Redis if flavour == "sync" else redis.asyncio.Redis
        if self._url is not None:
            return cls.from_url(self._url, **options)
        if self._params is None:
            raise TypeError(
                f"RedisStore cannot make a {flavour} client like the one it was given "
                f"({self.url}): pass a {flavour} client to a RedisStore of its own"
            )
        return cls(**self._params, **options)

    def _make_sentinel(self, flavour: str, options: dict[str, Any]) -> Any:
        params = dict(self._params or {})
        # The sentinels are asked within the same bounds, with the same credentials
        # only when the URL gave them (sentinels often have none of their own).
        sentinel_kwargs = {
            "socket_timeout": options["socket_connect_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
        }
        manager: Any = (_Sentinel if flavour == "sync" else _AsyncSentinel)(
            self._sentinels, sentinel_kwargs=sentinel_kwargs
        )
        return manager.master_for(self._service, **params, **options)

    def node_params(self, node: Any) -> dict[str, Any]:
        """Settings of a plain client to one cluster *node*, with this target's credentials."""
        params = {k: v for k, v in (self._params or {}).items() if k in _CREDENTIALS}
        if self._url is not None:
            parts = urlsplit(self._url)
            if parts.username:
                params["username"] = unquote(parts.username)
            if parts.password:
                params["password"] = unquote(parts.password)
            if parts.scheme == "rediss":
                params["ssl"] = True
        params.update(host=node.host, port=node.port)
        return params
