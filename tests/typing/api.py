"""Every public call shape, type-checked by mypy --strict in CI, never run."""

from __future__ import annotations

from datetime import timedelta
from typing import assert_type

import tipkit
from tipkit._core._guard import Guard, Wait
from tipkit.clock import Clock
from tipkit.ratelimit import KeyedRateLimiter, RateLimited, TokenBucket
from tipkit.retry import (
    Attempt,
    RetryGaveUp,
    RetryScheduled,
    retry,
    retry_context,
    set_testing,
)
from tipkit.stores import Entry, MemoryStore, Snapshot, Store, TokenTake
from tipkit.telemetry import Event, add_listener, counters, remove_listener
from tipkit.testing import FakeClock, capture_events


class Noop(Guard[None]):
    def _step(self, now: float, pending: Wait | None) -> Wait | None:
        return None

    def _release(self, ticket: None, error: BaseException | None, now: float) -> None:
        return None


guard = Noop(clock=FakeClock())


@guard
def add(a: int, b: str = "x") -> float:
    return float(a)


@guard
async def aadd(a: int) -> str:
    return str(a)


assert_type(add(1, b="y"), float)


async def aident(x: int) -> int:
    return x


async def use_async() -> None:
    r = await aadd(2)
    assert_type(r, str)
    s: int = await guard.acall(aident, 3)
    async with guard:
        pass
    _ = (r, s)


t: int = guard.call(len, "abc")
with guard:
    pass

both = tipkit.compose(guard, guard)


@both
def composed(x: int) -> int:
    return x


assert_type(composed(3), int)
v: int = both.call(composed, 4)

clock: Clock = FakeClock()
store: Store = MemoryStore(clock=clock)
ver: int = store.set("ns", "k", {"a": 1})
entry: Entry | None = store.get("ns", "k")
snap: Snapshot = store.snapshot("ns")
take: TokenTake = store.take_tokens("b", 1, rate=1.0, capacity=2)

with capture_events(Event) as events:
    first: Event = events[0]

add_listener(print)
remove_listener(print)
n: int = counters.counter("x").value


# -- ratelimit and retry --------------------------------------------------
bucket = TokenBucket(
    "api", rate=100.0, capacity=200, max_wait=timedelta(seconds=1), clock=FakeClock()
)
ok: bool = bucket.try_acquire()
bucket.acquire(2, timeout=0.5)
bucket.mode = "shadow"
per_key = KeyedRateLimiter("tenants", rate=5, capacity=10, max_keys=1000)
ok = per_key.try_acquire("acme", 2)
per_key.acquire("acme")


@bucket
def limited(x: int) -> str:
    return str(x)


@bucket
async def alimited(x: int) -> str:
    return str(x)


@retry(on=(ConnectionError, TimeoutError), attempts=3, timeout=10.0, wait_jitter=0.5)
def fetch(url: str) -> bytes:
    return url.encode()


@retry(on=lambda exc: isinstance(exc, OSError))
async def afetch(url: str) -> bytes:
    return url.encode()


s1: str = limited(1)
fb: bytes = fetch("u")
fb = retry(on=ValueError).call(fetch, "u")


async def main_rl() -> None:
    await bucket.acquire_async(1, timeout=None)
    async with bucket:
        pass
    s2: str = await alimited(2)
    b2: bytes = await afetch("u")
    b2 = await retry(on=ValueError).acall(afetch, "u")
    async for attempt in retry_context(on=ValueError):
        with attempt:
            pass
    _ = (s2, b2)


for attempt in retry_context(on=ValueError, attempts=3):
    with attempt:
        num: int = attempt.num

with set_testing(True, attempts=2):
    pass
event_types: tuple[
    type[RateLimited], type[RetryScheduled], type[RetryGaveUp], type[Attempt]
] = (
    RateLimited,
    RetryScheduled,
    RetryGaveUp,
    Attempt,
)
