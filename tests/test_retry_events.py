"""Retry events and counters: what listeners and metrics see of each retry."""

from __future__ import annotations

import pytest

from tipkit.errors import CircuitOpenError
from tipkit.retry import RetryGaveUp, RetryScheduled, retry
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock, capture_events

NO_JITTER = {"wait_jitter": 0.0}


class Flaky:
    """Fails with the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)

    def __call__(self) -> str:
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_events_and_counters_describe_each_retry(clock: FakeClock) -> None:
    """RetryScheduled per wait, RetryGaveUp on giving up, attempts counted by outcome."""
    fn = Flaky(ValueError(1), ValueError(2), ValueError(3))
    with (
        capture_events(RetryScheduled, RetryGaveUp) as events,
        pytest.raises(ValueError),
    ):
        retry(on=ValueError, attempts=3, name="events", clock=clock, **NO_JITTER).call(
            fn
        )
    scheduled = [e for e in events if isinstance(e, RetryScheduled)]
    assert [(e.attempt, e.wait) for e in scheduled] == [(2, 0.1), (3, 0.2)]
    assert isinstance(scheduled[0].error, ValueError)
    gave_up = events[-1]
    assert isinstance(gave_up, RetryGaveUp)
    assert (gave_up.attempts, gave_up.reason) == (3, "attempts")
    assert gave_up.otel_attributes() == {
        names.RETRY_NAME: "events",
        "tipkit.retry.attempts": 3,
        "tipkit.retry.reason": "attempts",
        names.ERROR_TYPE: "ValueError",
    }
    assert scheduled[0].otel_attributes()[names.ERROR_TYPE] == "ValueError"

    def value(outcome: str) -> int:
        return REGISTRY.value(
            names.RETRY_ATTEMPTS, {names.RETRY_NAME: "events", names.OUTCOME: outcome}
        )

    assert (value("retried"), value("gave_up")) == (2, 1)
    retry(on=ValueError, name="events", clock=clock).call(Flaky(ValueError()))
    assert value("success") == 1
    with pytest.raises(KeyError):
        retry(on=ValueError, name="events", clock=clock).call(Flaky(KeyError()))
    assert value("failure") == 1


def test_custom_error_types_are_exported_with_their_module(clock: FakeClock) -> None:
    """The exported error type of a non-builtin error is module-qualified."""
    event = RetryScheduled("n", 2, 0.1, CircuitOpenError("x", name="b"))
    assert event.otel_attributes()[names.ERROR_TYPE] == "tipkit.errors.CircuitOpenError"
