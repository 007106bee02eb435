"""Experiment options: checked at construction, naming the option and the value."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import operator
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from tests.experiment_support import (
    adouble,
    double,
    double_v2,
    make,
)

from tipkit.experiment import Experiment, same_error
from tipkit.testing import FakeClock


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (
            {"sample": 101},
            ValueError,
            r"sample must be a percent in \[0, 100\], got 101",
        ),
        ({"sample": True}, TypeError, "sample must be a number, got True"),
        ({"sample": float("nan")}, ValueError, "sample must be a percent"),
        ({"timeout": 0}, ValueError, "timeout must be > 0"),
        ({"timeout": "1s"}, TypeError, "timeout must be seconds"),
        (
            {"mode": "thread"},
            ValueError,
            "mode must be 'inline' or 'background', got 'thread'",
        ),
        ({"max_workers": 0}, ValueError, "max_workers must be >= 1, got 0"),
        ({"queue_size": 1.5}, TypeError, "queue_size must be an int"),
        ({"keep_mismatches": -1}, ValueError, "keep_mismatches must be >= 0"),
        ({"compare": 3}, TypeError, "compare must be callable, got 3"),
        ({"ignore": [None]}, TypeError, "each ignore entry must be callable"),
        ({"context": [1]}, TypeError, "context must be a mapping"),
        ({"rng": object()}, TypeError, "rng must have a random"),
        ({"candidate": {}}, ValueError, "candidate mapping is empty"),
        ({"candidate": {"control": double}}, ValueError, "other than 'control'"),
        (
            {"candidate": adouble},
            TypeError,
            "'candidate' is async but the control is sync",
        ),
        (
            {"raise_on_mismatch": True, "mode": "background"},
            ValueError,
            "raise_on_mismatch needs mode='inline'",
        ),
    ],
)
def test_bad_options_are_refused_with_the_argument_named(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Each bad option raises at construction, naming the option and the value."""
    with pytest.raises(error, match=match):
        make(**options)


def test_generator_functions_and_bad_names_are_refused() -> None:
    """A generator control or candidate, or an empty name, is refused."""

    def gen(x: int) -> Iterator[int]:
        yield x

    with pytest.raises(TypeError, match="generator function"):
        make(gen)
    with pytest.raises(TypeError, match="generator function"):
        make(candidate=gen)
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        Experiment("", control=double, candidate=double)


def test_callable_object_with_async_call_is_async() -> None:
    """A control object whose __call__ is async makes the experiment async."""

    class Service:
        async def __call__(self, x: int) -> int:
            return x * 2

    exp = Experiment("obj", control=Service(), candidate=adouble, clock=FakeClock())
    assert exp.is_async
    assert 4 == asyncio.run(exp(2))
    assert exp.stats()["matched"] == 1


def test_every_keyword_is_checked_into_frozen_options() -> None:
    """Each constructor keyword still works and lands, normalised, in exp.options."""
    clock = FakeClock()
    rng = random.Random(3)
    exp = Experiment(
        "all",
        control=double,
        candidate={"v2": double_v2},
        compare=operator.eq,
        compare_errors=same_error,
        ignore=[lambda c, o: False],
        clean=str,
        run_if=lambda x: True,
        context={"team": "pricing"},
        call_context=lambda x: {"x": x},
        before_run=lambda: None,
        publish=lambda result: None,
        sample=50,
        sample_key=str,
        rng=rng,
        mode="background",
        timeout=timedelta(milliseconds=250),
        raise_on_mismatch=False,
        max_workers=3,
        queue_size=4,
        compensate=lambda obs, x: None,
        keep_mismatches=5,
        clock=clock,
    )
    options = exp.options
    assert ("all", 50.0, 0.25, "background") == (
        options.name,
        options.sample,
        options.timeout,
        options.mode,
    )
    assert (3, 4, 5, rng, clock) == (
        options.max_workers,
        options.queue_size,
        options.keep_mismatches,
        options.rng,
        options.clock,
    )
    assert ["v2"] == list(options.candidates)
    assert 1 == len(options.ignore)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.sample = 1.0  # type: ignore[misc]  # the error under test
    keywords = [
        p.name
        for p in inspect.signature(Experiment).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert 22 == len(keywords)  # all passed above; with name, 23 options


def test_default_rng_and_context_are_filled_in() -> None:
    """Without rng= a generator of its own samples; without context= it is empty."""
    options = make().options
    assert isinstance(options.rng, random.Random)
    assert random is not options.rng
    assert {} == dict(options.context)
    assert None is options.timeout


def test_the_default_rng_is_seeded_from_random_and_never_moves_it() -> None:
    """random.seed(n) before building reproduces the draws; drawing leaves random alone."""
    random.seed(7)
    first = make().options.rng
    random.seed(7)
    second = make().options.rng
    state = random.getstate()
    assert [first.random() for _ in range(5)] == [second.random() for _ in range(5)]
    assert state == random.getstate()
