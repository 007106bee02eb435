"""A rollout's store I/O: flows, their sync and async drivers, and fleet counts."""

import asyncio
import threading

import pytest

from tipkit._judge import ErrorRateCheck, LatencyCheck
from tipkit.errors import StoreConflictError, StoreError
from tipkit.rollout._fleet import apply_batch
from tipkit.rollout._persist import (
    Blocking,
    FleetCounts,
    Get,
    Put,
    RolloutStore,
    adrive,
    drive,
)
from tipkit.stores import MemoryStore, StoreRecovered, StoreUnavailable
from tipkit.testing import FakeClock, capture_events


class Recording(MemoryStore):
    """A MemoryStore noting which methods, sync or async, were called."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def set(self, *args, **kwargs):
        self.calls.append("set")
        return super().set(*args, **kwargs)

    def get(self, *args, **kwargs):
        self.calls.append("get")
        return super().get(*args, **kwargs)

    async def aset(self, *args, **kwargs):
        self.calls.append("aset")
        return super().set(*args, **kwargs)

    async def aget(self, *args, **kwargs):
        self.calls.append("aget")
        return super().get(*args, **kwargs)


def flow():
    """Write a value, read it back, and report the thread a blocking call ran in."""
    yield Put("ns", "k", {"x": 1})
    entry = yield Get("ns", "k")
    thread = yield Blocking(threading.get_ident)
    return entry.value, thread


def test_one_flow_runs_on_the_sync_and_on_the_async_methods():
    """drive() uses get/set in this thread; adrive() aget/aset and a worker thread."""
    sync_store, async_store = Recording(), Recording()
    value, thread = drive(flow(), sync_store)
    assert ({"x": 1}, threading.get_ident()) == (value, thread)
    assert ["set", "get"] == sync_store.calls
    value, thread = asyncio.run(adrive(flow(), async_store))
    assert {"x": 1} == value
    assert thread != threading.get_ident()
    assert ["aset", "aget"] == async_store.calls


def test_a_failed_operation_is_thrown_into_its_flow():
    """The flow sees the store's exception where it yielded, and decides."""

    class Down(MemoryStore):
        def get(self, *args, **kwargs):
            raise StoreError("down")

    def catching():
        try:
            yield Get("ns", "k")
        except StoreError as exc:
            return f"caught {exc}"
        return "not reached"

    assert "caught down" == drive(catching(), Down())
    with pytest.raises(StoreError, match="down"):
        drive(RolloutStore(Down(), "r", clock=FakeClock()).load_judge(), Down())


def test_polling_a_failing_store_reports_one_outage():
    """poll(): (False, None) while down, one StoreUnavailable, then StoreRecovered."""

    class Flaky(MemoryStore):
        down = True

        def get(self, *args, **kwargs):
            if self.down:
                raise StoreError("down") from ConnectionError()
            return super().get(*args, **kwargs)

    store = Flaky()
    rs = RolloutStore(store, "r", clock=FakeClock())
    with capture_events(StoreUnavailable, StoreRecovered) as events:
        assert (False, None) == rs.run(rs.poll())
        assert (False, None) == rs.run(rs.poll())
        store.down = False
        assert (True, None) == rs.run(rs.poll())
    assert [StoreUnavailable, StoreRecovered] == [type(e) for e in events]
    assert ("r", "rollout", "keep_last") == (
        events[0].name,
        events[0].component,
        events[0].policy,
    )


def test_a_transition_retries_its_compare_and_set_and_declines_quietly():
    """A lost race is retried on the new state; a declined change returns the state read."""
    store = MemoryStore()
    rs = RolloutStore(store, "r", clock=FakeClock())
    doc, _, created = rs.run(rs.open(lambda: {"n": 0, "history": []}))
    assert ({"n": 0, "history": []}, True) == (doc, created)
    seen = []

    def bump(d):
        seen.append(d["n"])
        if len(seen) == 1:  # another writer gets in between our read and write
            store.set("tipkit.rollouts", "r", {"n": 10, "history": []})
        return {**d, "n": d["n"] + 1}

    new, _, written = rs.run(rs.transition(bump, doc, quiet=False))
    assert ([0, 10], 11, True) == (seen, new["n"], written)
    same, _, written = rs.run(rs.transition(lambda d: None, doc, quiet=False))
    assert (11, False) == (same["n"], written)
    assert rs.run(rs.open(dict)) == (
        same,
        store.get("tipkit.rollouts", "r").version,
        False,
    )


def test_quiet_transitions_report_a_conflict_instead_of_raising(caplog):
    """Always losing: StoreConflictError when loud, None and a warning when quiet."""

    class Losing(MemoryStore):
        def compare_and_set(self, *args, **kwargs):
            return None

    rs = RolloutStore(Losing(), "r", clock=FakeClock())
    change = lambda d: {**d, "n": 1}  # noqa: E731
    with pytest.raises(StoreConflictError, match="kept changing"):
        rs.run(rs.transition(change, {"history": []}, quiet=False))
    assert rs.run(rs.transition(change, {"history": []}, quiet=True)) is None
    assert "retried at the next checkpoint" in caplog.text


def test_fleet_counts_batch_by_count_and_by_time():
    """A batch is due every `every` outcomes or `interval` seconds; sums per check."""
    counts = FleetCounts(
        "r/counts/1/0",
        [ErrorRateCheck(), LatencyCheck(threshold=0.5)],
        every=3,
        interval=10.0,
        now=0.0,
    )
    assert not counts.add(1, True, 0.1, 1.0)
    assert not counts.add(0, False, 0.9, 2.0)
    assert counts.add(1, False, 0.2, 3.0)  # the third outcome
    seq, batch = counts.take(3.0)
    assert 1 == seq
    assert {
        "n1": 2,
        "c1.0": 2,
        "c1.1": 2,
        "b1.0": 1,
        "n0": 1,
        "c0.0": 1,
        "c0.1": 1,
        "b0.1": 1,
    } == batch
    assert counts.add(0, False, 0.0, 13.0)  # ten seconds after the flush
    assert (1, batch) == counts.take(13.0)  # unacknowledged: the same batch again
    counts.acked(1)
    assert (2, {"n0": 1, "c0.0": 1, "c0.1": 1}) == counts.take(14.0)
    totals = {"n0": 7, "n1": 5, "b0.0": 1, "b1.1": 2, "c0.0": 7, "c1.0": 5}
    assert (
        [7, 5],
        [[1, 0], [0, 2]],
        [[7, 0], [5, 0]],
        [[1, 0], [0, 2]],
    ) == counts.parse(totals)


def test_a_batch_is_applied_once_whatever_the_retries():
    """apply_batch: a batch number already recorded for the process adds nothing."""
    totals, doc = apply_batch(None, "p", 1, {"n0": 2})
    assert ({"n0": 2.0}, {"totals": {"n0": 2.0}, "seq": {"p": 1}}) == (totals, doc)
    assert ({"n0": 2.0}, None) == apply_batch(doc, "p", 1, {"n0": 2})
    totals, doc2 = apply_batch(doc, "q", 1, {"n0": 1})
    assert {"n0": 3.0} == totals
    assert {"p": 1, "q": 1} == doc2["seq"]
