"""``tipkit demo``: all of tipkit at work on a simulated service, in one command.

::

    from tipkit._demo import run_demo
    result = run_demo(seed=2026, fast=True, out="timeline.png", live=False)
    assert result.canary.early and result.promotion.final_percent == 100

Five scenarios run on virtual clocks (:class:`~tipkit.testing.FakeClock`: hours
of traffic in seconds of real time, nothing sleeps), each from a seeded random
generator, so the same seed always gives the same numbers:

1. a canary of a pricing change that raises errors from 1 % to 2.5 % is rolled
   back automatically by the rollout's judge at an early stage;
2. a good change is promoted 5 → 25 → 50 → 100 %, each stage on evidence;
3. a payments outage trips a circuit breaker (retries outside it do not hammer
   the dependency), a token bucket sheds a burst, and a tripwire kills the flag
   of a failing code path;
4. a shadow experiment finds the inputs where rewritten pricing code disagrees;
5. latency injected into payments for synthetic probes only (a flag-gated fault)
   opens the probes' breaker and fails the judge before a real slowdown arrives.

``rich`` (the live view and the summary table) and ``matplotlib`` (the timeline
chart) come with ``pip install 'tipkit[demo]'``; without them the demo prints
plain text and says so.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tipkit._demo import _chart, _display
from tipkit._demo._chaos import ChaosResult, run_chaos
from tipkit._demo._scenarios import (
    CanaryResult,
    OutageResult,
    Params,
    PromotionResult,
    ShadowResult,
    run_bad_canary,
    run_good_rollout,
    run_outage,
    run_shadow,
)
from tipkit.clock import SYSTEM_CLOCK
from tipkit.ops._demo_end import run_ending

__all__ = [
    "DEFAULT_OUT",
    "DEFAULT_SEED",
    "CanaryResult",
    "ChaosResult",
    "DemoResult",
    "OutageResult",
    "PromotionResult",
    "ShadowResult",
    "run_demo",
]

DEFAULT_SEED = 2026
"""The seed used when none is given: the numbers in the docs come from it."""

DEFAULT_OUT = Path("tipkit-demo-timeline.png")
"""Where the chart goes by default (a directory given as ``out`` gets this name)."""

_SHOWN_MISMATCHES = 5


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What one run of the demo showed.

    Equal results mean equal numbers: the chart's path, the missing extras and
    the real time taken are left out of comparisons.

    Attributes:
        seed: the seed of every random draw.
        fast: the fast (smaller traffic) mode was used.
        canary: scenario 1, the bad change rolled back.
        promotion: scenario 2, the good change promoted.
        outage: scenario 3, breaker, retries, token bucket and tripwire.
        shadow: scenario 4, the shadow experiment.
        chaos: scenario 5, flag-gated fault injection on synthetic probes
            (``None`` for results built without it).
        chart: the PNG written, or ``None`` (matplotlib missing, or not asked).
        missing: the optional packages that were not installed.
        seconds: real seconds the run took.
    """

    seed: int
    fast: bool
    canary: CanaryResult
    promotion: PromotionResult
    outage: OutageResult
    shadow: ShadowResult
    chaos: ChaosResult | None = None
    chart: Path | None = field(default=None, compare=False)
    missing: tuple[str, ...] = field(default=(), compare=False)
    seconds: float = field(default=0.0, compare=False)

    @property
    def ok(self) -> bool:
        """Whether every scenario showed what it is there to show."""
        o = self.outage
        return (
            self.canary.early
            and self.promotion.final_percent == 100.0
            and o.breaker_opened
            and o.outage_downstream_calls < o.naive_outage_calls
            and o.burst_shed > 0
            and o.flag_killed
            and self.shadow.mismatched > 0
            and (self.chaos is None or self.chaos.ok)
        )

    def summary_rows(self) -> list[tuple[str, str, str]]:
        """Return ``(scenario, outcome, numbers)`` rows for the summary table."""
        c, p, o, s = self.canary, self.promotion, self.outage, self.shadow
        canary = (
            f"rolled back at {c.rolled_back_at:g}% (stage {c.stage} of 5)"
            if c.rolled_back_at is not None
            else f"NOT rolled back ({c.status})"
        )
        return [
            (
                "1 bad canary (1% → 2.5% errors)",
                canary,
                (
                    f"after {c.canary_requests:,} canary / {c.control_requests:,}"
                    f" control requests; canary {c.canary_rate:.2%} vs control"
                    f" {c.control_rate:.2%}; {c.virtual_seconds / 60:,.0f} virtual min"
                ),
            ),
            (
                "2 good change",
                " → ".join(f"{x:g}" for x in p.percents) + f"% ({p.status})",
                (
                    f"{p.requests:,} requests, {p.virtual_seconds / 3600:.1f} virtual"
                    " hours; each stage passed when its upper bound crossed the margin"
                    " (< +0.5 pt errors)"
                ),
            ),
            (
                "3a payments outage",
                "breaker opened" if o.breaker_opened else "breaker did NOT open",
                (
                    f"{o.outage_downstream_calls:,} calls reached payments during the"
                    f" outage for {o.outage_requests:,} requests (retry without"
                    f" breaker: {o.naive_outage_calls:,}); {o.fast_failures:,} failed"
                    " fast"
                ),
            ),
            (
                "3b traffic burst",
                f"{o.burst_shed:,} requests shed",
                (
                    f"of {o.burst_requests:,} in a {o.burst_end - o.burst_start:g}s"
                    f" burst at {o.burst_requests / (o.burst_end - o.burst_start):g}/s"
                    f" (token bucket: 50/s, bursts of 100); {o.shed:,} shed in all"
                ),
            ),
            (
                "3c failing flagged path",
                "checkout-v2 killed" if o.flag_killed else "flag NOT killed",
                (
                    f"by the tripwire at {o.kill_time / 60:.1f} virtual min:"
                    f" {o.kill_error_rate:.1%} errors over {o.kill_calls:,} calls;"
                    f" {o.v2_failures:,} requests hit the bug"
                )
                if o.kill_time is not None and o.kill_error_rate is not None
                else "",
            ),
            (
                "4 shadow experiment",
                f"{s.mismatched:,} mismatches found",
                f"of {s.sampled:,} orders compared ({s.calls:,} priced, all served v1); "
                + "; ".join(f"{n:,} x {cause}" for cause, n in s.causes.items()),
            ),
            *self._chaos_rows(),
        ]

    def _chaos_rows(self) -> list[tuple[str, str, str]]:
        x = self.chaos
        if x is None:
            return []
        reacted = (
            f"probes' breaker opened at {x.breaker_opened_at:.0f}s"
            if x.breaker_opened_at is not None
            else "probes' breaker did NOT open"
        )
        judged = (
            f"judge failed the probes at {x.judge_failed_at:.0f}s"
            if x.judge_failed_at is not None
            else "judge did NOT fail the probes"
        )
        return [
            (
                "5 chaos on synthetic probes",
                reacted,
                (
                    f"{judged}, before the real slowdown at {x.outage_at:.0f}s;"
                    f" {x.probes_faulted:,} of {x.probes:,} probes got injected"
                    f" latency, {x.real_faulted:,} of {x.real:,} real requests did"
                ),
            )
        ]


@contextmanager
def _seeded_global_random(seed: int) -> Iterator[None]:
    # Each retry seeds its own jitter from the random module when it is built;
    # seed it for repeatable runs and give the caller back the state it had.
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _chart_path(out: str | os.PathLike[str] | None) -> Path:
    if out is None:
        return DEFAULT_OUT
    path = Path(out)
    if path.is_dir() or str(out).endswith(("/", os.sep)):
        return path / DEFAULT_OUT.name
    return path


def run_demo(
    seed: int = DEFAULT_SEED,
    *,
    fast: bool = False,
    full: bool = False,
    out: str | os.PathLike[str] | None = None,
    live: bool = True,
    chart: bool = True,
    stream: TextIO | None = None,
) -> DemoResult:
    """Run the five scenarios, show them, write the chart; return the numbers.

    Args:
        seed: seeds every random draw: the same seed gives the same numbers.
        fast: smaller traffic where the story allows it (the test suite).
        full: a bigger population, longer stages and outage, more orders
            (``tipkit demo --full``): about 1.5 times the default's CPU.
        out: the chart's PNG path, or a directory to put
            ``tipkit-demo-timeline.png`` in (default: the current directory).
        live: show a live progress view (needs ``rich``); ``False`` prints the
            outcomes only (logs, CI, tests).
        chart: write the chart (needs ``matplotlib``).
        stream: where the text goes (default ``sys.stdout``).

    Runs in the calling thread on virtual clocks (rich's live view refreshes
    from its own thread). Temporarily seeds the :mod:`random` module and
    restores its state afterwards; registers event listeners for the run only.

    Raises:
        OSError: the chart could not be written.
        ValueError: both *fast* and *full*.
    """
    started = SYSTEM_CLOCK.monotonic()
    rich = _display.load_rich()
    has_mpl = _chart.available()
    missing = tuple(
        name
        for name, there in (("rich", rich is not None), ("matplotlib", has_mpl))
        if not there
    )
    reporter: _display.RichReporter | _display.PlainReporter
    if rich is not None:
        reporter = _display.RichReporter(rich, live=live, stream=stream)
    else:
        reporter = _display.PlainReporter(stream)
    params = Params.for_mode(fast=fast, full=full)
    mode = "fast mode" if fast else "full mode" if full else "default mode"
    reporter.print(
        f"tipkit demo: a simulated pricing and checkout service on a virtual clock"
        f" (seed {seed}, {mode})"
    )
    if missing:
        reporter.print(
            f"note: {' and '.join(missing)} not installed: plain output"
            + (", no chart" if not has_mpl else "")
            + f". For the live display and the chart: {_display.INSTALL_HINT}"
        )
    with _seeded_global_random(seed), reporter:
        canary = run_bad_canary(seed, params, reporter)
        promotion = run_good_rollout(seed, params, reporter)
        outage = run_outage(seed, params, reporter)
        shadow = run_shadow(seed, params, reporter)
        chaos = run_chaos(seed, params, reporter)
    reporter.print("\nThe operator's view: automatic actions, then a kill from the CLI")
    reporter.print(run_ending(seed))
    result = DemoResult(seed, fast, canary, promotion, outage, shadow, chaos)
    chart_path: Path | None = None
    if chart and has_mpl:
        chart_path = _chart.render(result, _chart_path(out))
    result = DemoResult(
        seed,
        fast,
        canary,
        promotion,
        outage,
        shadow,
        chaos,
        chart=chart_path,
        missing=missing,
        seconds=SYSTEM_CLOCK.monotonic() - started,
    )
    _summarise(result, reporter, rich)
    return result


def _summarise(
    result: DemoResult,
    reporter: _display.RichReporter | _display.PlainReporter,
    rich: Any,
) -> None:
    rows = result.summary_rows()
    headers = ("scenario", "outcome", "numbers")
    shown = result.shadow.mismatches[:_SHOWN_MISMATCHES]
    if rich is not None:
        table = rich.table.Table(
            title=f"tipkit demo: summary (seed {result.seed})", show_lines=True
        )
        table.add_column(headers[0], style="bold", no_wrap=True)
        table.add_column(headers[1], style="cyan")
        table.add_column(headers[2])
        for row in rows:
            table.add_row(*row)
        reporter.print(table)
    else:
        reporter.print()
        reporter.print(_display.plain_table(rows, headers))
    reporter.print()
    reporter.print(f"Inputs where pricing v2 disagrees with v1 (first {len(shown)}):")
    for m in shown:
        reporter.print(f"  {m}")
    if result.chart is not None:
        reporter.print(f"\nTimeline chart written to {result.chart}")
    elif "matplotlib" in result.missing:
        reporter.print(
            f"\nNo chart: matplotlib is not installed ({_display.INSTALL_HINT})"
        )
    verdict = (
        "every scenario showed what it should" if result.ok else "SOMETHING IS OFF"
    )
    reporter.print(f"Done in {result.seconds:.1f}s of real time: {verdict}.")
