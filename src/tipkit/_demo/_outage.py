"""Scenario 3: a payments outage, a burst and a failing flagged path."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from tipkit._demo._common import (
    Params,
    Reporter,
    _listening,
)
from tipkit.breaker import (
    BreakerState,
    BreakerStateChanged,
    CircuitBreaker,
    CountWindow,
    TimeWindow,
)
from tipkit.errors import CircuitOpenError, RateLimitedError
from tipkit.flags import Flags, InMemoryProvider
from tipkit.ratelimit import TokenBucket
from tipkit.retry import retry
from tipkit.rollout import (
    FlagKilled,
    Tripwire,
)
from tipkit.stores import MemoryStore
from tipkit.telemetry._events import Event
from tipkit.testing import FakeClock


class OutageBin(NamedTuple):
    """Counts over one bin of virtual time in scenario 3."""

    t: float
    requests: int
    shed: int
    downstream: int
    breaker_open: bool


@dataclass(frozen=True, slots=True)
class OutageResult:
    """Scenario 3: a dependency outage, a burst and a failing flagged path.

    Attributes:
        requests: requests that arrived.
        outage_start, outage_end: virtual seconds the payments dependency was down.
        outage_requests: requests admitted while it was down that went on to pay.
        downstream_calls: calls that reached the payments dependency, in all.
        outage_downstream_calls: of those, while it was down.
        attempts: the retry's attempts per request.
        naive_outage_calls: calls a retry without a breaker would have made
            while it was down (every attempt of every request fails).
        fast_failures: requests answered at once by the open breaker.
        breaker_opened: the breaker opened at least once.
        breaker_transitions: ``(t, to_state)`` of every breaker transition.
        burst_start, burst_end: virtual seconds of the traffic burst.
        burst_requests: requests that arrived in the burst.
        burst_shed: of those, requests the token bucket rejected (429).
        shed: requests the token bucket rejected, in all.
        flag_killed: the tripwire killed the ``checkout-v2`` flag.
        kill_time: virtual seconds when it did.
        kill_error_rate, kill_calls: the window's error rate and calls then.
        v2_failures: requests the buggy v2 path failed before the kill.
        bins: per-bin counts, for the chart.
    """

    requests: int
    outage_start: float
    outage_end: float
    outage_requests: int
    downstream_calls: int
    outage_downstream_calls: int
    attempts: int
    naive_outage_calls: int
    fast_failures: int
    breaker_opened: bool
    breaker_transitions: tuple[tuple[float, str], ...]
    burst_start: float
    burst_end: float
    burst_requests: int
    burst_shed: int
    shed: int
    flag_killed: bool
    kill_time: float | None
    kill_error_rate: float | None
    kill_calls: int | None
    v2_failures: int
    bug_start: float
    bins: tuple[OutageBin, ...] = field(repr=False)


class _PaymentsDownError(ConnectionError):
    """The simulated payments dependency refused the connection."""


class _CheckoutBugError(ValueError):
    """The simulated bug in the checkout-v2 code path."""


def _arrivals(
    duration: float, rps: float, burst: tuple[float, float, float]
) -> Iterator[float]:
    t = 0.0
    b_start, b_end, b_rps = burst
    while t < duration:
        yield t
        t += 1.0 / (b_rps if b_start <= t < b_end else rps)


def run_outage(  # noqa: C901, PLR0915  # one story, told in order
    seed: int, params: Params, reporter: Reporter
) -> OutageResult:
    """Simulate an outage, a burst and a buggy flagged path against the guards."""
    key = "outage"
    clock = FakeClock()
    rng = random.Random(seed + 2)  # noqa: S311  # a simulation
    duration = params.outage_duration
    outage = (0.2 * duration, 0.4 * duration)
    burst = (0.6 * duration, 0.6 * duration + 30.0, params.burst_rps)
    bug_start = 0.75 * duration
    flags = Flags(
        InMemoryProvider(
            {
                "flags": {
                    "checkout-v2": {
                        "variants": {"on": True, "off": False},
                        "default_variant": "on",
                        "off_variant": "off",
                    }
                }
            }
        ),
        store=MemoryStore(clock=clock),
        clock=clock,
    )
    breaker = CircuitBreaker(
        "demo-payments",
        failure_rate_threshold=0.5,
        window=CountWindow(50),
        minimum_calls=20,
        open_duration=10.0,
        half_open_calls=3,
        runbook="https://runbooks.example/payments",
        clock=clock,
    )
    attempts = 3
    # Outside the breaker: a rejection (CircuitOpenError) is never retried.
    charging = retry(
        on=ConnectionError,
        attempts=attempts,
        timeout=5.0,
        wait_initial=0.05,
        wait_max=1.0,
        wait_jitter=0.05,
        name="demo-charge",
        clock=clock,
    )
    bucket = TokenBucket("demo-checkout", rate=50.0, capacity=100.0, clock=clock)
    wire = Tripwire(
        flags,
        "checkout-v2",
        max_error_rate=0.05,
        window=TimeWindow(60),
        minimum_calls=100,
        runbook="https://runbooks.example/checkout-v2",
        clock=clock,
    )
    calls = {"all": 0, "outage": 0}

    def payments(amount: int) -> int:
        calls["all"] += 1
        now = clock.monotonic()
        clock.advance(0.004)
        if outage[0] <= now < outage[1]:
            calls["outage"] += 1
            raise _PaymentsDownError("payments: connection refused")
        return amount

    charge = charging(breaker(payments))

    def price_v1(cart: int) -> int:
        return cart * 499

    def raw_price_v2(cart: int) -> int:
        if clock.monotonic() >= bug_start and rng.random() < 0.15:
            raise _CheckoutBugError("checkout-v2: discount table out of range")
        return cart * 499

    price_v2 = wire(raw_price_v2)

    @bucket
    def checkout(customer: str, cart: int) -> int:
        v2 = flags.is_enabled("checkout-v2", customer)
        return charge(price_v2(cart) if v2 else price_v1(cart))

    transitions: list[tuple[float, str]] = []
    killed: list[tuple[float, FlagKilled]] = []

    def on_event(event: Event) -> None:
        if isinstance(event, BreakerStateChanged) and event.name == breaker.name:
            transitions.append((clock.monotonic(), event.to_state.value))
        elif isinstance(event, FlagKilled) and event.name == "checkout-v2":
            killed.append((clock.monotonic(), event))

    arrivals = list(_arrivals(duration, params.outage_rps, burst))
    reporter.begin(key, "3 · outage, burst and a failing flagged path", len(arrivals))
    bin_width = 5.0
    bins: list[OutageBin] = []
    cur = [0, 0, 0]  # requests, shed, downstream calls at the bin's start
    bin_end = bin_width
    shed = fast = outage_requests = v2_failures = burst_requests = burst_shed = 0
    with _listening(on_event, BreakerStateChanged, FlagKilled):
        for n, at in enumerate(arrivals, 1):
            while at >= bin_end:
                bins.append(
                    OutageBin(
                        bin_end - bin_width,
                        n - 1 - cur[0],
                        shed - cur[1],
                        calls["all"] - cur[2],
                        breaker.state is not BreakerState.CLOSED,
                    )
                )
                cur = [n - 1, shed, calls["all"]]
                bin_end += bin_width
            now = clock.monotonic()
            if at > now:
                clock.advance(at - now)
            in_burst = burst[0] <= at < burst[1]
            burst_requests += in_burst
            customer = f"customer-{rng.randrange(params.users)}"
            in_outage = outage[0] <= at < outage[1]
            try:
                checkout(customer, rng.randint(1, 5))
            except RateLimitedError:
                shed += 1  # 429: the burst is shed at the door
                burst_shed += in_burst
            except _CheckoutBugError:
                v2_failures += 1
            except CircuitOpenError:
                fast += 1  # failed in microseconds, payments left alone
                outage_requests += in_outage
            except _PaymentsDownError:
                outage_requests += in_outage
            else:
                outage_requests += in_outage
            if n % 500 == 0 or n == len(arrivals):
                reporter.update(
                    key,
                    n,
                    f"breaker {breaker.state.value} · payments calls {calls['all']:,}"
                    f" · shed {shed:,} · checkout-v2 "
                    f"{'killed' if killed else 'on'}",
                )
        bins.append(
            OutageBin(
                bin_end - bin_width,
                len(arrivals) - cur[0],
                shed - cur[1],
                calls["all"] - cur[2],
                breaker.state is not BreakerState.CLOSED,
            )
        )
    kill = killed[0] if killed else None
    naive = outage_requests * attempts
    result = OutageResult(
        requests=len(arrivals),
        outage_start=outage[0],
        outage_end=outage[1],
        outage_requests=outage_requests,
        downstream_calls=calls["all"],
        outage_downstream_calls=calls["outage"],
        attempts=attempts,
        naive_outage_calls=naive,
        fast_failures=fast,
        breaker_opened=any(s == BreakerState.OPEN.value for _, s in transitions),
        breaker_transitions=tuple(transitions),
        burst_start=burst[0],
        burst_end=burst[1],
        burst_requests=burst_requests,
        burst_shed=burst_shed,
        shed=shed,
        flag_killed=kill is not None,
        kill_time=None if kill is None else kill[0],
        kill_error_rate=None if kill is None else kill[1].error_rate,
        kill_calls=None if kill is None else kill[1].calls,
        v2_failures=v2_failures,
        bug_start=bug_start,
        bins=tuple(bins),
    )
    reporter.end(
        key,
        f"breaker opened {sum(s == 'open' for _, s in transitions)}x: payments got"
        f" {calls['outage']:,} calls in the outage, not {naive:,}; shed {burst_shed:,}"
        f" of {burst_requests:,} burst requests; checkout-v2 "
        + (f"killed at {kill[0] / 60:.1f} min" if kill else "NOT killed"),
        ok=result.breaker_opened and burst_shed > 0 and kill is not None,
    )
    return result


# ------------------------------------------------------------------ the shadow run
