"""pytest plugin (registered through the ``pytest11`` entry point): tipkit fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tipkit.telemetry._events import Event
from tipkit.testing import FakeClock, capture_events

__all__ = ["tipkit_clock", "tipkit_events"]


@pytest.fixture
def tipkit_clock() -> FakeClock:
    """A fresh :class:`~tipkit.testing.FakeClock` at time 0."""
    return FakeClock()


@pytest.fixture
def tipkit_events() -> Iterator[list[Event]]:
    """Every tipkit event published during the test, in order."""
    with capture_events(Event) as events:
        yield events
