"""Hedged requests: first success wins, losers cancelled or abandoned, budgets, quantiles."""

from __future__ import annotations

import asyncio
import importlib
import random
import threading

import pytest
from tests.conftest import Face

from tipkit._quantile import LatencyQuantile, parse_quantile
from tipkit.clock import SYSTEM_CLOCK
from tipkit.errors import ConfigError
from tipkit.experiment import irreversible
from tipkit.hedge import HedgeStarted, hedge
from tipkit.retry import RetryBudget
from tipkit.testing import FakeClock, capture_events


def test_every_face_returns_the_result_of_a_fast_call(
    face: Face, clock: FakeClock
) -> None:
    """A call faster than the delay runs once, through every face; `with` is refused."""
    guard = hedge(after=1.0, clock=clock, name=f"fast-{face}")
    if face.name in ("with", "async_with"):
        with pytest.raises(TypeError, match="more than once"):
            face.run(guard, lambda: 1)
        return
    assert 42 == face.run(guard, lambda: 42)
    assert (1, 0) == (guard.count("primary"), guard.count("hedged"))


def test_a_slow_sync_call_is_hedged_and_the_loser_abandoned(clock: FakeClock) -> None:
    """The first attempt blocks; the hedge answers; the first is abandoned and counted."""
    gate = threading.Event()
    calls: list[int] = []
    lock = threading.Lock()

    def work() -> str:
        with lock:
            calls.append(1)
            first = len(calls) == 1
        if first:
            gate.wait(5)
            return "slow"
        return "fast"

    guard = hedge(after=0.05, clock=clock, name="sync-slow")
    with capture_events(HedgeStarted) as seen:
        assert "fast" == guard(work)()
    gate.set()
    assert [2] == [e.attempt for e in seen]
    assert (1, 1, 1) == (
        guard.count("hedged"),
        guard.count("won"),
        guard.count("abandoned"),
    )
    assert [0.05] == clock.waits
    guard.shutdown()


def test_a_slow_async_call_is_hedged_and_the_loser_cancelled(clock: FakeClock) -> None:
    """Async: the hedge wins, the first task is cancelled and awaited: no task leaks."""
    cancelled: list[bool] = []

    async def work(n: list[int]) -> str:
        n.append(1)
        if len(n) == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
        return "fast"

    guard = hedge(after=0.05, clock=clock, name="async-slow")

    async def main() -> tuple[str, int]:
        result = await guard(work)([])
        return result, len(asyncio.all_tasks())

    assert ("fast", 1) == asyncio.run(main())
    assert [True] == cancelled
    assert (1, 1) == (guard.count("won"), guard.count("cancelled"))


def test_the_caller_cancelled_cancels_every_attempt(clock: FakeClock) -> None:
    """Cancelling the hedged call cancels both attempts."""
    ended: list[str] = []

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    guard = hedge(after=0.01, clock=clock, name="caller-cancel")

    async def main() -> int:
        task = asyncio.create_task(guard(work)())
        for _ in range(5):
            await asyncio.sleep(0)  # noqa: TID251  # let the hedge start; no waiting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return len(asyncio.all_tasks())

    assert 1 == asyncio.run(main())
    assert ["cancelled", "cancelled"] == ended


def test_a_spent_budget_stops_hedging(clock: FakeClock) -> None:
    """With no budget left the call waits for its first attempt, and counts the denial."""
    budget = RetryBudget("none", ratio=0.0, min_per_second=0.0, clock=clock)

    async def work() -> str:
        await asyncio.sleep(0)  # noqa: TID251  # yields once: slower than the fake delay
        await asyncio.sleep(0)  # noqa: TID251
        return "only"

    guard = hedge(after=0.01, budget=budget, clock=clock, name="denied")
    assert "only" == asyncio.run(guard(work)())
    assert (0, 1) == (guard.count("hedged"), guard.count("denied"))


def test_an_early_failure_is_raised_without_hedging(clock: FakeClock) -> None:
    """Hedging answers slowness: an attempt failing with nothing else running ends the call."""
    guard = hedge(after=1.0, clock=clock, name="fails")

    async def boom() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError, match="down"):
        asyncio.run(guard(boom)())
    assert 0 == guard.count("hedged")


def test_a_failing_hedge_waits_for_the_first_attempt(clock: FakeClock) -> None:
    """The hedge fails fast; the slow first attempt's success still wins."""
    gate = asyncio.Event

    async def main() -> str:
        release = gate()
        n: list[int] = []

        async def work() -> str:
            n.append(1)
            if len(n) == 2:
                release.set()
                raise ConnectionError("hedge failed")
            await release.wait()
            return "first"

        return await hedge(after=0.01, clock=clock, name="hedge-fails")(work)()

    assert "first" == asyncio.run(main())


def test_irreversible_functions_are_refused_without_a_key() -> None:
    """Hedging repeats the call: an @irreversible function needs idempotency_key=."""

    @irreversible(reason="sends an email")
    def send(to: str, key: str) -> None:
        del to, key

    with pytest.raises(ConfigError, match=r"sends an email.*idempotency_key="):
        hedge(after=0.1)(send)
    hedge(after=0.1, idempotency_key="key")(send)


def test_shadow_mode_runs_once_and_counts_would_be_hedges(clock: FakeClock) -> None:
    """Shadow: one attempt in the caller's thread; a slow one counts as would_hedge."""
    guard = hedge(after=0.05, mode="shadow", clock=clock, name="shadow")

    def slow() -> int:
        clock.advance(0.1)
        return 7

    assert 7 == guard(slow)()
    assert 7 == guard.call(lambda: 7)
    assert (2, 0, 1) == (
        guard.count("primary"),
        guard.count("hedged"),
        guard.count("would_hedge"),
    )


def test_the_delay_follows_a_live_quantile() -> None:
    """A p95 delay tracks the observed latencies within one 10% bucket, in constant memory."""
    q = LatencyQuantile(0.95, initial=0.5, min_samples=20)
    assert 0.5 == q.value()
    rng = random.Random(1)
    samples = [rng.uniform(0.0, 0.2) for _ in range(5000)]
    for s in samples:
        q.observe(s)
    true = sorted(samples)[int(0.95 * len(samples))]
    assert true <= q.value() <= true * 1.1 * 1.1
    assert 0.95 == parse_quantile("p95")
    with pytest.raises(ValueError, match=r"p99\.9"):
        parse_quantile("95")


def test_a_quantile_forgets_the_old_past() -> None:
    """After the latency drops, the estimate follows within a few half-lives."""
    q = LatencyQuantile(0.5, half_life=100)
    for _ in range(1000):
        q.observe(1.0)
    for _ in range(1000):
        q.observe(0.01)
    assert q.value() < 0.02


def test_sync_hedges_in_real_threads_with_the_system_clock() -> None:
    """A fast call returns without waiting out the delay (no fake clock involved)."""
    guard = hedge(after=5.0, clock=SYSTEM_CLOCK, name="real")
    assert [1, 2, 3] == [guard.call(int, i) for i in (1, 2, 3)]
    assert 0 == guard.count("hedged")
    guard.shutdown()


def test_repr_and_bad_arguments() -> None:
    """The repr shows the configuration; bad arguments are named."""
    assert "<hedge 'h' after=0.1s max_extra=1 mode=enforce hedged=0 denied=0>" == repr(
        hedge(after=0.1, name="h")
    )
    with pytest.raises(ValueError, match="max_extra"):
        hedge(max_extra=0)
    with pytest.raises(ValueError, match="quantile"):
        hedge(after="fast")
    # `tipkit.hedge` the attribute is the function; the module is in sys.modules.
    assert "Hedge" in importlib.import_module("tipkit.hedge").__all__
