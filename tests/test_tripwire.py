"""Tripwire: a flag killed when the path it guards fails too often."""

import asyncio

import pytest

import tipkit.rollout
from tipkit.breaker import CountWindow, TimeWindow
from tipkit.flags import Flags, InMemoryProvider, Reason
from tipkit.stores import MemoryStore
from tipkit.testing import FakeClock, capture_events
from tipkit.tripwire import FlagKilled, Tripwire


def tripwire_flags(clock):
    doc = {
        "flags": {
            "checkout": {
                "variants": {"on": True, "off": False},
                "off_variant": "off",
                "default_variant": "on",
            }
        }
    }
    return Flags(InMemoryProvider(doc), store=MemoryStore(clock=clock), clock=clock)


def test_tripwire_kills_the_flag_when_the_path_fails_too_often():
    """Above max_error_rate with minimum_calls in the window: flag killed, FlagKilled published."""
    clock = FakeClock()
    flags = tripwire_flags(clock)
    wire = Tripwire(
        flags,
        "checkout",
        max_error_rate=0.2,
        window=TimeWindow(60),
        minimum_calls=20,
        runbook="https://rb",
        clock=clock,
    )

    def failing():
        clock.advance(0.1)
        raise ValueError("x")

    with capture_events(FlagKilled) as events:
        for i in range(19):
            with pytest.raises(ValueError, match="x"):
                wire.call(failing)
            assert not events, i
        with pytest.raises(ValueError, match="x"):
            wire.call(failing)
    assert flags.evaluate("checkout", "u").reason is Reason.DISABLED
    assert wire.tripped
    assert len(events) == 1
    assert (events[0].name, events[0].calls, events[0].failures, events[0].window) == (
        "checkout",
        20,
        20,
        60.0,
    )
    assert "tripped" in repr(wire)
    flags.revive("checkout")
    assert not wire.tripped
    assert "armed" in repr(wire)


def test_tripwire_ignores_healthy_traffic_and_old_failures():
    """Failures that leave the time window no longer count; successes dilute the rate."""
    clock = FakeClock()
    flags = tripwire_flags(clock)
    wire = Tripwire(
        flags, "checkout", max_error_rate=0.5, minimum_calls=10, clock=clock
    )

    @wire
    def path(fail):
        if fail:
            raise RuntimeError("boom")
        return "ok"

    for _ in range(8):
        with pytest.raises(RuntimeError):
            path(True)
    clock.advance(61)
    for _ in range(10):
        assert path(False) == "ok"
    with pytest.raises(RuntimeError):
        path(True)
    assert not wire.tripped
    assert flags.is_enabled("checkout", "u")


def test_tripwire_validates_arguments():
    """Bad thresholds, windows and counts raise naming the argument."""
    clock = FakeClock()
    flags = tripwire_flags(clock)
    with pytest.raises(ValueError, match="max_error_rate"):
        Tripwire(flags, "checkout", max_error_rate=1.5)
    with pytest.raises(ValueError, match="minimum_calls"):
        Tripwire(flags, "checkout", minimum_calls=0)
    with pytest.raises(TypeError, match="window"):
        Tripwire(flags, "checkout", window=60)
    with pytest.raises(ValueError, match="key"):
        Tripwire(flags, "")
    assert "CountWindow(5)" in repr(Tripwire(flags, "checkout", window=CountWindow(5)))


def test_tripwire_is_importable_from_rollout_as_before():
    """tipkit.rollout re-exports Tripwire and FlagKilled from tipkit.tripwire."""
    assert (tipkit.rollout.Tripwire, tipkit.rollout.FlagKilled) == (
        Tripwire,
        FlagKilled,
    )


class LoopWatchingStore(MemoryStore):
    """A MemoryStore noting each write made on a running event loop."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_loop: list[str] = []

    def set(self, *args, **kwargs):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            self.on_loop.append("set")
        return super().set(*args, **kwargs)


def test_async_faces_kill_the_flag_off_the_event_loop():
    """Under async with, the tripping exit awaits the kill, written off the event loop."""
    clock = FakeClock()
    store = LoopWatchingStore(clock=clock)
    doc = {
        "flags": {
            "checkout": {
                "variants": {"on": True, "off": False},
                "off_variant": "off",
                "default_variant": "on",
            }
        }
    }
    flags = Flags(InMemoryProvider(doc), store=store, clock=clock)
    wire = Tripwire(
        flags, "checkout", max_error_rate=0.5, minimum_calls=10, clock=clock
    )

    async def main(events):
        for _ in range(10):
            with pytest.raises(ValueError, match="boom"):
                async with wire:
                    raise ValueError("boom")
        return len(events)  # the kill was awaited by the tripping exit

    with capture_events(FlagKilled) as events:
        seen = asyncio.run(main(events))
    assert ([], 1, 1) == (store.on_loop, seen, len(events))
    assert flags.evaluate("checkout", "u").reason is Reason.DISABLED
    assert wire.tripped


def test_every_face_counts_failures_and_trips(face):
    """Decorator, with, call and their async twins all count and kill on the tripping call."""
    clock = FakeClock()
    flags = tripwire_flags(clock)
    wire = Tripwire(flags, "checkout", max_error_rate=0.5, minimum_calls=4, clock=clock)

    def boom():
        raise ValueError("boom")

    with capture_events(FlagKilled) as events:
        for _ in range(4):
            with pytest.raises(ValueError, match="boom"):
                face.run(wire, boom)
    assert (1, True) == (len(events), wire.tripped)
    assert flags.evaluate("checkout", "u").reason is Reason.DISABLED
    assert "ok" == face.run(wire, lambda: "ok")  # a tripwire never refuses calls
