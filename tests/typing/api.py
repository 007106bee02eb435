"""Every public call shape, type-checked by mypy --strict in CI, never run."""

from __future__ import annotations

from typing import assert_type

import tipkit
from tipkit._core._guard import Guard, Wait
from tipkit.clock import Clock
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
