"""The stall meter the fault tests add to their wall-clock bounds (tests/stalls.py)."""

from __future__ import annotations

import threading
import time

from tests.stalls import STALLS, TICK, Stalls


def test_worst_is_the_longest_stall_overlapping_the_window() -> None:
    """Only stalls that overlap the window count; the tick itself is not a stall."""
    meter = Stalls()
    meter._seen.extend([(1.0, 1.0 + TICK + 0.5), (3.0, 3.0 + TICK + 0.2), (9.0, 9.5)])
    assert 0.5 == round(meter.worst(0.0, 2.0), 9)
    assert 0.2 == round(meter.worst(2.0, 4.0), 9)
    assert 0.5 == round(meter.worst(1.2, 3.1), 9)
    assert 0.0 == meter.worst(5.0, 8.0)


def test_a_process_that_stands_still_is_measured() -> None:
    """A C call that holds the GIL (no other thread runs meanwhile) shows as a stall."""
    STALLS.start()
    done = threading.Event()
    ticked = STALLS.ticks
    while STALLS.ticks < ticked + 2:  # the meter is waiting on a tick now
        done.wait(TICK)
    began = time.perf_counter()
    sum(range(20_000_000))  # one C call: the GIL is not given up until it returns
    held = time.perf_counter() - began
    # The meter records a stall once it runs again: wait for that on an event.
    while STALLS.worst(began, time.perf_counter()) == 0.0:
        assert time.perf_counter() - began < 60, "the meter never reported"
        done.wait(TICK)
    assert held / 2 < STALLS.worst(began, time.perf_counter()) < held + 1.0
