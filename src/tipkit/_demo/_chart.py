"""The timeline chart of ``tipkit demo``: one PNG, four panels, virtual time.

``matplotlib`` is in the ``demo`` extra and imported lazily. The chart is drawn
with the object-oriented API on an Agg canvas, never through ``pyplot``, so the
demo leaves the caller's matplotlib backend and global state alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tipkit._demo import DemoResult
    from tipkit._demo._scenarios import (
        CanaryResult,
        OutageResult,
        PromotionResult,
        RolloutPoint,
        ShadowResult,
    )

__all__ = ["available", "render"]

RED = "#d62728"
BLUE = "#1f77b4"
GREEN = "#2ca02c"
ORANGE = "#ff7f0e"
GREY = "#7f7f7f"
PURPLE = "#9467bd"
MIN_ARM = 100  # below this many requests an arm's error rate is mostly noise


def available() -> bool:
    """Return whether matplotlib can be imported."""
    try:
        import matplotlib as mpl  # noqa: PLC0415, F401  # optional: the demo extra
    except ImportError:
        return False
    return True


def render(result: DemoResult, path: Path) -> Path:
    """Draw the timeline of *result* into the PNG at *path*; return the path.

    Raises:
        ImportError: matplotlib is not installed.
        OSError: the file cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415  # optional
    from matplotlib.figure import Figure  # noqa: PLC0415  # optional

    fig = Figure(figsize=(15, 10), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    share = _rollout_panel(
        axes[0][0],
        result.canary.series,
        "1 · bad pricing change (errors 1% → 2.5%): canary rolled back",
    )
    _mark_rollback(axes[0][0], share, result.canary)
    share = _rollout_panel(
        axes[0][1],
        result.promotion.series,
        "2 · good change: promoted 5 → 25 → 50 → 100%",
    )
    _mark_passes(share, result.promotion)
    _outage_panel(axes[1][0], result.outage)
    _shadow_panel(axes[1][1], result.shadow)
    mode = "fast" if result.fast else "default"
    fig.suptitle(
        f"tipkit demo (seed {result.seed}, {mode} mode): a simulated service on a"
        " virtual clock",
        fontsize=14,
        fontweight="bold",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _minutes(points: tuple[RolloutPoint, ...]) -> list[float]:
    return [p.t / 60 for p in points]


def _rollout_panel(ax: Any, series: tuple[RolloutPoint, ...], title: str) -> Any:
    """Draw error rates per arm and the canary share; return the share's axis."""
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    canary = [p for p in series if p.canary >= MIN_ARM]
    control = [p for p in series if p.control >= MIN_ARM]
    ax.plot(
        _minutes(tuple(control)),
        [100 * p.control_errors / p.control for p in control],
        color=BLUE,
        label="error rate, control arm (old code)",
    )
    ax.plot(
        _minutes(tuple(canary)),
        [100 * p.canary_errors / p.canary for p in canary],
        color=RED,
        label="error rate, canary arm (new code)",
    )
    ax.set_xlabel("virtual minutes")
    ax.set_ylabel("error rate per arm, cumulative (%)")
    ax.set_ylim(0, 5)
    ax.grid(alpha=0.3)
    share = ax.twinx()
    t = _minutes(series)
    shares = [p.percent for p in series]
    if series and series[-1].percent == 0.0:
        # Show the rollback's drop to 0 % for a while after it happened.
        t.append(t[-1] * 1.04)
        shares.append(0.0)
    share.step(
        t,
        shares,
        where="post",
        color=GREY,
        linewidth=2.0,
        label="canary traffic share (right axis)",
    )
    share.set_yscale("symlog", linthresh=1.0)
    share.set_ylim(0, 400)
    share.set_yticks([0, 1, 5, 25, 50, 100])
    share.set_yticklabels(["0%", "1%", "5%", "25%", "50%", "100%"])
    share.minorticks_off()  # symlog's minor ticks read as an unlabelled stage
    share.set_ylabel("canary traffic share")
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = share.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, loc="upper left", fontsize=8)
    ax.set_zorder(share.get_zorder() + 1)
    ax.patch.set_visible(False)
    return share


def _mark_rollback(ax: Any, share: Any, canary: CanaryResult) -> None:
    change = next((c for c in canary.changes if c.action == "rolled_back"), None)
    if change is None:
        ax.text(0.5, 0.5, "not rolled back", transform=ax.transAxes, color=RED)
        return
    t = change.t / 60
    ax.axvline(t, color=RED, linestyle="--", linewidth=1.2)
    share.plot([t], [change.from_percent], marker="X", color=RED, markersize=12)
    lower = (
        ""
        if canary.lower is None
        else f"\njudge (99%): canary - control ≥ +{100 * canary.lower:.3f} pt > 0"
    )
    ax.annotate(
        f"FAIL → rolled back at {change.from_percent:g}% (stage {canary.stage})\n"
        f"after {canary.canary_requests:,} canary / {canary.control_requests:,}"
        f" control requests\nerror rate: canary {canary.canary_rate:.2%},"
        f" control {canary.control_rate:.2%}{lower}",
        xy=(t, 4.6),
        xytext=(-10, 0),
        textcoords="offset points",
        ha="right",
        va="top",
        fontsize=9,
        color=RED,
        bbox={"boxstyle": "round", "fc": "white", "ec": RED, "alpha": 0.9},
    )


def _mark_passes(share: Any, promotion: PromotionResult) -> None:
    for c in promotion.changes:
        t = c.t / 60
        share.plot([t], [c.to_percent], marker="o", color=GREEN, markersize=8)
        upper = "" if c.upper is None else f"\n< +{100 * c.upper:.2f} pt"
        share.annotate(
            f"PASS at {c.from_percent:g}%{upper}",
            xy=(t, c.to_percent),
            xytext=(-6, 4),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=8,
            color=GREEN,
        )


def _outage_panel(ax: Any, outage: OutageResult) -> None:
    ax.set_title(
        "3 · payments outage, traffic burst, failing flagged path",
        loc="left",
        fontsize=11,
        fontweight="bold",
    )
    bins = outage.bins
    width = bins[1].t - bins[0].t if len(bins) > 1 else 5.0
    t = [b.t / 60 for b in bins]
    ax.axvspan(
        outage.outage_start / 60,
        outage.outage_end / 60,
        color=RED,
        alpha=0.08,
        label="payments down",
    )
    ax.axvspan(
        outage.burst_start / 60,
        outage.burst_end / 60,
        color=ORANGE,
        alpha=0.12,
        label="traffic burst",
    )
    ax.step(
        t,
        [b.requests / width for b in bins],
        where="post",
        color=GREY,
        label="requests arriving /s",
    )
    ax.fill_between(
        t,
        [b.shed / width for b in bins],
        step="post",
        color=ORANGE,
        alpha=0.6,
        label="shed by the token bucket (429) /s",
    )
    ax.step(
        t,
        [b.downstream / width for b in bins],
        where="post",
        color=BLUE,
        label="calls reaching payments /s",
    )
    naive = [
        outage.attempts * b.requests / width
        if outage.outage_start <= b.t < outage.outage_end
        else None
        for b in bins
    ]
    ax.step(
        t,
        [float("nan") if v is None else v for v in naive],
        where="post",
        color=RED,
        linestyle=":",
        label=f"calls by a retry without breaker ({outage.attempts} attempts) /s",
    )
    top = max(max(b.requests for b in bins) / width, 1.0) * 1.3
    opened = [(s, e) for s, e in _open_spans(outage) if e > s]
    for i, (s, e) in enumerate(opened):
        ax.axvspan(
            s / 60,
            e / 60,
            ymin=0.93,
            ymax=1.0,
            color=RED,
            alpha=0.7,
            label="breaker open" if i == 0 else None,
        )
    if outage.kill_time is not None:
        k = outage.kill_time / 60
        ax.axvline(k, color=PURPLE, linestyle="--", linewidth=1.2)
        ax.annotate(
            f"tripwire kills checkout-v2\n(error rate {outage.kill_error_rate:.1%}"
            f" over {outage.kill_calls:,} calls)",
            xy=(k, top * 0.55),
            xytext=(-6, 0),
            textcoords="offset points",
            ha="right",  # left of the line: to its right the text ran off the axes
            fontsize=8,
            color=PURPLE,
            bbox={"fc": "white", "ec": "none", "alpha": 0.85},
        )
    ax.text(
        0.01,
        0.88,
        f"in the outage: {outage.outage_downstream_calls:,} calls reached payments"
        f" (a naive retry: {outage.naive_outage_calls:,})\n"
        f"burst: {outage.burst_shed:,} of {outage.burst_requests:,} requests shed",
        transform=ax.transAxes,
        fontsize=8,
        va="top",
        bbox={"boxstyle": "round", "fc": "white", "ec": GREY, "alpha": 0.9},
    )
    ax.set_ylim(0, top)
    ax.set_xlabel("virtual minutes")
    ax.set_ylabel("per second (5 s bins)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=7)


def _open_spans(outage: OutageResult) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for at, state in outage.breaker_transitions:
        if state in {"open", "forced_open"} and start is None:
            start = at
        elif state not in {"open", "forced_open"} and start is not None:
            spans.append((start, at))
            start = None
    if start is not None:
        spans.append((start, outage.bins[-1].t + 5.0))
    return spans


def _shadow_panel(ax: Any, shadow: ShadowResult) -> None:
    ax.set_title(
        "4 · shadow run of a pricing rewrite: where v2 disagrees with v1",
        loc="left",
        fontsize=11,
        fontweight="bold",
    )
    qty = list(shadow.by_qty)
    compared = [shadow.by_qty[q][0] for q in qty]
    disagreed = [shadow.by_qty[q][1] for q in qty]
    ax.bar(qty, compared, color=GREY, alpha=0.35, label="orders compared")
    ax.bar(qty, disagreed, color=RED, label="v2 disagrees with v1")
    for q, n, d in zip(qty, compared, disagreed, strict=True):
        if d:
            ax.annotate(
                f"{d}/{n}",
                xy=(q, max(n, d)),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                rotation=90,  # upright labels on neighbouring bars overlapped
                fontsize=7,
                color=RED,
            )
    causes = "\n".join(f"{n:,} x {c}" for c, n in shadow.causes.items())
    examples = "\n".join(str(m) for m in shadow.mismatches[:3])
    ax.text(
        0.98,
        0.97,
        f"{shadow.mismatched:,} of {shadow.sampled:,} compared orders disagree\n"
        f"(every caller got v1's price)\n{causes}\n\ne.g.\n{examples}",
        transform=ax.transAxes,
        fontsize=8,
        ha="right",
        va="top",
        family="monospace",
        bbox={"boxstyle": "round", "fc": "white", "ec": GREY, "alpha": 0.9},
    )
    ax.set_yscale("log")
    ax.set_ylim(0.7, max(compared) * 40)
    ax.set_xticks(qty)
    ax.set_xlabel("items in the order")
    ax.set_ylabel("orders (log)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", fontsize=8)
