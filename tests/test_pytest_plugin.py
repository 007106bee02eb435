"""The pytest plugin's fixtures, used as a user's suite would use them."""

from __future__ import annotations

from tipkit.telemetry import Event
from tipkit.telemetry._events import BUS
from tipkit.testing import CapturedTelemetry, FakeClock, RecordingFlags


def test_tipkit_clock_fixture(tipkit_clock: FakeClock) -> None:
    """tipkit_clock is a fresh FakeClock at 0."""
    assert isinstance(tipkit_clock, FakeClock)
    assert tipkit_clock.monotonic() == 0


def test_tipkit_events_fixture(tipkit_events: list[Event]) -> None:
    """tipkit_events collects what is published during the test."""
    BUS.publish(Event("x"))
    assert tipkit_events == [Event("x")]


def test_tipkit_flags_fixture(tipkit_flags: RecordingFlags) -> None:
    """tipkit_flags is a real, recording Flags: overrides and evaluations work."""
    with tipkit_flags.override("new-checkout", True):
        assert tipkit_flags.is_enabled("new-checkout", "user-1")
    assert not tipkit_flags.is_enabled("new-checkout", "user-1")
    assert [e.flag_key for e in tipkit_flags.evaluations] == [
        "new-checkout",
        "new-checkout",
    ]


def test_tipkit_telemetry_fixture(tipkit_telemetry: CapturedTelemetry) -> None:
    """tipkit_telemetry captures what `traced` exports."""
    from tipkit import traced

    with traced("unit-of-work"):
        pass
    assert [s.name for s in tipkit_telemetry.spans] == ["unit-of-work"]
