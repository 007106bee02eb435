"""The breaker's state machine: phase by phase, and against the reference model."""

from __future__ import annotations

import itertools
import os
import types
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from tipkit.breaker import BreakerState, CircuitBreaker, CountWindow, TimeWindow
from tipkit.breaker._config import FAILURE, IGNORED, SUCCESS, Config
from tipkit.breaker._machine import (
    UNCOUNTED,
    Closed,
    HalfOpen,
    Machine,
    Move,
    Open,
    Refusal,
)
from tipkit.errors import CircuitOpenError
from tipkit.testing import FakeClock

from .strategies_breaker import BoomError, IgnoredError, Model, ModelTicket

OUTCOMES = st.sampled_from(["success", "failure", "ignored"])


class BreakerMachine(RuleBasedStateMachine):
    """Random sequences of calls, held calls, time, operator actions and mode switches."""

    held = Bundle("held")

    @initialize(
        count=st.booleans(),
        size=st.integers(1, 6),
        minimum_calls=st.integers(1, 6),
        failure_threshold=st.sampled_from([0.25, 0.5, 1.0]),
        slow_threshold=st.sampled_from([0.5, 1.0]),
        slow=st.booleans(),
        open_duration=st.sampled_from([0.0, 1.0, 5.0]),
        half_open_calls=st.integers(1, 3),
        max_wait=st.sampled_from([None, 3.0]),
        shadow=st.booleans(),
    )
    def setup(
        self,
        count: bool,
        size: int,
        minimum_calls: int,
        failure_threshold: float,
        slow_threshold: float,
        slow: bool,
        open_duration: float,
        half_open_calls: int,
        max_wait: float | None,
        shadow: bool,
    ) -> None:
        self.clock = FakeClock()
        mode = "shadow" if shadow else "enforce"
        self.breaker = CircuitBreaker(
            "model",
            window=CountWindow(size) if count else TimeWindow(size),
            minimum_calls=minimum_calls,
            failure_rate_threshold=failure_threshold,
            slow_call_rate_threshold=slow_threshold,
            slow_call_duration=1.0 if slow else None,
            open_duration=open_duration,
            half_open_calls=half_open_calls,
            max_half_open_wait=max_wait,
            ignore=IgnoredError,
            mode=mode,
            clock=self.clock,
        )
        self.wrapped = {
            o: self.breaker(self._fn(o)) for o in ("success", "failure", "ignored")
        }
        self.model = Model(
            count_size=size if count else None,
            time_seconds=None if count else size,
            minimum_calls=minimum_calls,
            failure_threshold=failure_threshold,
            slow_threshold=slow_threshold,
            slow_after=1.0 if slow else None,
            open_duration=open_duration,
            half_open_calls=half_open_calls,
            max_half_open_wait=max_wait,
            mode=mode,
        )

    def _fn(self, outcome: str, duration: float = 0.0) -> Any:
        def fn() -> str:
            self.clock.advance(duration)
            if outcome == "failure":
                raise BoomError
            if outcome == "ignored":
                raise IgnoredError
            return "ok"

        return fn

    @rule(
        outcome=OUTCOMES, duration=st.sampled_from([0.0, 0.5, 2.0]), fast=st.booleans()
    )
    def call(self, outcome: str, duration: float, fast: bool) -> None:
        ticket = self.model.admit(self.clock.monotonic())
        fn = (
            self.breaker(self._fn(outcome, duration))
            if fast
            else self._fn(outcome, duration)
        )
        try:
            if fast:
                fn()
            else:
                self.breaker.call(fn)
        except CircuitOpenError:
            assert ticket is None
            return
        except (BoomError, IgnoredError):
            pass
        assert ticket is not None
        self.model.release(ticket, outcome, self.clock.monotonic())

    @rule(outcome=OUTCOMES)
    def fast_call(self, outcome: str) -> None:
        ticket = self.model.admit(self.clock.monotonic())
        try:
            self.wrapped[outcome]()
        except CircuitOpenError:
            assert ticket is None
            return
        except (BoomError, IgnoredError):
            pass
        assert ticket is not None
        self.model.release(ticket, outcome, self.clock.monotonic())

    @rule(target=held)
    def start_call(self) -> Any:
        model_ticket = self.model.admit(self.clock.monotonic())
        try:
            ticket = self.breaker._step(self.clock.monotonic(), None)
        except CircuitOpenError:
            assert model_ticket is None
            return None
        assert model_ticket is not None
        return (ticket, model_ticket)

    @rule(pair=consumes(held), outcome=OUTCOMES)
    def finish_call(self, pair: tuple[Any, ModelTicket] | None, outcome: str) -> None:
        if pair is None:
            return
        ticket, model_ticket = pair
        error = {"success": None, "failure": BoomError(), "ignored": IgnoredError()}[
            outcome
        ]
        self.breaker._release(ticket, error, self.clock.monotonic())
        self.model.release(model_ticket, outcome, self.clock.monotonic())

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(action=st.sampled_from(["force_open", "disable", "reset"]))
    def operate(self, action: str) -> None:
        getattr(self.breaker, action)()
        to = {"force_open": "forced_open", "disable": "disabled", "reset": "closed"}[
            action
        ]
        if self.model.state != to or to == "closed":
            self.model.to(to, self.clock.monotonic())

    @rule(mode=st.sampled_from(["enforce", "shadow"]))
    def switch_mode(self, mode: str) -> None:
        self.breaker.mode = mode  # type: ignore[assignment]  # drawn from the valid modes
        self.model.mode = mode

    @invariant()
    def agrees_with_the_model(self) -> None:
        m = self.breaker.metrics
        calls, failures, slows = self.model.calls_in_window(self.clock.monotonic())
        assert self.model.state == m.state.value
        assert (calls, failures, slows) == (m.calls, m.failures, m.slow_calls)
        assert (self.model.rejected, self.model.would_reject, self.model.ignored) == (
            m.rejected,
            m.would_reject,
            m.ignored,
        )
        assert self.model.times_opened == m.times_opened


# Every run checks the machine against the model; CI (CI=true) explores 400
# programs, a developer's run 100 (about a quarter of the time).
BreakerMachine.TestCase.settings = settings(
    max_examples=400 if os.environ.get("CI") else 100, stateful_step_count=40
)
test_breaker_state_machine = BreakerMachine.TestCase


def test_lock_free_success_count_does_not_need_itertools_pickling(monkeypatch):
    """Folding lock-free successes works without itertools' pickle support (gone in 3.14)."""

    class Count314(itertools.count):
        def __reduce__(self) -> Any:
            raise TypeError("cannot pickle 'itertools.count' object")

    monkeypatch.setattr(
        "tipkit.breaker._machine.itertools", types.SimpleNamespace(count=Count314)
    )
    breaker = CircuitBreaker(
        "folded", window=CountWindow(4), minimum_calls=2, clock=FakeClock()
    )
    for _ in range(4):
        assert breaker.call(lambda: "ok") == "ok"
    for _ in range(2):
        with pytest.raises(ValueError, match="down"):
            breaker.call(_raise_value_error)
    assert BreakerState.OPEN == breaker.state
    assert (4, 2) == (breaker.metrics.calls, breaker.metrics.failures)


def _raise_value_error() -> None:
    raise ValueError("down")


# -- phase by phase, with no clock and no lock ----------------------------------------
def machine(**kwargs: Any) -> Machine:
    """Return a state machine with the test breaker's settings, overridden by *kwargs*."""
    options: dict[str, Any] = {
        "failure_rate_threshold": 0.5,
        "slow_call_rate_threshold": 1.0,
        "slow_call_duration": None,
        "window": CountWindow(4),
        "minimum_calls": 2,
        "open_duration": 10.0,
        "half_open_calls": 2,
        "max_half_open_wait": None,
        "record": (Exception,),
        "ignore": (),
        "runbook": None,
    }
    options.update(kwargs)
    return Machine(Config("m", **options), "enforce")


def states(moves: list[Move]) -> list[tuple[str, str, str]]:
    """Return each move as (from, to, reason)."""
    return [(m.from_state.value, m.to_state.value, m.reason) for m in moves]


def test_failures_reaching_the_threshold_open_the_machine():
    """Two failures of two (minimum 2) move CLOSED to OPEN, for open_duration."""
    m, moves = machine(), []
    for now in (1.0, 2.0):
        phase = m.admit(now, moves)
        m.settle(phase, FAILURE, 0, now, moves)
    assert states(moves) == [("closed", "open", "failure_rate")]
    assert (type(m.current), m.closed, moves[0].open_for) == (Open, None, 10.0)


def test_open_refuses_until_its_time_then_lets_trials_in():
    """OPEN refuses with the time left; at open_duration it moves to HALF_OPEN."""
    m, moves = machine(), []
    m.enter(BreakerState.OPEN, "forced by the test", 0.0, moves)
    refusal = m.admit(4.0, moves)
    assert isinstance(refusal, Refusal)
    assert (refusal.state, refusal.retry_after, m.rejected) == (
        BreakerState.OPEN,
        6.0,
        1,
    )
    trial = m.admit(10.0, moves)
    assert isinstance(trial, HalfOpen)
    assert (trial.permits, states(moves)[-1]) == (
        1,
        ("open", "half_open", "open_duration_elapsed"),
    )


def test_half_open_timeout_refuses_without_probing_again():
    """Trials outliving max_half_open_wait re-open; that call is refused, even at 0 s open."""
    m, moves = machine(open_duration=0.0, max_half_open_wait=3.0), []
    m.enter(BreakerState.OPEN, "forced by the test", 0.0, moves)
    assert isinstance(m.admit(0.0, moves), HalfOpen)
    refusal = m.admit(3.0, moves)
    assert isinstance(refusal, Refusal)
    assert (refusal.state, refusal.retry_after) == (BreakerState.OPEN, 0.0)
    assert states(moves)[-1] == ("half_open", "open", "half_open_timeout")
    assert isinstance(m.admit(3.0, moves), HalfOpen)  # the next call probes


def test_trials_decide_alone_and_ignored_trials_return_their_permit():
    """Half-open closes when every trial passed; an ignored trial gives its permit back."""
    m, moves = machine(), []
    m.enter(BreakerState.HALF_OPEN, "forced by the test", 0.0, moves)
    first, second = m.admit(0.0, moves), m.admit(0.0, moves)
    assert isinstance(m.admit(0.0, moves), Refusal)
    m.settle(first, IGNORED, 0, 1.0, moves)
    third = m.admit(1.0, moves)
    m.settle(second, SUCCESS, 0, 2.0, moves)
    m.settle(third, SUCCESS, 0, 2.0, moves)
    assert states(moves)[-1] == ("half_open", "closed", "trials_passed")
    assert (m.closed is m.current, m.ignored) == (True, 1)


def test_outcomes_of_an_ended_phase_decide_nothing():
    """An outcome admitted before a transition is stale: only ignored ones are counted."""
    m, moves = machine(), []
    early = m.admit(0.0, moves)
    m.enter(BreakerState.CLOSED, "reset", 0.0, moves)
    m.settle(early, FAILURE, 0, 1.0, moves)
    m.settle(early, IGNORED, 0, 1.0, moves)
    assert (m.metrics(1.0).calls, m.ignored, len(moves)) == (0, 1, 1)


def test_shadow_refusals_are_marked_and_counted_apart():
    """In shadow mode a refusal is marked shadow and counts as would_reject."""
    m, moves = machine(), []
    m.mode = "shadow"
    m.enter(BreakerState.FORCED_OPEN, "forced_open", 0.0, moves)
    refusal = m.admit(0.0, moves)
    assert isinstance(refusal, Refusal)
    assert (refusal.shadow, refusal.retry_after, m.would_reject, m.rejected) == (
        True,
        None,
        1,
        0,
    )
    assert UNCOUNTED.tick is None


def test_a_warm_closed_phase_counts_successes_lock_free():
    """Once minimum_calls outcomes are in, plain successes tick and fold exactly."""
    m, moves = machine(window=CountWindow(10)), []
    phase = m.admit(0.0, moves)
    assert isinstance(phase, Closed)
    assert phase.succeed(m.cfg, 0.0) is None
    assert phase.tick is None
    assert phase.succeed(m.cfg, 0.0) is None  # the second outcome: warm from here
    assert phase.tick is not None
    for _ in range(5):
        phase.tick()
    assert (m.metrics(0.0).calls, m.metrics(0.0).successes) == (7, 7)
