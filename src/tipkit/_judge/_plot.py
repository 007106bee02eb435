"""Draw a rollout's PASS side: each check's upper bound closing in on its margin.

``plot_bounds(points, path)`` takes ``(canary requests, percent, verdict)``
samples, as a driver of a :class:`~tipkit.rollout.Rollout` collects them
(``rollout.status().verdict`` after each batch of requests), and writes a PNG.
``python -m tipkit._judge._plot docs/_static/rollout-bound.png`` draws the
picture in ``docs/rollouts.md`` from ``tipkit demo``'s good change (scenario
2, seed 1, default mode: fake clock, seeded). Needs matplotlib (the ``demo``
extra).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

from tipkit._judge._verdict import Verdict

__all__ = ["Point", "demo_points", "main", "plot_bounds"]

Point = tuple[int, float, Verdict]
"""``(canary requests so far, canary percent, the verdict then)``."""


def plot_bounds(points: Sequence[Point], path: str | Path, *, check: int = 0) -> Path:
    """Write a PNG of check *check*'s upper bound and margin over canary requests.

    Stage changes are vertical lines labelled with the new percent; the
    bound is drawn only where it is finite.
    """
    import matplotlib as mpl  # noqa: PLC0415  # optional: only to draw

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    xs, upper, lower, margin = [], [], [], []
    for n, _, v in points:
        r = v.checks[check]
        if math.isfinite(r.upper) and math.isfinite(r.margin):
            xs.append(n)
            upper.append(100 * r.upper)
            lower.append(100 * r.lower)
            margin.append(100 * r.margin)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    ax.plot(xs, upper, label="upper bound of (canary - control)", color="#1f77b4")
    ax.plot(xs, lower, label="lower bound", color="#9ecae1", linewidth=0.8)
    ax.plot(xs, margin, "--", label="pass margin", color="#d62728")
    ax.axhline(0.0, color="grey", linewidth=0.5)
    previous = None
    for n, pct, _ in points:
        if pct != previous:
            if previous is not None:
                ax.axvline(n, color="grey", linestyle=":", linewidth=0.8)
            ax.annotate(f"{pct:g}%", (n, 0.95), xycoords=("data", "axes fraction"))
        previous = pct
    name = points[0][2].checks[check].check.describe() if points else ""
    ax.set_xlabel("canary requests")
    ax.set_ylabel("percentage points")
    ax.set_title(f"{name}: a stage passes when the upper bound crosses the margin")
    top = max(margin, default=1.0) * 4
    ax.set_ylim(min(lower, default=-1.0) if lower else -1.0, top)
    ax.set_ylim(-top / 2, top)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def demo_points(seed: int = 1) -> list[Point]:
    """Return the bounds of ``tipkit demo``'s good change (scenario 2, default mode)."""
    import io  # noqa: PLC0415  # only to draw

    from tipkit._demo._common import Params  # noqa: PLC0415  # an upper layer
    from tipkit._demo._display import PlainReporter  # noqa: PLC0415
    from tipkit._demo._rollouts import run_good_rollout  # noqa: PLC0415

    result = run_good_rollout(
        seed, Params.for_mode(fast=False), PlainReporter(io.StringIO())
    )
    return list(result.bounds)


def main(argv: Sequence[str]) -> Path:
    """Draw the docs' picture from the demo's good change to ``argv[0]``."""
    target = Path(argv[0] if argv else "rollout-bound.png")
    return plot_bounds(demo_points(), target)


if __name__ == "__main__":  # pragma: no cover - draws the docs' picture
    sys.stdout.write(f"{main(sys.argv[1:])}\n")
