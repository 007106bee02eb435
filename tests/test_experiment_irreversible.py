"""Irreversible operations: refused as candidates unless every run is compensated."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from tests.experiment_support import (
    double,
    make,
)

from tipkit.errors import ConfigError
from tipkit.experiment import (
    Experiment,
    ExperimentCallbackFailed,
    Observation,
    irreversible,
    irreversible_reason,
    is_irreversible,
)
from tipkit.testing import FakeClock, capture_events


@irreversible(reason="charges a card")
def charge(x: int) -> int:
    return x


def test_irreversible_candidate_is_refused_with_the_reason() -> None:
    """An irreversible candidate without compensate= is a ConfigError naming everything."""
    with pytest.raises(ConfigError, match="irreversible") as info:
        Experiment("billing-v2", control=double, candidate={"new": charge})
    message = str(info.value)
    for part in ("'billing-v2'", "'new'", "charge", "charges a card", "compensate="):
        assert part in message
    assert "candidate" == info.value.field


def test_irreversible_marks_are_found_through_wrappers() -> None:
    """wraps() chains, partials and bound methods keep the mark visible."""

    @functools.wraps(charge)
    def wrapper(x: int) -> int:
        return charge(x)

    @functools.wraps(wrapper)
    def outer(x: int) -> int:
        return wrapper(x)

    class Payments:
        @irreversible
        def refund(self, x: int) -> int:
            return x

    assert "charges a card" == irreversible_reason(outer)
    assert is_irreversible(functools.partial(charge, 1))
    assert "marked @irreversible" == irreversible_reason(Payments().refund)
    assert not is_irreversible(double)
    with pytest.raises(ConfigError, match="charges a card"):
        Experiment("e", control=double, candidate=outer)


def test_irreversible_call_method_marks_its_instances() -> None:
    """An instance whose class marks __call__ irreversible is refused as a candidate."""

    class Charger:
        @irreversible(reason="charges a card")
        def __call__(self, x: int) -> int:
            return x

    assert "charges a card" == irreversible_reason(Charger())
    with pytest.raises(ConfigError, match="charges a card"):
        Experiment("e", control=double, candidate=Charger())


def test_irreversible_as_a_call_returns_the_function_itself() -> None:
    """irreversible(fn, reason=...) marks fn in place and adds no wrapper."""

    def send(x: int) -> int:
        return x

    assert send is irreversible(send, reason="sends an email")
    assert "sends an email" == irreversible_reason(send)
    with pytest.raises(ValueError, match="non-empty"):
        irreversible(send, reason="  ")
    with pytest.raises(TypeError, match="takes no attributes"):
        irreversible(len)
    with pytest.raises(TypeError, match="marks callables"):
        irreversible(3)  # type: ignore[type-var]  # the error under test


def test_irreversible_control_is_allowed() -> None:
    """Only candidates are refused: the control runs once, as it would anyway."""
    exp = Experiment("e", control=charge, candidate=double, clock=FakeClock())
    assert 3 == exp(3)


def test_compensate_undoes_every_candidate_run() -> None:
    """With compensate=, an irreversible candidate runs and each run is undone."""
    undone: list[tuple[str, Any, Any]] = []

    @irreversible(reason="charges a card")
    def charge_v2(x: int) -> int:
        if x < 0:
            raise ValueError("declined")
        return x

    def refund(obs: Observation, x: int) -> None:
        undone.append((obs.name, obs.value, type(obs.exception)))

    exp = make(lambda x: x, candidate=charge_v2, compensate=refund)
    assert 5 == exp(5)
    assert -1 == exp(-1)
    assert [("candidate", 5, type(None)), ("candidate", None, ValueError)] == undone


def test_failing_compensate_is_isolated_and_counted() -> None:
    """A compensate that raises is counted and evented; the caller is unaffected."""

    def broken_refund(obs: Observation, x: int) -> None:
        raise RuntimeError("refund service down")

    exp = make(lambda x: x, candidate=charge, compensate=broken_refund)
    with capture_events(ExperimentCallbackFailed) as events:
        assert 4 == exp(4)
    assert {"compensate": 1} == exp.errors()
    assert ["compensate"] == [e.callback for e in events]
    assert exp.stats()["matched"] == 1


def test_sync_experiment_refuses_awaitable_compensate() -> None:
    """A sync experiment cannot await compensate: it is counted as a failure."""

    async def undo(obs: Observation, x: int) -> None:
        return None

    exp = make(candidate=double, compensate=undo)
    assert 2 == exp(1)
    assert {"compensate": 1} == exp.errors()
