"""Adaptive concurrency: faces, priority shedding, shadow mode, convergence."""

from __future__ import annotations

from statistics import mean

import pytest
from tests.adaptive_sim import simulate
from tests.conftest import Face

from tipkit.adaptive import AdaptiveLimit, AdaptiveShed, priority
from tipkit.errors import BulkheadFullError, DeadlineExceededError
from tipkit.telemetry import synthetic
from tipkit.testing import FakeClock, capture_events


def test_every_face_admits_and_learns(face: Face, clock: FakeClock) -> None:
    """Each face admits a call, counts it in flight and frees it after."""
    limit = AdaptiveLimit(f"faces-{face}", initial=5, clock=clock)
    seen: list[int] = []
    assert 7 == face.run(limit, lambda: seen.append(limit.in_flight) or 7)  # type: ignore[func-returns-value]  # append, then the value
    assert ([1], 0) == (seen, limit.in_flight)


def test_priorities_are_shed_in_order(clock: FakeClock) -> None:
    """Near the limit synthetic traffic is shed first and critical traffic last."""
    limit = AdaptiveLimit("prio", initial=10, min=10, max=10, clock=clock)  # pinned
    for _ in range(5):
        limit._step(0.0, None)  # five calls in flight: synthetic's share (50%) is full
    with synthetic("test"), pytest.raises(BulkheadFullError, match="synthetic"):
        limit.call(int)
    for _ in range(3):
        limit._step(0.0, None)  # eight in flight
    with priority("sheddable"), pytest.raises(BulkheadFullError):
        limit.call(int)
    assert 0 == limit.call(int)  # normal: 90% of 10
    limit._step(0.0, None)  # nine in flight
    with pytest.raises(BulkheadFullError):
        limit.call(int)
    with priority("critical"):
        assert 0 == limit.call(int)
    assert 3 == limit.rejected


def test_shadow_mode_counts_what_it_would_shed(clock: FakeClock) -> None:
    """Shadow: every call runs; those beyond the limit are counted and evented."""
    limit = AdaptiveLimit("shadow", initial=1, mode="shadow", clock=clock)
    limit._step(0.0, None)
    with capture_events(AdaptiveShed) as seen:
        assert 0 == limit.call(int)
    assert (1, 0, [True]) == (
        limit.would_reject,
        limit.rejected,
        [e.shadow for e in seen],
    )


def test_aimd_backs_off_on_timeouts(clock: FakeClock) -> None:
    """AIMD: a timeout cuts the limit by the backoff; busy successes add one."""
    limit = AdaptiveLimit("aimd", algorithm="aimd", initial=10, clock=clock)
    with pytest.raises(DeadlineExceededError):
        limit.call(_timeout)
    assert 9 == limit.limit
    tickets = [limit._step(0.0, None) for _ in range(6)]
    limit._release(tickets[0], None, 0.01)
    assert 10 == limit.limit


def _timeout() -> None:
    raise DeadlineExceededError("slow")


def test_aimd_converges_and_recovers_on_a_simulated_service() -> None:
    """On an M/M/c-like service the limit settles near capacity, and grows back after."""
    limit = AdaptiveLimit("sim", algorithm="aimd", initial=20, max=200, timeout=0.02)
    history, done, _ = simulate(limit, clients=100, seconds=30, change=(15, 0.01, 40))
    before = mean(history[len(history) // 6 : len(history) // 3])
    after = mean(history[-len(history) // 6 :])
    assert 5 <= before <= 60  # 10 servers: 4x the capacity would be 4x the latency
    assert after > before * 1.3  # capacity x4: the limit grows again
    assert done > 0


def _mean_between(
    history: list[int], times: list[float], start: float, end: float
) -> float:
    """Return the mean limit over completions in [start, end) of simulated time."""
    return mean(h for h, t in zip(history, times, strict=True) if start <= t < end)


def test_gradient2_converges_near_capacity_and_stays_there() -> None:
    """Gradient2 settles near the knee (10 servers) without creeping, and grows with capacity."""
    limit = AdaptiveLimit("sim-g2", algorithm="gradient2", initial=10, max=200)
    times: list[float] = []
    history, done, _ = simulate(
        limit, clients=100, seconds=30, change=(15, 0.01, 40), times=times
    )
    settled = _mean_between(history, times, 5, 10)
    late = _mean_between(history, times, 10, 15)
    after = _mean_between(history, times, 25, 30)
    assert 10 <= settled <= 25  # the knee is 10; sqrt(limit) of queue is allowed
    assert late <= settled * 1.25  # no creep towards the maximum
    assert 40 <= after <= 100  # capacity x4 (knee 40): grows to it, not to max
    assert done > 0


def test_gradient2_backs_off_while_slow_and_recovers_after() -> None:
    """Latency x4 for ten seconds cuts the limit; once it drops, the limit grows back."""
    limit = AdaptiveLimit("sim-g2-slow", algorithm="gradient2", initial=10, max=200)
    times: list[float] = []
    history, _, _ = simulate(
        limit,
        clients=100,
        seconds=40,
        changes=((10, 0.04, 10), (20, 0.01, 10)),
        times=times,
    )
    before = _mean_between(history, times, 5, 10)
    slow = _mean_between(history, times, 15, 20)
    recovered = _mean_between(history, times, 35, 40)
    assert slow < before * 0.7
    assert recovered > slow * 1.5
    assert recovered >= before * 0.8


def test_bad_arguments_are_named() -> None:
    """Invalid limits say which argument is wrong."""
    with pytest.raises(ValueError, match="algorithm"):
        AdaptiveLimit(algorithm="vegas")  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(ValueError, match="min <= initial <= max"):
        AdaptiveLimit(initial=5, min=10)
    with pytest.raises(ValueError, match="priority"), priority("vip"):  # type: ignore[arg-type]  # wrong on purpose
        pass
    assert (
        "<AdaptiveLimit 'r' gradient2 limit=20 in_flight=0 range=1..1000 mode=enforce rejected=0>"
        == repr(AdaptiveLimit("r"))
    )
