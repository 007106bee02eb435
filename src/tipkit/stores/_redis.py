"""RedisStore: the Store on a real Redis server, shared by every process of a fleet.

Imported only when :class:`RedisStore` is used (``from tipkit.stores import
RedisStore`` loads it lazily), so the ``redis`` client stays an optional extra.

Layout in Redis (every operation touches exactly one key, so each works on a
Redis Cluster slot of its own; put a hash tag in *prefix*, ``"{tipkit}:"``, to
keep them all on one slot):

* ``<prefix>ns:<namespace>``: one hash per namespace. Field ``version`` holds the
  namespace version; field ``:<key>`` holds the JSON array
  ``[entry_version, expires_at_us | null, value]``, the expiry in microseconds
  of the server's ``TIME``.
* ``<prefix>c:<key>``: one hash per counters key, one field per counter; its
  time to live is Redis's own key expiry.
* ``<prefix>tb:<key>``: one string per token bucket, ``"<level> <last>"`` (last
  refill in seconds of the server's ``TIME``), expiring once it would have
  refilled to capacity; a full bucket is deleted.

Every operation is one round trip and atomic: a Lua script called by SHA
(``EVALSHA``), loaded with ``SCRIPT LOAD`` the first time the server says
``NOSCRIPT`` (a new or restarted server, or after ``SCRIPT FLUSH``), or a single
command.

Every write to a namespace also ``PUBLISH``es its new version on a channel named
like the namespace's key, inside the same script: :meth:`RedisStore.watch`
subscribes to it, so a kill switch written by one process invalidates the cached
flag state of every other process within a pub/sub delivery, not a refresh
interval. A publish nobody listens to costs the server next to nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import threading
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from tipkit._core import _fork
from tipkit._core._durations import to_seconds, to_seconds_or_none
from tipkit._core._tokens import check_bucket_args
from tipkit.errors import StoreError
from tipkit.stores._memory import _encode
from tipkit.stores._protocol import (
    JSON,
    Entry,
    OnError,
    Snapshot,
    TokenTake,
    check_on_error,
)
from tipkit.stores._watch import Callback, Watch

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

__all__ = ["OnError", "RedisStore", "Watch"]

logger = logging.getLogger("tipkit")

# Seconds are turned into whole microseconds (entry expiry) or milliseconds (key
# expiry); the cap keeps PEXPIRE within what Redis accepts.
_MAX_PEXPIRE_MS = 10**15

_PRELUDE = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function live(s, now)
  local exp = string.match(s, '^%[%d+,([^,]*),')
  return exp == 'null' or tonumber(exp) > now
end
local function write(key, field, value, ttl_us, now)
  local v = redis.call('HINCRBY', key, 'version', 1)
  local exp = 'null'
  if ttl_us ~= '' then exp = string.format('%d', now + tonumber(ttl_us)) end
  redis.call('HSET', key, field, string.format('[%d,%s,', v, exp) .. value .. ']')
  redis.call('PUBLISH', key, v)
  return v
end
"""

# KEYS[1] namespace hash; ARGV[1] field.
_GET = """
local s = redis.call('HGET', KEYS[1], ARGV[1])
if not s or not live(s, now_us()) then return false end
return s
"""

# ARGV[1] field, ARGV[2] JSON value, ARGV[3] ttl in microseconds or ''.
_SET = """
return write(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now_us())
"""

# As _SET, plus ARGV[4] the expected entry version (0: absent or expired).
_CAS = """
local now = now_us()
local s = redis.call('HGET', KEYS[1], ARGV[1])
local current = 0
if s and live(s, now) then current = tonumber(string.match(s, '^%[(%d+),')) end
if current ~= tonumber(ARGV[4]) then return false end
return write(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now)
"""

# ARGV[1] field. An expired entry is removed without a version bump: it was
# already gone for every reader.
_DELETE = """
local s = redis.call('HGET', KEYS[1], ARGV[1])
if not s then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if not live(s, now_us()) then return 0 end
redis.call('PUBLISH', KEYS[1], redis.call('HINCRBY', KEYS[1], 'version', 1))
return 1
"""

# Returns {version, field, entry, field, entry, ...}; prunes expired entries.
_SNAPSHOT = """
local all = redis.call('HGETALL', KEYS[1])
local out = {0}
local now = nil
for i = 1, #all, 2 do
  local f, s = all[i], all[i + 1]
  if f == 'version' then
    out[1] = tonumber(s)
  else
    if not string.find(s, '^%[%d+,null,') then now = now or now_us() end
    if now == nil or live(s, now) then
      out[#out + 1] = f
      out[#out + 1] = s
    else
      redis.call('HDEL', KEYS[1], f)
    end
  end
end
return out
"""

# KEYS[1] counters hash; ARGV[1] ttl in milliseconds or ''; then field, amount pairs.
_INCREMENT = """
for i = 2, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
local all = redis.call('HGETALL', KEYS[1])
if ARGV[1] == '' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return all
"""

# KEYS[1] bucket (a string "level last"); ARGV tokens, rate, capacity, max_wait,
# max pexpire. The middle block is tipkit/_core/_tokens.py `take`, line for line,
# and the end is MemoryStore.take_tokens: keep the three in step. Returns
# {admitted, level}; wait and retry_after follow from the level exactly (_take).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local capacity, max_wait = tonumber(ARGV[3]), tonumber(ARGV[4])
local level, last = capacity, now
local state = redis.call('GET', KEYS[1])
if state then
  local l, s = string.match(state, '^(%S+) (%S+)$')
  level, last = tonumber(l), tonumber(s)
end
local admitted = 1
local elapsed = now - last
if elapsed > 0 then
  level = math.min(capacity, level + elapsed * rate)
end
if tokens <= 0 then
  level = math.min(capacity, level - tokens)
else
  local missing = tokens - level
  if missing <= 0 then
    level = level - tokens
  else
    local wait = missing / rate
    if wait <= max_wait then
      level = level - tokens
    else
      admitted = 0
    end
  end
end
local out = string.format('%.17g', level)
if level >= capacity then
  redis.call('DEL', KEYS[1])
else
  local origin = math.max(last, now)
  local refill = (capacity - level) / rate + (origin - now)
  local ms = math.min(tonumber(ARGV[5]), math.ceil(refill * 1000) + 1)
  redis.call('SET', KEYS[1], out .. string.format(' %.17g', origin),
    'PX', string.format('%d', ms))
end
return {admitted, out}
"""


class _Script:
    """A Lua script and its SHA1, which is what ``SCRIPT LOAD`` answers."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, body: str, *, prelude: bool = True) -> None:
        self.name = name
        self.source = (_PRELUDE if prelude else "") + body
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()


_SCRIPTS = {
    s.name: s
    for s in (
        _Script("get", _GET),
        _Script("set", _SET),
        _Script("compare_and_set", _CAS),
        _Script("delete", _DELETE),
        _Script("snapshot", _SNAPSHOT),
        _Script("increment", _INCREMENT, prelude=False),
        _Script("take_tokens", _TAKE, prelude=False),
    )
}
_S = _SCRIPTS

_ERRORS = (redis.exceptions.RedisError, OSError)


def _pack(*parts: bytes) -> bytes:
    """Return one RESP command (an array of bulk strings), ready for the socket."""
    out = [b"*%d\r\n" % len(parts)]
    out.extend(b"$%d\r\n%b\r\n" % (len(part), part) for part in parts)
    return b"".join(out)


# Packed take_tokens commands kept per store: a hot bucket sends the same bytes
# every time, so they are built (and their arguments checked) once.
_PACKED_MAX = 4096


def _no_retry_sync() -> redis.retry.Retry:
    # One attempt: a call must come back within `timeout`, never after a backoff.
    return redis.retry.Retry(redis.backoff.NoBackoff(), 0)


def _no_retry_async() -> redis.asyncio.retry.Retry:
    return redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0)


def _safe_url(url: str) -> str:
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


def _client_params(client: Any) -> tuple[dict[str, Any] | None, str]:
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


def _entry(raw: bytes | None) -> Entry | None:
    if raw is None:
        return None
    version, _, value = json.loads(raw)
    return Entry(value, version)


def _number(raw: bytes) -> float:
    # HINCRBYFLOAT prints integral totals without a decimal point: give them back
    # as ints, as MemoryStore does for int amounts.
    try:
        return int(raw)
    except ValueError:
        return float(raw)


def _fields(flat: Sequence[bytes]) -> dict[str, float]:
    return {flat[i].decode(): _number(flat[i + 1]) for i in range(0, len(flat), 2)}


def _snapshot(flat: Sequence[Any]) -> Snapshot:
    entries: dict[str, Entry] = {}
    for i in range(1, len(flat), 2):
        version, _, value = json.loads(flat[i + 1])
        entries[flat[i].decode()[1:]] = Entry(value, version)
    return Snapshot(int(flat[0]), entries)


def _take(raw: Sequence[Any], tokens: float, rate: float) -> TokenTake:
    # The script returns the level only. As in _core/_tokens.take, a reservation
    # waits `missing / rate` where missing = tokens - level_before = -level_after
    # (exactly, in floating point), and a refusal leaves the level untouched, so
    # retry_after = (tokens - level) / rate.
    level = float(raw[1])
    if not raw[0]:
        return TokenTake(
            admitted=False, wait=0.0, tokens=level, retry_after=(tokens - level) / rate
        )
    wait = -level / rate if tokens > 0 and level < 0 else 0.0
    return TokenTake(admitted=True, wait=wait, tokens=level, retry_after=0.0)


def _ttl_us(ttl: float | timedelta | None) -> str:
    secs = to_seconds_or_none(ttl, "ttl")
    return "" if secs is None else str(round(secs * 1_000_000))


def _ttl_ms(ttl: float | timedelta | None) -> str:
    secs = to_seconds_or_none(ttl, "ttl")
    if secs is None:
        return ""
    # PEXPIRE with 0 or less deletes the key at once, as an elapsed TTL should.
    return str(min(_MAX_PEXPIRE_MS, math.ceil(secs * 1000)))


def _amounts(key: str, amounts: Mapping[str, float]) -> list[str]:
    args: list[str] = []
    checked: Mapping[str, object] = amounts  # callers may pass anything at run time
    for field, amount in checked.items():
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise TypeError(
                f"increment {key}/{field}: amount must be a number, got {amount!r}"
            )
        if isinstance(amount, float) and not math.isfinite(amount):
            raise ValueError(
                f"increment {key}/{field}: amount must be finite, got {amount!r}"
            )
        args += (field, repr(amount))
    return args


def _bucket_args(
    tokens: float, rate: float, capacity: float, max_wait: float
) -> tuple[str, ...]:
    check_bucket_args(tokens, rate, capacity, max_wait)
    # repr() round-trips a float exactly through Lua's tonumber; infinity does not parse.
    wait = 1e300 if max_wait == math.inf else max_wait
    return (
        repr(float(tokens)),
        repr(float(rate)),
        repr(float(capacity)),
        repr(float(wait)),
        str(_MAX_PEXPIRE_MS),
    )


def _check_version(version: object) -> str:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise TypeError(f"version must be an int >= 0 (0: absent), got {version!r}")
    return str(version)


async def _close_with_loop(client: redis.asyncio.Redis) -> AsyncIterator[None]:
    # An async generator that has started is closed by the event loop's
    # shutdown_asyncgens() (asyncio.run does this), so the loop's client and its
    # connections are closed while the loop still runs.
    try:
        yield
    finally:
        await client.aclose()


class _Listener:
    """One thread per store, subscribed to the channels of the watched namespaces.

    Not a timer: the thread blocks on the subscription socket (waking every
    ``_POLL`` seconds only to notice new channels or a stop) and calls the
    callbacks of a namespace when a write to it is published. After every
    (re)connection it calls them all, because writes published while it was
    unsubscribed were lost. Reconnects with backoff (0.05 s doubling to 1 s),
    waiting on an event so :meth:`stop` ends it at once.
    """

    _POLL = 0.25

    def __init__(self, store: RedisStore) -> None:
        self._store = weakref.ref(store)
        self._lock = threading.Lock()
        self._watches: dict[bytes, list[Watch]] = {}
        self._stop = threading.Event()
        self._dirty = threading.Event()
        self.ready = threading.Event()
        self._pings = 0
        self._thread: threading.Thread | None = None

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches.setdefault(watch.channel, []).append(watch)
            self.ready.clear()
            self._dirty.set()
            if self._thread is None or not self._thread.is_alive():
                self._start()

    def remove(self, watch: Watch) -> None:
        with self._lock:
            found = self._watches.get(watch.channel, [])
            if watch in found:
                found.remove(watch)
            if not found:
                self._watches.pop(watch.channel, None)
            self._dirty.set()

    def _start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="tipkit-redis-watch", daemon=True
        )
        self._thread.start()

    def restart_in_child(self) -> None:
        """Start a fresh thread in a forked child (the parent's is not there)."""
        self._lock = threading.Lock()
        self.ready.clear()
        self._thread = None
        if self._watches:
            self._start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)

    def _fire(self, channels: list[bytes] | None = None) -> None:
        with self._lock:
            if channels is None:
                watches = [w for ws in self._watches.values() for w in ws]
            else:
                watches = [w for c in channels for w in self._watches.get(c, ())]
        dead = [watch for watch in watches if not watch.fire()]
        for watch in dead:
            self.remove(watch)

    def _channels(self) -> set[bytes]:
        with self._lock:
            self._dirty.clear()
            return set(self._watches)

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            store = self._store()
            if store is None:
                return
            pubsub: Any = None
            try:
                pubsub = store._new_pubsub()
                del store  # hold the store weakly while blocked on the socket
                self._serve(pubsub)
                backoff = 0.05
            except _ERRORS:
                self.ready.clear()
                # An event wait, not a sleep: stop() ends it at once.
                self._stop.wait(backoff)
                backoff = min(1.0, backoff * 2)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(*_ERRORS):
                        pubsub.close()

    def _serve(self, pubsub: Any) -> None:
        subscribed = self._channels()
        # A control channel keeps the subscription valid with no watches.
        pubsub.subscribe(b"tipkit:ctl", *subscribed)
        self._fire()
        confirm = self._confirm(pubsub)
        # A store collected without close() ends its listener (and its connection).
        while not self._stop.is_set() and self._store() is not None:
            if self._dirty.is_set():
                wanted = self._channels()
                if wanted - subscribed:
                    pubsub.subscribe(*(wanted - subscribed))
                if subscribed - wanted:
                    pubsub.unsubscribe(*(subscribed - wanted))
                subscribed = wanted
                confirm = self._confirm(pubsub)
            message = pubsub.get_message(timeout=self._POLL)
            if message is None:
                continue
            if message["type"] == "message":
                self._fire([message["channel"]])
            elif message["type"] == "pong" and message["data"] == confirm:
                with self._lock:  # add() clears ready and sets dirty under it
                    if not self._dirty.is_set():
                        self.ready.set()

    def _confirm(self, pubsub: Any) -> bytes:
        """Send a PING after the (un)subscribes; its PONG says the server has them.

        The server runs one connection's commands in order, so ``ready`` is set
        (on that PONG) only once every watched channel is subscribed on the
        server: a write made after ``watching`` is true is delivered.
        """
        self._pings += 1
        token = b"tipkit-ready-%d" % self._pings
        pubsub.ping(token)
        return token


class RedisStore:
    """The :class:`~tipkit.stores.Store` on a real Redis server, for fleets.

    Args:
        url_or_client: a Redis URL (``redis://[user:password@]host:port/db``,
            ``rediss://`` for TLS, ``unix://path``), or a ``redis.Redis`` (or
            ``redis.asyncio.Redis``) client, used as it is: with a client you
            pass, its own timeouts and retry policy apply.
        prefix: prepended to every Redis key tipkit writes. Give each
            application (or test) its own. A hash tag (``"{tipkit}:"``) puts
            every key on one Redis Cluster slot.
        timeout: seconds (or a ``timedelta``) bounding each connect and each
            reply on the clients tipkit creates, which never retry: a call
            returns or raises within ``timeout`` (twice that when it must
            reconnect first).
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
        url_or_client: str | redis.Redis | redis.asyncio.Redis,
        *,
        prefix: str = "tipkit:",
        timeout: float | timedelta = 0.05,
        on_error: OnError = "fail_open",
        push: bool = True,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {prefix!r}")
        self.timeout = to_seconds(timeout, "timeout", allow_zero=False)
        if self.timeout < 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.prefix = prefix
        self.on_error: OnError = check_on_error(on_error)
        self.push = bool(push)
        self._lock = threading.Lock()
        self._listener: _Listener | None = None
        self._packed: dict[tuple[str, float, float, float, float], bytes] = {}
        self._client: redis.Redis | None = None
        self._url_str: str | None = None
        self._params: dict[str, Any] | None = {}
        self._owns_sync = True
        # event loop -> (client, closer); weak so a finished loop's entry goes.
        self._aclients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            tuple[redis.asyncio.Redis, AsyncIterator[None]],
        ] = weakref.WeakKeyDictionary()
        self._given_async: redis.asyncio.Redis | None = None
        if isinstance(url_or_client, str):
            self._url_str = url_or_client
            self.url = _safe_url(url_or_client)
        elif isinstance(url_or_client, redis.Redis):
            self._client = url_or_client
            self._owns_sync = False
            self._params, self.url = _client_params(url_or_client)
        elif isinstance(url_or_client, redis.asyncio.Redis):
            self._given_async = url_or_client
            self._params, self.url = _client_params(url_or_client)
        else:
            raise TypeError(
                "url_or_client must be a Redis URL or a redis.Redis client, "
                f"got {url_or_client!r}"
            )
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        if self._listener is not None:
            self._listener.restart_in_child()

    def __repr__(self) -> str:
        return (
            f"<RedisStore url={self.url!r} prefix={self.prefix!r} "
            f"timeout={self.timeout} on_error={self.on_error!r}>"
        )

    # -- clients -----------------------------------------------------------------
    def _twin_params(self, flavour: str) -> dict[str, Any]:
        if self._params is None:
            raise TypeError(
                f"RedisStore cannot make a {flavour} client like the one it was given "
                f"({self.url}): pass a {flavour} client to a RedisStore of its own"
            )
        return self._params

    def _new_sync_client(self) -> redis.Redis:
        t = self.timeout
        if self._url_str is not None:
            return redis.Redis.from_url(
                self._url_str,
                retry=_no_retry_sync(),
                socket_timeout=t,
                socket_connect_timeout=t,
            )
        return redis.Redis(
            **self._twin_params("redis.Redis"),
            retry=_no_retry_sync(),
            socket_timeout=t,
            socket_connect_timeout=t,
        )

    def _new_async_client(self) -> redis.asyncio.Redis:
        t = self.timeout
        if self._url_str is not None:
            return redis.asyncio.Redis.from_url(
                self._url_str,
                retry=_no_retry_async(),
                socket_timeout=t,
                socket_connect_timeout=t,
            )
        return redis.asyncio.Redis(
            **self._twin_params("redis.asyncio.Redis"),
            retry=_no_retry_async(),
            socket_timeout=t,
            socket_connect_timeout=t,
        )

    def _new_pubsub(self) -> Any:
        # A client of its own: the subscription holds its connection for good.
        # Replies (subscribe confirmations) are bounded by at least a second.
        if self._url_str is None and self._params is None:
            client = self.client  # a client we were given and cannot copy (Sentinel)
        elif self._url_str is not None:
            client = redis.Redis.from_url(
                self._url_str,
                retry=_no_retry_sync(),
                socket_timeout=max(1.0, self.timeout),
                socket_connect_timeout=self.timeout,
            )
        else:
            client = redis.Redis(
                **self._twin_params("redis.Redis"),
                retry=_no_retry_sync(),
                socket_timeout=max(1.0, self.timeout),
                socket_connect_timeout=self.timeout,
            )
        return client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]  # redis-py leaves pubsub() unannotated

    @property
    def client(self) -> redis.Redis:
        """The synchronous ``redis.Redis`` client this store talks through.

        Made on first use when the store was given a URL or an async client.
        """
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._new_sync_client()
                client = self._client
        return client

    async def _aclient(self) -> redis.asyncio.Redis:
        if self._given_async is not None:
            return self._given_async
        loop = asyncio.get_running_loop()
        found = self._aclients.get(loop)
        if found is not None:
            return found[0]
        client = self._new_async_client()
        closer = _close_with_loop(client)
        with self._lock:
            self._aclients[loop] = (client, closer)
        # Start the generator so the loop knows it and closes it on shutdown.
        await anext(closer)
        return client

    # -- running scripts -----------------------------------------------------------
    def _fail(self, op: str, key: str, exc: BaseException) -> StoreError:
        return StoreError(
            f"RedisStore {op} {key!r} failed: {type(exc).__name__}: {exc}"
        )

    def _load(self, client: redis.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        for script in _SCRIPTS.values():
            pipe.script_load(script.source)
        pipe.execute()

    async def _aload(self, client: redis.asyncio.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        for script in _SCRIPTS.values():
            pipe.script_load(script.source)
        await pipe.execute()

    def _eval(self, script: _Script, key: str, *args: str) -> Any:
        if self._owns_sync:
            packed = _pack(
                b"EVALSHA",
                script.sha.encode(),
                b"1",
                key.encode(),
                *(a.encode() for a in args),
            )
            return self._send(script, key, packed)
        client = self.client
        try:
            try:
                return client.evalsha(script.sha, 1, key, *args)
            except redis.exceptions.NoScriptError:
                self._load(client)
                return client.evalsha(script.sha, 1, key, *args)
        except _ERRORS as exc:
            raise self._fail(script.name, key, exc) from exc

    def _send(self, script: _Script, key: str, packed: bytes) -> Any:
        """Send a packed EVALSHA on a pooled connection; read the reply.

        The client tipkit made has no retries and no hooks of the caller's, so
        its command machinery (argument encoding, retry wrapper, callbacks) is
        skipped: about a third of a local round trip. A client passed in goes
        through redis-py's own path, with its retry policy.
        """
        client = self.client
        pool = client.connection_pool
        try:
            for attempt in (1, 2):
                conn: Any = pool.get_connection()
                try:
                    conn.send_packed_command((packed,), check_health=False)
                    return conn.read_response()
                except redis.exceptions.NoScriptError:
                    if attempt == 2:  # pragma: no cover - loaded just before
                        raise
                except redis.exceptions.ResponseError:
                    raise  # the connection is fine: the server answered
                except BaseException:
                    # A half-read reply would poison the next user of this connection.
                    conn.disconnect()
                    raise
                finally:
                    pool.release(conn)
                self._load(client)
        except _ERRORS as exc:
            raise self._fail(script.name, key, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _aeval(self, script: _Script, key: str, *args: str) -> Any:
        try:
            client = await self._aclient()
            try:
                return await client.evalsha(script.sha, 1, key, *args)
            except redis.exceptions.NoScriptError:
                await self._aload(client)
                return await client.evalsha(script.sha, 1, key, *args)
        except _ERRORS as exc:
            raise self._fail(script.name, key, exc) from exc

    def _ns(self, namespace: str) -> str:
        return f"{self.prefix}ns:{namespace}"

    def _counters_key(self, key: str) -> str:
        return f"{self.prefix}c:{key}"

    def _bucket_key(self, key: str) -> str:
        return f"{self.prefix}tb:{key}"

    # -- entries -------------------------------------------------------------------
    def get(self, namespace: str, key: str) -> Entry | None:
        """Return the live entry at *key* in *namespace*, or ``None``."""
        return _entry(self._eval(_S["get"], self._ns(namespace), ":" + key))

    def set(
        self,
        namespace: str,
        key: str,
        value: JSON,
        *,
        ttl: float | timedelta | None = None,
    ) -> int:
        """Write *value* (expiring after *ttl* seconds of server time); return its version."""
        encoded = _encode(value, f"{namespace}/{key}")
        return int(
            self._eval(_S["set"], self._ns(namespace), ":" + key, encoded, _ttl_us(ttl))
        )

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
        encoded = _encode(value, f"{namespace}/{key}")
        args = (":" + key, encoded, _ttl_us(ttl), _check_version(version))
        new = self._eval(_S["compare_and_set"], self._ns(namespace), *args)
        return None if new is None else int(new)

    def delete(self, namespace: str, key: str) -> bool:
        """Remove *key*; return whether it existed (and was live)."""
        return bool(self._eval(_S["delete"], self._ns(namespace), ":" + key))

    def snapshot(self, namespace: str) -> Snapshot:
        """Return every live entry of *namespace* and its version, atomically."""
        return _snapshot(self._eval(_S["snapshot"], self._ns(namespace)))

    def version(self, namespace: str) -> int:
        """Return the namespace's version (0 if never written)."""
        key = self._ns(namespace)
        try:
            raw = self.client.hget(key, "version")
        except _ERRORS as exc:
            raise self._fail("version", key, exc) from exc
        return 0 if raw is None else int(cast("bytes", raw))

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
        args = _amounts(key, amounts)
        flat = self._eval(_S["increment"], self._counters_key(key), _ttl_ms(ttl), *args)
        return _fields(flat)

    def counters(self, key: str) -> dict[str, float]:
        """Return every field of the counters at *key* (empty if none)."""
        rkey = self._counters_key(key)
        try:
            raw = self.client.hgetall(rkey)
        except _ERRORS as exc:
            raise self._fail("counters", rkey, exc) from exc
        return {
            k.decode(): _number(v) for k, v in cast("dict[bytes, bytes]", raw).items()
        }

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
        script = _S["take_tokens"]
        if not self._owns_sync:
            args = _bucket_args(tokens, rate, capacity, max_wait)
            raw = self._eval(script, self._bucket_key(key), *args)
            return _take(raw, tokens, rate)
        # The same bucket sends the same command every time: build it once.
        packed_key = (key, tokens, rate, capacity, max_wait)
        packed = self._packed.get(packed_key)
        if packed is None:
            args = _bucket_args(tokens, rate, capacity, max_wait)
            packed = _pack(
                b"EVALSHA",
                script.sha.encode(),
                b"1",
                self._bucket_key(key).encode(),
                *(a.encode() for a in args),
            )
            if len(self._packed) >= _PACKED_MAX:
                self._packed.clear()
            self._packed[packed_key] = packed
        raw = self._send(script, key, packed)
        return _take(raw, tokens, rate)

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
                self._listener = _Listener(self)
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
        with :meth:`aclose`.
        """
        if self._listener is not None:
            self._listener.stop()
        if self._owns_sync and self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close the async client of the running event loop (if tipkit made one)."""
        with self._lock:
            found = self._aclients.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[1].aclose()  # type: ignore[attr-defined]  # an async generator

    # -- async twins ---------------------------------------------------------------------
    async def aget(self, namespace: str, key: str) -> Entry | None:
        """Async twin of :meth:`get`."""
        return _entry(await self._aeval(_S["get"], self._ns(namespace), ":" + key))

    async def aset(
        self,
        namespace: str,
        key: str,
        value: JSON,
        *,
        ttl: float | timedelta | None = None,
    ) -> int:
        """Async twin of :meth:`set`."""
        encoded = _encode(value, f"{namespace}/{key}")
        raw = await self._aeval(
            _S["set"], self._ns(namespace), ":" + key, encoded, _ttl_us(ttl)
        )
        return int(raw)

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
        encoded = _encode(value, f"{namespace}/{key}")
        args = (":" + key, encoded, _ttl_us(ttl), _check_version(version))
        new = await self._aeval(_S["compare_and_set"], self._ns(namespace), *args)
        return None if new is None else int(new)

    async def adelete(self, namespace: str, key: str) -> bool:
        """Async twin of :meth:`delete`."""
        return bool(await self._aeval(_S["delete"], self._ns(namespace), ":" + key))

    async def asnapshot(self, namespace: str) -> Snapshot:
        """Async twin of :meth:`snapshot`."""
        return _snapshot(await self._aeval(_S["snapshot"], self._ns(namespace)))

    async def aversion(self, namespace: str) -> int:
        """Async twin of :meth:`version`."""
        key = self._ns(namespace)
        try:
            client = await self._aclient()
            raw = await client.hget(key, "version")
        except _ERRORS as exc:
            raise self._fail("version", key, exc) from exc
        return 0 if raw is None else int(raw)

    async def aincrement(
        self,
        key: str,
        amounts: Mapping[str, float],
        *,
        ttl: float | timedelta | None = None,
    ) -> dict[str, float]:
        """Async twin of :meth:`increment`."""
        args = _amounts(key, amounts)
        flat = await self._aeval(
            _S["increment"], self._counters_key(key), _ttl_ms(ttl), *args
        )
        return _fields(flat)

    async def acounters(self, key: str) -> dict[str, float]:
        """Async twin of :meth:`counters`."""
        rkey = self._counters_key(key)
        try:
            client = await self._aclient()
            raw = await client.hgetall(rkey)
        except _ERRORS as exc:
            raise self._fail("counters", rkey, exc) from exc
        return {
            k.decode(): _number(v) for k, v in cast("dict[bytes, bytes]", raw).items()
        }

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
        args = _bucket_args(tokens, rate, capacity, max_wait)
        raw = await self._aeval(_S["take_tokens"], self._bucket_key(key), *args)
        return _take(raw, tokens, rate)
