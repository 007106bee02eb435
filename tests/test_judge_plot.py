"""The docs' picture of a stage's bound crossing its margin, drawn from the demo's data."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from tipkit._judge._plot import demo_points, main

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_the_script_draws_the_picture_from_the_demo(tmp_path: Path) -> None:
    """`python -m tipkit._judge._plot PATH` writes a PNG; the committed one exists."""
    out = main([str(tmp_path / "bound.png")])
    assert PNG_MAGIC == out.read_bytes()[:8]
    assert out.stat().st_size > 20_000
    committed = ROOT / "docs" / "_static" / "rollout-bound.png"
    assert PNG_MAGIC == committed.read_bytes()[:8]
    assert "rollout-bound.png" in (ROOT / "docs" / "rollouts.md").read_text()


def test_the_demo_points_show_each_stage_passing_below_its_margin() -> None:
    """At each stage change, the verdict before it had the upper bound below the margin."""
    points = demo_points()
    changes = [
        (before, after)
        for before, after in itertools.pairwise(points)
        if after[1] != before[1]
    ]
    assert [25.0, 50.0, 100.0] == [after[1] for _, after in changes]
    for before, _ in changes:
        r = before[2].checks[0]
        assert math.isfinite(r.upper)
        assert r.margin > 0.0
    # The last sample of each stage is near the crossing: within 0.1 pt above
    # or already below it.
    assert all(
        before[2].checks[0].upper < before[2].checks[0].margin + 0.001
        for before, _ in changes
    )
