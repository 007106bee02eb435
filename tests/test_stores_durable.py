"""The durable local-first action queue: its own writes and its own first try.

Deterministic (MemoryStore, fake clock, a store switched off by hand); the real
outages against redis-server are in ``test_outages_safety.py``.
"""

from __future__ import annotations

import threading
from typing import Any

from tipkit.errors import StoreError
from tipkit.flags import ErrorCode, Flags, InMemoryProvider
from tipkit.stores import MemoryStore
from tipkit.stores._durable import Durable
from tipkit.stores._events import ActionConflict, ActionFlushed, Outage
from tipkit.telemetry._events import BUS, Event
from tipkit.testing import FakeClock


class SwitchedStore(MemoryStore):
    """A MemoryStore whose writes fail while ``down`` is set."""

    down = False

    def _fail(self) -> None:
        if self.down:
            raise StoreError("switched off")

    def set(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()
        return super().set(*args, **kwargs)

    def compare_and_set(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()
        return super().compare_and_set(*args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()
        return super().get(*args, **kwargs)


def durable(store: MemoryStore, clock: FakeClock) -> Durable:
    outage = Outage("test", "flags", "keep_last", clock=clock)
    return Durable(store, "ns", outage=outage, clock=clock, epoch=False)


def test_a_replay_after_this_process_own_write_is_not_a_conflict() -> None:
    """A pending action whose only other writer is this process is written, not lost."""
    clock = FakeClock()
    store = SwitchedStore(clock=clock)
    d = durable(store, clock)
    first = d.submit("override/algo", {"value": "v1"}, base=None)
    assert "written" == first.state
    store.down = True
    second = d.submit("override/algo", None, base=None)  # never read back here
    assert "pending" == second.state
    store.down = False
    assert d.flush()
    assert ("written", None) == (second.state, store.get("ns", "override/algo").value)


def test_the_flusher_does_not_replay_an_action_its_submitter_is_writing() -> None:
    """Queued by submit and not yet tried: a concurrent flush leaves it to its submitter."""
    clock = FakeClock()
    store = SwitchedStore(clock=clock)
    d = durable(store, clock)
    d.submit("override/algo", {"value": "v1"}, base=None)
    action = d._queue("override/algo", {"value": 3}, 0, None, fresh=True)
    assert not d.flush()  # still pending: its submitter has not tried yet
    assert ("pending", {"value": "v1"}) == (
        action.state,
        store.get("ns", "override/algo").value,
    )


def test_overrides_in_a_row_hold_while_other_threads_flush() -> None:
    """Override, restore, override again, with flushes racing: the last value is served."""
    clock = FakeClock()
    doc = {
        "flags": {"algo": {"variants": {"a": "a", "b": "b"}, "default_variant": "a"}}
    }
    flags = Flags(InMemoryProvider(doc), clock=clock)
    stop = threading.Event()
    durable_ = flags._source.sync.durable

    def flush_forever() -> None:
        while not stop.is_set():
            durable_.flush()

    threads = [threading.Thread(target=flush_forever) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(300):
            with flags.override("algo", "v9"):
                assert "v9" == flags.get("algo", default="x")
            with flags.override("algo", i):
                d = flags.evaluate("algo", default="x")
                assert ErrorCode.TYPE_MISMATCH == d.error_code, i
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_an_action_leaves_pending_only_after_its_event_is_out() -> None:
    """Waiting for an empty pending() means ActionFlushed / ActionConflict were seen."""
    clock = FakeClock()
    store = SwitchedStore(clock=clock)
    d = durable(store, clock)
    seen: list[tuple[str, list[str]]] = []

    def during(event: Event) -> None:
        seen.append((type(event).__name__, sorted(a.key for a in d.pending())))

    BUS.add_listener(during, types=(ActionFlushed, ActionConflict))
    try:
        store.down = True
        d.submit("kill/a", True, base=None)
        d.submit("kill/b", True, base=0)
        store.down = False
        store.set("ns", "kill/b", False)  # someone else wrote b meanwhile
        assert d.flush()
        assert [] == d.pending()
    finally:
        BUS.remove_listener(during)
    assert [
        ("ActionFlushed", ["kill/a", "kill/b"]),
        ("ActionConflict", ["kill/b"]),
    ] == seen


def test_a_queued_action_whose_replay_fails_is_reported_pending_once() -> None:
    """enqueue() (no failed write of its own), replay fails: one ActionPending, then flushed."""
    from tipkit.stores._events import ActionPending
    from tipkit.testing import capture_events

    clock = FakeClock()
    store = SwitchedStore(clock=clock)
    d = durable(store, clock)
    store.down = True
    with capture_events(ActionPending, ActionFlushed) as events:
        d.enqueue("kill/a", True, base=None)
        d.enqueue("kill/b", True, base=None)
        assert not d.flush()
        assert not d.flush()
        store.down = False
        assert d.flush()
    assert [
        ("ActionPending", "kill/a"),
        ("ActionPending", "kill/b"),
        ("ActionFlushed", "kill/a"),
        ("ActionFlushed", "kill/b"),
    ] == [(type(e).__name__, e.key) for e in events]
