"""The listener thread behind RedisStore.watch: pub/sub to the watched namespaces."""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from tipkit.clock import SYSTEM_CLOCK
from tipkit.stores._redis_conn import ERRORS, redis
from tipkit.stores._watch import Watch

__all__ = ["Listener"]

_log = logging.getLogger("tipkit")


class _Dropped(redis.exceptions.ConnectionError):
    """The server unsubscribed a channel we hold: its slot moved to another node."""


def _no_sharded_pubsub(exc: BaseException) -> bool:
    """Whether *exc* is a server without SSUBSCRIBE (Redis < 7, or renamed away)."""
    text = str(exc).lower()
    return (
        isinstance(exc, redis.exceptions.ResponseError)
        and "unknown command" in text
        and "ssubscribe" in text
    )


class _Health:
    """When the subscription was last heard from, and the PING it awaits."""

    __slots__ = ("asked", "last", "token")

    def __init__(self, token: bytes) -> None:
        self.token = token
        self.last = SYSTEM_CLOCK.monotonic()
        self.asked: float | None = self.last  # the oldest unanswered PING

    def ask(self, token: bytes) -> None:
        self.token = token
        if self.asked is None:
            self.asked = SYSTEM_CLOCK.monotonic()

    def heard(self) -> None:
        self.last = SYSTEM_CLOCK.monotonic()

    def answered(self) -> None:
        self.asked = None

    def quiet(self, seconds: float) -> bool:
        return self.asked is None and SYSTEM_CLOCK.monotonic() - self.last >= seconds

    def silent(self, seconds: float) -> bool:
        return (
            self.asked is not None and SYSTEM_CLOCK.monotonic() - self.asked > seconds
        )


class Listener:
    """One thread per store, subscribed to the channels of the watched namespaces.

    Not a timer: the thread blocks on the subscription socket (waking every
    ``_POLL`` seconds only to notice new channels or a stop) and calls the
    callbacks of a namespace when a write to it is published. After every
    (re)connection it calls them all, because writes published while it was
    unsubscribed were lost. Reconnects with backoff (0.05 s doubling to 1 s),
    waiting on an event so :meth:`stop` ends it at once.

    On a cluster it follows the namespaces' slot: a node that loses the slot
    (a failover, a migration) unsubscribes its sharded subscribers, and the
    listener then reconnects to the slot's new owner (a fresh slot map). A
    server without ``SSUBSCRIBE`` (Redis < 7) makes it fall back to classic
    pub/sub by itself, logged once (the scripts fall back to ``PUBLISH`` too).
    A subscription that stops answering PINGs is reconnected (a hung node).
    """

    _POLL = 0.25
    # A subscription quiet for _HEALTH seconds is asked for a PONG; none within
    # _PATIENCE means a hung node (a frozen primary the cluster failed over
    # from sends nothing, not even its unsubscribes): reconnect. Patient, as a
    # reconnect on a cluster refreshes the slot map through the store's own
    # client, which a short pause does not need.
    _HEALTH = 1.0
    _PATIENCE = 5.0

    def __init__(
        self,
        new_pubsub: Callable[[], Any],
        *,
        control: bytes = b"tipkit:ctl",
        sharded: bool = False,
    ) -> None:
        # Sharded pub/sub (Redis Cluster, Redis 7+): SSUBSCRIBE on the node that
        # owns the channels' slot, and messages of type "smessage".
        self._control = control
        self._sharded = sharded
        self._kind = "smessage" if sharded else "message"
        # Weak: a store collected without close() ends its listener.
        self._new_pubsub = weakref.WeakMethod(new_pubsub)
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
            new_pubsub = self._new_pubsub()
            if new_pubsub is None:
                return
            pubsub: Any = None
            try:
                pubsub = new_pubsub()
                del new_pubsub  # hold the store weakly while blocked on the socket
                self._serve(pubsub)
                backoff = 0.05
            # redis-py raises ValueError reading a connection the server closed
            # under it (seen on a reconnect to a node in DEBUG SLEEP).
            except (*ERRORS, ValueError) as exc:
                self.ready.clear()
                if self._sharded and _no_sharded_pubsub(exc):
                    self._classic()
                    continue
                # An event wait, not a sleep: stop() ends it at once.
                self._stop.wait(backoff)
                backoff = min(1.0, backoff * 2)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(*ERRORS, ValueError):
                        pubsub.close()

    def _classic(self) -> None:
        self._sharded = False
        self._kind = "message"
        _log.warning(
            "tipkit: the Redis server has no SSUBSCRIBE (Redis < 7): the watch "
            "listener uses classic pub/sub (pass sharded_pubsub=False to say so)"
        )

    def _serve(self, pubsub: Any) -> None:
        # A server-sent unsubscribe (the slot moved away) is only seen with the
        # subscribe messages on: ours are told apart by the channels held.
        pubsub.ignore_subscribe_messages = False
        subscribed = self._channels()
        subscribe = pubsub.ssubscribe if self._sharded else pubsub.subscribe
        unsubscribe = pubsub.sunsubscribe if self._sharded else pubsub.unsubscribe
        # A control channel keeps the subscription valid with no watches.
        subscribe(self._control, *subscribed)
        self._fire()
        health = _Health(self._confirm(pubsub))
        # A store collected without close() ends its listener (and its connection).
        while not self._stop.is_set() and self._new_pubsub() is not None:
            if self._dirty.is_set():
                wanted = self._channels()
                if wanted - subscribed:
                    subscribe(*(wanted - subscribed))
                if subscribed - wanted:
                    unsubscribe(*(subscribed - wanted))
                subscribed = wanted
                health.ask(self._confirm(pubsub))
            elif health.quiet(self._HEALTH):
                health.ask(self._confirm(pubsub))
            if health.silent(self._PATIENCE):
                raise _Dropped(f"no PONG within {self._PATIENCE} s: a hung node")
            message = pubsub.get_message(timeout=self._POLL)
            if message is not None:
                health.heard()
                self._handle(message, subscribed, health)

    def _handle(self, message: Any, held: set[bytes], health: _Health) -> None:
        kind = message["type"]
        if kind == self._kind:
            self._fire([message["channel"]])
        elif kind in ("sunsubscribe", "unsubscribe") and (
            message["channel"] in held or message["channel"] == self._control
        ):
            raise _Dropped(f"the server dropped {message['channel']!r}")
        elif kind == "pong" and message["data"] == health.token:
            health.answered()
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
