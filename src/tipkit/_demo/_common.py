"""What every demo scenario shares: the stage plan, the traffic parameters, the reporter."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from tipkit.telemetry import add_listener, remove_listener
from tipkit.telemetry._events import Event

STAGES = (1.0, 5.0, 25.0, 50.0, 100.0)
"""Canary shares, in percent, of both rollouts."""

BASE_ERROR = 0.01
"""The error rate of the pricing code in production (control)."""

BAD_ERROR = 0.025
"""The error rate of the bad pricing change (scenario 1)."""


class Reporter(Protocol):
    """Where a scenario reports its progress (the live display, or nothing)."""

    def begin(self, key: str, title: str, total: float) -> None:
        """Start showing scenario *key* with a bar of *total* steps."""

    def update(self, key: str, completed: float, info: str) -> None:
        """Move the bar of *key* to *completed* and show *info* beside it."""

    def end(self, key: str, info: str, *, ok: bool) -> None:
        """Finish *key* with a one-line outcome."""


@dataclass(frozen=True, slots=True)
class Params:
    """Traffic sizes of one demo run (``fast`` shrinks what can be shrunk).

    The rollouts are not shrunk: catching a 1.5-point error increase at a 1 %
    canary share takes about 1,500 canary requests (150,000 in all) whatever the
    mode, and the demo must not pretend otherwise.
    """

    users: int
    min_stage_duration: float
    max_requests: int
    sample_every: int
    outage_duration: float
    outage_rps: float
    burst_rps: float
    orders: int

    @classmethod
    def for_mode(cls, *, fast: bool, full: bool = False) -> Params:
        """Return the sizes for the fast (tests), default (show) or full mode.

        The full mode (``tipkit demo --full``) runs a bigger population for
        longer: a 15-minute minimum per stage, a 30-minute outage at 50 requests
        a second, a 500/s burst and 100,000 shadowed orders, with a chart point
        every 500 requests: about 1.5 times the default's CPU (11 s against 7 s).
        """
        if fast and full:
            raise ValueError("demo: choose fast or full, not both")
        if full:
            return cls(
                users=1_000_000,
                min_stage_duration=900.0,
                max_requests=4_000_000,
                sample_every=500,
                outage_duration=1_800.0,
                outage_rps=50.0,
                burst_rps=500.0,
                orders=100_000,
            )
        if fast:
            return cls(
                users=50_000,
                min_stage_duration=120.0,
                max_requests=600_000,
                sample_every=2_000,
                outage_duration=300.0,
                outage_rps=10.0,
                burst_rps=120.0,
                orders=2_000,
            )
        return cls(
            users=200_000,
            min_stage_duration=300.0,
            max_requests=1_500_000,
            sample_every=1_000,
            outage_duration=600.0,
            outage_rps=20.0,
            burst_rps=200.0,
            orders=20_000,
        )


@contextmanager
def _listening(
    listener: Callable[[Event], None], *types: type[Event]
) -> Iterator[None]:
    add_listener(listener, types=types)
    try:
        yield
    finally:
        remove_listener(listener)


# ------------------------------------------------------------------ the rollouts
