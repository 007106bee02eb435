"""The four scenarios of ``tipkit demo``: a simulated service on a virtual clock.

Each scenario builds its own :class:`~tipkit.testing.FakeClock`, store and flags,
drives tipkit's public API with simulated traffic drawn from a seeded
:class:`random.Random`, and returns a frozen result with the numbers and the
series the chart draws. Nothing here sleeps or reads real time: the clock moves
only when the simulation says a request took time.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple, Protocol

from tipkit.breaker import (
    BreakerState,
    BreakerStateChanged,
    CircuitBreaker,
    CountWindow,
    TimeWindow,
)
from tipkit.errors import CircuitOpenError, RateLimitedError
from tipkit.experiment import Experiment, ExperimentResult
from tipkit.flags import Flags, InMemoryProvider
from tipkit.ratelimit import TokenBucket
from tipkit.retry import retry
from tipkit.rollout import (
    ErrorRateCheck,
    FlagKilled,
    LatencyCheck,
    Rollout,
    RolloutRolledBack,
    Tripwire,
)
from tipkit.stores import MemoryStore
from tipkit.telemetry import add_listener, remove_listener
from tipkit.telemetry._events import Event
from tipkit.testing import FakeClock

__all__ = [
    "STAGES",
    "CanaryResult",
    "OutageResult",
    "Params",
    "PromotionResult",
    "Reporter",
    "RolloutPoint",
    "ShadowResult",
    "StageChange",
    "run_bad_canary",
    "run_good_rollout",
    "run_outage",
    "run_shadow",
]

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
    def for_mode(cls, *, fast: bool) -> Params:
        """Return the sizes for the fast (tests) or the default (show) mode."""
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


class RolloutPoint(NamedTuple):
    """One sample of a rollout's traffic: cumulative counts per arm at virtual *t*."""

    t: float
    percent: float
    canary: int
    canary_errors: int
    control: int
    control_errors: int


@dataclass(frozen=True, slots=True)
class StageChange:
    """A stage transition with the judge's numbers that caused it.

    Attributes:
        t: virtual seconds since the rollout started.
        from_percent, to_percent: canary share before and after.
        action: ``"advanced"``, ``"completed"`` or ``"rolled_back"``.
        decision: the judge's verdict (``"PASS"``, ``"FAIL"``).
        canary, control: outcomes per arm the verdict was based on.
        canary_rate, control_rate: their error rates.
        lower, upper: the 99 % confidence sequence of canary - control.
    """

    t: float
    from_percent: float
    to_percent: float
    action: str
    decision: str | None
    canary: int
    control: int
    canary_rate: float
    control_rate: float
    lower: float | None
    upper: float | None


@dataclass(frozen=True, slots=True)
class _RolloutRun:
    status: str
    requests: int
    virtual_seconds: float
    changes: tuple[StageChange, ...]
    series: tuple[RolloutPoint, ...]
    rolled_back: RolloutRolledBack | None


@dataclass(frozen=True, slots=True)
class CanaryResult:
    """Scenario 1: a bad pricing change (errors 1 % -> 2.5 %) is rolled back.

    Attributes:
        status: the rollout's final status (``"rolled_back"`` expected).
        rolled_back_at: the canary share, in percent, when it was rolled back
            (``None`` if it was not).
        stage: 1-based index of that stage among :data:`STAGES`.
        canary_requests, control_requests: judged requests per arm at the
            rollback (the failed guard's counts).
        canary_errors, control_errors: their errors.
        canary_rate, control_rate: their error rates.
        lower, upper: the judge's 99 % bounds of canary - control then.
        guard: the guard that failed.
        requests: requests served in all.
        virtual_seconds: virtual time the rollout ran.
        changes, series: for the chart.
    """

    status: str
    rolled_back_at: float | None
    stage: int | None
    canary_requests: int
    control_requests: int
    canary_errors: int
    control_errors: int
    canary_rate: float
    control_rate: float
    lower: float | None
    upper: float | None
    guard: str | None
    requests: int
    virtual_seconds: float
    changes: tuple[StageChange, ...] = field(repr=False)
    series: tuple[RolloutPoint, ...] = field(repr=False)

    @property
    def early(self) -> bool:
        """Whether it was rolled back at the first or second stage (1 % or 5 %)."""
        return self.rolled_back_at is not None and self.rolled_back_at <= STAGES[1]


@dataclass(frozen=True, slots=True)
class PromotionResult:
    """Scenario 2: a good change is promoted stage by stage to 100 %.

    Attributes:
        status: the rollout's final status (``"completed"`` expected).
        percents: every canary share the rollout served, in order.
        final_percent: the share at the end.
        requests: requests served in all.
        virtual_seconds: virtual time the rollout ran.
        changes: each transition with the judge's numbers.
        series: for the chart.
    """

    status: str
    percents: tuple[float, ...]
    final_percent: float
    requests: int
    virtual_seconds: float
    changes: tuple[StageChange, ...] = field(repr=False)
    series: tuple[RolloutPoint, ...] = field(repr=False)


def _latency(rng: random.Random) -> float:
    # Log-normal, median 15 ms: about 50 requests a second, one after another.
    return rng.lognormvariate(-4.2, 0.7)


def _changes(status: Any, offset: float) -> tuple[StageChange, ...]:
    out: list[StageChange] = []
    previous = STAGES[0]
    for entry in status.history:
        action = entry["action"]
        if action not in {"advanced", "completed", "rolled_back"}:
            continue
        verdict = entry.get("verdict") or {}
        guards = verdict.get("guards") or [{}]
        failed = [g for g in guards if g.get("failed")]
        g = failed[0] if failed else guards[0]
        to = float(entry["percent"])
        out.append(
            StageChange(
                t=float(entry["at"]) - offset,
                from_percent=previous,
                to_percent=to,
                action=action,
                decision=verdict.get("decision"),
                canary=int(g.get("canary_count", 0)),
                control=int(g.get("control_count", 0)),
                canary_rate=float(g.get("canary_rate", 0.0)),
                control_rate=float(g.get("control_rate", 0.0)),
                lower=g.get("lower"),
                upper=g.get("upper"),
            )
        )
        previous = to
    return tuple(out)


def _drive_rollout(
    name: str,
    canary_error: float,
    *,
    seed: int,
    params: Params,
    reporter: Reporter,
    key: str,
    title: str,
) -> _RolloutRun:
    clock = FakeClock()
    offset = clock.time() - clock.monotonic()
    flags = Flags(InMemoryProvider(), store=MemoryStore(clock=clock), clock=clock)
    rolled_back: list[RolloutRolledBack] = []
    rollout = Rollout(
        name,
        flags=flags,
        stages=STAGES,
        min_stage_duration=params.min_stage_duration,
        min_samples=1_000,
        max_stage_duration=None,
        # pass_below: a stage passes only on evidence that the canary is less
        # than one point worse; "no FAIL yet" lets doubled error rates through.
        checks=[
            ErrorRateCheck(max_increase=0.0, pass_below=0.01),
            LatencyCheck(threshold=0.250, max_increase=0.02),
        ],
        confidence=0.99,
        clock=clock,
        runbook="https://runbooks.example/pricing",
        on_rollback=rolled_back.append,
    )
    rng = random.Random(seed)  # noqa: S311  # a simulation, not cryptography
    counts = [0, 0, 0, 0]  # control, control errors, canary, canary errors
    series: list[RolloutPoint] = [RolloutPoint(0.0, rollout.percent, 0, 0, 0, 0)]
    reporter.begin(key, title, len(STAGES))
    every = params.sample_every
    requests = 0
    percent = rollout.percent
    judging = True
    while judging and requests < params.max_requests:
        for _ in range(every):
            # A fresh customer id per request: assignment is then exactly a coin
            # with the stage's share (a small pool of ids would not be, and the
            # judge's sample-ratio check would rightly refuse to pass).
            with rollout.observe(f"customer-{rng.getrandbits(48)}") as arm:
                clock.advance(_latency(rng))
                i = 2 if arm.is_canary else 0
                counts[i] += 1
                if rng.random() < (canary_error if i else BASE_ERROR):
                    counts[i + 1] += 1
                    arm.fail()  # a 5xx response: counted, not raised
            if rollout.percent != percent:
                percent = rollout.percent
                judging = 0.0 < percent < 100.0
                if not judging:
                    break
        requests = counts[0] + counts[2]
        series.append(
            RolloutPoint(clock.monotonic(), rollout.percent, *counts[2:], *counts[:2])
        )
        stage = STAGES.index(percent) if percent in STAGES else 0
        canary_rate = counts[3] / counts[2] if counts[2] else 0.0
        control_rate = counts[1] / counts[0] if counts[0] else 0.0
        reporter.update(
            key,
            stage + (1 if percent >= 100.0 else 0),
            f"stage {percent:g}% · canary {counts[2]:,} req {canary_rate:.2%} err"
            f" · control {counts[0]:,} req {control_rate:.2%} err"
            f" · {clock.monotonic() / 60:,.0f} virtual min",
        )
    status = rollout.status()
    return _RolloutRun(
        status=status.status,
        requests=requests,
        virtual_seconds=clock.monotonic(),
        changes=_changes(status, offset),
        series=tuple(series),
        rolled_back=rolled_back[0] if rolled_back else None,
    )


def run_bad_canary(seed: int, params: Params, reporter: Reporter) -> CanaryResult:
    """Roll out a pricing change that raises errors from 1 % to 2.5 %; expect a rollback."""
    key = "canary"
    run = _drive_rollout(
        "pricing-v2-bad",
        BAD_ERROR,
        seed=seed,
        params=params,
        reporter=reporter,
        key=key,
        title="1 · bad pricing change (errors 1% → 2.5%)",
    )
    ev = run.rolled_back
    if ev is None:
        reporter.end(key, f"not rolled back ({run.status})", ok=False)
        return CanaryResult(
            run.status, None, None, 0, 0, 0, 0, 0.0, 0.0, None, None, None,
            run.requests, run.virtual_seconds, run.changes, run.series,
        )  # fmt: skip
    stage = STAGES.index(ev.percent) + 1 if ev.percent in STAGES else None
    reporter.end(
        key,
        f"rolled back at {ev.percent:g}% (stage {stage}) after {ev.canary_count:,} canary"
        f" and {ev.control_count:,} control requests: canary {ev.canary_rate:.2%}"
        f" vs control {ev.control_rate:.2%}",
        ok=True,
    )
    return CanaryResult(
        status=run.status,
        rolled_back_at=ev.percent,
        stage=stage,
        canary_requests=ev.canary_count,
        control_requests=ev.control_count,
        canary_errors=ev.canary_bad,
        control_errors=ev.control_bad,
        canary_rate=ev.canary_rate,
        control_rate=ev.control_rate,
        lower=ev.lower,
        upper=ev.upper,
        guard=ev.guard,
        requests=run.requests,
        virtual_seconds=run.virtual_seconds,
        changes=run.changes,
        series=run.series,
    )


def run_good_rollout(seed: int, params: Params, reporter: Reporter) -> PromotionResult:
    """Roll out a change as good as the old code; expect 1 -> 5 -> 25 -> 50 -> 100."""
    key = "promotion"
    run = _drive_rollout(
        "pricing-v3-good",
        BASE_ERROR,
        seed=seed + 1,
        params=params,
        reporter=reporter,
        key=key,
        title="2 · good change, promoted stage by stage",
    )
    percents = (STAGES[0], *(c.to_percent for c in run.changes))
    final = percents[-1]
    reporter.end(
        key,
        " → ".join(f"{p:g}" for p in percents)
        + f"% ({run.status}) in {run.virtual_seconds / 3600:.1f} virtual hours,"
        f" {run.requests:,} requests",
        ok=run.status == "completed",
    )
    return PromotionResult(
        status=run.status,
        percents=percents,
        final_percent=final,
        requests=run.requests,
        virtual_seconds=run.virtual_seconds,
        changes=run.changes,
        series=run.series,
    )


# ------------------------------------------------------------------ the outage


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


class Order(NamedTuple):
    """A simulated order: what both pricing functions are called with."""

    order_id: int
    customer: str
    qty: int
    unit: Decimal
    region: str


_TAX = {
    "US": Decimal("0.07"),
    "DE": Decimal("0.19"),
    "FR": Decimal("0.20"),
    "JP": Decimal("0.10"),
}
_REGIONS = ("US", "DE", "FR", "JP", "NZ")
_UNITS = tuple(Decimal(p) for p in ("4.99", "9.99", "12.50", "19.95", "0.35", "149.00"))
_CENT = Decimal("0.01")


def price_v1(order: Order) -> Decimal:
    """Price an order the way production does (the control)."""
    subtotal = order.unit * order.qty
    if order.qty > 10:  # bulk discount above ten items
        subtotal *= Decimal("0.9")
    tax = _TAX.get(order.region, Decimal("0.15"))
    return (subtotal * (1 + tax)).quantize(_CENT, rounding=ROUND_HALF_UP)


def price_v2(order: Order) -> Decimal:
    """Price an order with the rewritten pricing code (the candidate).

    It has two bugs the shadow run is there to find: the bulk discount starts
    at ten items instead of above ten, and it rounds half-cents to even.
    """
    subtotal = order.unit * order.qty
    if order.qty >= 10:
        subtotal *= Decimal("0.9")
    tax = _TAX.get(order.region, Decimal("0.15"))
    return (subtotal * (1 + tax)).quantize(_CENT, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class ShadowMismatch:
    """One input where the candidate disagreed, ready to print."""

    order: Order
    control: str
    candidate: str

    def __str__(self) -> str:
        o = self.order
        return (
            f"order {o.order_id}: {o.qty} x {o.unit} {o.region} → "
            f"v1 {self.control}, v2 {self.candidate}"
        )


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """Scenario 4: a shadow run of a pricing rewrite finds where it disagrees.

    Attributes:
        calls: orders priced (always by the control).
        sampled: orders where the candidate also ran (25 %, by customer).
        outcomes: the experiment's counts per outcome.
        mismatches: every disagreeing input, oldest first.
        by_qty: per quantity, ``(compared, disagreed)``.
        causes: disagreements grouped by a plain-words cause.
    """

    calls: int
    sampled: int
    outcomes: Mapping[str, int]
    mismatches: tuple[ShadowMismatch, ...] = field(repr=False)
    by_qty: Mapping[int, tuple[int, int]] = field(repr=False)
    causes: Mapping[str, int]

    @property
    def mismatched(self) -> int:
        """How many sampled orders the candidate priced differently."""
        return self.outcomes.get("mismatched", 0)


def _cause(order: Order, control: Decimal, candidate: Decimal) -> str:
    if order.qty == 10:
        return "qty == 10: bulk discount applied one item early"
    if abs(control - candidate) <= _CENT:
        return "half-cent rounded to even, not up"
    return "other"  # pragma: no cover - the two bugs above are the only ones


def run_shadow(seed: int, params: Params, reporter: Reporter) -> ShadowResult:
    """Shadow the rewritten pricing on simulated orders; collect where it disagrees."""
    key = "shadow"
    rng = random.Random(seed + 3)  # noqa: S311  # a simulation
    clock = FakeClock()
    results: list[ExperimentResult] = []
    exp: Experiment[[Order], Decimal] = Experiment(
        "demo-pricing-v2",
        control=price_v1,
        candidate=price_v2,
        sample=25.0,
        sample_key=lambda order: order.customer,
        publish=results.append,
        rng=random.Random(seed + 4),  # noqa: S311  # a simulation
        keep_mismatches=params.orders,
        clock=clock,
    )
    reporter.begin(key, "4 · shadow run of a pricing rewrite", params.orders)
    for n in range(1, params.orders + 1):
        order = Order(
            n,
            f"customer-{rng.randrange(params.users)}",
            min(20, 1 + int(rng.expovariate(0.18))),
            rng.choice(_UNITS),
            rng.choice(_REGIONS),
        )
        exp(order)
        clock.advance(0.01)
        if n % 500 == 0 or n == params.orders:
            st = exp.stats()
            reporter.update(
                key,
                n,
                f"compared {exp.sampled:,} · matched {st['matched']:,}"
                f" · mismatched {st['mismatched']:,}",
            )
    by_qty: dict[int, list[int]] = {}
    for r in results:
        qty = r.args[0].qty
        slot = by_qty.setdefault(qty, [0, 0])
        slot[0] += 1
        slot[1] += not r.matched
    mismatches = tuple(
        ShadowMismatch(m.args[0], str(m.control.value), str(m.observed.value))
        for m in exp.mismatches()
    )
    causes: dict[str, int] = {}
    for m in exp.mismatches():
        c = _cause(m.args[0], m.control.value, m.observed.value)
        causes[c] = causes.get(c, 0) + 1
    stats = exp.stats()
    result = ShadowResult(
        calls=exp.calls,
        sampled=exp.sampled,
        outcomes=stats,
        mismatches=mismatches,
        by_qty={q: (v[0], v[1]) for q, v in sorted(by_qty.items())},
        causes=dict(sorted(causes.items(), key=lambda kv: -kv[1])),
    )
    reporter.end(
        key,
        f"{stats['mismatched']:,} of {exp.sampled:,} compared orders disagree: "
        + "; ".join(f"{n:,} x {c}" for c, n in result.causes.items()),
        ok=stats["mismatched"] > 0,
    )
    return result
