"""The token arithmetic in tipkit._core._tokens: refill, take, reserve, give back, full at."""

from __future__ import annotations

import ast
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tipkit._core._tokens as tokens_module
from tipkit._core._tokens import Level, TokenTake, take


def test_take_refills_then_takes_what_is_there() -> None:
    """A take refills at rate up to capacity, then takes; 0.0 means taken now."""
    level = Level(2.0, 4.0, 1.0, 10.0)
    assert 0.0 == level.take(11.0, 3.0)
    assert (level.level, level.last) == (0.0, 11.0)
    assert 0.0 == level.take(100.0, 4.0)  # refilled to capacity, not beyond
    assert 0.0 == level.level


def test_a_short_take_reserves_within_max_wait_or_takes_nothing() -> None:
    """Short by w seconds: reserved when w <= max_wait (level negative), else untouched."""
    level = Level(1.0, 4.0, 1.0, 0.0)
    assert 2.0 == level.take(0.0, 3.0, max_wait=1.5)
    assert 1.0 == level.level  # refused: nothing taken
    assert 2.0 == level.take(0.0, 3.0, max_wait=2.0)
    assert -2.0 == level.level  # reserved: the next caller queues behind
    assert 3.0 == level.take(0.0, 1.0)


def test_a_clock_stepping_back_refills_nothing() -> None:
    """A now before the last update neither refills nor moves the origin back."""
    level = Level(1.0, 5.0, 1.0, 10.0)
    assert 1.0 == level.at(5.0)
    assert 10.0 == level.last
    assert 2.0 == level.at(11.0)


def test_give_back_never_exceeds_capacity_and_says_how_much() -> None:
    """Giving back returns at most what fits under the capacity."""
    level = Level(1.0, 3.0, 2.5, 0.0)
    assert 0.5 == level.give_back(0.0, 2.0)
    assert 3.0 == level.level
    level.take(0.0, 3.0)
    assert 1.0 == level.give_back(0.0, 1.0)
    assert 1.0 == level.level


def test_full_at_is_when_a_bucket_left_alone_is_full() -> None:
    """full_at() is the inverse of the refill: the level there equals the capacity."""
    level = Level(4.0, 8.0, -2.0, 3.0)
    assert 5.5 == level.full_at()
    assert 8.0 == level.at(level.full_at())


@given(
    ops=st.lists(
        st.tuples(
            st.floats(0, 3, allow_nan=False),
            st.integers(-2, 4),
            st.sampled_from([0.0, 0.5, 2.0]),
        ),
        max_size=40,
    )
)
def test_store_take_matches_a_reference_model(
    ops: list[tuple[float, int, float]],
) -> None:
    """take() (what MemoryStore runs) agrees with a bucket written from its definition."""
    rate, capacity = 1.5, 4.0
    level, last, now = capacity, 0.0, 0.0
    model = capacity
    for advance, tokens, max_wait in ops:
        now += advance
        model = min(capacity, model + advance * rate)
        level, got = take(level, last, now, tokens, rate, capacity, max_wait)
        last = now
        if tokens <= 0:
            model = min(capacity, model - tokens)
            expected = TokenTake(True, 0.0, model, 0.0)
        elif model >= tokens:
            model -= tokens
            expected = TokenTake(True, 0.0, model, 0.0)
        elif (tokens - model) / rate <= max_wait:
            wait = (tokens - model) / rate
            model -= tokens
            expected = TokenTake(True, wait, model, 0.0)
        else:
            expected = TokenTake(False, 0.0, model, (tokens - model) / rate)
        assert got == pytest.approx(expected)
        assert level == pytest.approx(model)


def test_the_arithmetic_imports_nothing_above_the_core() -> None:
    """_core/_tokens.py imports nothing from stores, primitives or telemetry."""
    source = pathlib.Path(tokens_module.__file__).read_text(encoding="utf-8")
    imported = {
        node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert {"__future__", "typing"} == imported
