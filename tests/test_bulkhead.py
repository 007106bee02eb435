from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tipkit.bulkhead import Bulkhead, BulkheadCallRejected
from tipkit.clock import SYSTEM_CLOCK
from tipkit.deadline import deadline
from tipkit.errors import BulkheadFullError, DeadlineExceededError
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock, capture_events


def ok() -> str:
    return "ok"


def test_bulkhead_runs_calls_through_every_face(face, clock):
    """A bulkhead with a free slot runs the call and frees the slot after."""
    bulkhead = Bulkhead("db", max_concurrent=1, clock=clock)
    assert face.run(bulkhead, ok) == "ok"
    assert (bulkhead.active, bulkhead.available) == (0, 1)


def test_full_bulkhead_rejects_through_every_face(face, clock):
    """A full bulkhead with max_wait=0 rejects at once, through every face."""
    bulkhead = Bulkhead(
        "db", max_concurrent=1, runbook="https://rb.invalid/db", clock=clock
    )
    with (
        bulkhead,
        pytest.raises(
            BulkheadFullError, match="'db' is full: all 1 slots taken"
        ) as info,
    ):
        face.run(bulkhead, ok)
    assert (info.value.bulkhead, info.value.runbook) == ("db", "https://rb.invalid/db")
    assert bulkhead.rejected == 1
    assert clock.waits == []


def test_full_bulkhead_waits_max_wait_then_rejects(face, clock):
    """With max_wait > 0 a call waits (on a waiter, not by polling) then gives up."""
    bulkhead = Bulkhead("db", max_concurrent=1, max_wait=2.0, clock=clock)
    with bulkhead, pytest.raises(BulkheadFullError, match=r"after waiting 2\.000s"):
        face.run(bulkhead, ok)
    assert clock.waits == [2.0]
    assert clock.sleeps == []
    assert bulkhead.waiting == 0


def test_slot_is_freed_when_the_call_raises(face, clock):
    """Exceptions pass through unchanged and free the slot."""
    bulkhead = Bulkhead("db", max_concurrent=1, clock=clock)
    err = ValueError("x")

    def boom() -> None:
        raise err

    with pytest.raises(ValueError) as info:
        face.run(bulkhead, boom)
    assert err is info.value
    assert bulkhead.active == 0


def test_wait_is_capped_by_the_deadline(clock):
    """A wait for a slot never outlasts the current deadline."""
    bulkhead = Bulkhead("db", max_concurrent=1, max_wait=10.0, clock=clock)
    with bulkhead, deadline(3.0, clock=clock), pytest.raises(DeadlineExceededError):
        bulkhead.call(ok)
    assert clock.waits == [3.0]
    assert bulkhead.waiting == 0


def test_expired_deadline_refuses_admission(face, clock):
    """No face admits a call once the deadline has passed."""
    bulkhead = Bulkhead("db", clock=clock)
    with deadline(1.0, clock=clock):
        clock.advance(1)
        with pytest.raises(DeadlineExceededError):
            face.run(bulkhead, ok)
    assert bulkhead.active == 0


def test_shadow_mode_lets_calls_through_and_counts_them(face, clock):
    """In shadow mode a call finding the bulkhead full runs anyway and is reported."""
    bulkhead = Bulkhead("shadowed", max_concurrent=1, mode="shadow", clock=clock)
    with bulkhead, capture_events(BulkheadCallRejected) as events:
        assert face.run(bulkhead, ok) == "ok"
        assert bulkhead.active == 1
    assert (bulkhead.would_reject, bulkhead.rejected, bulkhead.active) == (1, 0, 0)
    assert [e.shadow for e in events] == [True]
    rejected = REGISTRY.value(
        names.BULKHEAD_CALLS,
        {
            names.BULKHEAD_NAME: "shadowed",
            names.RESULT: "rejected",
            names.MODE: "shadow",
        },
    )
    assert rejected >= 1


def test_mode_switches_live(clock):
    """Assigning mode switches between enforcing and shadowing."""
    bulkhead = Bulkhead("db", max_concurrent=1, clock=clock)
    with bulkhead:
        bulkhead.mode = "shadow"
        assert bulkhead.call(ok) == "ok"
        bulkhead.set_mode("enforce")
        with pytest.raises(BulkheadFullError):
            bulkhead.call(ok)
    with pytest.raises(ValueError, match="mode must be"):
        bulkhead.mode = "on"  # type: ignore[assignment]  # the bad value under test


def test_events_and_gauge(clock):
    """Rejections publish an event with safe attributes; the active gauge reads live."""
    bulkhead = Bulkhead(
        "gauged", max_concurrent=2, runbook="https://rb.invalid", clock=clock
    )
    with bulkhead, bulkhead:
        readings = [
            r.value
            for r in REGISTRY.gauges(names.BULKHEAD_ACTIVE)
            if r.attributes[names.BULKHEAD_NAME] == "gauged"
        ]
        assert readings == [2.0]
        with (
            capture_events(BulkheadCallRejected) as events,
            pytest.raises(BulkheadFullError),
        ):
            bulkhead.call(ok)
    assert events[0].otel_attributes() == {
        names.BULKHEAD_NAME: "gauged",
        "tipkit.bulkhead.max_concurrent": 2,
        "tipkit.bulkhead.waited": 0.0,
        names.MODE: "enforce",
        names.RUNBOOK: "https://rb.invalid",
    }


def test_repr_shows_config_and_live_state(clock):
    """Repr shows limit, active and waiting calls, mode and rejections."""
    bulkhead = Bulkhead("db", max_concurrent=3, max_wait=0.5, clock=clock)
    with bulkhead:
        assert (
            repr(bulkhead)
            == "<Bulkhead 'db' active=1/3 waiting=0 max_wait=0.5 mode=enforce rejected=0>"
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": ""}, TypeError, "name must be a non-empty str"),
        ({"max_concurrent": 0}, ValueError, "max_concurrent must be >= 1"),
        ({"max_concurrent": 1.5}, TypeError, "max_concurrent must be an int"),
        ({"max_wait": -1}, ValueError, "max_wait must be >= 0"),
        ({"max_wait": "1"}, TypeError, "max_wait must be seconds"),
        ({"mode": "dry"}, ValueError, "mode must be 'enforce' or 'shadow'"),
        ({"runbook": ""}, TypeError, "runbook must be a non-empty str"),
    ],
)
def test_invalid_arguments_are_named(kwargs, error, match):
    """Every invalid argument raises a clear error naming it."""
    with pytest.raises(error, match=match):
        Bulkhead(**{"name": "db", **kwargs})


# -- real threads and tasks ------------------------------------------------------------
def test_threads_never_exceed_the_limit():
    """Many threads through a bulkhead: never more than max_concurrent inside at once."""
    bulkhead = Bulkhead("limit", max_concurrent=3, max_wait=10.0, clock=SYSTEM_CLOCK)
    lock = threading.Lock()
    inside = 0
    peak = 0
    barrier = threading.Barrier(8)

    @bulkhead
    def work() -> None:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        for _ in range(200):
            pass
        with lock:
            inside -= 1

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            work()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak <= 3
    assert (bulkhead.active, bulkhead.waiting) == (0, 0)


def test_waiters_get_freed_slots_first_come_first_served():
    """Waiting tasks get freed slots in arrival order."""
    bulkhead = Bulkhead("fifo", max_concurrent=1, max_wait=10.0, clock=SYSTEM_CLOCK)
    order: list[int] = []

    async def record(i: int) -> None:
        order.append(i)

    async def main() -> None:
        holder = await bulkhead._acquire_async()
        tasks = []
        for i in range(4):
            tasks.append(asyncio.create_task(bulkhead.acall(record, i)))
            await asyncio.sleep(0)  # noqa: TID251  # queue task i before task i + 1
        assert bulkhead.waiting == 4
        bulkhead._release(holder, None, 0.0)
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert order == [0, 1, 2, 3]


def test_a_freed_slot_is_handed_over_not_up_for_grabs(clock):
    """Between a release and the waiter waking, a newcomer cannot take the slot."""
    bulkhead = Bulkhead("handover", max_concurrent=1, max_wait=5.0, clock=clock)
    holder = bulkhead._step(0.0, None)
    waiting = bulkhead._step(0.0, None)
    bulkhead._release(holder, None, 0.0)
    newcomer = bulkhead._step(0.0, None)
    assert type(newcomer).__name__ == "Wait"
    assert waiting.waiter is not None
    assert waiting.waiter.notified
    ticket = bulkhead._step(0.0, waiting)
    assert bulkhead.active == 1
    bulkhead._release(ticket, None, 0.0)
    assert bulkhead.active == 1  # handed on to the newcomer, now queued
    bulkhead._release(bulkhead._step(0.0, newcomer), None, 0.0)
    assert bulkhead.active == 0


def test_tasks_wait_and_are_handed_slots():
    """Asyncio tasks beyond the limit wait for a slot and all finish."""
    bulkhead = Bulkhead("tasks", max_concurrent=2, max_wait=10.0, clock=SYSTEM_CLOCK)
    peak = 0

    @bulkhead
    async def work(gate: asyncio.Event) -> None:
        nonlocal peak
        peak = max(peak, bulkhead.active)
        await gate.wait()

    async def main() -> list[Any]:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(work(gate)) for _ in range(6)]
        for _ in range(3):
            await asyncio.sleep(0)  # noqa: TID251  # let every task reach the bulkhead
        waiting = bulkhead.waiting
        gate.set()
        await asyncio.gather(*tasks)
        return [waiting]

    assert asyncio.run(main()) == [4]
    assert (peak, bulkhead.active, bulkhead.waiting) == (2, 0, 0)


def test_cancelled_waiter_leaves_the_queue():
    """A task cancelled while waiting for a slot leaves the queue and takes no slot."""
    bulkhead = Bulkhead("cancel", max_concurrent=1, max_wait=10.0, clock=SYSTEM_CLOCK)

    async def main() -> None:
        holder = await bulkhead._acquire_async()
        task = asyncio.create_task(bulkhead.acall(asyncio.sleep, 0))  # noqa: TID251  # never runs: a no-op coroutine
        await asyncio.sleep(0)  # noqa: TID251  # let the task queue up
        assert bulkhead.waiting == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert bulkhead.waiting == 0
        bulkhead._release(holder, None, 0.0)

    asyncio.run(main())
    assert (bulkhead.active, bulkhead.available) == (0, 1)


def test_slot_granted_to_an_abandoning_waiter_is_passed_on():
    """A waiter handed a slot just as it gives up passes the slot to the next one."""
    clock = FakeClock()
    bulkhead = Bulkhead("handoff", max_concurrent=1, max_wait=5.0, clock=clock)
    holder = bulkhead._step(0.0, None)
    first = bulkhead._step(0.0, None)
    second = bulkhead._step(0.0, None)
    assert bulkhead.waiting == 2
    bulkhead._release(holder, None, 0.0)  # granted to `first`
    bulkhead._abandon(first, 0.0)  # ... which gives up: `second` gets the slot
    ticket = bulkhead._step(0.0, second)
    assert (bulkhead.active, bulkhead.waiting) == (1, 0)
    bulkhead._release(ticket, None, 0.0)
    assert bulkhead.active == 0


def test_waiter_timing_out_after_a_switch_to_shadow_runs_as_overflow():
    """A waiter giving up after a switch to shadow runs as an overflow; counts stay right."""
    bulkhead: Bulkhead

    class SwitchingClock(FakeClock):
        def wait_event(self, event: threading.Event, timeout: float) -> bool:
            bulkhead.mode = "shadow"
            return super().wait_event(event, timeout)

    bulkhead = Bulkhead("db", max_concurrent=1, max_wait=1.0, clock=SwitchingClock())
    with bulkhead:
        assert bulkhead.call(ok) == "ok"
        assert (bulkhead.active, bulkhead.would_reject, bulkhead.rejected) == (1, 1, 0)
    assert (bulkhead.active, bulkhead.available, bulkhead.waiting) == (0, 1, 0)
