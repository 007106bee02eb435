"""`tipkit demo`: the four scenarios end to end in fast mode, the CLI, and no extras."""

from __future__ import annotations

import contextlib
import io
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tipkit._demo
from tipkit._cli import main
from tipkit._demo import DEFAULT_OUT, DemoResult, run_demo
from tipkit._demo._display import (
    INSTALL_HINT,
    PlainReporter,
    RichReporter,
    load_rich,
    plain_table,
)
from tipkit._demo._rollouts import GOOD_STAGES
from tipkit._demo._scenarios import Params
from tipkit.telemetry._events import BUS

from .once import once_per_run

SEED = 1
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class PlainRun:
    result: DemoResult
    text: str
    chart: Path
    random_before: object
    random_after: object
    listeners_before: int
    listeners_after: int


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> PlainRun:
    """A second fast run with seed 1, without rich and matplotlib (imports fail)."""
    chart = tmp_path_factory.mktemp("plain") / "c.png"
    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("rich", "matplotlib"):
            mp.setitem(sys.modules, name, None)  # import now raises ImportError
        random.seed(99)
        before = random.getstate()
        listeners = len(BUS._listeners)
        result = run_demo(seed=SEED, fast=True, out=chart, live=True, stream=stream)
    return PlainRun(
        result,
        stream.getvalue(),
        chart,
        before,
        random.getstate(),
        listeners,
        len(BUS._listeners),
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, str]:
    """One fast run with seed 1 through the CLI; its result (kept by a spy) and output.

    `tipkit demo --fast --out DIR --no-live --seed 1` runs the real demo once for
    the CLI's test and for every scenario's (a run takes seconds of CPU), and
    once per test run, not per xdist worker.
    """

    def run(out: Path) -> tuple[int, list[DemoResult], str]:
        real, results = tipkit._demo.run_demo, []

        def spy(**options: Any) -> DemoResult:
            results.append(real(**options))
            return results[-1]

        stream = io.StringIO()
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stream):
            mp.setattr(tipkit._demo, "run_demo", spy)
            argv = [
                "demo",
                "--fast",
                "--out",
                str(out),
                "--no-live",
                "--seed",
                str(SEED),
            ]
            return main(argv), results, stream.getvalue()

    code, results, text = once_per_run(tmp_path_factory, "demo-cli", run)
    assert 0 == code
    assert 1 == len(results)
    return results[0], text


def test_the_chart_is_written_where_asked(demo: tuple[DemoResult, str]) -> None:
    """The timeline PNG is written to `out`, and its path is printed."""
    result, text = demo
    assert result.chart is not None
    assert PNG_MAGIC == result.chart.read_bytes()[:8]
    assert result.chart.stat().st_size > 50_000
    assert f"Timeline chart written to {result.chart}" in text


def test_the_bad_canary_is_rolled_back_at_an_early_stage(
    demo: tuple[DemoResult, str],
) -> None:
    """Errors 1% -> 2.5%: the judge rolls the canary back at 1% or 5%, with its numbers."""
    c = demo[0].canary
    assert "rolled_back" == c.status
    assert c.rolled_back_at in {1.0, 5.0}
    assert c.early
    assert "error_rate" == c.guard
    assert c.canary_requests >= 100
    assert c.control_requests > c.canary_requests
    assert c.canary_rate > c.control_rate
    assert c.lower is not None
    assert c.lower > 0.0
    assert "rolled_back" == c.changes[-1].action
    assert (
        f"rolled back at {c.rolled_back_at:g}% (stage {c.stage}) after"
        f" {c.canary_requests:,} canary and {c.control_requests:,} control requests"
    ) in demo[1]


def test_the_good_change_is_promoted_to_100_percent(
    demo: tuple[DemoResult, str],
) -> None:
    """A change as good as the old code passes every stage on evidence: 5 -> 25 -> 50 -> 100."""
    p = demo[0].promotion
    assert "completed" == p.status
    assert GOOD_STAGES == p.percents
    assert 100.0 == p.final_percent
    assert ["PASS"] * 3 == [c.decision for c in p.changes]
    # The safe defaults: each stage passed when the upper bound crossed the
    # 0.5-point margin (scaled to the control's error rate), and says so.
    for c in p.changes:
        assert c.upper is not None
        assert c.margin is not None
        assert c.upper < c.margin < 0.006
        assert (
            f"{c.from_percent:g}%: upper bound +{100 * c.upper:.5f} pt < margin"
            f" +{100 * c.margin:.5f} pt after {c.canary:,} canary requests"
        ) in demo[1]
    assert p.bounds
    assert {5.0, 25.0, 50.0} <= {pct for _, pct, _ in p.bounds}


def test_the_outage_is_contained(demo: tuple[DemoResult, str]) -> None:
    """Breaker opens, retries spare payments, the burst is shed, the tripwire kills the flag."""
    o = demo[0].outage
    assert o.breaker_opened
    assert "closed" == o.breaker_transitions[-1][1]  # it closed again after the outage
    assert o.outage_requests > 0
    assert o.naive_outage_calls == o.attempts * o.outage_requests
    assert o.outage_downstream_calls * 10 < o.naive_outage_calls
    assert o.fast_failures > 0
    assert 0 < o.burst_shed < o.burst_requests
    assert o.flag_killed
    assert o.kill_time is not None
    assert o.kill_time > o.bug_start
    assert o.kill_error_rate is not None
    assert o.kill_error_rate > 0.05


def test_the_shadow_experiment_finds_the_disagreeing_inputs(
    demo: tuple[DemoResult, str],
) -> None:
    """Mismatches are found, explained by the two planted bugs, and a few are printed."""
    result, text = demo
    s = result.shadow
    assert s.mismatched > 0
    assert s.mismatched == len(s.mismatches)
    assert 0 == s.outcomes["candidate_error"]
    assert {
        "qty == 10: bulk discount applied one item early",
        "half-cent rounded to even, not up",
    } == set(s.causes)
    assert all(m.control != m.candidate for m in s.mismatches)
    # Every sampled order of ten items disagrees; the discount bug is systematic.
    compared, disagreed = s.by_qty[10]
    assert compared == disagreed
    assert "Inputs where pricing v2 disagrees with v1" in text
    assert str(s.mismatches[0]) in text


def test_every_scenario_reports_success(demo: tuple[DemoResult, str]) -> None:
    """`ok` sums it up, and the run says so."""
    result, text = demo
    assert result.ok
    assert "every scenario showed what it should" in text
    assert result.seconds > 0.0


def test_the_same_seed_gives_the_same_numbers(
    demo: tuple[DemoResult, str], plain: PlainRun
) -> None:
    """Two runs with the same seed (one without the extras) give equal numbers."""
    assert demo[0] is not plain.result
    assert demo[0] == plain.result
    assert demo[0].outage.bins == plain.result.outage.bins
    assert demo[0].canary.series == plain.result.canary.series


def test_the_demo_leaves_global_state_alone(plain: PlainRun) -> None:
    """The random module's state is restored and the event listeners are removed."""
    assert plain.random_before == plain.random_after
    assert plain.listeners_before == plain.listeners_after


def test_the_cli_runs_the_demo(demo: tuple[DemoResult, str]) -> None:
    """`tipkit demo --fast --out DIR --no-live --seed 1` exits 0 and writes the chart in DIR."""
    result, out = demo
    assert result.chart is not None
    assert DEFAULT_OUT.name == result.chart.name
    assert result.chart.is_file()
    assert f"Timeline chart written to {result.chart}" in out
    assert "seed 1, fast mode" in out


def test_full_mode_is_bigger_than_the_default_in_every_size() -> None:
    """`--full` grows every traffic size over the default; fast and full exclude."""
    default, full = Params.for_mode(fast=False), Params.for_mode(fast=False, full=True)
    smaller = [
        name
        for name in Params.__slots__
        if name != "sample_every" and getattr(full, name) <= getattr(default, name)
    ]
    assert [] == smaller
    assert full.sample_every < default.sample_every  # more chart points
    with pytest.raises(ValueError, match="fast or full"):
        Params.for_mode(fast=True, full=True)


def test_the_cli_passes_full_and_refuses_fast_with_full(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tipkit demo --full` asks run_demo for the full mode; with --fast it is a usage error."""
    asked: list[dict[str, object]] = []

    class Done:
        ok = True

    def fake_run_demo(**options: object) -> Done:
        asked.append(options)
        return Done()

    monkeypatch.setattr(tipkit._demo, "run_demo", fake_run_demo)
    assert 0 == main(["demo", "--full", "--no-live"])
    assert [True] == [options["full"] for options in asked]
    assert [False] == [options["fast"] for options in asked]
    with pytest.raises(SystemExit) as usage:
        main(["demo", "--full", "--fast"])
    assert 2 == usage.value.code
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.slow
def test_the_full_demo_tells_every_story() -> None:
    """The full mode runs end to end and shows what every scenario is there to show."""
    stream = io.StringIO()
    result = run_demo(full=True, chart=False, live=False, stream=stream)
    assert result.ok
    assert "full mode" in stream.getvalue()
    assert result.promotion.final_percent == 100.0


def test_python_dash_m_tipkit_has_the_demo_command() -> None:
    """`python -m tipkit demo --help` lists the demo's options."""
    done = subprocess.run(
        [sys.executable, "-m", "tipkit", "demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for option in ("--seed", "--fast", "--full", "--out", "--no-live"):
        assert option in done.stdout


def test_without_rich_and_matplotlib_it_runs_in_plain_text(plain: PlainRun) -> None:
    """Missing extras: plain output with the summary, no chart, and what to install."""
    assert ("rich", "matplotlib") == plain.result.missing
    assert plain.result.chart is None
    assert not plain.chart.exists()
    assert INSTALL_HINT in plain.text
    assert "No chart: matplotlib is not installed" in plain.text
    assert "scenario" in plain.text
    assert "rolled back at 1%" in plain.text
    assert plain.result.ok


def test_the_live_view_shows_progress_and_outcomes() -> None:
    """With rich, the live reporter draws bars and prints each outcome."""
    rich = load_rich()
    assert rich is not None
    stream = io.StringIO()
    with RichReporter(rich, live=True, stream=stream) as reporter:
        reporter.begin("k", "a scenario", 4)
        reporter.update("k", 2, "halfway")
        reporter.end("k", "it worked", ok=True)
        reporter.begin("x", "another", 1)
        reporter.end("x", "it did not", ok=False)
    text = stream.getvalue()
    assert "a scenario" in text
    assert "it worked" in text
    assert "✗" in text


def test_the_plain_reporter_prints_outcomes_only() -> None:
    """Without rich: a line per start and per outcome, nothing per update."""
    stream = io.StringIO()
    with PlainReporter(stream) as reporter:
        reporter.begin("k", "a scenario", 4)
        reporter.update("k", 2, "halfway")
        reporter.end("k", "it worked", ok=True)
        reporter.end("k", "it did not", ok=False)
    assert "a scenario ...\n  ok it worked\n  !! it did not\n" == stream.getvalue()


def test_plain_table_aligns_columns() -> None:
    """The plain summary table pads the first two columns."""
    text = plain_table([("a", "bb", "c"), ("dddd", "e", "f")], ("h1", "h2", "h3"))
    assert ["h1    h2  h3", "a     bb  c", "dddd  e   f"] == [
        line for line in text.splitlines() if not line.startswith("-")
    ]


def test_chaos_scenario_reacts_before_the_outage_and_spares_real_traffic() -> None:
    """Chaos on synthetic probes opens their breaker and fails the judge; no real call faulted."""
    from tipkit._demo._chaos import run_chaos
    from tipkit._demo._common import Params

    class Quiet:
        def begin(self, key: str, title: str, total: float) -> None: ...
        def update(self, key: str, completed: float, info: str) -> None: ...
        def end(self, key: str, info: str, *, ok: bool) -> None: ...

    result = run_chaos(2026, Params.for_mode(fast=True), Quiet())
    assert (True, 0) == (result.ok, result.real_faulted)
    assert result.probes_faulted > 0
