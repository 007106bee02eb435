"""pytest plugin for tipkit (registered through the ``pytest11`` entry point).

It lives outside the ``tipkit`` package and imports tipkit only inside fixtures:
pytest loads entry-point plugins before coverage starts, so a plugin importing
``tipkit`` at load time would hide tipkit's import-time lines from coverage.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tipkit.telemetry import Event
    from tipkit.testing import CapturedTelemetry, FakeClock, RecordingFlags

__all__ = ["tipkit_clock", "tipkit_events", "tipkit_flags", "tipkit_telemetry"]


@pytest.fixture
def tipkit_clock() -> FakeClock:
    """A fresh :class:`~tipkit.testing.FakeClock` at time 0."""
    from tipkit.testing import FakeClock  # noqa: PLC0415  # see the module docstring

    return FakeClock()


@pytest.fixture
def tipkit_events() -> Iterator[list[Event]]:
    """Every tipkit event published during the test, in order."""
    from tipkit.telemetry import Event  # noqa: PLC0415  # see the module docstring
    from tipkit.testing import capture_events  # noqa: PLC0415

    with capture_events(Event) as events:
        yield events


@pytest.fixture
def tipkit_flags(tipkit_clock: FakeClock) -> RecordingFlags:
    """A ``fake_flags()`` engine with no flags yet, recording every evaluation.

    Add flags with ``tipkit_flags.memory.set_flag(...)`` or override one for a block
    with ``with tipkit_flags.override(key, value):``.
    """
    from tipkit.testing import fake_flags  # noqa: PLC0415  # see the module docstring

    return fake_flags(clock=tipkit_clock)


@pytest.fixture
def tipkit_telemetry() -> Iterator[CapturedTelemetry]:
    """Real OpenTelemetry SDK providers with in-memory exporters for the test."""
    from tipkit.testing import capture_telemetry  # noqa: PLC0415  # see the module docstring

    with capture_telemetry() as captured:
        yield captured
