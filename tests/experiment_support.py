"""Helpers the experiment test modules share: behaviours, a blocker, a scripted rng."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

from tipkit.experiment import Experiment
from tipkit.testing import FakeClock

WAIT = 10.0  # real seconds a test waits for a thread before failing, never slept


class Blocker:
    """A callable that blocks its thread until released (a hung candidate or callback)."""

    def __init__(self, result: Any = None) -> None:
        self.result = result
        self.started = threading.Event()
        self.released = threading.Event()
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.started.set()
        assert self.released.wait(WAIT), "blocker never released"
        return self.result

    def release(self) -> None:
        self.released.set()


def released() -> Iterator[Blocker]:
    """Yield a blocker that returns True, released at teardown (use as a fixture)."""
    b = Blocker(True)
    try:
        yield b
    finally:
        b.release()


class SeqRandom:
    """An rng that returns the given values in a cycle."""

    def __init__(self, *values: float) -> None:
        self.values = values
        self.i = 0

    def random(self) -> float:
        value = self.values[self.i % len(self.values)]
        self.i += 1
        return value


def double(x: int) -> int:
    return x * 2


def double_v2(x: int) -> int:
    return x * 2 if x < 5 else x * 3


def failing(x: int) -> int:
    raise ValueError(f"bad {x}")


async def adouble(x: int) -> int:
    return x * 2


async def adouble_v2(x: int) -> int:
    return x * 2 if x < 5 else x * 3


async def afailing(x: int) -> int:
    raise ValueError(f"bad {x}")


def make(control: Callable[..., Any] = double, **kw: Any) -> Experiment[Any, Any]:
    kw.setdefault("candidate", double_v2)
    kw.setdefault("clock", FakeClock())
    return Experiment("exp", control=control, **kw)


def call_any(exp: Experiment[Any, Any], *args: Any, **kwargs: Any) -> Any:
    """Call *exp* (sync or async) and, in background mode, wait for its runs."""
    if exp.is_async:

        async def main() -> Any:
            try:
                return await exp(*args, **kwargs)
            finally:
                await exp.adrain()

        return asyncio.run(main())
    try:
        return exp(*args, **kwargs)
    finally:
        assert exp.drain(WAIT)


WAYS = [
    ("inline", double, double_v2, failing),
    ("background", double, double_v2, failing),
    ("inline", adouble, adouble_v2, afailing),
    ("background", adouble, adouble_v2, afailing),
]
WAY_IDS = ["sync-inline", "sync-background", "async-inline", "async-background"]
