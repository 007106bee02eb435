"""Token buckets kept in a store: the store I/O and failure policy of both limiters.

A limiter given ``store=`` holds one :class:`SharedTokens` and asks it instead of
its in-process :class:`~tipkit._core._tokens.Level`. Everything that talks to the
store, and everything that happens when the store fails, is here.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING

from tipkit import registry
from tipkit._core import _fork
from tipkit._core._tokens import TokenTake
from tipkit.errors import StoreError

if TYPE_CHECKING:
    from tipkit.clock import Clock
    from tipkit.stores._events import Outage
    from tipkit.stores._protocol import OnError, TokenStore

__all__ = ["SharedTokens"]

# Served from tokens this process holds, or failed open: admitted, nothing more known.
_ADMIT = TokenTake(admitted=True, wait=0.0, tokens=0.0, retry_after=0.0)


class SharedTokens:
    """Buckets in a :class:`~tipkit.stores.TokenStore`, one ``take_tokens`` per decision.

    Buckets refill on the store's clock. A failing store (``StoreError``; each
    call is bounded by the store's own timeout, so nothing here blocks longer)
    is answered by the store's ``on_error`` policy: ``"fail_open"`` admits and
    counts the call in ``errors``, ``"fail_closed"`` refuses with a
    ``retry_after`` of the time the tokens would take to refill. The first
    failure of an outage publishes ``StoreUnavailable``, the first success after
    it ``StoreRecovered``.

    With ``batch=k`` a try (no waiting) takes *k* tokens in one round trip and
    keeps the unused ones in this process, under a lock, for the next tries;
    when fewer than *k* are left in the store it takes what is there. Waiting
    takes always go to the store. A forked child starts with none held.

    Thread-safe: the only state of its own is the held tokens (under a lock),
    the outage tracker (thread-safe) and two counters read for reporting.
    """

    __slots__ = (
        "__weakref__",
        "_batch",
        "_held_lock",
        "_outage",
        "_store",
        "capacity",
        "errors",
        "held",
        "policy",
        "rate",
        "registration",
        "seen",
    )

    def __init__(  # a collaborator built by the limiters only
        self,
        store: TokenStore,
        *,
        name: str,
        label: str,
        rate: float,
        capacity: float,
        batch: int,
        clock: Clock,
        keyed: bool = False,
    ) -> None:
        from tipkit.stores._events import Outage  # noqa: PLC0415  # import-light without a store
        from tipkit.stores._protocol import TokenStore  # noqa: PLC0415  # import-light without a store

        if not isinstance(store, TokenStore):
            raise TypeError(
                "store must implement tipkit.stores.TokenStore (take_tokens, "
                f"atake_tokens, on_error), got {store!r}"
            )
        if isinstance(batch, bool) or not isinstance(batch, int):
            raise TypeError(f"{label}: batch must be an int, got {batch!r}")
        if not 1 <= batch <= capacity:
            raise ValueError(
                f"{label}: batch must be between 1 and the capacity "
                f"({capacity:g}), got {batch!r}"
            )
        self._store = store
        self.rate = rate
        self.capacity = capacity
        self._batch = float(batch)
        self.held = 0.0
        self._held_lock = _fork.new_lock()
        self.policy: OnError = store.on_error
        self._outage: Outage = Outage(name, "ratelimit", self.policy, clock=clock)
        self.errors = 0
        self.seen = capacity
        _fork.register(self)
        # Found by `tipkit ops limits` at once: one best-effort write, never raises.
        self.registration = registry.register_limit_of(
            store, name, rate=rate, capacity=capacity, keyed=keyed
        )

    def _after_fork_in_child(self) -> None:
        self._held_lock = _fork.new_lock()
        # The parent may spend these: a child spending them too would over-admit.
        self.held = 0.0

    def describe(self) -> str:
        """Return what a limiter's repr shows of its store, without asking the store."""
        batch = f" batch={self._batch:g} held={self.held:g}" if self._batch > 1 else ""
        return f" store={type(self._store).__name__} last_seen={self.seen:.6g}{batch}"

    # -- the drivers: the only code that differs between sync and async -------------
    def take(self, key: str, tokens: float, max_wait: float) -> TokenTake:
        """Take *tokens* from the bucket at *key*, reserving up to *max_wait* s.

        Blocks for one store round trip (two for a batched try that finds
        fewer than a batch left), each bounded by the store's timeout. A store
        failure is answered by the policy (see the class docstring), never raised.
        """
        plan = self._plan(tokens, max_wait)
        try:
            want = next(plan)
            while True:
                want = plan.send(
                    self._store.take_tokens(
                        key,
                        want,
                        rate=self.rate,
                        capacity=self.capacity,
                        max_wait=max_wait,
                    )
                )
        except StopIteration as done:
            return self._answered(done.value)
        except StoreError as exc:
            return self._failed(exc, tokens)

    async def atake(self, key: str, tokens: float, max_wait: float) -> TokenTake:
        """Async :meth:`take`: awaits ``atake_tokens``, never blocks the loop."""
        plan = self._plan(tokens, max_wait)
        try:
            want = next(plan)
            while True:
                want = plan.send(
                    await self._store.atake_tokens(
                        key,
                        want,
                        rate=self.rate,
                        capacity=self.capacity,
                        max_wait=max_wait,
                    )
                )
        except StopIteration as done:
            return self._answered(done.value)
        except StoreError as exc:
            return self._failed(exc, tokens)

    def level(self, key: str) -> float:
        """Return the tokens in the bucket at *key* now: one round trip.

        Raises:
            StoreError: the store could not be read (no policy applies to a read).
        """
        took = self._store.take_tokens(key, 0, rate=self.rate, capacity=self.capacity)
        self.seen = took.tokens
        return took.tokens

    # -- the decision, without I/O ----------------------------------------------------
    def _plan(
        self, tokens: float, max_wait: float
    ) -> Generator[float, TokenTake, TokenTake]:
        """Yield how many tokens to ask the store for; get its answer; return the outcome."""
        if self._batch <= 1 or max_wait > 0:
            return (yield tokens)
        if self.from_held(tokens):
            return _ADMIT
        want = max(self._batch, tokens)
        took = yield want
        if not took.admitted:
            # Fewer than a batch left: take what is there, if enough.
            level = math.floor(want - took.retry_after * self.rate + 1e-9)
            if level < tokens:
                # Say when *tokens* are there, not when a whole batch is.
                return took._replace(retry_after=(tokens - took.tokens) / self.rate)
            want = float(level)
            took = yield want
        if took.admitted and want > tokens:
            with self._held_lock:
                self.held += want - tokens
        return took

    def from_held(self, tokens: float) -> bool:
        """Take *tokens* from those this process holds, if it holds enough."""
        if self.held < tokens:  # unlocked first look: nothing held is the usual case
            return False
        with self._held_lock:
            if self.held >= tokens:
                self.held -= tokens
                return True
        return False

    def _answered(self, took: TokenTake) -> TokenTake:
        if took is not _ADMIT:
            self.seen = took.tokens
            self._outage.ok()
        return took

    def _failed(self, exc: StoreError, tokens: float) -> TokenTake:
        self._outage.failed(exc)
        self.errors += 1
        self.seen = 0.0
        if self.policy == "fail_closed":
            return _ADMIT._replace(admitted=False, retry_after=tokens / self.rate)
        return _ADMIT
