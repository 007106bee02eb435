"""Retry configuration: validation, backoff with jitter, waits, testing mode."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tipkit.errors import CircuitOpenError
from tipkit.retry import retry, retry_context, set_testing
from tipkit.retry._policy import Policy
from tipkit.testing import FakeClock


def policy_of(**config: Any) -> Policy:
    """Return the validated policy of ``retry(**config)``."""
    return retry(**config)._policy


@given(
    attempt=st.integers(1, 40),
    initial=st.floats(0, 2),
    maximum=st.floats(0, 60),
    jitter=st.floats(0, 3),
    base=st.floats(1, 4),
)
def test_backoff_stays_within_its_jitter_bounds(
    attempt: int, initial: float, maximum: float, jitter: float, base: float
) -> None:
    """Each wait lies in [min(exp, max), min(exp + jitter, max)]."""
    policy = policy_of(
        on=ValueError,
        wait_initial=initial,
        wait_max=maximum,
        wait_jitter=jitter,
        wait_exp_base=base,
    )
    exp = initial * base ** (attempt - 1)
    wait = policy.backoff(attempt)
    assert min(exp, maximum) - 1e-9 <= wait <= min(exp + jitter, maximum) + 1e-9


def test_jitter_leaves_the_global_random_state_alone() -> None:
    """Waits drawn on many threads never move the random module's state."""
    policy = policy_of(on=ValueError, wait_initial=0, wait_max=10, wait_jitter=5)
    before = random.getstate()
    barrier = threading.Barrier(4)

    def draw() -> None:
        barrier.wait()
        for attempt in range(1, 200):
            policy.backoff(attempt)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert before == random.getstate()


def test_seeding_the_random_module_reproduces_the_waits() -> None:
    """Two retries built after the same seed wait the same; another seed differs."""

    def waits(seed: int) -> list[float]:
        random.seed(seed)
        policy = policy_of(on=ValueError, wait_initial=0, wait_max=10, wait_jitter=5)
        return [policy.backoff(1) for _ in range(5)]

    state = random.getstate()
    try:
        first, again, other = waits(7), waits(7), waits(8)
    finally:
        random.setstate(state)
    assert first == again
    assert first != other


def test_huge_attempt_numbers_wait_the_maximum() -> None:
    """An overflowing exponent waits wait_max."""
    policy = policy_of(on=ValueError, wait_exp_base=10, wait_max=7)
    assert policy.backoff(10_000) == 7


def test_the_wait_is_the_backoff_a_retry_after_or_zero_when_testing() -> None:
    """wait_after: backoff by default, a rejection's retry_after, zero in testing mode."""
    policy = policy_of(on=Exception, wait_initial=0.5, wait_jitter=0)
    rejected = CircuitOpenError("open", name="b", retry_after=2.5)
    assert policy.wait_after(ValueError(), 2) == 1.0
    assert policy.wait_after(rejected, 2) == 2.5
    assert policy.wait_after(CircuitOpenError("open", name="b"), 1) == 0.5
    with set_testing(True):
        assert policy.wait_after(rejected, 2) == 0.0


def test_testing_mode_sets_or_caps_the_attempts() -> None:
    """max_attempts: the configured number, testing's, or the lower of both with cap."""
    policy = policy_of(on=ValueError, attempts=3)
    assert policy.max_attempts() == 3
    with set_testing(True, attempts=5):
        assert policy.max_attempts() == 5
    with set_testing(True, attempts=5, cap=True):
        assert policy.max_attempts() == 3
    with set_testing(True, attempts=2, cap=True):
        assert policy.max_attempts() == 2
    unbounded = policy_of(on=ValueError, attempts=None, timeout=5)
    with set_testing(True, attempts=4, cap=True):
        assert unbounded.max_attempts() == 4


def test_rejections_are_retriable_only_when_asked_for() -> None:
    """retriable() refuses a rejection unless retry_rejected or on names one."""
    rejected = CircuitOpenError("open", name="b")
    assert not policy_of(on=Exception).retriable(rejected)
    assert policy_of(on=Exception, retry_rejected=True).retriable(rejected)
    assert policy_of(on=(ValueError, CircuitOpenError)).retriable(rejected)
    assert not policy_of(on=lambda exc: True).retriable(rejected)


def test_the_description_names_a_predicate() -> None:
    """A predicate *on* is described by its qualified name."""

    def transient(exc: Exception) -> bool:
        return True

    described = policy_of(on=transient, clock=FakeClock()).describe()
    assert described.startswith(
        "on=test_the_description_names_a_predicate.<locals>.transient attempts=10"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"on": 3}, TypeError, "on must be exception types or a predicate"),
        ({"on": int}, TypeError, "on must be exception types or a predicate"),
        ({"on": ()}, ValueError, "on=\\(\\) would never retry"),
        ({"on": (ValueError, "x")}, TypeError, "on must hold exception types"),
        ({"on": ValueError, "attempts": 0}, ValueError, "attempts must be >= 1"),
        ({"on": ValueError, "attempts": 2.5}, TypeError, "attempts must be an int"),
        ({"on": ValueError, "timeout": -1}, ValueError, "timeout must be >= 0"),
        ({"on": ValueError, "timeout": 0}, ValueError, "timeout must be > 0"),
        ({"on": ValueError, "timeout": "1"}, TypeError, "timeout must be seconds"),
        (
            {"on": ValueError, "attempts": None, "timeout": None},
            ValueError,
            "retry forever",
        ),
        (
            {"on": ValueError, "wait_initial": -0.1},
            ValueError,
            "wait_initial must be >= 0",
        ),
        (
            {"on": ValueError, "wait_max": float("nan")},
            ValueError,
            "wait_max must be a finite",
        ),
        ({"on": ValueError, "wait_jitter": -1}, ValueError, "wait_jitter must be >= 0"),
        (
            {"on": ValueError, "wait_exp_base": 0.5},
            ValueError,
            "wait_exp_base must be >= 1",
        ),
        (
            {"on": ValueError, "wait_exp_base": "2"},
            TypeError,
            "wait_exp_base must be a number",
        ),
        (
            {"on": ValueError, "retry_rejected": 1},
            TypeError,
            "retry_rejected must be a bool",
        ),
        ({"on": ValueError, "clock": object()}, TypeError, "clock must provide"),
        ({"on": ValueError, "name": ""}, TypeError, "name must be a non-empty string"),
    ],
)
def test_bad_arguments_are_named(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Every invalid argument gives a clear error naming it."""
    with pytest.raises(error, match=match):
        retry(**kwargs)


def test_more_bad_arguments_are_named() -> None:
    """Async predicates, bad set_testing attempts and bad retry_context names are refused."""

    async def predicate(exc: Exception) -> bool:
        return True

    with pytest.raises(TypeError, match="predicates must be synchronous"):
        retry(on=predicate)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        set_testing(True, attempts=0)
    with pytest.raises(TypeError, match="attempts must be an int"):
        set_testing(True, attempts="2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        retry_context(on=ValueError, name="")
