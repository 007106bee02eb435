"""Draw a rollout's PASS side: each check's upper bound closing in on its margin.

``plot_bounds(points, path)`` takes ``(canary requests, percent, verdict)``
samples, as a driver of a :class:`~tipkit.rollout.Rollout` collects them
(``rollout.status().verdict`` after each batch of requests), and writes a PNG.
``python -m tipkit._judge._plot docs/_static/rollout-bound.png`` draws the
picture in ``docs/rollouts.md`` from a simulated good change (seeded, fake
clock). Needs matplotlib (the ``demo`` extra).
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from tipkit._judge._verdict import Verdict

__all__ = ["Point", "plot_bounds", "simulate_good_change"]

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
        if previous is not None and pct != previous:
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


def simulate_good_change(
    seed: int = 1, *, requests: int = 400_000, every: int = 250
) -> list[Point]:
    """Roll out a change as good as the old code (1 % errors) through 5, 25, 50, 100 %."""
    from tipkit.flags import Flags, InMemoryProvider  # noqa: PLC0415  # upper layers
    from tipkit.rollout import ErrorRateCheck, Rollout  # noqa: PLC0415
    from tipkit.stores import MemoryStore  # noqa: PLC0415
    from tipkit.testing import FakeClock  # noqa: PLC0415

    clock = FakeClock()
    flags = Flags(InMemoryProvider(), store=MemoryStore(clock=clock), clock=clock)
    rollout = Rollout(
        "good-change",
        flags=flags,
        stages=[5, 25, 50, 100],
        min_samples=1_000,
        min_stage_duration=60.0,
        checks=[ErrorRateCheck()],
        clock=clock,
    )
    rng = random.Random(seed)  # noqa: S311  # a simulation
    canary = 0
    points: list[Point] = []
    for i in range(requests):
        with rollout.observe(f"u{rng.getrandbits(48)}") as arm:
            clock.advance(0.01)
            canary += arm.is_canary
            if rng.random() < 0.01:
                arm.fail()
        if i % every == 0 or rollout.percent >= 100:
            v = rollout.status().verdict
            if v is not None:
                points.append((canary, rollout.percent, v))
            if rollout.percent >= 100:
                break
    return points


if __name__ == "__main__":  # pragma: no cover - draws the docs' picture
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "rollout-bound.png")
    sys.stdout.write(f"{plot_bounds(simulate_good_change(), target)}\n")
