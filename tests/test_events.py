"""The event bus and in-process counters: the seam telemetry plugs into."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import pytest

from tipkit.telemetry import Event, add_listener, counters, remove_listener
from tipkit.telemetry._counters import CounterRegistry
from tipkit.telemetry._events import BUS, EventBus
from tipkit.testing import capture_events


@dataclass(frozen=True, slots=True)
class Ping(Event):
    n: int = 0


@dataclass(frozen=True, slots=True)
class Pong(Event):
    pass


def test_capture_events_collects_in_order() -> None:
    """capture_events yields what was published inside the block, in order."""
    with capture_events() as events:
        BUS.publish(Ping("a", 1))
        BUS.publish(Pong("b"))
    BUS.publish(Ping("after"))
    assert events == [Ping("a", 1), Pong("b")]


def test_capture_events_filters_by_type() -> None:
    """capture_events(Ping) sees only Ping events."""
    with capture_events(Ping) as events:
        BUS.publish(Ping("a"))
        BUS.publish(Pong("b"))
    assert events == [Ping("a")]


def test_listened_flag_follows_listeners() -> None:
    """An event type is 'listened' only while a listener would receive it."""
    assert not Ping.listened
    assert not BUS.active
    with capture_events(Pong):
        assert Pong.listened
        assert not Ping.listened
        assert BUS.active
    assert not Pong.listened
    with capture_events():
        assert Ping.listened
        assert Pong.listened


def test_event_type_defined_while_listening_is_listened() -> None:
    """A new event class defined while a catch-all listener exists starts listened."""
    with capture_events():

        @dataclass(frozen=True, slots=True)
        class Late(Event):
            pass

        assert Late.listened
    assert not Late.listened


def test_listener_error_is_logged_once_and_swallowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A raising listener never breaks publishing; its first error is logged on 'tipkit'."""
    bus = EventBus()
    good: list[Event] = []

    def bad(event: Event) -> None:
        raise RuntimeError("listener bug")

    bus.add_listener(bad)
    bus.add_listener(good.append)
    with caplog.at_level(logging.ERROR, logger="tipkit"):
        bus.publish(Ping("x"))
        bus.publish(Ping("y"))
    assert good == [Ping("x"), Ping("y")]
    assert bus.listener_errors == 2
    records = [r for r in caplog.records if r.name == "tipkit"]
    assert len(records) == 1
    assert "RuntimeError: <redacted sha256:" in (records[0].exc_text or "")


def test_add_listener_refuses_non_callable() -> None:
    """A listener must be callable."""
    with pytest.raises(TypeError, match="callable"):
        add_listener(42)  # type: ignore[arg-type]


def test_remove_unknown_listener_is_an_error() -> None:
    """Removing a listener never added raises ValueError naming it."""
    with pytest.raises(ValueError, match="not a registered listener"):
        remove_listener(print)


def test_add_listener_as_decorator_and_listeners() -> None:
    """add_listener returns the listener (usable as a decorator) and lists it."""
    bus = EventBus()

    @bus.add_listener
    def on_event(event: Event) -> None:
        return None

    assert bus.listeners() == (on_event,)
    bus.remove_listener(on_event)
    assert bus.listeners() == ()
    assert not bus.active


def test_event_otel_defaults() -> None:
    """The base event exports only its name, under a generic event name."""
    assert Ping("x").otel_attributes() == {"tipkit.name": "x"}
    assert Ping.otel_name == "tipkit.event"


# -- counters ------------------------------------------------------------------------
def test_counter_is_shared_per_name_and_attributes() -> None:
    """The registry returns the same counter for the same name and attributes."""
    registry = CounterRegistry()
    a = registry.counter("tipkit.test", {"x": "1", "y": 2})
    b = registry.counter("tipkit.test", {"y": 2, "x": "1"})
    c = registry.counter("tipkit.test", {"x": "2"})
    assert a is b
    assert a is not c


def test_counter_loses_nothing_under_threads() -> None:
    """8 threads incrementing one counter 20,000 times each lose no increment."""
    registry = CounterRegistry()
    counter = registry.counter("tipkit.race")
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        inc = counter.inc
        for _ in range(20_000):
            inc()
        counter.add(5)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.value == 8 * 20_005


def test_counter_add_refuses_negative() -> None:
    """Counters only go up."""
    with pytest.raises(ValueError, match=">= 0"):
        CounterRegistry().counter("tipkit.x").add(-1)


def test_snapshot_and_value() -> None:
    """snapshot() reads every counter; value() sums those matching attributes."""
    registry = CounterRegistry()
    registry.counter("m", {"k": "a", "o": "ok"}).inc()
    registry.counter("m", {"k": "a", "o": "err"}).add(3)
    registry.counter("n").inc()
    assert sorted(r.value for r in registry.snapshot("m")) == [1, 3]
    assert len(registry.snapshot()) == 3
    assert registry.value("m") == 4
    assert registry.value("m", {"o": "err"}) == 3
    assert "value=1" in repr(registry.counter("n"))


def test_gauges_hold_owner_weakly() -> None:
    """A gauge reports while its owner lives and disappears with it."""
    registry = CounterRegistry()

    class Owner:
        level = 2.5

    owner = Owner()
    registry.register_gauge("g", owner, lambda o: [(o.level, {"k": "v"})])
    readings = registry.gauges("g")
    assert [(r.name, r.value, r.attributes) for r in readings] == [
        ("g", 2.5, {"k": "v"})
    ]
    assert registry.gauges("other") == []
    del owner
    assert registry.gauges() == []


def test_record_is_a_noop_until_a_sink_is_set() -> None:
    """Histogram records go nowhere until telemetry installs a sink."""
    registry = CounterRegistry()
    registry.record("h", 1.0, {})
    seen: list[tuple[str, float]] = []
    registry.histogram_sink = lambda name, value, attrs: seen.append((name, value))
    registry.record("h", 2.0, {})
    assert seen == [("h", 2.0)]


def test_process_registry_is_exposed() -> None:
    """tipkit.telemetry.counters is the process-wide registry."""
    assert isinstance(counters, CounterRegistry)
