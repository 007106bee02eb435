"""KeyedRateLimiter: one token bucket per key, in bounded memory or in a store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tipkit._core._check import check_int
from tipkit._core._keyed import Keyed
from tipkit._core._mode import Mode
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import RateLimitedError
from tipkit.ratelimit._common import Limits, RateDecision, check_tokens
from tipkit.ratelimit._shared import SharedTokens
from tipkit.ratelimit._table import KeyTable

if TYPE_CHECKING:
    from tipkit.stores._protocol import TokenStore

__all__ = ["KeyedRateLimiter"]


class KeyedRateLimiter(Limits, Keyed[str, bool]):
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

    Memory: at most ``max_keys`` entries (the key, a four-slot level object and
    an ordered-dict node: about 170 bytes plus the key). Lookups are O(1); a
    flood of new keys is refused in O(1) (see ``KeyTable``). Thread-safe (one
    lock around a few operations); reads the injected clock once per decision.
    No waiting: per-key queues would make memory unbounded.

    With ``store=``, buckets live in the store under ``ratelimit:<name>:<key>``
    and expire there once full; ``max_keys`` then bounds nothing in this process.
    Each decision is one round trip bounded by the store's timeout: the sync
    methods and faces block for it, the async faces await ``atake_tokens``
    and never block the event loop. While the store fails, the store's
    ``on_error`` decides: ``"fail_open"`` admits (counted in ``store_errors``),
    ``"fail_closed"`` refuses.

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
    """

    __slots__ = (
        "_acquired",
        "_astep_key",
        "_capacity",
        "_label",
        "_mode",
        "_monotonic",
        "_prefix",
        "_rate",
        "_rejected",
        "_shadow",
        "_shared",
        "_table",
        "name",
        "runbook",
        "would_reject",
    )
    _composition_role = "ratelimit"  # compose() checks the order of parts by role

    def __init__(  # the limiter's documented options
        self,
        name: str,
        *,
        rate: float,
        capacity: float,
        max_keys: int = 100_000,
        mode: Mode = "enforce",
        store: TokenStore | None = None,
        runbook: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(clock=clock)
        self._init_limits(
            "KeyedRateLimiter",
            name,
            rate=rate,
            capacity=capacity,
            mode=mode,
            runbook=runbook,
        )
        max_keys = check_int(max_keys, f"{self._label}: max_keys", minimum=1)
        self._monotonic = clock.monotonic
        self._table = KeyTable(self._rate, self._capacity, max_keys)
        self._prefix = f"ratelimit:{name}:"
        self._shared: SharedTokens | None = None
        if store is not None:
            self._shared = SharedTokens(
                store,
                name=name,
                label=self._label,
                rate=self._rate,
                capacity=self._capacity,
                batch=1,
                clock=clock,
                keyed=True,
            )
        # The async faces await the store's async method; in process they need no I/O.
        self._astep_key = None if self._shared is None else self._astep_shared

    @property
    def max_keys(self) -> int:
        """The most buckets kept in this process."""
        return self._table.max_keys

    @property
    def store_errors(self) -> int:
        """Decisions made by the store's ``on_error`` policy (0 without a store)."""
        return 0 if self._shared is None else self._shared.errors

    def __len__(self) -> int:
        """Return the number of buckets held in this process."""
        return len(self._table)

    def __repr__(self) -> str:
        # Never asks the store.
        shadow = " mode=shadow" if self._shadow else ""
        store = "" if self._shared is None else self._shared.describe()
        return (
            f"<KeyedRateLimiter {self.name!r} rate={self._rate:g}/s "
            f"capacity={self._capacity:g} keys={len(self._table)}/{self.max_keys}"
            f"{store}{shadow}>"
        )

    def tokens(self, key: str) -> float:
        """Return the tokens *key* could take now (``capacity`` for an unknown key).

        With a store: one round trip, bounded by the store's timeout.

        Raises:
            StoreError: the store could not be read.
        """
        if self._shared is not None:
            return self._shared.level(self._prefix + key)
        return self._table.tokens(key, self._monotonic())

    # -- never waiting ----------------------------------------------------------------
    def try_acquire(self, key: str, tokens: float = 1.0) -> bool:
        """Take *tokens* from *key*'s bucket if they are there now; never wait.

        Returns ``False`` when they are not, or when *key* is new and all
        ``max_keys`` buckets are still refilling. In shadow mode the decision is
        counted and reported but ``True`` is returned.

        Raises:
            ValueError: *tokens* is not positive or exceeds the capacity.
        """
        if tokens != 1.0:
            tokens = check_tokens(self._label, tokens, self._capacity)
        if self._shared is None:
            wait = self._table.take(key, self._monotonic(), tokens)
        else:
            wait = self._shared.take(self._prefix + key, tokens, 0.0).retry_after
        if wait is None:
            return self._counted(key, tokens, self._table.refills_in(self._monotonic()))
        if not wait:
            self._acquired.inc()
            return True
        return self._counted(key, tokens, wait)

    def acquire(self, key: str, tokens: float = 1.0) -> None:
        """Take *tokens* from *key*'s bucket or raise; never wait.

        Blocks as :meth:`try_acquire` (one store round trip with a store).

        Raises:
            RateLimitedError: the tokens are not there (``retry_after`` says
                when they will be), or *key* is new and every bucket is still
                refilling (``retry_after``: when the first will be full). Not
                raised in shadow mode.
            ValueError: *tokens* is not positive or exceeds the capacity.
        """
        if tokens != 1.0:
            tokens = check_tokens(self._label, tokens, self._capacity)
        self._settle(key, tokens, self._wait_for(key, tokens))

    def check(self, key: str, tokens: float = 1.0) -> RateDecision:
        """Take *tokens* from *key*'s bucket if they are there now; say what was decided.

        The same decision, counting and events as :meth:`try_acquire`, with
        what rate-limit response headers need (see :class:`RateDecision`).

        Raises:
            ValueError: *tokens* is not positive or exceeds the capacity.
        """
        if tokens != 1.0:
            tokens = check_tokens(self._label, tokens, self._capacity)
        wait = self._wait_for(key, tokens)
        if wait is None:
            wait = self._table.refills_in(self._monotonic())
            self._counted(key, tokens, wait)
            return self._decision(wait, 0.0)
        self._counted(key, tokens, wait)
        if self._shared is not None:
            return self._decision(wait, self._shared.seen)
        return self._decision(wait, self._table.tokens(key, self._monotonic()))

    # -- the core: the step of the faces takes the key --------------------------------
    _holds = False
    """A token is spent, not held: no face releases or tracks a ticket."""

    def _step_key(self, key: str, now: float, pending: object) -> bool:  # noqa: ARG002  # the keyed step's signature
        """Take one token for *key* or raise: the faces' step (it never waits)."""
        return self._settle(key, 1.0, self._wait_for(key, 1.0))

    async def _astep_shared(self, key: str, now: float, pending: object) -> bool:  # noqa: ARG002  # as above
        """The async faces' step with a store: awaits ``atake_tokens``."""
        return self._settle(key, 1.0, await self._await_for(key, 1.0))

    def _release_key(
        self, key: str, ticket: bool, error: BaseException | None, now: float
    ) -> None:
        """Do nothing: tokens are spent, not held."""

    def _wait_for(self, key: str, tokens: float) -> float | None:
        """Take *tokens* for *key*: seconds until they are there (0.0: taken).

        ``None``: *key* is new and no bucket has room (in process only).
        """
        if self._shared is None:
            return self._table.take(key, self._monotonic(), tokens)
        return self._shared.take(self._prefix + key, tokens, 0.0).retry_after

    async def _await_for(self, key: str, tokens: float) -> float | None:
        """Async :meth:`_wait_for`: awaits the store's async method, if any."""
        if self._shared is None:
            return self._table.take(key, self._monotonic(), tokens)
        took = await self._shared.atake(self._prefix + key, tokens, 0.0)
        return took.retry_after

    def _settle(self, key: str, tokens: float, wait: float | None) -> bool:
        """Admit (``True``) or raise, for a decision *wait* seconds short."""
        if wait is None:
            retry_after = self._table.refills_in(self._monotonic())
            if self._counted(key, tokens, retry_after):
                return True
            raise RateLimitedError(
                f"rate limit {self.name!r} holds max_keys={self.max_keys} buckets, "
                "all still refilling: a new key is refused until one has refilled "
                f"(in {retry_after:.3f}s); raise max_keys if this happens in normal "
                "traffic",
                name=self.name,
                retry_after=retry_after,
                runbook=self.runbook,
            )
        if not wait:
            self._acquired.inc()
            return True
        if self._counted(key, tokens, wait):
            return True
        raise self._exceeded(wait, " for a key")

    def _counted(self, key: str, tokens: float, wait: float) -> bool:
        """Count a refusal *wait* seconds short (or 0: taken); return whether to admit."""
        if not wait:
            self._acquired.inc()
            return True
        if tokens > self._capacity:
            # The callers skip the check for tokens=1; a capacity below 1 can
            # never serve it: checked here, off the admitting path.
            check_tokens(self._label, tokens, self._capacity)
        self._refused(wait, key)
        return self._shadow
