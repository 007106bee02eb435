"""docs/_static/dashboard.png is the generated Grafana dashboard, drawn from real data.

``docs/_tools/dashboard.py`` records the demo's metrics through the real SDK, stores
them with ``promtool``, queries every panel from a real Prometheus and draws them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PROMTOOL = shutil.which("promtool")
STALE = "stale: run python docs/_tools/dashboard.py and commit docs/_static/dashboard.*"


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    """The drawing script, loaded as a module (nothing runs at import)."""
    spec = importlib.util.spec_from_file_location(
        "dashboard_tool", DOCS / "_tools/dashboard.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _without_counts(panels: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in p.items() if k != "series_drawn"} for p in panels]


def test_dashboard_picture_is_current(tool: ModuleType) -> None:
    """The committed picture shows the panels and queries the generator makes now."""
    committed = json.loads((DOCS / "_static/dashboard.json").read_text())
    fresh = json.loads(json.dumps(tool.panel_spec()))
    assert fresh == _without_counts(committed["panels"]), STALE
    assert (DOCS / "_static/dashboard.png").stat().st_size > 50_000


def test_most_panels_drew_data(tool: ModuleType) -> None:
    """Every panel the demo exercises drew series (the picture is not empty axes)."""
    committed = json.loads((DOCS / "_static/dashboard.json").read_text())
    empty = [
        p["title"]
        for p in committed["panels"]
        if p["type"] != "row" and p["series_drawn"] == 0
    ]
    # The demo has no flag that errs and calls nothing through traced().
    assert ["Flag errors", "traced() p99 latency"] == empty


def test_recording_rules_are_spelled_out(tool: ModuleType) -> None:
    """A panel reading a recording rule is asked with the rule's own expression."""
    rule = "tipkit:ratelimit_rejected:ratio_rate5m"
    expr = tool.spelled_out(f"{rule} > 0.05")
    assert (False, True) == (rule in expr, expr.startswith("(sum by"))


def test_legend_templating(tool: ModuleType) -> None:
    """Grafana's {{label}} legends are filled from a series' labels."""
    assert "api rejected" == tool.legend(
        "{{tipkit_ratelimit_name}} {{ tipkit_result }}",
        {"tipkit_ratelimit_name": "api", "tipkit_result": "rejected"},
    )


@pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"),
    reason="promtool (Debian package prometheus) is not installed",
)
def test_recording_is_openmetrics_promtool_stores(
    tool: ModuleType, tmp_path: Path
) -> None:
    """A recorded run of a limiter on a fake clock is stored by the real promtool."""
    from tipkit.ratelimit import TokenBucket
    from tipkit.telemetry import instrument, uninstrument
    from tipkit.testing import FakeClock

    recorder = tool.Recorder()
    instrument(meter_provider=recorder.provider)
    try:
        clock = FakeClock()
        bucket = TokenBucket("pictured", rate=1.0, capacity=2, clock=clock)
        with tool._watching_clocks(recorder):  # the tool's own hook
            for _ in range(240):
                bucket.try_acquire()
                clock.advance(0.5)
    finally:
        uninstrument()
        recorder.provider.shutdown()
    text = recorder.openmetrics()
    (tmp_path / "data.om").write_text(text)
    assert PROMTOOL is not None
    done = subprocess.run(  # noqa: S603  # a fixed tool and our own files
        [
            PROMTOOL,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(tmp_path / "data.om"),
            str(tmp_path / "tsdb"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    acquired = recorder.series["tipkit_ratelimit_requests_total"]
    assert 0 == done.returncode, done.stderr
    assert 4 == len(next(iter(acquired.values())))  # 120 s of virtual time / 30 s
    assert text.endswith("# EOF\n")
