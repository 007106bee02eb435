"""The fleet children's other store-backed primitives, and what is asserted of them.

Each child of ``tests/fleet_children.py`` (``aof`` mode) holds, beside its
flags, rollout and ``fail_closed`` bucket, a :class:`Guards`: a second
``RedisStore`` on the same URL with ``on_error="fail_open"``, a bucket on it, a
store-backed ``KeyedRateLimiter`` on each store, and two shared breakers
(``share="state"``, one per store): ``inventory``, never opened, and
``payments``, opened by child 0's window before the fault and adopted by the
others. On every sync round and in every one of 50 async tasks each is called
once and its answer counted: ``fail_open`` admits, ``fail_closed`` refuses
while the store is down, a closed shared breaker keeps admitting and an opened
one keeps refusing (``keep_last``), whatever the fault.

The child imports this module (the repository is on its path); the parent
calls :func:`assert_guarded` on the reports (from ``assert_kept``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.stalls import STALLS

from tipkit.breaker import CircuitBreaker, CountWindow
from tipkit.errors import CircuitOpenError, RateLimitedError
from tipkit.ratelimit import KeyedRateLimiter, TokenBucket
from tipkit.stores import RedisStore

__all__ = ["ALWAYS", "NAMES", "OPEN_FOR", "Guards", "assert_guarded", "shared_breaker"]

OPEN_FOR = 3600.0  # the opened breaker stays open through any test (no half-open trial)
# Each primitive, in the order a round calls it (the fail_closed store's first).
NAMES = (
    "bucket_closed", "keyed_closed", "breaker_closed",
    "bucket_open", "keyed_open", "breaker_open",
)  # fmt: skip
# The answer each gives on every call, healthy or not (None: policy, per state).
ALWAYS: dict[str, bool | None] = {
    "bucket_closed": None,  # admits healthy, refuses while the store is down
    "keyed_closed": None,
    "breaker_closed": True,  # inventory: closed, keep_last
    "bucket_open": True,  # fail_open admits
    "keyed_open": True,
    "breaker_open": False,  # payments: opened before the fault, keep_last
}
REFUSED_IN_OUTAGE = ("bucket_closed", "keyed_closed")


def shared_breaker(name: str, store: RedisStore, refresh: float) -> CircuitBreaker:
    """A shared breaker as every process builds it: 4 calls open it, for an hour."""
    return CircuitBreaker(
        name,
        store=store,
        share="state",
        window=CountWindow(4),
        minimum_calls=4,
        open_duration=OPEN_FOR,
        refresh_interval=refresh,
    )


def _ok() -> str:
    return "ok"


async def _aok() -> str:
    return "ok"


def _fail() -> str:
    raise ConnectionError("payments down")


class Guards:
    """One child's other primitives, their answers counted and their calls timed.

    *closed*: the child's ``fail_closed`` store; *bucket*: its bucket on it.
    """

    def __init__(
        self, url: str, prefix: str, timeout: float, closed: RedisStore,
        bucket: TokenBucket, refresh: float,
    ) -> None:  # fmt: skip
        self.store = RedisStore(
            url, prefix=prefix, timeout=timeout, on_error="fail_open"
        )
        self.bucket = bucket
        self.bucket_open = TokenBucket(
            "api-open", rate=1e6, capacity=1e6, store=self.store
        )
        self.keyed_closed = KeyedRateLimiter(
            "per-user", rate=1e6, capacity=1e6, store=closed
        )
        self.keyed_open = KeyedRateLimiter(
            "per-user-open", rate=1e6, capacity=1e6, store=self.store
        )
        self.inventory = shared_breaker("inventory", closed, refresh)
        self.payments = shared_breaker("payments", self.store, refresh)
        self.reset()

    def reset(self) -> None:
        """Forget the counts and times so far (after the healthy calibration)."""
        self.answers = {name: [0, 0] for name in NAMES}  # admitted, refused
        self.slowest = {name: [0.0, 0.0] for name in NAMES}  # sync, async; less stalls
        self.rounds = 0  # rounds answered wholly as in an outage (sync and 50 async)

    def open_payments(self, index: int) -> None:
        """Child 0 opens 'payments' with its own window; every child waits to see it open."""
        if index == 0:
            for _ in range(4):
                with contextlib.suppress(ConnectionError):
                    self.payments.call(_fail)
        tick = threading.Event()  # never set: a call every 10 ms (the parent bounds it)
        while True:
            try:
                self.payments.call(_ok)
            except CircuitOpenError:
                return
            tick.wait(0.01)

    def _count(self, name: str, admitted: bool, start: float, face: int) -> None:
        end = time.perf_counter()
        self.answers[name][0 if admitted else 1] += 1
        own = end - start - STALLS.worst(start, end)
        self.slowest[name][face] = max(self.slowest[name][face], own)

    def sync_round(
        self, n: int, timed: Callable[[Callable[[], object]], object]
    ) -> dict[str, bool]:
        """Call each primitive once (sync) through the child's *timed*; return each answer."""
        key = f"user-{n % 10}"
        calls: dict[str, Callable[[], object]] = {
            "bucket_closed": self.bucket.try_acquire,
            "keyed_closed": lambda: self.keyed_closed.try_acquire(key),
            "breaker_closed": lambda: self.inventory.call(_ok) == "ok",
            "bucket_open": self.bucket_open.try_acquire,
            "keyed_open": lambda: self.keyed_open.try_acquire(key),
            "breaker_open": lambda: self.payments.call(_ok) == "ok",
        }
        seen = {}
        for name in NAMES:
            start = time.perf_counter()
            answer = timed(calls[name])  # "open": CircuitOpenError; None: it raised
            seen[name] = answer is True
            self._count(name, seen[name], start, 0)
        return seen

    async def one(self, i: int, note: Callable[[float], None]) -> dict[str, bool]:
        """One async task's calls, each once; *note* times each (the child's slowest)."""
        key = f"user-{i % 10}"
        seen = {}
        for name in NAMES:
            start = time.perf_counter()
            seen[name] = await self._aanswer(name, key)
            note(start)
            self._count(name, seen[name], start, 1)
        return seen

    async def _aanswer(self, name: str, key: str) -> bool:
        try:
            if name == "bucket_closed":
                await self.bucket.acquire_async(timeout=0)
            elif name == "bucket_open":
                await self.bucket_open.acquire_async(timeout=0)
            elif name in ("keyed_closed", "keyed_open"):
                async with getattr(self, name).limit(key):
                    pass
            else:
                breaker = self.inventory if name == "breaker_closed" else self.payments
                await breaker.acall(_aok)
        except (RateLimitedError, CircuitOpenError):
            return False
        return True

    def round_refused(
        self, sync: dict[str, bool], tasks: list[dict[str, bool]]
    ) -> bool:
        """Whether this round was answered wholly as in an outage (counted if so)."""
        refused = bool(tasks) and not any(
            answers[name] for answers in [sync, *tasks] for name in REFUSED_IN_OUTAGE
        )
        self.rounds += refused
        return refused

    def report(self) -> dict[str, Any]:
        """What goes into the child's JSON report."""
        return {
            "answers": self.answers,
            "slowest_by": self.slowest,
            "rounds": self.rounds,
        }


def assert_guarded(results: list[dict[str, Any]], timeout: float) -> None:
    """Every child: each primitive answered per its policy on every call, bounded.

    ``fail_open`` never refused, the closed breaker never refused, the opened
    one never admitted; each child had a round (sync and 50 async) wholly
    refused by both ``fail_closed`` limiters; each primitive's slowest call
    (less the child's stalls) within 2x the timeout plus the child's slack.
    """
    for r in results:
        answers, slowest = r["answers"], r["slowest_by"]
        for name, always in ALWAYS.items():
            admitted, refused = answers[name]
            assert admitted + refused > 0, (name, r)
            if always is not None:
                assert 0 == (refused if always else admitted), (name, answers)
            else:
                assert admitted > 0, (name, answers)  # before and after the fault
                assert refused > 0, (name, answers)  # in it
            assert slowest[name][0] < 2 * timeout + r["slack"], (name, slowest)
            assert slowest[name][1] < 2 * timeout + r["batch_slack"], (name, slowest)
        assert r["rounds"] >= 1, r
