"""Breaker configuration: every argument checked and named, and the rules that read it."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from tipkit.breaker import CircuitBreaker, CountWindow, TimeWindow
from tipkit.breaker._config import FAILURE, IGNORED, SUCCESS, Config
from tipkit.errors import CircuitOpenError


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": ""}, TypeError, "name must be a non-empty str"),
        (
            {"failure_rate_threshold": 0},
            ValueError,
            "failure_rate_threshold must be a fraction",
        ),
        (
            {"failure_rate_threshold": 50},
            ValueError,
            "failure_rate_threshold must be a fraction",
        ),
        (
            {"failure_rate_threshold": "x"},
            TypeError,
            "failure_rate_threshold must be a number",
        ),
        ({"slow_call_rate_threshold": 1.5}, ValueError, "slow_call_rate_threshold"),
        ({"slow_call_duration": 0}, ValueError, "slow_call_duration must be > 0"),
        ({"slow_call_duration": "1s"}, TypeError, "slow_call_duration must be seconds"),
        ({"window": 100}, TypeError, "window must be a CountWindow or a TimeWindow"),
        ({"minimum_calls": 0}, ValueError, "minimum_calls must be >= 1"),
        ({"minimum_calls": 2.5}, TypeError, "minimum_calls must be an int"),
        ({"open_duration": -1}, ValueError, "open_duration must be >= 0"),
        ({"open_duration": float("nan")}, ValueError, "open_duration must be a finite"),
        (
            {"open_duration": lambda n: -1},
            ValueError,
            r"open_duration\(1\) returned a negative",
        ),
        ({"open_duration": lambda n: "x"}, TypeError, "open_duration"),
        ({"half_open_calls": 0}, ValueError, "half_open_calls must be >= 1"),
        ({"half_open_calls": True}, TypeError, "half_open_calls must be an int"),
        ({"max_half_open_wait": 0}, ValueError, "max_half_open_wait must be > 0"),
        ({"record": "ValueError"}, TypeError, "record must be an exception type"),
        ({"record": (ValueError, int)}, TypeError, "record must be"),
        ({"ignore": lambda e: True}, TypeError, "ignore must be an exception type"),
        ({"mode": "audit"}, ValueError, "mode must be 'enforce' or 'shadow'"),
        ({"runbook": 3}, TypeError, "runbook must be a non-empty str"),
        ({"clock": object()}, TypeError, "clock must provide"),
    ],
)
def test_invalid_arguments_are_named(kwargs, error, match):
    """Every invalid argument raises a clear error naming it."""
    kwargs = {"name": "svc", **kwargs}
    with pytest.raises(error, match=match):
        CircuitBreaker(**kwargs)


def config(**kwargs: object) -> Config:
    """Return a Config with the breaker's defaults, overridden by *kwargs*."""
    options: dict[str, object] = {
        "failure_rate_threshold": 0.5,
        "slow_call_rate_threshold": 1.0,
        "slow_call_duration": None,
        "window": None,
        "minimum_calls": 20,
        "open_duration": 30.0,
        "half_open_calls": 5,
        "max_half_open_wait": None,
        "record": (Exception,),
        "ignore": (),
        "runbook": None,
    }
    options.update(kwargs)
    return Config("cfg", **options)  # type: ignore[arg-type]  # the defaults above are well typed


def test_defaults_are_those_documented():
    """No arguments: a count window of 100, minimum 20, 30 s open, 5 trials."""
    cfg = config()
    assert (
        cfg.window,
        cfg.min_calls,
        cfg.open_duration,
        cfg.half_open_calls,
        cfg.slow_after,
        cfg.max_half_open_wait,
    ) == (CountWindow(100), 20, 30.0, 5, None, None)


def test_minimum_calls_is_capped_only_for_a_count_window():
    """A count window caps minimum_calls at its size; a time window does not."""
    assert (3, 50) == (
        config(window=CountWindow(3), minimum_calls=50).min_calls,
        config(window=TimeWindow(3), minimum_calls=50).min_calls,
    )


def test_durations_accept_timedelta():
    """Every duration may be a timedelta; it is kept in seconds."""
    cfg = config(
        slow_call_duration=timedelta(milliseconds=250),
        open_duration=timedelta(minutes=1),
        max_half_open_wait=timedelta(seconds=5),
    )
    assert (cfg.slow_after, cfg.open_duration, cfg.max_half_open_wait) == (
        0.25,
        60.0,
        5.0,
    )


def test_classify_checks_ignore_before_record():
    """Ignored types win over recorded ones; unrecorded exceptions are successes."""
    cfg = config(record=(ValueError, KeyError), ignore=KeyError)
    outcomes = [
        cfg.classify(error)
        for error in (
            ValueError(),
            KeyError(),
            TypeError(),
            KeyboardInterrupt(),
            CircuitOpenError("open", name="inner"),
        )
    ]
    assert outcomes == [FAILURE, IGNORED, SUCCESS, IGNORED, IGNORED]


def test_classify_logs_a_record_callable_that_raises(caplog):
    """A record callable that raises counts the call as a failure and is logged."""

    def record(exc: BaseException) -> bool:
        raise RuntimeError("bug")

    with caplog.at_level(logging.ERROR, logger="tipkit"):
        outcome = config(record=record).classify(ValueError())
    assert outcome == FAILURE
    assert "record callable" in caplog.text


def test_verdict_names_the_rate_that_trips():
    """The failure rate is checked first, then the slow-call rate; both inclusive."""
    cfg = config(failure_rate_threshold=0.5, slow_call_rate_threshold=0.5)
    assert [
        cfg.verdict(4, 2, 4),
        cfg.verdict(4, 1, 2),
        cfg.verdict(4, 1, 1),
    ] == ["failure_rate", "slow_call_rate", None]


def test_open_duration_for_calls_the_backoff_with_the_opening_count():
    """A callable open_duration gets times_opened; a fixed one is returned as is."""
    backoff = config(open_duration=lambda n: 2.0**n)
    assert [backoff.open_duration_for(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert config(open_duration=7).open_duration_for(5) == 7.0
