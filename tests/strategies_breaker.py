"""Helpers for the breaker tests, and a small reference model of the breaker.

The model is written for clarity, not speed: lists instead of ring buffers,
every verdict recomputed from scratch after every outcome.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from tipkit.breaker import BreakerState, CircuitBreaker, CountWindow
from tipkit.testing import FakeClock


class BoomError(Exception):
    pass


class IgnoredError(Exception):
    pass


def ok() -> str:
    return "ok"


def boom() -> None:
    raise BoomError("down")


def make(clock: FakeClock, **kw: Any) -> CircuitBreaker:
    kw.setdefault("window", CountWindow(10))
    kw.setdefault("minimum_calls", 4)
    kw.setdefault("open_duration", 10.0)
    kw.setdefault("half_open_calls", 2)
    return CircuitBreaker(kw.pop("name", "svc"), clock=clock, **kw)


def fail(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        with pytest.raises(BoomError):
            breaker.call(boom)


def trip(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    assert breaker.state is BreakerState.OPEN


CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, DISABLED = (
    "closed",
    "open",
    "half_open",
    "forced_open",
    "disabled",
)


@dataclass
class ModelTicket:
    generation: int | None  # None: let through in shadow mode, never recorded
    start: float


@dataclass
class Model:
    count_size: int | None  # a CountWindow of this size, or
    time_seconds: int | None  # a TimeWindow of this many seconds
    minimum_calls: int
    failure_threshold: float
    slow_threshold: float
    slow_after: float | None
    open_duration: float
    half_open_calls: int
    max_half_open_wait: float | None
    mode: str = "enforce"
    state: str = CLOSED
    generation: int = 0
    window: list[tuple[float, int, int]] = field(default_factory=list)
    trials: list[tuple[int, int]] = field(default_factory=list)
    permits: int = 0
    open_until: float = 0.0
    half_open_since: float = 0.0
    times_opened: int = 0
    rejected: int = 0
    would_reject: int = 0
    ignored: int = 0

    @property
    def min_calls(self) -> int:
        if self.count_size is not None:
            return min(self.minimum_calls, self.count_size)
        return self.minimum_calls

    def live_window(self, now: float) -> list[tuple[float, int, int]]:
        if self.count_size is not None:
            return self.window[-self.count_size :]
        assert self.time_seconds is not None
        first = math.floor(now) - self.time_seconds + 1
        return [e for e in self.window if math.floor(e[0]) >= first]

    def to(self, state: str, now: float) -> None:
        self.generation += 1
        self.state = state
        if state == CLOSED:
            self.window = []
            self.times_opened = 0
        elif state == OPEN:
            self.times_opened += 1
            self.open_until = now + self.open_duration
        elif state == HALF_OPEN:
            self.window = []
            self.permits = self.half_open_calls
            self.trials = []
            self.half_open_since = now
        elif state == DISABLED:
            self.window = []

    def verdict(self, outcomes: list[tuple[int, int]]) -> bool:
        calls = len(outcomes)
        failures = sum(f for f, _ in outcomes)
        slows = sum(s for _, s in outcomes)
        return bool(
            (failures and failures / calls >= self.failure_threshold)
            or (slows and slows / calls >= self.slow_threshold)
        )

    def admit(self, now: float) -> ModelTicket | None:
        """Return a ticket, or None when enforcement rejects."""
        if self.state == OPEN and now >= self.open_until:
            self.to(HALF_OPEN, now)
        if (
            self.state == HALF_OPEN
            and self.max_half_open_wait is not None
            and now - self.half_open_since >= self.max_half_open_wait
        ):
            self.to(OPEN, now)
        if self.state in (CLOSED, DISABLED):
            return ModelTicket(self.generation, now)
        if self.state == HALF_OPEN and self.permits > 0:
            self.permits -= 1
            return ModelTicket(self.generation, now)
        if self.mode == "shadow":
            self.would_reject += 1
            return ModelTicket(None, now)
        self.rejected += 1
        return None

    def release(self, ticket: ModelTicket, outcome: str, now: float) -> None:
        """*outcome* is success, failure or ignored."""
        if ticket.generation is None:
            return
        if outcome == "ignored":
            self.ignored += 1
        if ticket.generation != self.generation:
            return
        slow = int(self.slow_after is not None and now - ticket.start > self.slow_after)
        failed = int(outcome == "failure")
        if self.state == CLOSED:
            if outcome == "ignored":
                return
            self.window.append((now, failed, slow))
            live = self.live_window(now)
            self.window = live
            if len(live) >= self.min_calls and self.verdict(
                [(f, s) for _, f, s in live]
            ):
                self.to(OPEN, now)
        elif self.state == HALF_OPEN:
            if outcome == "ignored":
                self.permits += 1
                return
            self.trials.append((failed, slow))
            if len(self.trials) >= self.half_open_calls:
                self.to(OPEN if self.verdict(self.trials) else CLOSED, now)

    def calls_in_window(self, now: float) -> tuple[int, int, int]:
        if self.state == HALF_OPEN:
            outcomes = self.trials
        else:
            outcomes = [(f, s) for _, f, s in self.live_window(now)]
        return (
            len(outcomes),
            sum(f for f, _ in outcomes),
            sum(s for _, s in outcomes),
        )
