"""Token-bucket rate limiters: one bucket, or one bucket per key.

A :class:`TokenBucket` holds up to ``capacity`` tokens and refills at ``rate``
tokens per second; it starts full. Over any interval of length *t* it admits at
most ``capacity + rate * t`` tokens, whatever the number of threads and tasks.

Waiting callers *reserve* their tokens in arrival order (the level goes
negative), so they are served first come, first served: a large request is never
overtaken forever by small ones, and ``try_acquire`` cannot jump the queue. A
waiter that gives up (cancelled, interrupted, out of time) gives its reservation
back, and the waiters behind it are moved forward and woken, so the bound holds
exactly: returned tokens are never handed out twice.

:class:`KeyedRateLimiter` keeps one bucket per key (tenant, client, user) in
bounded memory: it only ever forgets a bucket that has refilled completely, which
is indistinguishable from a bucket that never existed, so eviction can never let
a key burst again.

Both take ``mode="shadow"``: decide and count exactly as enforcement would, report
``would_reject``, admit everything. Both take ``store=`` (a
:class:`tipkit.stores.Store`) to share buckets between processes.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

from tipkit._core import _deadline, _fork
from tipkit._core._durations import to_seconds
from tipkit._core._guard import Guard, Wait, Waiter
from tipkit._core._mode import Mode, check_mode
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import DeadlineExceededError, RateLimitedError, StoreError
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY, Attributes, Counter
from tipkit.telemetry._events import BUS, AttributeValue, Event

if TYPE_CHECKING:
    from tipkit.stores._protocol import Store, TokenTake

__all__ = ["KeyedRateLimiter", "RateLimited", "TokenBucket"]

P = ParamSpec("P")
R = TypeVar("R")

_INF = math.inf
_current_deadline = _deadline.CURRENT.get


@dataclass(frozen=True, slots=True)
class RateLimited(Event):
    """A limiter refused tokens (or, in shadow mode, would have).

    Attributes:
        key: the key of a :class:`KeyedRateLimiter` (``None`` for a single
            bucket). Never exported: keys are often tenant or user ids.
        retry_after: seconds until the tokens would be there.
        shadow: the limiter is in shadow mode and let the call through.
        runbook: the limiter's runbook URL, if any.
    """

    key: str | None
    retry_after: float
    shadow: bool
    runbook: str | None = None

    otel_name: ClassVar[str] = "tipkit.ratelimit.rejected"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return name, retry_after, shadow and runbook (never the key)."""
        attrs: dict[str, AttributeValue] = {
            names.RATELIMIT_NAME: self.name,
            "tipkit.retry_after": self.retry_after,
            names.MODE: "shadow" if self.shadow else "enforce",
        }
        if self.runbook is not None:
            attrs[names.RUNBOOK] = self.runbook
        return attrs


def _check_name(name: object, owner: str) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{owner}: name must be a non-empty string, got {name!r}")
    return name


def _check_rate_capacity(
    owner: str, rate: object, capacity: object
) -> tuple[float, float]:
    for arg, value in (("rate", rate), ("capacity", capacity)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{owner}: {arg} must be a number, got {value!r}")
        if not 0 < value < _INF:
            raise ValueError(
                f"{owner}: {arg} must be a positive finite number, got {value!r}"
            )
    return float(rate), float(capacity)  # type: ignore[arg-type]  # checked just above


def _check_tokens(owner: object, tokens: object, capacity: float) -> float:
    if isinstance(tokens, bool) or not isinstance(tokens, int | float):
        raise TypeError(f"{owner!r}: tokens must be a number, got {tokens!r}")
    if not tokens > 0 or tokens == _INF:
        raise ValueError(
            f"{owner!r}: tokens must be a positive finite number, got {tokens!r}"
        )
    if tokens > capacity:
        raise ValueError(
            f"{owner!r}: tokens={tokens!r} can never be served: the capacity is "
            f"{capacity:g}, so no amount of waiting makes that many tokens available"
        )
    return float(tokens)


def _check_wait(value: float | timedelta | None, arg: str, owner: object) -> float:
    if value is None:
        return _INF
    secs = to_seconds(value, f"{owner!r}: {arg}")
    if secs < 0:
        raise ValueError(f"{owner!r}: {arg} must be >= 0 seconds, got {value!r}")
    return secs


def _check_runbook(runbook: object) -> str | None:
    if runbook is not None and not isinstance(runbook, str):
        raise TypeError(f"runbook must be a URL string or None, got {runbook!r}")
    return runbook


def _counters(name_key: str, name: str, mode: Mode) -> tuple[Counter, Counter]:
    base = {name_key: name, names.MODE: mode}
    return (
        REGISTRY.counter(names.RATELIMIT_REQUESTS, {**base, names.RESULT: "acquired"}),
        REGISTRY.counter(names.RATELIMIT_REQUESTS, {**base, names.RESULT: "rejected"}),
    )


class _Reservation:
    """Tokens taken ahead of time by one waiting call, ready at ``ready``."""

    __slots__ = ("ready", "start", "tokens", "waiter")

    def __init__(self, tokens: float, ready: float, start: float) -> None:
        self.tokens = tokens
        self.ready = ready
        self.start = start
        self.waiter = Waiter()

    def __repr__(self) -> str:
        return f"<reservation {self.tokens:g} ready={self.ready:.6f}>"


class TokenBucket(Guard[bool]):
    """A token bucket: ``rate`` tokens per second, at most ``capacity`` held.

    ``try_acquire`` never blocks; ``acquire``/``acquire_async`` wait through the
    clock, first come first served; the faces (``@bucket``, ``with bucket``,
    ``async with bucket``, ``call``, ``acall``) take one token and wait up to
    ``max_wait`` seconds (default 0: reject at once with
    :class:`~tipkit.errors.RateLimitedError`).

    Thread-safe and asyncio-safe: one lock, held for a few arithmetic operations
    and never while waiting, so ``try_acquire`` never fails because of contention
    while tokens remain. Reads the injected clock once per decision.

    Args:
        name: names the bucket in errors, events and metrics.
        rate: tokens added per second (positive).
        capacity: the most tokens the bucket holds, i.e. the largest burst
            (positive). The bucket starts full.
        max_wait: how long the faces wait for a token (seconds or timedelta).
        mode: ``"enforce"`` or ``"shadow"`` (decide and count, admit everything).
        store: share the bucket through a :class:`~tipkit.stores.Store`
            (key ``ratelimit:<name>``); without it the bucket lives in this
            process and never pays for the protocol. While the store fails,
            the bucket follows the store's ``on_error`` (``"fail_open"``:
            admit, counted in ``store_errors``; ``"fail_closed"``: refuse).
        batch: with *store*, take this many tokens per round trip and hand
            them out locally (default 1: every decision asks the store). A
            process may then hold up to ``batch - 1`` tokens it has not used
            yet, so over any interval *t* a fleet of *P* processes admits at
            most ``capacity + rate * t + P * (batch - 1)``.
        runbook: URL carried by the bucket's events and errors.
        clock: the clock read for refills and waits.

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
    """

    __slots__ = (
        "_acquired",
        "_capacity",
        "_last",
        "_level",
        "_lock",
        "_max_wait",
        "_mode",
        "_monotonic",
        "_queue",
        "_rate",
        "_rejected",
        "_shadow",
        "_wait_attrs",
        "name",
        "runbook",
        "would_reject",
    )

    def __new__(  # noqa: PYI034  # returns a subclass when store= is given
        cls,
        *args: Any,  # noqa: ARG004  # __init__ takes them
        store: Store | None = None,
        **kwargs: Any,  # noqa: ARG004  # __init__ takes them
    ) -> TokenBucket:
        """Return a store-backed bucket when *store* is given."""
        if store is not None and cls is TokenBucket:
            return object.__new__(_StoreTokenBucket)
        return object.__new__(cls)

    def __init__(
        self,
        name: str,
        *,
        rate: float,
        capacity: float,
        max_wait: float | timedelta = 0.0,
        mode: Mode = "enforce",
        store: Store | None = None,
        runbook: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        batch: int = 1,
    ) -> None:
        super().__init__(clock=clock)
        self.name = _check_name(name, "TokenBucket")
        self._rate, self._capacity = _check_rate_capacity(
            f"TokenBucket {name!r}", rate, capacity
        )
        self._max_wait = _check_wait(max_wait, "max_wait", f"TokenBucket {name!r}")
        self.runbook = _check_runbook(runbook)
        self._mode = check_mode(mode, f"TokenBucket {name!r}")
        self._shadow = self._mode == "shadow"
        self._acquired, self._rejected = _counters(
            names.RATELIMIT_NAME, name, self._mode
        )
        self._wait_attrs: Attributes = {names.RATELIMIT_NAME: name}
        self.would_reject = 0
        self._monotonic = clock.monotonic
        self._lock = _fork.new_lock()
        self._level = self._capacity
        self._last = self._monotonic()
        self._queue: list[_Reservation] = []
        self._init_store(store, batch)
        _fork.register(self)
        REGISTRY.register_gauge(names.RATELIMIT_TOKENS, self, _tokens_gauge)

    def _init_store(self, store: Store | None, batch: int) -> None:  # noqa: ARG002  # the store-backed subclass uses it
        """Set up the store (only store-backed buckets have one)."""
        if batch != 1:
            raise ValueError(
                f"TokenBucket {self.name!r}: batch={batch!r} needs store= (a bucket "
                "in this process has no round trips to save)"
            )

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()
        # Waiters of the parent do not exist in the child: drop their reservations.
        self._queue = []

    # -- configuration and state -------------------------------------------------------
    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self._rate

    @property
    def capacity(self) -> float:
        """The most tokens the bucket holds."""
        return self._capacity

    @property
    def max_wait(self) -> float:
        """Seconds the faces wait for a token."""
        return self._max_wait

    @property
    def mode(self) -> Mode:
        """``"enforce"`` or ``"shadow"``; assign to switch a live bucket."""
        return self._mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        mode = check_mode(value, f"TokenBucket {self.name!r}")
        self._acquired, self._rejected = _counters(
            names.RATELIMIT_NAME, self.name, mode
        )
        self._mode = mode
        self._shadow = mode == "shadow"

    @property
    def tokens(self) -> float:
        """Tokens available now (negative while waiters hold reservations)."""
        now = self._monotonic()
        with self._lock:
            self._refill(now)
            return self._level

    @property
    def waiting(self) -> int:
        """Number of callers holding a reservation that have not been admitted."""
        return len(self._queue)

    def __repr__(self) -> str:
        shadow = " mode=shadow" if self._shadow else ""
        return (
            f"<TokenBucket {self.name!r} rate={self._rate:g}/s "
            f"capacity={self._capacity:g} tokens={self.tokens:.6g}{shadow}>"
        )

    # -- the core ------------------------------------------------------------------------
    def _refill(self, now: float) -> None:
        """Bring the level up to *now*; call with the lock held."""
        if now > self._last:
            level = self._level + (now - self._last) * self._rate
            self._level = level if level < self._capacity else self._capacity  # noqa: FURB136  # min() costs a call on the hot path
            self._last = now

    def try_acquire(self, tokens: float = 1) -> bool:
        """Take *tokens* if they are there now; never wait.

        Returns ``False`` when they are not (or when waiters are queued for
        them: a waiter is never overtaken). In shadow mode the decision is
        counted and reported but ``True`` is returned.

        Raises:
            ValueError: *tokens* is not positive or exceeds the capacity.
        """
        if tokens != 1:
            tokens = _check_tokens(self, tokens, self._capacity)
        now = self._monotonic()
        lock = self._lock
        # acquire()/release() rather than `with`: half the cost on this hot path.
        lock.acquire()
        try:
            last = self._last
            if now > last:
                level = self._level + (now - last) * self._rate
                if level > self._capacity:  # noqa: PLR1730  # min() costs a call on the hot path
                    level = self._capacity
                self._last = now
            else:
                level = self._level
            if level >= tokens:
                self._level = level - tokens
                took = True
            else:
                self._level = level
                took = False
        finally:
            lock.release()
        if took:
            self._acquired.inc()
            return True
        if tokens > self._capacity:
            # Only reachable for tokens=1 on a bucket smaller than one token (other
            # sizes were checked above): checked here, off the admitting path.
            _check_tokens(self, tokens, self._capacity)
        self._reject(tokens - level, None)
        return self._shadow

    def _reject(self, missing: float, key: str | None) -> None:
        """Count and report a refusal of *missing* tokens short."""
        self._rejected.inc()
        if self._shadow:
            self.would_reject += 1
        if RateLimited.listened:
            BUS.publish(
                RateLimited(
                    self.name, key, missing / self._rate, self._shadow, self.runbook
                )
            )

    def _error(self, retry_after: float) -> RateLimitedError:
        return RateLimitedError(
            f"rate limit {self.name!r} exceeded ({self._rate:g}/s, capacity "
            f"{self._capacity:g}): retry after {retry_after:.3f}s",
            name=self.name,
            retry_after=retry_after,
            runbook=self.runbook,
        )

    def _take(self, now: float, tokens: float, max_wait: float) -> bool | Wait:
        """Take or reserve *tokens* at *now*; raise when they cannot come in time."""
        with self._lock:
            self._refill(now)
            level = self._level
            if level >= tokens:
                self._level = level - tokens
                self._acquired.inc()
                return True
            wait = (tokens - level) / self._rate
            if wait <= max_wait:
                dl = _deadline.CURRENT.get()
                if dl is not None and wait > dl.remaining():
                    # Waiting could only end in a deadline error: fail now, reserve nothing.
                    raise DeadlineExceededError(
                        f"rate limit {self.name!r} needs {wait:.3f}s for {tokens:g} "
                        f"tokens, more than the {dl.remaining():.3f}s left of deadline "
                        f"{dl.name or 'unnamed'}",
                        name=dl.name,
                        timeout=dl.timeout,
                    )
                self._level = level - tokens
                self._acquired.inc()
                if self._shadow:
                    # Enforcement would reserve and wait; shadow reserves the same
                    # tokens (so later decisions match) but lets the call go now.
                    return True
                res = _Reservation(tokens, now + wait, now)
                self._queue.append(res)
                return Wait(wait, waiter=res.waiter, state=res)
        self._reject(tokens - level, None)
        if self._shadow:
            return True
        raise self._error(wait)

    def _step(self, now: float, pending: Wait | None) -> bool | Wait:
        if pending is None:
            lock = self._lock
            lock.acquire()
            try:
                last = self._last
                if now > last:
                    level = self._level + (now - last) * self._rate
                    if level > self._capacity:  # noqa: PLR1730  # min() costs a call on the hot path
                        level = self._capacity
                    self._last = now
                else:
                    level = self._level
                if level >= 1:
                    self._level = level - 1
                    took = True
                else:
                    self._level = level
                    took = False
            finally:
                lock.release()
            if took:
                self._acquired.inc()
                return True
            return self._take(now, 1.0, self._max_wait)
        res: _Reservation = pending.state
        with self._lock:
            if res.ready > now:
                if res.waiter.notified:
                    res.waiter = Waiter()
                return Wait(res.ready - now, waiter=res.waiter, state=res)
            self._queue.remove(res)
        REGISTRY.record(names.RATELIMIT_WAIT, now - res.start, self._wait_attrs)
        return True

    # -- faces: a token is spent, not held, so nothing is tracked between enter and exit
    def _check_deadline(self) -> None:
        dl = _deadline.CURRENT.get()
        if dl is not None and dl.expired():
            raise DeadlineExceededError(
                f"deadline of {dl.timeout}s ({dl.name or 'unnamed'}) passed before "
                f"{self!r} could admit the call",
                name=dl.name,
                timeout=dl.timeout,
            )

    def __enter__(self) -> None:
        if _current_deadline() is not None:
            self._check_deadline()
        step = self._step(self._monotonic(), None)
        if type(step) is Wait:
            self._wait_sync(step)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def __aenter__(self) -> None:
        # The fast path of _step, inlined: a method call is a third of the budget here.
        if _current_deadline() is not None:
            self._check_deadline()
        now = self._monotonic()
        lock = self._lock
        lock.acquire()
        try:
            last = self._last
            if now > last:
                level = self._level + (now - last) * self._rate
                if level > self._capacity:  # noqa: PLR1730  # min() costs a call on the hot path
                    level = self._capacity
                self._last = now
            else:
                level = self._level
            if level >= 1:
                self._level = level - 1
                took = True
            else:
                self._level = level
                took = False
        finally:
            lock.release()
        if took:
            self._acquired.inc()
            return
        step = self._take(now, 1.0, self._max_wait)
        if type(step) is Wait:
            await self._wait_async(step)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        step = self._step
        wait = self._wait_sync
        now = self._monotonic
        current_deadline = _deadline.CURRENT.get
        check_deadline = self._check_deadline

        @functools.wraps(fn)
        def limited(*args: P.args, **kwargs: P.kwargs) -> R:
            if current_deadline() is not None:
                check_deadline()
            ticket = step(now(), None)
            if type(ticket) is Wait:
                wait(ticket)
            return fn(*args, **kwargs)

        return limited

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        step = self._step
        wait = self._wait_async
        now = self._monotonic
        current_deadline = _deadline.CURRENT.get
        check_deadline = self._check_deadline

        @functools.wraps(fn)
        async def limited(*args: P.args, **kwargs: P.kwargs) -> R:
            if current_deadline() is not None:
                check_deadline()
            ticket = step(now(), None)
            if type(ticket) is Wait:
                await wait(ticket)
            return await fn(*args, **kwargs)

        return limited

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Take a token (waiting up to ``max_wait``), then return ``fn(*args, **kwargs)``."""
        self.__enter__()
        return fn(*args, **kwargs)

    async def acall(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Take a token (waiting up to ``max_wait``), then await ``fn(*args, **kwargs)``."""
        await self.__aenter__()
        return await fn(*args, **kwargs)

    def _release(self, ticket: bool, error: BaseException | None, now: float) -> None:
        """Do nothing: tokens are spent, not held."""

    def _abandon(self, pending: Wait, now: float) -> None:
        """Give back the reservation of a waiter that stopped waiting.

        The waiters behind it were scheduled as if these tokens were spent; they
        are moved forward by the tokens returned and woken, so the tokens are
        used once, by them or by new callers, never by both.
        """
        res: _Reservation = pending.state
        woken: list[Waiter] = []
        with self._lock:
            try:
                i = self._queue.index(res)
            except ValueError:  # already admitted or given back
                return
            del self._queue[i]
            self._refill(now)
            level = self._level
            returned = min(res.tokens, self._capacity - level)
            self._level = level + returned
            shift = returned / self._rate
            for later in self._queue[i:]:
                if later.ready > now:
                    later.ready -= shift
                    woken.append(later.waiter)
        for waiter in woken:
            waiter.notify()

    # -- acquire with a timeout ----------------------------------------------------------
    def _begin(self, tokens: float, timeout: float | timedelta | None) -> bool | Wait:
        tokens = _check_tokens(self, tokens, self._capacity)
        max_wait = _check_wait(timeout, "timeout", self)
        dl = _deadline.CURRENT.get()
        if dl is not None and dl.expired():
            raise DeadlineExceededError(
                f"deadline of {dl.timeout}s ({dl.name or 'unnamed'}) passed before "
                f"{self!r} could admit the call",
                name=dl.name,
                timeout=dl.timeout,
            )
        return self._take(self._monotonic(), tokens, max_wait)

    def acquire(
        self, tokens: float = 1, timeout: float | timedelta | None = None
    ) -> None:
        """Take *tokens*, waiting through the clock until they are there.

        Waiters are served first come, first served. When the tokens cannot be
        there within *timeout* seconds (``None``: wait as long as it takes), fail
        at once, without waiting and without reserving anything. A waiter
        interrupted while waiting gives its reservation back.

        Raises:
            RateLimitedError: not within *timeout*; ``retry_after`` says when.
            DeadlineExceededError: the current tipkit deadline ends first.
            ValueError: *tokens* is not positive or exceeds the capacity.
        """
        step = self._begin(tokens, timeout)
        if type(step) is Wait:
            self._wait_sync(step)

    async def acquire_async(
        self, tokens: float = 1, timeout: float | timedelta | None = None
    ) -> None:
        """Async twin of :meth:`acquire`; a cancelled waiter gives its reservation back."""
        step = self._begin(tokens, timeout)
        if type(step) is Wait:
            await self._wait_async(step)


def _tokens_gauge(bucket: TokenBucket) -> Iterable[tuple[float, Attributes]]:
    if isinstance(bucket, _StoreTokenBucket):
        return ()  # reading a shared bucket costs a round trip: not at collection time
    return ((bucket.tokens, {names.RATELIMIT_NAME: bucket.name}),)


class _StoreReservation:
    __slots__ = ("ready", "start", "tokens")

    def __init__(self, tokens: float, ready: float, start: float) -> None:
        self.tokens = tokens
        self.ready = ready
        self.start = start


class _StoreTokenBucket(TokenBucket):
    """A :class:`TokenBucket` whose state lives in a :class:`~tipkit.stores.Store`.

    Each decision is one ``take_tokens`` round trip, refilled on the store's
    clock; waits run on this bucket's clock. A waiter that stops waiting does
    *not* return its tokens: the store cannot tell whether other processes have
    reserved behind it, and returning tokens under their reservations could
    admit more than the bound.

    A failing store (``StoreError``, bounded by the store's timeout) is handled
    by the store's ``on_error`` policy: ``"fail_open"`` admits (and counts the
    call in ``store_errors``), ``"fail_closed"`` refuses with
    :class:`~tipkit.errors.RateLimitedError`. The first failure of an outage
    publishes ``StoreUnavailable``, the first success after it ``StoreRecovered``.

    With ``batch=k`` a try (no waiting) takes *k* tokens in one round trip and
    keeps the unused ones in this process, under a lock, for the next tries;
    when fewer than *k* are left in the store it takes what is there. Waiting
    acquires always go to the store. A forked child starts with none held.
    """

    __slots__ = (
        "_admit",
        "_batch",
        "_held",
        "_held_lock",
        "_key",
        "_outage",
        "_policy",
        "_store",
        "store_errors",
    )

    _store: Store

    def _init_store(self, store: Store | None, batch: int) -> None:
        from tipkit.stores._events import Outage  # noqa: PLC0415  # keeps the in-process path import-light
        from tipkit.stores._protocol import Store, TokenTake  # noqa: PLC0415  # keeps the in-process path import-light

        if not isinstance(store, Store):
            raise TypeError(f"store must implement tipkit.stores.Store, got {store!r}")
        # The answer for a try served from held tokens, or failed open.
        self._admit = TokenTake(admitted=True, wait=0.0, tokens=0.0, retry_after=0.0)
        if isinstance(batch, bool) or not isinstance(batch, int):
            raise TypeError(
                f"TokenBucket {self.name!r}: batch must be an int, got {batch!r}"
            )
        if not 1 <= batch <= self._capacity:
            raise ValueError(
                f"TokenBucket {self.name!r}: batch must be between 1 and the "
                f"capacity ({self._capacity:g}), got {batch!r}"
            )
        self._store = store
        self._key = f"ratelimit:{self.name}"
        self._batch = float(batch)
        self._held = 0.0
        self._held_lock = _fork.new_lock()
        self._policy: str = getattr(store, "on_error", "fail_open")
        self._outage = Outage(self.name, "ratelimit", self._policy, clock=self._clock)
        self.store_errors = 0

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._held_lock = _fork.new_lock()
        # The parent may spend these: a child spending them too would over-admit.
        self._held = 0.0

    def __repr__(self) -> str:
        try:
            tokens = f"{self.tokens:.6g}"
        except StoreError:
            tokens = "unknown (store unavailable)"
        shadow = " mode=shadow" if self._shadow else ""
        batch = f" batch={self._batch:g} held={self._held:g}" if self._batch > 1 else ""
        return (
            f"<TokenBucket {self.name!r} rate={self._rate:g}/s "
            f"capacity={self._capacity:g} tokens={tokens}{batch}{shadow}>"
        )

    @property
    def tokens(self) -> float:
        """Tokens available now in the store (one round trip), plus any held here.

        Raises:
            StoreError: the store could not be read.
        """
        return (
            self._store.take_tokens(
                self._key, 0, rate=self._rate, capacity=self._capacity
            ).tokens
            + self._held
        )

    # -- talking to the store, with the failure policy -------------------------------
    def _failed(self, exc: StoreError, tokens: float) -> TokenTake:
        self._outage.failed(exc)
        self.store_errors += 1
        if self._policy == "fail_closed":
            return self._admit._replace(admitted=False, retry_after=tokens / self._rate)
        return self._admit

    def _from_held(self, tokens: float) -> bool:
        with self._held_lock:
            if self._held >= tokens:
                self._held -= tokens
                return True
        return False

    def _keep(self, took: TokenTake, taken: float, tokens: float) -> TokenTake:
        """Hold what a batched take got beyond *tokens*."""
        if took.admitted and taken > tokens:
            with self._held_lock:
                self._held += taken - tokens
        return took

    def _fetch(self, tokens: float, max_wait: float) -> TokenTake:
        store, key, rate, cap = self._store, self._key, self._rate, self._capacity
        try:
            if self._batch > 1 and max_wait <= 0:
                if self._from_held(tokens):
                    return self._admit
                want = max(self._batch, tokens)
                took = store.take_tokens(key, want, rate=rate, capacity=cap)
                if not took.admitted:
                    # Fewer than a batch left: take what is there, if enough.
                    level = math.floor(want - took.retry_after * rate + 1e-9)
                    if level < tokens:
                        self._outage.ok()
                        # Say when *tokens* are there, not when a whole batch is.
                        return took._replace(retry_after=(tokens - took.tokens) / rate)
                    want = float(level)
                    took = store.take_tokens(key, want, rate=rate, capacity=cap)
                self._outage.ok()
                return self._keep(took, want, tokens)
            took = store.take_tokens(
                key, tokens, rate=rate, capacity=cap, max_wait=max_wait
            )
        except StoreError as exc:
            return self._failed(exc, tokens)
        self._outage.ok()
        return took

    async def _afetch(self, tokens: float, max_wait: float) -> TokenTake:
        store, key, rate, cap = self._store, self._key, self._rate, self._capacity
        try:
            if self._batch > 1 and max_wait <= 0:
                if self._from_held(tokens):
                    return self._admit
                want = max(self._batch, tokens)
                took = await store.atake_tokens(key, want, rate=rate, capacity=cap)
                if not took.admitted:
                    level = math.floor(want - took.retry_after * rate + 1e-9)
                    if level < tokens:
                        self._outage.ok()
                        # Say when *tokens* are there, not when a whole batch is.
                        return took._replace(retry_after=(tokens - took.tokens) / rate)
                    want = float(level)
                    took = await store.atake_tokens(key, want, rate=rate, capacity=cap)
                self._outage.ok()
                return self._keep(took, want, tokens)
            took = await store.atake_tokens(
                key, tokens, rate=rate, capacity=cap, max_wait=max_wait
            )
        except StoreError as exc:
            return self._failed(exc, tokens)
        self._outage.ok()
        return took

    def try_acquire(self, tokens: float = 1) -> bool:
        """Take *tokens* from the shared bucket if they are there now.

        A failing store answers by the store's ``on_error`` policy, within
        the store's timeout.
        """
        if tokens != 1:
            tokens = _check_tokens(self, tokens, self._capacity)
        took = self._fetch(tokens, 0.0)
        if took.admitted:
            self._acquired.inc()
            return True
        self._reject(took.retry_after * self._rate, None)
        return self._shadow

    def _outcome(
        self, now: float, tokens: float, admitted: bool, wait: float, retry_after: float
    ) -> bool | Wait:
        if admitted:
            self._acquired.inc()
            if wait <= 0 or self._shadow:
                return True
            return Wait(wait, state=_StoreReservation(tokens, now + wait, now))
        self._reject(retry_after * self._rate, None)
        if self._shadow:
            return True
        raise self._error(retry_after)

    def _wait_budget(self, max_wait: float) -> float:
        dl = _deadline.CURRENT.get()
        if dl is not None:
            return min(max_wait, max(0.0, dl.remaining()))
        return max_wait

    def _take(self, now: float, tokens: float, max_wait: float) -> bool | Wait:
        took = self._fetch(tokens, min(self._wait_budget(max_wait), 1e9))
        return self._outcome(now, tokens, took.admitted, took.wait, took.retry_after)

    async def _atake(self, now: float, tokens: float, max_wait: float) -> bool | Wait:
        took = await self._afetch(tokens, min(self._wait_budget(max_wait), 1e9))
        return self._outcome(now, tokens, took.admitted, took.wait, took.retry_after)

    def _step(self, now: float, pending: Wait | None) -> bool | Wait:
        if pending is None:
            return self._take(now, 1.0, self._max_wait)
        res: _StoreReservation = pending.state
        if res.ready > now:
            return Wait(res.ready - now, state=res)
        REGISTRY.record(names.RATELIMIT_WAIT, now - res.start, self._wait_attrs)
        return True

    def _abandon(self, pending: Wait, now: float) -> None:
        """Keep the tokens: see the class docstring."""

    async def __aenter__(self) -> None:
        if _deadline.CURRENT.get() is not None:
            self._check_deadline()
        step = await self._atake(self._monotonic(), 1.0, self._max_wait)
        if type(step) is Wait:
            await self._wait_async(step)

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        admit = self.__aenter__

        @functools.wraps(fn)
        async def limited(*args: P.args, **kwargs: P.kwargs) -> R:
            await admit()
            return await fn(*args, **kwargs)

        return limited

    async def acquire_async(
        self, tokens: float = 1, timeout: float | timedelta | None = None
    ) -> None:
        """Async twin of :meth:`acquire`, using the store's async operations."""
        tokens = _check_tokens(self, tokens, self._capacity)
        max_wait = _check_wait(timeout, "timeout", self)
        step = await self._atake(self._monotonic(), tokens, max_wait)
        if type(step) is Wait:
            await self._wait_async(step)


class KeyedRateLimiter:
    """One token bucket per key (tenant, client, user), in bounded memory.

    Every key gets its own bucket of ``rate`` tokens per second and ``capacity``
    tokens, starting full. At most ``max_keys`` buckets are kept. A bucket is
    forgotten only once it has refilled completely, because a full bucket and
    an absent one behave the same: eviction can never let a key burst again.
    When ``max_keys`` buckets are all still refilling, a *new* key is refused
    (``try_acquire`` returns ``False``; ``acquire`` raises
    :class:`~tipkit.errors.RateLimitedError` whose ``retry_after`` is when the
    first bucket will have refilled) until one refills: the limiter fails
    closed for unknown keys rather than forget a key's debt. Size ``max_keys``
    above the number of keys active within one refill period
    (``capacity / rate`` seconds).

    Memory: at most ``max_keys`` entries (the key, a two-float list and an
    ordered-dict node: about 190 bytes plus the key). Lookups are O(1); a new
    key at ``max_keys`` costs at most one full sweep per refill of the first
    bucket to refill (the sweep learns when that is), so a flood of new keys is
    refused in O(1). Thread-safe (one lock around a few operations); reads the
    injected clock once per decision. No waiting: per-key queues would make
    memory unbounded.

    With ``store=``, buckets live in the store under ``ratelimit:<name>:<key>``
    and expire there once full; ``max_keys`` then bounds nothing in this process.
    While the store fails (each call bounded by its timeout), the store's
    ``on_error`` decides: ``"fail_open"`` admits (counted in ``store_errors``),
    ``"fail_closed"`` refuses.

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
    """

    __slots__ = (
        "__weakref__",
        "_acquired",
        "_buckets",
        "_capacity",
        "_lock",
        "_mode",
        "_monotonic",
        "_outage",
        "_policy",
        "_rate",
        "_rejected",
        "_shadow",
        "_store",
        "_sweep_after",
        "max_keys",
        "name",
        "runbook",
        "store_errors",
        "would_reject",
    )

    def __init__(
        self,
        name: str,
        *,
        rate: float,
        capacity: float,
        max_keys: int = 100_000,
        mode: Mode = "enforce",
        store: Store | None = None,
        runbook: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(clock, Clock):
            raise TypeError(
                f"clock must provide monotonic(), time(), sleep() and asleep(), got {clock!r}"
            )
        self.name = _check_name(name, "KeyedRateLimiter")
        owner = f"KeyedRateLimiter {name!r}"
        self._rate, self._capacity = _check_rate_capacity(owner, rate, capacity)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int):
            raise TypeError(f"{owner}: max_keys must be an int, got {max_keys!r}")
        if max_keys < 1:
            raise ValueError(f"{owner}: max_keys must be >= 1, got {max_keys!r}")
        self.max_keys = max_keys
        self.runbook = _check_runbook(runbook)
        self._mode = check_mode(mode, owner)
        self._shadow = self._mode == "shadow"
        self._acquired, self._rejected = _counters(
            names.RATELIMIT_NAME, name, self._mode
        )
        self._outage = None
        self._policy = "fail_open"
        self.store_errors = 0
        if store is not None:
            from tipkit.stores._events import Outage  # noqa: PLC0415  # import-light without a store
            from tipkit.stores._protocol import Store  # noqa: PLC0415  # import-light without a store

            if not isinstance(store, Store):
                raise TypeError(
                    f"store must implement tipkit.stores.Store, got {store!r}"
                )
            self._policy = getattr(store, "on_error", "fail_open")
            self._outage = Outage(name, "ratelimit", self._policy, clock=clock)
        self._store = store
        self.would_reject = 0
        self._monotonic = clock.monotonic
        self._sweep_after = -math.inf
        self._lock = _fork.new_lock()
        # key -> [level, last], least recently touched first.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()

    @property
    def rate(self) -> float:
        """Tokens added per second to each key's bucket."""
        return self._rate

    @property
    def capacity(self) -> float:
        """The most tokens each key's bucket holds."""
        return self._capacity

    @property
    def mode(self) -> Mode:
        """``"enforce"`` or ``"shadow"``; assign to switch a live limiter."""
        return self._mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        mode = check_mode(value, f"KeyedRateLimiter {self.name!r}")
        self._acquired, self._rejected = _counters(
            names.RATELIMIT_NAME, self.name, mode
        )
        self._mode = mode
        self._shadow = mode == "shadow"

    def __len__(self) -> int:
        """Return the number of buckets held in this process."""
        return len(self._buckets)

    def __repr__(self) -> str:
        shadow = " mode=shadow" if self._shadow else ""
        return (
            f"<KeyedRateLimiter {self.name!r} rate={self._rate:g}/s "
            f"capacity={self._capacity:g} keys={len(self._buckets)}/{self.max_keys}{shadow}>"
        )

    def tokens(self, key: str) -> float:
        """Return the tokens *key* could take now (``capacity`` for an unknown key)."""
        if self._store is not None:
            return self._store.take_tokens(
                f"ratelimit:{self.name}:{key}",
                0,
                rate=self._rate,
                capacity=self._capacity,
            ).tokens
        now = self._monotonic()
        with self._lock:
            entry = self._buckets.get(key)
            if entry is None:
                return self._capacity
            return min(self._capacity, entry[0] + max(0.0, now - entry[1]) * self._rate)

    def _decide(self, key: str, tokens: float) -> float:
        """Take *tokens* for *key*; return 0.0 if taken, else seconds until they are there.

        The seconds are negative when *key* is new and every bucket is still
        refilling (then: until the first of them is full).
        """
        if self._store is not None:
            return self._decide_in_store(key, tokens)
        now = self._monotonic()
        buckets = self._buckets
        with self._lock:
            entry = buckets.get(key)
            if entry is not None:
                buckets.move_to_end(key)
                level = entry[0]
                if now > entry[1]:
                    level += (now - entry[1]) * self._rate
                    if level > self._capacity:  # noqa: PLR1730  # min() costs a call on the hot path
                        level = self._capacity
                    entry[1] = now
                if level >= tokens:
                    entry[0] = level - tokens
                    return 0.0
                entry[0] = level
                return (tokens - level) / self._rate
            if tokens > self._capacity:
                # The callers skip the check for tokens=1; a capacity below 1
                # would otherwise hand a new key more than its capacity.
                _check_tokens(self, tokens, self._capacity)
            if len(buckets) >= self.max_keys and not self._evict(now):
                # Negative: refused because every bucket is busy, not for lack of tokens.
                return -max(self._sweep_after - now, 1e-9)
            buckets[key] = [self._capacity - tokens, now]
            return 0.0

    def _decide_in_store(self, key: str, tokens: float) -> float:
        outage = self._outage
        assert outage is not None  # set with the store
        try:
            took = self._store.take_tokens(  # type: ignore[union-attr]  # checked by the caller
                f"ratelimit:{self.name}:{key}",
                tokens,
                rate=self._rate,
                capacity=self._capacity,
            )
        except StoreError as exc:
            outage.failed(exc)
            self.store_errors += 1
            return tokens / self._rate if self._policy == "fail_closed" else 0.0
        outage.ok()
        return 0.0 if took.admitted else max(took.retry_after, 1e-9)

    def _evict(self, now: float) -> bool:
        """Forget buckets that have refilled, stalest first; return whether any was."""
        buckets = self._buckets
        rate, capacity = self._rate, self._capacity
        evicted = False
        while buckets:
            key, (level, last) = next(iter(buckets.items()))
            if level + (now - last) * rate < capacity:
                break
            del buckets[key]
            evicted = True
        if evicted or now < self._sweep_after:
            return evicted
        # The stalest bucket may be busy while a fresher one refilled (it was
        # touched with more tokens left); a full sweep finds it. When none has,
        # the sweep learns the earliest time one will be full: a bucket's full
        # time only moves later as it is used, so until then no sweep can find
        # one, and new keys are refused in O(1) instead of re-sweeping per key.
        soonest = math.inf
        for key, (level, last) in list(buckets.items()):
            full_at = last + (capacity - level) / rate
            if full_at <= now:
                del buckets[key]
                evicted = True
            elif full_at < soonest:
                soonest = full_at
        if not evicted:
            self._sweep_after = soonest
        return evicted

    def try_acquire(self, key: str, tokens: float = 1) -> bool:
        """Take *tokens* from *key*'s bucket if they are there now; never wait.

        Returns ``False`` when they are not, or when *key* is new and all
        ``max_keys`` buckets are still refilling. In shadow mode the decision is
        counted and reported but ``True`` is returned.

        Raises:
            ValueError: *tokens* is not positive or exceeds the capacity.
        """
        if tokens != 1:
            tokens = _check_tokens(self, tokens, self._capacity)
        wait = self._decide(key, tokens)
        if not wait:
            self._acquired.inc()
            return True
        self._reject_key(key, abs(wait))
        return self._shadow

    def acquire(self, key: str, tokens: float = 1) -> None:
        """Take *tokens* from *key*'s bucket or raise; never wait.

        Raises:
            RateLimitedError: the tokens are not there (``retry_after`` says
                when they will be), or *key* is new and every bucket is still
                refilling (``retry_after``: when the first will be full). Not
                raised in shadow mode.
            ValueError: *tokens* is not positive or exceeds the capacity.
        """
        if tokens != 1:
            tokens = _check_tokens(self, tokens, self._capacity)
        wait = self._decide(key, tokens)
        if not wait:
            self._acquired.inc()
            return
        self._reject_key(key, abs(wait))
        if self._shadow:
            return
        if wait < 0:
            raise RateLimitedError(
                f"rate limit {self.name!r} holds max_keys={self.max_keys} buckets, all "
                f"still refilling: a new key is refused until one has refilled (in "
                f"{-wait:.3f}s); raise max_keys if this happens in normal traffic",
                name=self.name,
                retry_after=-wait,
                runbook=self.runbook,
            )
        raise RateLimitedError(
            f"rate limit {self.name!r} exceeded for a key ({self._rate:g}/s, "
            f"capacity {self._capacity:g}): retry after {wait:.3f}s",
            name=self.name,
            retry_after=wait,
            runbook=self.runbook,
        )

    def _reject_key(self, key: str, retry_after: float) -> None:
        self._rejected.inc()
        if self._shadow:
            self.would_reject += 1
        if RateLimited.listened:
            BUS.publish(
                RateLimited(self.name, key, retry_after, self._shadow, self.runbook)
            )
