"""The plan: sampling, run order, context and cleaning, with every callback isolated."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.experiment_support import (
    SeqRandom,
    double,
    make,
)

from tipkit.experiment import (
    OUTCOMES,
    ExperimentCallbackFailed,
    ExperimentResult,
)
from tipkit.flags import bucket
from tipkit.testing import capture_events


def test_sample_zero_never_runs_candidates() -> None:
    """At sample=0 only the control runs."""
    ran: list[int] = []
    exp = make(candidate=ran.append, sample=0)
    assert [0, 2, 4] == [exp(i) for i in range(3)]
    assert [] == ran
    assert (3, 0) == (exp.calls, exp.sampled)


def test_sampling_by_key_is_the_flags_bucketing() -> None:
    """A key is sampled when bucket(name, key) falls below the percent."""
    exp = make(candidate=double, sample=5.0, sample_key=lambda x: f"user-{x}")
    keys = range(20_000)
    for k in keys:
        exp(k)
    expected = sum(bucket("exp", f"user-{k}") < 5_000 for k in keys)
    assert expected == exp.sampled
    assert 0.045 < exp.sampled / 20_000 < 0.055


def test_sampling_by_key_is_deterministic_per_key() -> None:
    """The same key is always in or always out; non-str keys are str()-ed."""
    exp = make(candidate=double, sample=50.0, sample_key=lambda x: x)
    first = []
    for k in range(50):
        before = exp.sampled
        exp(k)
        first.append(exp.sampled - before)
    again = []
    for k in range(50):
        before = exp.sampled
        exp(k)
        again.append(exp.sampled - before)
    assert first == again
    assert [bucket("exp", str(k)) < 50_000 for k in range(50)] == [
        bool(x) for x in first
    ]


@settings(max_examples=30)
@given(
    low=st.floats(0, 100, allow_nan=False),
    high=st.floats(0, 100, allow_nan=False),
    keys=st.lists(st.text(max_size=8), max_size=30),
)
def test_raising_the_sample_only_adds_keys(
    low: float, high: float, keys: list[str]
) -> None:
    """Every key sampled at a lower percent is sampled at a higher one."""
    low, high = sorted((low, high))

    def sampled_keys(percent: float) -> set[str]:
        got: set[str] = set()
        exp = make(candidate=got.add, sample=percent, sample_key=lambda k: k)
        for k in keys:
            exp(k)
        return got

    assert sampled_keys(low) <= sampled_keys(high)


def test_random_sampling_uses_the_injected_rng() -> None:
    """Without a key, calls are sampled by rng.random() below the percent."""
    # A sampled call also draws once for the run order (the second value).
    rng = SeqRandom(0.1, 0.9, 0.5, 0.29, 0.0, 0.31)
    exp = make(candidate=double, sample=30.0, rng=rng)
    for i in range(4):
        exp(i)
    assert 2 == exp.sampled
    assert 6 == rng.i
    seeded = make(candidate=double, sample=10.0, rng=random.Random(42))
    for i in range(5_000):
        seeded(i)
    assert 400 < seeded.sampled < 600


def test_sample_key_whose_str_raises_is_isolated() -> None:
    """A sample_key value that cannot be turned into text runs only the control."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    exp = make(candidate=double, sample=50.0, sample_key=lambda x: Unprintable())
    assert 4 == exp(2)
    assert {"sample_key": 1} == exp.errors()
    assert 0 == exp.sampled


@pytest.mark.parametrize(
    ("callback", "outcome"),
    [
        ("compare", "mismatched"),
        ("clean", "matched"),
        ("publish", "matched"),
        ("before_run", None),
        ("run_if", None),
        ("sample_key", None),
        ("call_context", "matched"),
    ],
)
def test_raising_callbacks_are_counted_and_never_reach_the_caller(
    callback: str, outcome: str | None
) -> None:
    """Each callback's error is isolated, logged once, counted and evented."""

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("callback broke")

    options: dict[str, Any] = {callback: boom}
    if callback == "sample_key":
        options["sample"] = 50.0
    exp = make(candidate=double, **options)
    with capture_events(ExperimentCallbackFailed) as events:
        assert 4 == exp(2)
        assert 6 == exp(3)
    failures = 4 if callback == "clean" else 2  # clean runs on control and candidate
    assert {callback: failures} == exp.errors()
    assert [(callback, "RuntimeError")] * failures == [
        (e.callback, e.error_type) for e in events
    ]
    expected = dict.fromkeys(OUTCOMES, 0)
    if outcome is not None:
        expected[outcome] = 2
    assert expected == exp.stats()


def test_order_is_randomised_inline() -> None:
    """The rng decides whether control or candidate runs first."""
    order: list[str] = []

    def control(x: int) -> int:
        order.append("control")
        return x

    def candidate(x: int) -> int:
        order.append("candidate")
        return x

    exp = make(control, candidate=candidate, rng=SeqRandom(0.0, 0.99))
    exp(1)
    exp(1)
    assert ["control", "candidate", "candidate", "control"] == order
    seeded = make(control, candidate=candidate, rng=random.Random(7))
    order.clear()
    for _ in range(40):
        seeded(1)
    firsts = order[::2]
    assert 0 < firsts.count("control") < 40


def test_clean_shapes_what_is_kept_but_comparison_uses_raw_values() -> None:
    """clean= is applied to shown values; compare= still sees the raw ones."""
    compared: list[tuple[Any, Any]] = []

    def compare(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return bool(a == b)

    exp = make(
        lambda x: {"user": "alice@example.com", "price": x},
        candidate=lambda x: {"user": "alice@example.com", "price": x + 1},
        compare=compare,
        clean=lambda v: v["price"],
    )
    exp(10)
    assert [
        (
            {"user": "alice@example.com", "price": 10},
            {"user": "alice@example.com", "price": 11},
        )
    ] == compared
    (m,) = exp.mismatches()
    assert (10, 11) == (m.control.cleaned, m.observed.cleaned)
    assert ((10,), {}) == (m.args, dict(m.kwargs))
    assert "exp/candidate mismatched on (10): control 10, candidate 11" == str(m)


def test_run_if_and_before_run_only_when_candidates_run() -> None:
    """run_if gates the candidates; before_run runs only when they will."""
    setups = []
    ran = []

    def candidate(x: int) -> int:
        ran.append(x)
        return x * 2

    exp = make(
        candidate=candidate,
        run_if=lambda x: x % 2 == 0,
        before_run=lambda: setups.append(1),
    )
    assert [0, 2, 4, 6] == [exp(i) for i in range(4)]
    assert [0, 2] == ran
    assert 2 == len(setups)
    assert (4, 2) == (exp.calls, exp.sampled)


def test_context_static_and_per_call_reach_results_and_mismatches() -> None:
    """context= and call_context= are merged per call and kept with the result."""
    results: list[ExperimentResult] = []
    exp = make(
        context={"service": "pricing", "region": "eu"},
        call_context=lambda x: {"region": "us", "x": x},
        publish=results.append,
    )
    exp(7)
    assert {"service": "pricing", "region": "us", "x": 7} == dict(results[0].context)
    assert {"service": "pricing", "region": "us", "x": 7} == dict(
        exp.mismatches()[0].context
    )
