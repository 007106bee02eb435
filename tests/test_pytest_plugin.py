"""The pytest plugin's fixtures, used as a user's suite would use them."""

from __future__ import annotations

from tipkit.telemetry import Event
from tipkit.telemetry._events import BUS
from tipkit.testing import FakeClock


def test_tipkit_clock_fixture(tipkit_clock: FakeClock) -> None:
    """tipkit_clock is a fresh FakeClock at 0."""
    assert isinstance(tipkit_clock, FakeClock)
    assert tipkit_clock.monotonic() == 0


def test_tipkit_events_fixture(tipkit_events: list[Event]) -> None:
    """tipkit_events collects what is published during the test."""
    BUS.publish(Event("x"))
    assert tipkit_events == [Event("x")]
