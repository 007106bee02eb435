"""Scenario 5 of ``tipkit demo``: chaos on synthetic traffic before a real outage.

Latency is injected into the payments call of *synthetic* probes only (a flag
whose rule targets the ``synthetic`` attribute): a breaker with a slow-call
threshold opens on the probes and the rollout's judge (a latency check,
probes against real traffic) fails them, while no real request is touched.
Later a real slowdown hits every caller, and the breaker settings the chaos
run exercised open the real traffic's breaker too: the guard was proven on
synthetic traffic before it was needed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tipkit import compose
from tipkit._demo._common import Params, Reporter, _listening
from tipkit._judge import ErrorRateCheck, Judge, LatencyCheck
from tipkit.breaker import BreakerState, CircuitBreaker, CountWindow
from tipkit.errors import CircuitOpenError
from tipkit.faults import FaultInjected, Latency, inject
from tipkit.flags import Flags
from tipkit.telemetry import synthetic
from tipkit.telemetry._events import Event
from tipkit.telemetry._synthetic import current_synthetic
from tipkit.testing import FakeClock

__all__ = ["ChaosResult", "run_chaos"]

PROBE_EVERY = 10  # one synthetic probe per ten requests
INJECTED = 0.6  # seconds of latency injected into each probe's payment
SLOW = 0.25  # a payment slower than this is slow (breaker and judge alike)


@dataclass(frozen=True, slots=True)
class ChaosResult:
    """What the chaos scenario showed (virtual seconds from its start).

    Attributes:
        probes, real: synthetic probes and real requests sent.
        probes_faulted, real_faulted: of those, how many got injected latency.
        breaker_opened_at: when the probes' breaker opened (``None``: never).
        judge_failed_at: when the judge failed the probes (``None``: never).
        outage_at: when the real slowdown began.
        real_breaker_opened_at: when the real traffic's breaker opened.
    """

    probes: int
    real: int
    probes_faulted: int
    real_faulted: int
    breaker_opened_at: float | None
    judge_failed_at: float | None
    outage_at: float
    real_breaker_opened_at: float | None

    @property
    def ok(self) -> bool:
        """Whether breaker and judge reacted to chaos before the outage, harming no real call."""
        return (
            self.real_faulted == 0
            and self.breaker_opened_at is not None
            and self.breaker_opened_at < self.outage_at
            and self.judge_failed_at is not None
            and self.judge_failed_at < self.outage_at
            and self.real_breaker_opened_at is not None
        )


def _breaker(name: str, clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(
        name,
        slow_call_duration=SLOW,
        slow_call_rate_threshold=0.5,
        window=CountWindow(20),
        minimum_calls=10,
        open_duration=30.0,
        clock=clock,
    )


def run_chaos(seed: int, params: Params, reporter: Reporter) -> ChaosResult:  # noqa: C901, PLR0915  # one linear story
    """Inject latency into synthetic payments; report when breaker and judge react."""
    key = "chaos"
    clock = FakeClock()
    rng = random.Random(seed)  # noqa: S311  # a simulation, not cryptography
    rule = {"id": "probes", "if": {"attr": "synthetic", "op": "exists"}, "serve": "on"}
    flag = {
        "variants": {"on": True, "off": False},
        "default_variant": "off",
        "fallthrough": "off",
        "rules": [rule],
    }
    flags = Flags.from_dict({"version": 1, "flags": {"chaos-payments": flag}})
    chaos = inject(
        flags,
        "chaos-payments",
        [Latency(INJECTED)],
        context=lambda order: order,
        name="demo-chaos-payments",
        clock=clock,
    )
    duration = params.outage_duration
    outage_at = duration / 2
    slow_for_all = [False]

    def pay(order: str) -> str:
        base = rng.lognormvariate(-3.9, 0.4)  # median 20 ms
        clock.advance(base * (20.0 if slow_for_all[0] else 1.0))
        return order

    probe_breaker = _breaker("payments-probes", clock)
    real_breaker = _breaker("payments", clock)
    probe = compose(probe_breaker, chaos)(pay)
    real = compose(real_breaker, chaos)(pay)
    judge = Judge(
        [
            ErrorRateCheck(max_increase=0.01),
            LatencyCheck(threshold=SLOW, max_increase=0.02),
        ],
        min_samples=100,
    )
    faults = [0, 0]  # on probes, on real requests

    def count(event: Event) -> None:
        del event  # who was faulted is in the context: synthetic or not
        faults[current_synthetic() is None] += 1

    judge.start_stage(1 / PROBE_EVERY, clock.monotonic())
    probes = sent = 0
    opened = failed = real_opened = None
    reporter.begin(
        key, "5 · chaos: latency into payments for synthetic probes", duration
    )
    gap = 1.0 / params.outage_rps
    with _listening(count, FaultInjected):
        while clock.monotonic() < duration:
            now = clock.monotonic()
            slow_for_all[0] = now >= outage_at
            sent += 1
            is_probe = sent % PROBE_EVERY == 0
            started = now
            try:
                if is_probe:
                    probes += 1
                    with synthetic("test"):
                        probe(f"probe-{sent}")
                else:
                    real(f"order-{sent}")
            except CircuitOpenError:  # what the caller saw: an error, fast
                judge.record(canary=is_probe, error=True, latency=0.0)
            else:
                took = clock.monotonic() - started
                judge.record(canary=is_probe, error=False, latency=took)
            now = clock.monotonic()
            if opened is None and probe_breaker.state is BreakerState.OPEN:
                opened = now
            if real_opened is None and real_breaker.state is BreakerState.OPEN:
                real_opened = now
            if (
                failed is None
                and sent % 50 == 0
                and judge.evaluate(now).decision == "FAIL"
            ):
                failed = now
            if sent % 200 == 0:
                reporter.update(
                    key, min(now, duration), f"{sent:,} requests, {probes:,} probes"
                )
            clock.advance(gap)
    result = ChaosResult(
        probes=probes,
        real=sent - probes,
        probes_faulted=faults[0],
        real_faulted=faults[1],
        breaker_opened_at=opened,
        judge_failed_at=failed,
        outage_at=outage_at,
        real_breaker_opened_at=real_opened,
    )
    reporter.end(
        key,
        f"breaker opened at {opened or 0:.0f}s and judge failed the probes at"
        f" {failed or 0:.0f}s, before the outage at {outage_at:.0f}s;"
        f" {result.real_faulted} real requests faulted",
        ok=result.ok,
    )
    return result
