"""Shadow experiments: the control is always served, whatever the candidates do."""

from __future__ import annotations

import pickle
import random
import threading
from typing import Any, get_args

import pytest
from tests.experiment_support import (
    WAIT,
    WAY_IDS,
    WAYS,
    call_any,
    double,
    double_v2,
    failing,
    make,
)

from tipkit.experiment import (
    Experiment,
    ExperimentResult,
    Observation,
)
from tipkit.telemetry import _names as n
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock


@pytest.mark.parametrize(("mode", "control", "candidate", "broken"), WAYS, ids=WAY_IDS)
def test_control_result_is_returned_and_outcomes_counted(
    mode: str, control: Any, candidate: Any, broken: Any
) -> None:
    """Every call returns the control's result; candidates are judged per call."""
    exp = make(control, candidate=candidate, mode=mode)
    assert [call_any(exp, i) for i in range(8)] == [i * 2 for i in range(8)]
    stats = exp.stats()
    assert (5, 3) == (stats["matched"], stats["mismatched"])
    assert 8 == exp.calls == exp.sampled


@pytest.mark.parametrize(("mode", "control", "candidate", "broken"), WAYS, ids=WAY_IDS)
def test_control_exception_is_raised_unchanged(
    mode: str, control: Any, candidate: Any, broken: Any
) -> None:
    """The control's exception object reaches the caller; a matching candidate error matches."""
    seen: list[BaseException] = []

    def remember(result: ExperimentResult) -> None:
        assert result.control.exception is not None
        seen.append(result.control.exception)

    exp = make(broken, candidate=broken, mode=mode, publish=remember)
    with pytest.raises(ValueError, match="bad 3") as info:
        call_any(exp, 3)
    assert [info.value] == seen
    assert exp.stats()["matched"] == 1


@pytest.mark.parametrize(("mode", "control", "candidate", "broken"), WAYS, ids=WAY_IDS)
def test_raising_candidate_never_reaches_the_caller(
    mode: str, control: Any, candidate: Any, broken: Any
) -> None:
    """A candidate that raises is counted candidate_error; the caller gets the control's value."""
    exp = make(control, candidate=broken, mode=mode)
    assert 8 == call_any(exp, 4)
    assert exp.stats()["candidate_error"] == 1
    (mismatch,) = exp.mismatches()
    assert "candidate_error" == mismatch.outcome
    assert isinstance(mismatch.observed.exception, ValueError)


def test_several_named_candidates_are_judged_separately() -> None:
    """Each named candidate has its own outcome, tallies and counter series."""
    results: list[ExperimentResult] = []
    exp = Experiment(
        "multi",
        control=double,
        candidate={"same": double, "off": double_v2, "broken": failing},
        clock=FakeClock(),
        publish=results.append,
    )
    for i in range(6):
        exp(i)
    assert 6 == exp.stats("same")["matched"]
    assert {"matched": 5, "mismatched": 1} == {
        k: v for k, v in exp.stats("off").items() if v
    }
    assert 6 == exp.stats("broken")["candidate_error"]
    assert {
        "same": "matched",
        "off": "mismatched",
        "broken": "candidate_error",
    } == dict(results[-1].outcomes)
    assert ("off", "broken") == results[-1].disagreeing
    assert not results[-1].matched
    attrs = {n.EXPERIMENT_NAME: "multi", n.EXPERIMENT_CANDIDATE: "off"}
    assert (
        REGISTRY.value(n.EXPERIMENT_COMPARISONS, {**attrs, n.OUTCOME: "mismatched"})
        == 1
    )
    with pytest.raises(KeyError, match="no candidate 'nope'"):
        exp.stats("nope")


def test_shadow_decorator_makes_the_function_the_control() -> None:
    """@Experiment.shadow keeps the function's name and serves its result."""

    @Experiment.shadow("deco", candidate=double_v2, clock=FakeClock())
    def price(x: int) -> int:
        """Price it."""
        return x * 2

    assert 12 == price(6)
    assert isinstance(price, Experiment)
    assert ("price", "Price it.") == (price.__name__, price.__doc__)  # type: ignore[attr-defined]  # set by update_wrapper
    assert price.stats()["mismatched"] == 1
    assert 6 == price.run(3)


def test_shadow_decorator_on_a_method_binds_the_instance() -> None:
    """Decorating a method passes the instance to control and candidate alike."""

    def price_v2(self: Shop, x: int) -> int:
        return x * self.rate + 1

    class Shop:
        rate = 3

        @Experiment.shadow("method", candidate=price_v2, clock=FakeClock())
        def price(self, x: int) -> int:
            return x * self.rate

    shop = Shop()
    assert 6 == shop.price(2)
    assert Shop.price.stats()["mismatched"] == 1


def test_threads_calling_at_once_lose_no_count() -> None:
    """Many threads through one experiment: every call is judged and counted."""
    exp = make(candidate=double, rng=random.Random(1))
    threads = 8
    per = 200
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        for i in range(per):
            assert i * 2 == exp(i)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(WAIT)
    assert threads * per == exp.stats()["matched"] == exp.calls


def test_repr_shows_config_and_tallies() -> None:
    """The repr names the experiment, its candidates, mode, sample and live counts."""
    exp = make(sample=5.0, sample_key=str, timeout=0.2, mode="background")
    assert (
        "<Experiment 'exp' control=double candidates=['candidate'] mode=background "
        "sample=5% by key timeout=0.2s calls=0 sampled=0>" == repr(exp)
    )
    inline = make()
    inline(7)
    assert repr(inline).endswith("calls=1 sampled=1 mismatched=1>")


def test_mode_is_the_old_name_of_run_mode() -> None:
    """RunMode names inline/background; Mode stays importable as its alias."""
    from tipkit._core import _mode
    from tipkit.experiment import Mode, RunMode

    assert Mode is RunMode
    assert ("inline", "background") == get_args(RunMode)
    assert RunMode is not _mode.Mode  # enforce/shadow is the guards' mode
    assert "background" == make(mode="background").mode


def test_public_names_say_they_live_in_tipkit_experiment() -> None:
    """Reprs, pickles and docs name the public module, not the private one."""
    import tipkit.experiment as module

    for obj in (
        module.Experiment,
        module.ExperimentResult,
        module.Observation,
        module.MismatchError,
        module.ExperimentCompared,
        module.irreversible,
        module.same_error,
    ):
        assert "tipkit.experiment" == obj.__module__, obj
    result = ExperimentResult("e", Observation("control"), {}, {}, {}, (1,), {})
    assert result == pickle.loads(pickle.dumps(result))  # noqa: S301  # our own bytes
