"""The exception hierarchy and what each error carries."""

from __future__ import annotations

import pytest

from tipkit.errors import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigError,
    ConfigProblem,
    DeadlineExceededError,
    RateLimitedError,
    RejectedError,
    StoreError,
    TipkitError,
)


def test_hierarchy() -> None:
    """The tree drawn in tipkit.errors holds."""
    for cls in (ConfigError, StoreError, RejectedError, DeadlineExceededError):
        assert issubclass(cls, TipkitError)
    for cls in (CircuitOpenError, RateLimitedError, BulkheadFullError):
        assert issubclass(cls, RejectedError)
    assert issubclass(DeadlineExceededError, TimeoutError)
    assert issubclass(ConfigError, ValueError)


def test_rejections_carry_name_and_retry_after() -> None:
    """Each rejection names its guard and says when to retry."""
    err = CircuitOpenError(
        "open", name="payments", retry_after=3.0, runbook="https://rb"
    )
    assert (err.breaker, err.name, err.retry_after, err.runbook) == (
        "payments",
        "payments",
        3.0,
        "https://rb",
    )
    assert RateLimitedError("x", name="api", retry_after=0.5).limiter == "api"
    assert BulkheadFullError("x", name="db").bulkhead == "db"
    assert BulkheadFullError("x", name="db").retry_after is None


def test_deadline_error_is_caught_as_timeout() -> None:
    """Except TimeoutError catches DeadlineExceededError (asyncio.TimeoutError too)."""
    with pytest.raises(TimeoutError):
        raise DeadlineExceededError("late", name="t", timeout=1.0)


def test_config_error_names_location() -> None:
    """A ConfigError says where: source, line, flag and field."""
    err = ConfigError(
        "unknown variant 'x'", source="flags.yaml", flag="f", field="serve", line=7
    )
    assert str(err) == "flags.yaml:7, flag 'f', field 'serve': unknown variant 'x'"
    assert (err.source, err.flag, err.field, err.line) == (
        "flags.yaml",
        "f",
        "serve",
        7,
    )


def test_config_error_reports_every_problem() -> None:
    """Several problems are all reported, the first one's location on the error."""
    problems = [
        ConfigProblem("bad weight", source="a.yaml", flag="f", field="split"),
        ConfigProblem(
            "unknown operator", source="a.yaml", flag="g", field="op", line=3
        ),
    ]
    err = ConfigError(problems=problems)
    assert err.problems == tuple(problems)
    assert err.flag == "f"
    assert str(err).startswith("2 problems:")
    assert "a.yaml:3, flag 'g', field 'op': unknown operator" in str(err)


def test_config_error_needs_something() -> None:
    """A ConfigError without a message or problems is a programming error."""
    with pytest.raises(TypeError):
        ConfigError()


def test_config_problem_value_semantics() -> None:
    """Problems compare by value and print without a location when none is known."""
    a = ConfigProblem("m", flag="f")
    assert a == ConfigProblem("m", flag="f")
    assert a != ConfigProblem("m", flag="g")
    assert a != "m"
    assert len({a, ConfigProblem("m", flag="f")}) == 1
    assert str(ConfigProblem("bare")) == "bare"
    assert repr(a) == "<ConfigProblem flag 'f': m>"
