"""The clock protocol, the system clock and FakeClock."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

from tipkit.clock import SYSTEM_CLOCK, Clock, SystemClock
from tipkit.testing import EPOCH, FakeClock


def test_both_clocks_satisfy_the_protocol() -> None:
    """SystemClock and FakeClock are Clocks."""
    assert isinstance(SYSTEM_CLOCK, Clock)
    assert isinstance(FakeClock(), Clock)
    assert repr(SystemClock()) == "<SystemClock>"


def test_system_clock_reads_real_time() -> None:
    """The system clock's monotonic time never goes backwards and time() is epoch seconds."""
    a = SYSTEM_CLOCK.monotonic()
    b = SYSTEM_CLOCK.monotonic()
    assert b >= a
    assert SYSTEM_CLOCK.time() > 1_600_000_000


def test_system_clock_zero_waits() -> None:
    """Zero-length sleeps and already-set events return at once on the system clock."""
    SYSTEM_CLOCK.sleep(0)
    asyncio.run(SYSTEM_CLOCK.asleep(0))
    event = threading.Event()
    event.set()
    assert SystemClock().wait_event(event, 10)

    async def main() -> bool:
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return await SystemClock().await_future(fut, 10)

    assert asyncio.run(main())


def test_fake_clock_starts_at_zero_and_epoch() -> None:
    """FakeClock starts at monotonic 0 and wall time EPOCH."""
    clock = FakeClock()
    assert clock.monotonic() == 0
    assert clock.time() == EPOCH


def test_advance_moves_both_times() -> None:
    """advance() moves monotonic and wall time together; timedelta is accepted."""
    clock = FakeClock()
    clock.advance(1.5)
    clock.advance(timedelta(seconds=2))
    assert clock.monotonic() == 3.5
    assert clock.time() == EPOCH + 3.5


def test_advance_refuses_going_backwards() -> None:
    """A negative advance is refused with a clear error."""
    with pytest.raises(ValueError, match="cannot go backwards"):
        FakeClock().advance(-1)


def test_advance_refuses_non_numbers() -> None:
    """advance() names a bad argument."""
    with pytest.raises(TypeError, match="seconds"):
        FakeClock().advance("1")  # type: ignore[arg-type]


def test_sleeps_are_instant_and_recorded() -> None:
    """Sleep and asleep advance at once and record each duration."""
    clock = FakeClock()
    clock.sleep(2)
    asyncio.run(clock.asleep(0.5))
    assert clock.sleeps == [2, 0.5]
    assert clock.monotonic() == 2.5
    with pytest.raises(ValueError, match=">= 0"):
        clock.sleep(-1)


def test_fake_clock_event_waits() -> None:
    """Waiting on a set event costs nothing; on an unset one the timeout passes at once."""
    clock = FakeClock()
    event = threading.Event()
    assert clock.wait_event(event, 3) is False
    event.set()
    assert clock.wait_event(event, 3) is True
    assert clock.waits == [3]
    assert clock.monotonic() == 3


def test_fake_clock_start_and_repr() -> None:
    """A FakeClock can start elsewhere; its repr shows now and sleep count."""
    clock = FakeClock(10)
    assert clock.time() == EPOCH
    assert repr(clock) == "<FakeClock now=10.0 sleeps=0>"


def test_durations_helpers() -> None:
    """Durations accept seconds or timedelta and name bad values."""
    from tipkit._core._durations import to_seconds, to_seconds_or_none

    assert to_seconds(timedelta(milliseconds=250), "t") == 0.25
    assert to_seconds_or_none(None, "t") is None
    with pytest.raises(TypeError, match="open_duration"):
        to_seconds(True, "open_duration")
    with pytest.raises(ValueError, match="finite"):
        to_seconds(float("nan"), "t")
    with pytest.raises(ValueError, match="zero"):
        to_seconds(0, "t", allow_zero=False)
