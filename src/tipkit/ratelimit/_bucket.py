"""TokenBucket: one bucket, in process or shared through a store."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

from tipkit._core import _fork
from tipkit._core._deadline import current as _current_deadline
from tipkit._core._deadline import exceeded
from tipkit._core._fallback import NO_FALLBACK, ExcTypes, make
from tipkit._core._guard import Guard, Wait
from tipkit._core._mode import Mode
from tipkit._core._tokens import TokenTake
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.ratelimit._common import (
    Limits,
    RateDecision,
    check_tokens,
    check_wait,
)
from tipkit.ratelimit._local import LocalTokens, Reservation
from tipkit.ratelimit._shared import SharedTokens
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY, Attributes, Counter

if TYPE_CHECKING:
    from tipkit.stores._protocol import TokenStore

__all__ = ["TokenBucket"]


class TokenBucket(Limits, Guard[bool]):
    """A token bucket: ``rate`` tokens per second, at most ``capacity`` held.

    ``try_acquire`` and ``check`` never wait; ``acquire``/``acquire_async`` wait
    through the clock, first come first served; the faces (``@bucket``,
    ``with bucket``, ``async with bucket``, ``call``, ``acall``, all from
    :class:`~tipkit._core._guard.Guard`) take one token and wait up to
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
        store: share the bucket through a :class:`~tipkit.stores.TokenStore`
            (key ``ratelimit:<name>``); without it the bucket lives in this
            process and never pays for the protocol. Each decision is then one
            store round trip, bounded by the store's timeout: the sync methods
            and faces block for it, the async ones await ``atake_tokens`` and
            never block the event loop. While the store fails, the bucket
            follows the store's ``on_error`` (``"fail_open"``: admit, counted
            in ``store_errors``; ``"fail_closed"``: refuse). A waiter that
            stops waiting keeps its tokens (the store cannot tell whether other
            processes reserved behind it).
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
        "_acquired_box",
        "_astep",
        "_capacity",
        "_entered",
        "_fast_admit",
        "_fast_reads_ticket",
        "_holds",
        "_key",
        "_label",
        "_local",
        "_lock",
        "_max_wait",
        "_mode",
        "_monotonic",
        "_rate",
        "_rejected",
        "_shadow",
        "_shared",
        "_take",
        "_wait_attrs",
        "name",
        "runbook",
        "would_reject",
    )
    _composition_role = "ratelimit"  # compose() checks the order of parts by role

    def __init__(  # the bucket's documented options
        self,
        name: str,
        *,
        rate: float,
        capacity: float,
        max_wait: float | timedelta = 0.0,
        mode: Mode = "enforce",
        store: TokenStore | None = None,
        runbook: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        fallback: object = NO_FALLBACK,  # a value or (exc) -> value: tipkit.fallback
        fallback_on: ExcTypes | None = None,
        batch: int = 1,
    ) -> None:
        super().__init__(
            clock=clock, fallback=make(fallback, fallback_on, name, "TokenBucket")
        )
        self._init_limits(
            "TokenBucket",
            name,
            rate=rate,
            capacity=capacity,
            mode=mode,
            runbook=runbook,
        )
        self._max_wait = check_wait(max_wait, f"{self._label}: max_wait")
        self._wait_attrs: Attributes = {names.RATELIMIT_NAME: name}
        self._monotonic = clock.monotonic
        self._key = f"ratelimit:{name}"
        self._shared: SharedTokens | None = None
        level = self._capacity
        if store is not None:
            self._shared = SharedTokens(
                store,
                name=name,
                label=self._label,
                rate=self._rate,
                capacity=self._capacity,
                batch=batch,
                clock=clock,
            )
            # Shared: the level in this process is empty for good, so the
            # in-process fast path always falls through to the store.
            level = -math.inf
        elif batch != 1:
            raise ValueError(
                f"{self._label}: batch={batch!r} needs store= (a bucket in this "
                "process has no round trips to save)"
            )
        # The async faces await the store's async method; in process they need no I/O.
        self._astep = None if self._shared is None else self._astep_shared
        self._local = LocalTokens(self._rate, self._capacity, level, clock.monotonic())
        # The hot path's two references, kept here to save an attribute lookup each.
        self._lock = self._local.lock
        self._take = self._local.take
        self._acquired_box = [self._acquired]
        self._fast_admit = _fast_admission(
            self._local, clock.monotonic, self._acquired_box, self._shared
        )
        # A token is spent, not held: no face releases or tracks a ticket. The
        # hooks the with/async with faces read per call are slots, not class
        # attributes: Python 3.11 specialises a slot read, not a class attribute's.
        self._holds = False
        self._fast_reads_ticket = False
        self._entered = None
        _fork.register(self)
        REGISTRY.register_gauge(names.RATELIMIT_TOKENS, self, _tokens_gauge)

    def _after_fork_in_child(self) -> None:
        self._local.after_fork()
        self._lock = self._local.lock

    # -- configuration and state -------------------------------------------------------
    @property
    def max_wait(self) -> float:
        """Seconds the faces wait for a token."""
        return self._max_wait

    @property
    def tokens(self) -> float:
        """Tokens available now (negative while waiters hold reservations).

        With a store: one round trip (plus the tokens this process holds from
        a batch), bounded by the store's timeout.

        Raises:
            StoreError: the store could not be read.
        """
        if self._shared is not None:
            return self._shared.level(self._key) + self._shared.held
        return self._local.tokens(self._monotonic())

    @property
    def waiting(self) -> int:
        """Number of callers holding a reservation that have not been admitted."""
        return len(self._local.queue)

    @property
    def store_errors(self) -> int:
        """Decisions made by the store's ``on_error`` policy (0 without a store)."""
        return 0 if self._shared is None else self._shared.errors

    def __repr__(self) -> str:
        # Never asks the store: a shared bucket shows the level it last saw.
        shadow = " mode=shadow" if self._shadow else ""
        if self._shared is not None:
            state = self._shared.describe()
        else:
            state = f" tokens={self._local.tokens(self._monotonic()):.6g}"
        return (
            f"<TokenBucket {self.name!r} rate={self._rate:g}/s "
            f"capacity={self._capacity:g}{state}{shadow}>"
        )

    # -- never waiting -------------------------------------------------------------------
    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take *tokens* if they are there now; never wait.

        Returns ``False`` when they are not (or when waiters are queued for
        them: a waiter is never overtaken). In shadow mode the decision is
        counted and reported but ``True`` is returned. With a store: one round
        trip (none while a batch lasts), bounded by the store's timeout; a
        failing store answers by its ``on_error`` policy.

        Raises:
            ValueError: *tokens* is not positive or exceeds the capacity.
        """
        if tokens != 1.0:
            tokens = check_tokens(self._label, tokens, self._capacity)
        now = self._monotonic()
        lock = self._lock
        # acquire()/release() rather than `with`: half the cost on this hot path.
        lock.acquire()
        try:
            wait = self._take(now, tokens)
        finally:
            lock.release()
        if not wait:
            self._acquired.inc()
            return True
        if self._shared is not None and tokens <= self._capacity:
            wait = self._shared.take(self._key, tokens, 0.0).retry_after
        return self._counted(tokens, wait)

    def check(self, tokens: float = 1.0) -> RateDecision:
        """Take *tokens* if they are there now and say what was decided; never wait.

        The same decision, counting and events as :meth:`try_acquire`, with
        what rate-limit response headers need: ``retry_after``, ``remaining``
        and ``limit`` (see :class:`RateDecision`). Blocks as ``try_acquire``.

        Raises:
            ValueError: *tokens* is not positive or exceeds the capacity.
        """
        if tokens != 1.0:
            tokens = check_tokens(self._label, tokens, self._capacity)
        if self._shared is not None:
            wait = self._shared.take(self._key, tokens, 0.0).retry_after
            remaining = self._shared.seen + self._shared.held
        else:
            wait, remaining = self._local.take_now(self._monotonic(), tokens)
        self._counted(tokens, wait)
        return self._decision(wait, remaining)

    def _counted(self, tokens: float, wait: float) -> bool:
        """Count a decision *wait* seconds short (0: taken); return whether to admit."""
        if not wait:
            self._acquired.inc()
            return True
        if tokens > self._capacity:
            # Only reachable for tokens=1 on a bucket smaller than one token (other
            # sizes were checked by the caller): checked here, off the admitting path.
            check_tokens(self._label, tokens, self._capacity)
        self._refused(wait, None)
        return self._shadow

    # -- waiting: acquire --------------------------------------------------------------
    def acquire(
        self, tokens: float = 1, timeout: float | timedelta | None = None
    ) -> None:
        """Take *tokens*, waiting through the clock until they are there.

        Waiters are served first come, first served. When the tokens cannot be
        there within *timeout* seconds (``None``: wait as long as it takes), fail
        at once, without waiting and without reserving anything. A waiter
        interrupted while waiting gives its reservation back (in process). With
        a store, blocks for one round trip, then sleeps on the clock.

        Raises:
            RateLimitedError: not within *timeout*; ``retry_after`` says when.
            DeadlineExceededError: the current tipkit deadline ends first.
            ValueError: *tokens* is not positive or exceeds the capacity.
        """
        tokens, max_wait = self._acquire_args(tokens, timeout)
        step = self._begin(self._monotonic(), tokens, max_wait)
        if type(step) is Wait:
            self._wait_sync(step)

    async def acquire_async(
        self, tokens: float = 1, timeout: float | timedelta | None = None
    ) -> None:
        """Async :meth:`acquire`; a cancelled waiter gives its reservation back.

        With a store, awaits ``atake_tokens`` (never a blocking call on the
        event loop), then sleeps on the clock.
        """
        tokens, max_wait = self._acquire_args(tokens, timeout)
        step = await self._abegin(self._monotonic(), tokens, max_wait)
        if type(step) is Wait:
            await self._wait_async(step)

    def _acquire_args(
        self, tokens: float, timeout: float | timedelta | None
    ) -> tuple[float, float]:
        tokens = check_tokens(self._label, tokens, self._capacity)
        max_wait = check_wait(timeout, f"{self._label}: timeout")
        dl = _current_deadline()
        if dl is not None and dl.expired():
            raise exceeded(dl, f"{self._label} could not admit the call")
        return tokens, max_wait

    # -- the core: one decision, then waiting on a reservation ---------------------------
    def _mode_switched(self) -> None:
        self._acquired_box[0] = self._acquired

    def _release(self, ticket: bool, error: BaseException | None, now: float) -> None:
        """Do nothing: tokens are spent, not held (never called: ``_holds`` is false)."""

    def _step(self, now: float, pending: Wait | None) -> bool | Wait:
        if pending is None:
            return self._begin(now, 1.0, self._max_wait)
        return self._check_reservation(now, pending.state)

    async def _astep_shared(self, now: float, pending: Wait | None) -> bool | Wait:
        """The async faces' step with a store: the first decision awaits the store."""
        if pending is None:
            return await self._abegin(now, 1.0, self._max_wait)
        return self._check_reservation(now, pending.state)

    def _begin(self, now: float, tokens: float, max_wait: float) -> bool | Wait:
        """Take *tokens*, reserve them, or refuse (sync store call with a store)."""
        budget = _budget(max_wait)
        if self._shared is None:
            return self._reserve(now, tokens, max_wait, budget)
        took = self._shared.take(self._key, tokens, min(budget, 1e9))
        return self._settle(now, tokens, max_wait, took)

    async def _abegin(self, now: float, tokens: float, max_wait: float) -> bool | Wait:
        """Async :meth:`_begin`: awaits the store's async method, if any."""
        budget = _budget(max_wait)
        if self._shared is None:
            return self._reserve(now, tokens, max_wait, budget)
        took = await self._shared.atake(self._key, tokens, min(budget, 1e9))
        return self._settle(now, tokens, max_wait, took)

    def _reserve(
        self, now: float, tokens: float, max_wait: float, budget: float
    ) -> bool | Wait:
        """Decide in process: take now, or reserve within *budget* seconds (FIFO)."""
        wait, res = self._local.reserve(now, tokens, budget, queue=not self._shadow)
        if wait <= budget:
            return self._taken(wait, res)
        return self._short(tokens, wait, max_wait)

    def _settle(
        self, now: float, tokens: float, max_wait: float, took: TokenTake
    ) -> bool | Wait:
        """Decide on the store's answer *took*."""
        if not took.admitted:
            return self._short(tokens, took.retry_after, max_wait)
        res = None
        if took.wait > 0 and not self._shadow:
            res = Reservation(tokens, now + took.wait, now, None)
        return self._taken(took.wait, res)

    def _taken(self, wait: float, res: Reservation | None) -> bool | Wait:
        """Admit now (``True``), or after *wait* seconds on reservation *res*."""
        self._acquired.inc()
        if res is None:
            return True
        return Wait(wait, waiter=res.waiter, state=res)

    def _short(self, tokens: float, wait: float, max_wait: float) -> bool:
        """Refuse *tokens* that are *wait* seconds away (admit in shadow mode).

        Raises:
            DeadlineExceededError: within *max_wait* but after the deadline.
            RateLimitedError: beyond *max_wait*.
        """
        dl = _current_deadline()
        if dl is not None and wait <= max_wait:
            # Waiting could only end in a deadline error: fail now, reserve nothing.
            left = max(dl.remaining(), 0.0)
            raise exceeded(
                dl,
                f"rate limit {self.name!r} needs {wait:.3f}s for {tokens:g} tokens, "
                f"more than the {left:.3f}s left",
            )
        if self._counted(tokens, wait):
            return True
        raise self._exceeded(wait)

    def _check_reservation(self, now: float, res: Reservation) -> bool | Wait:
        """Admit a waiter whose reservation is due, else say how long is left."""
        if res.waiter is None:  # a reservation in a store: nothing moves it
            if res.ready > now:
                return Wait(res.ready - now, state=res)
        else:
            left = self._local.due_in(now, res)
            if left:
                return Wait(left, waiter=res.waiter, state=res)
        REGISTRY.record(names.RATELIMIT_WAIT, now - res.start, self._wait_attrs)
        return True

    def _abandon(self, pending: Wait, now: float) -> None:
        """Give back the reservation of a waiter that stopped waiting (in process).

        See :meth:`LocalTokens.give_back`; a reservation in a store is kept
        (see the class docstring).
        """
        self._local.give_back(pending.state, now)


def _budget(max_wait: float) -> float:
    """Return how long a call may wait: *max_wait*, cut to the current deadline."""
    dl = _current_deadline()
    if dl is None:
        return max_wait
    return max(0.0, min(max_wait, dl.remaining()))


def _fast_admission(
    local: LocalTokens,
    monotonic: Callable[[], float],
    acquired: list[Counter],
    shared: SharedTokens | None,
) -> Callable[[], bool | None]:
    """Build a bucket's ``_fast_admit`` hook: one token now, else ``None`` (``_step``).

    A closure over the bucket's parts rather than a method: it saves the
    lookups a method call pays (about 65 ns of ``async with``) and refers to no
    bucket (no reference cycle). It reads the lock through *local* on every call
    (a fork replaces it) and the counter from the one-item list *acquired* (a
    mode switch replaces it), since decorators keep the hook they were built with.
    A shared bucket admits here only from the tokens it holds from a batch.
    """
    take = local.take

    def fast_admit() -> bool | None:
        now = monotonic()
        lock = local.lock
        lock.acquire()
        try:
            wait = take(now, 1.0)
        finally:
            lock.release()
        if not wait or (shared is not None and shared.from_held(1.0)):
            acquired[0].inc()
            return True
        return None

    return fast_admit


def _tokens_gauge(bucket: TokenBucket) -> Iterable[tuple[float, Attributes]]:
    if bucket._shared is not None:  # the gauge is the bucket's own
        return ()  # reading a shared bucket costs a round trip: not at collection time
    return ((bucket.tokens, {names.RATELIMIT_NAME: bucket.name}),)
