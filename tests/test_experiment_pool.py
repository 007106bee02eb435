"""Background pools: bounded, never queueing without limit, surviving their jobs."""

from __future__ import annotations

import asyncio

import pytest
from tests.experiment_support import (
    WAIT,
    Blocker,
    adouble,
    double,
    make,
    released,
)

from tipkit.experiment import (
    ExperimentCompared,
    ExperimentResult,
)
from tipkit.telemetry import _names as n
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import capture_events

blocker = pytest.fixture(released)


def test_full_queue_skips_and_counts(blocker: Blocker) -> None:
    """With every worker busy and the queue full, a run is skipped and counted."""
    exp = make(
        candidate=blocker,
        mode="background",
        max_workers=1,
        queue_size=1,
        compare=lambda a, b: True,
    )
    before = REGISTRY.value(
        n.EXPERIMENT_COMPARISONS, {n.EXPERIMENT_NAME: "exp", n.OUTCOME: "skipped"}
    )
    with capture_events(ExperimentCompared) as events:
        assert [0, 2, 4, 6] == [exp(i) for i in range(4)]
        assert 2 == exp.stats()["skipped"]
        assert ["skipped", "skipped"] == [e.outcome for e in events]
        assert events[0].result is not None
        assert (2,) == events[0].result.args
    after = REGISTRY.value(
        n.EXPERIMENT_COMPARISONS, {n.EXPERIMENT_NAME: "exp", n.OUTCOME: "skipped"}
    )
    assert 2 == after - before
    blocker.release()
    assert exp.drain(WAIT)
    assert 2 == blocker.calls
    assert {"matched": 2, "skipped": 2} == {k: v for k, v in exp.stats().items() if v}


def test_full_async_queue_skips_and_counts() -> None:
    """Async background runs are bounded the same way: the excess is skipped."""
    gate: dict[str, asyncio.Event] = {}

    async def waits(x: int) -> int:
        await gate["open"].wait()
        return x * 2

    exp = make(adouble, candidate=waits, mode="background", max_workers=1, queue_size=1)

    async def main() -> None:
        gate["open"] = asyncio.Event()
        assert [0, 2, 4, 6] == [await exp(i) for i in range(4)]
        assert 2 == exp.stats()["skipped"]
        assert 2 == exp.pending
        gate["open"].set()
        await exp.adrain()

    asyncio.run(main())
    assert {"matched": 2, "skipped": 2} == {k: v for k, v in exp.stats().items() if v}
    assert 0 == exp.pending


def test_failing_publisher_in_background_keeps_the_worker_alive() -> None:
    """After a publisher raises in a worker, later runs still complete."""
    calls = []

    def flaky(result: ExperimentResult) -> None:
        calls.append(result)
        raise RuntimeError("publisher down")

    exp = make(candidate=double, mode="background", publish=flaky)
    for i in range(3):
        exp(i)
    assert exp.drain(WAIT)
    assert 3 == len(calls)
    assert 3 == exp.stats()["matched"]
