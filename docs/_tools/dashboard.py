"""Draw the generated Grafana dashboard's panels from a recorded run of the demo.

Run: python docs/_tools/dashboard.py [OUT_DIR]   (default: docs/_static)

Needs Debian's ``prometheus`` package (``prometheus`` and ``promtool``) and
matplotlib. No Grafana: the picture is drawn from the same queries Grafana runs.

1. **Record**: the demo's five scenarios (``tipkit demo``) run one after the other
   on their virtual clocks with tipkit's metrics going to a real OpenTelemetry SDK
   ``MeterProvider``. Whenever virtual time passes a scrape boundary
   (:data:`SCRAPE` seconds) the metrics are collected, as a Prometheus scrape of
   the Collector would, and written under the names the Collector's ``prometheus``
   exporter gives them (:func:`tipkit.telemetry._alerting.prometheus_name`).
2. **Store**: ``promtool tsdb create-blocks-from openmetrics`` turns the recording
   into TSDB blocks; a real ``prometheus`` serves them on loopback.
3. **Query**: every panel of ``tipkit telemetry grafana``'s dashboard is asked with
   its own PromQL (recording rules spelled out with their expressions, as
   Prometheus would have recorded them) over the whole run.
4. **Draw**: one matplotlib axes per panel, laid out as the dashboard's
   ``gridPos`` lays them out; ``dashboard.png``, and ``dashboard.json`` (the panels
   and queries drawn, with the number of series each returned:
   ``tests/test_dashboard_picture.py`` checks they are the generated dashboard's).
"""

from __future__ import annotations

import io
import json
import math
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from tipkit.telemetry import _alerting, _catalog  # noqa: E402

SCRAPE = 30.0
"""Seconds of virtual time between two scrapes."""
GAP = 600.0
"""Seconds of virtual time left between two scenarios on the timeline."""
BASE = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the recording's first second
READY_TIMEOUT = 120.0  # a loaded machine starts Prometheus slowly


def panel_spec() -> list[dict[str, Any]]:
    """The dashboard's panels as drawn: rows and panels, titles, units, queries."""
    out = []
    for panel in _alerting.grafana_dashboard()["panels"]:
        entry = {"type": panel["type"], "title": panel["title"]}
        if panel["type"] != "row":
            entry["unit"] = panel["fieldConfig"]["defaults"]["unit"]
            entry["gridPos"] = panel["gridPos"]
            entry["targets"] = [
                {"expr": t["expr"], "legendFormat": t["legendFormat"]}
                for t in panel["targets"]
            ]
        out.append(entry)
    return out


# ------------------------------------------------------------------- 1. record
class Recorder:
    """Scrapes the SDK's metrics at virtual-time boundaries into timestamped samples."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        # sample name -> labels -> [(timestamp, value)]
        self.series: dict[str, dict[tuple[tuple[str, str], ...], list[Any]]] = {}
        self.offset = 0.0
        self.now = 0.0  # the current scenario's furthest virtual time
        self.next_scrape = SCRAPE

    def seen(self, virtual: float) -> None:
        """A clock of the current scenario reads *virtual*: scrape what has passed."""
        if virtual <= self.now:
            return
        self.now = virtual
        while self.next_scrape <= self.now:
            self.scrape(self.offset + self.next_scrape)
            self.next_scrape += SCRAPE

    def next_scenario(self) -> None:
        """Put the next scenario after this one (and a gap) on the timeline."""
        self.scrape(self.offset + self.now)
        self.offset += math.ceil((self.now + GAP) / SCRAPE) * SCRAPE
        self.now = 0.0
        self.next_scrape = SCRAPE

    def scrape(self, at: float) -> None:
        """Collect every metric now and file its points at virtual second *at*."""
        data = self.reader.get_metrics_data()
        if data is None:
            return
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    spec = _catalog.METRICS.get(metric.name)
                    if spec is None:
                        continue
                    base = _alerting.prometheus_name(metric.name, spec)
                    for point in metric.data.data_points:
                        labels = tuple(
                            sorted(
                                (_alerting.label(k), str(v))
                                for k, v in point.attributes.items()
                            )
                        )
                        if spec.kind == "histogram":
                            self._histogram(base, labels, point, at)
                        else:
                            self._add(base, labels, at, float(point.value))

    def _histogram(
        self, base: str, labels: tuple[tuple[str, str], ...], point: Any, at: float
    ) -> None:
        running = 0
        bounds = [*point.explicit_bounds, math.inf]
        for bound, count in zip(bounds, point.bucket_counts, strict=True):
            running += count
            le = "+Inf" if math.isinf(bound) else repr(float(bound))
            self._add(f"{base}_bucket", (*labels, ("le", le)), at, float(running))
        self._add(f"{base}_sum", labels, at, float(point.sum))
        self._add(f"{base}_count", labels, at, float(point.count))

    def _add(
        self, name: str, labels: tuple[tuple[str, str], ...], at: float, value: float
    ) -> None:
        points = self.series.setdefault(name, {}).setdefault(labels, [])
        if not points or points[-1][0] < at:
            points.append((at, value))

    def openmetrics(self) -> str:
        """The recording as OpenMetrics text (one family after another, ``# EOF``)."""
        out = io.StringIO()
        for name in sorted(self.series):
            out.write(f"# TYPE {name} unknown\n")
            for labels, points in sorted(self.series[name].items()):
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                for at, value in points:
                    out.write(f"{name}{{{text}}} {value!r} {BASE + at:.3f}\n")
        out.write("# EOF\n")
        return out.getvalue()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@contextmanager
def _watching_clocks(recorder: Recorder) -> Iterator[None]:
    """Tell *recorder* whenever any FakeClock moves (the demo's clocks are FakeClocks)."""
    from tipkit.testing import FakeClock

    saved = {name: getattr(FakeClock, name) for name in ("advance", "sleep")}

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        def moved(self: FakeClock, *args: Any, **kwargs: Any) -> Any:
            result = method(self, *args, **kwargs)
            recorder.seen(self.monotonic())
            return result

        return moved

    for name, method in saved.items():
        setattr(FakeClock, name, wrap(method))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(FakeClock, name, method)


def record(seed: int) -> tuple[Recorder, list[tuple[str, float, float]]]:
    """Run the demo's scenarios with the SDK; return the recording and their spans."""
    from tipkit._demo import (
        run_bad_canary,
        run_chaos,
        run_good_rollout,
        run_outage,
        run_shadow,
    )
    from tipkit._demo._common import Params
    from tipkit._demo._display import PlainReporter
    from tipkit.telemetry import instrument, uninstrument

    recorder = Recorder()
    instrument(meter_provider=recorder.provider)
    params = Params.for_mode(fast=False)
    reporter = PlainReporter(io.StringIO())
    scenarios = []
    state = random.getstate()
    random.seed(seed)
    try:
        with _watching_clocks(recorder):
            for title, run in (
                ("bad canary", run_bad_canary),
                ("good rollout", run_good_rollout),
                ("outage", run_outage),
                ("shadow", run_shadow),
                ("chaos", run_chaos),
            ):
                start = recorder.offset
                run(seed, params, reporter)
                scenarios.append((title, start, recorder.offset + recorder.now))
                recorder.next_scenario()
    finally:
        random.setstate(state)
        uninstrument()
        recorder.provider.shutdown()
    return recorder, scenarios


# -------------------------------------------------------------------- 2. store
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def prometheus(openmetrics: str) -> Iterator[str]:
    """Serve the recording from a real Prometheus on loopback; yield its URL."""
    with tempfile.TemporaryDirectory(prefix="tipkit-dashboard-") as tmp:
        work = Path(tmp)
        (work / "data.om").write_text(openmetrics)
        (work / "prometheus.yml").write_text("global: {}\n")
        subprocess.run(
            [
                "promtool",
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                str(work / "data.om"),
                str(work / "tsdb"),
            ],
            check=True,
            capture_output=True,
        )
        port = _free_port()
        server = subprocess.Popen(  # noqa: S603  # our own argv
            [
                "prometheus",
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, server)
            yield url
        finally:
            server.terminate()
            server.wait(READY_TIMEOUT)


def _wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prometheus exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as response:  # noqa: S310  # loopback
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)  # a tool, not a test: poll the server until it is up
    raise TimeoutError("prometheus did not become ready")


# -------------------------------------------------------------------- 3. query
def spelled_out(expr: str) -> str:
    """Replace recording-rule names in *expr* with their expressions."""
    for rule in _alerting.recording_rules(_alerting.AlertOptions()):
        expr = re.sub(
            rf"(?<![\w:]){re.escape(rule['record'])}(?![\w:])",
            f"({rule['expr']})",
            expr,
        )
    return expr


def query_range(url: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    """Run *expr* over [start, end] (virtual seconds) at the scrape step."""
    params = urllib.parse.urlencode(
        {
            "query": spelled_out(expr),
            "start": BASE + start,
            "end": BASE + end,
            "step": SCRAPE,
        }
    )
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=60) as r:  # noqa: S310  # loopback
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}: {body}")
    return list(body["data"]["result"])


def legend(template: str, metric: dict[str, str]) -> str:
    """Grafana's ``{{label}}`` legend templating."""
    return re.sub(
        r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), template
    )


# --------------------------------------------------------------------- 4. draw
_SCALE = {"percentunit": (100.0, "%"), "percent": (1.0, "%"), "reqps": (1.0, "/s")}


def draw(
    results: list[tuple[dict[str, Any], list[list[dict[str, Any]]]]],
    scenarios: list[tuple[str, float, float]],
    path: Path,
) -> None:
    """Lay the panels out as the dashboard's ``gridPos`` does; write a PNG."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p, _ in results)
    fig = plt.figure(figsize=(16, rows * 0.45))
    grid = fig.add_gridspec(rows, 24, hspace=0.9, wspace=1.6)
    for panel in _alerting.grafana_dashboard()["panels"]:
        if panel["type"] == "row":
            header = fig.add_subplot(grid[panel["gridPos"]["y"], :])
            header.axis("off")
            header.text(0, 0, panel["title"], fontsize=13, fontweight="bold")
    end = scenarios[-1][2] / 60
    for panel, per_target in results:
        _draw_panel(fig, grid, panel, per_target, scenarios, end)
    fig.text(
        0.5,
        0.06,
        "minutes of virtual time: the demo's five scenarios one after another "
        "(shaded in turn), scraped every 30 s; queried from a real Prometheus",
        ha="center",
        fontsize=9,
    )
    fig.savefig(path, dpi=72, bbox_inches="tight")
    plt.close(fig)


def _draw_panel(  # noqa: PLR0913  # one panel's inputs
    fig: Any,
    grid: Any,
    panel: dict[str, Any],
    per_target: list[list[dict[str, Any]]],
    scenarios: list[tuple[str, float, float]],
    end: float,
) -> None:
    import matplotlib as mpl

    pos = panel["gridPos"]
    ax = fig.add_subplot(
        grid[pos["y"] + 1 : pos["y"] + pos["h"], pos["x"] : pos["x"] + pos["w"]]
    )
    unit = panel["fieldConfig"]["defaults"]["unit"]
    scale, suffix = _SCALE.get(unit, (1.0, ""))
    if unit == "s":
        scale, suffix = 1000.0, " ms"
    for i, (title, start, stop) in enumerate(scenarios):
        if i % 2:
            ax.axvspan(start / 60, stop / 60, color="#eeeeee", zorder=0)
        ax.text(
            (start + stop) / 120,
            0.02,
            title,
            fontsize=6,
            color="#777777",
            ha="center",
            va="bottom",
            transform=ax.get_xaxis_transform(),
        )
    drawn = 0
    for target, series in zip(panel["targets"], per_target, strict=True):
        template = target["legendFormat"]
        for s in sorted(series, key=lambda s: legend(template, s["metric"])):
            ax.plot(
                [(float(t) - BASE) / 60 for t, _ in s["values"]],
                [float(v) * scale for _, v in s["values"]],
                linewidth=1.2,
                label=legend(template, s["metric"]).strip() or "all",
            )
            drawn += 1
    ax.set_title(panel["title"], fontsize=10, loc="left")
    ax.tick_params(labelsize=7)
    ax.set_xlim(0, end)
    ax.yaxis.set_major_formatter(
        mpl.ticker.FuncFormatter(lambda v, _, suffix=suffix: f"{v:g}{suffix}")
    )
    if drawn == 0:
        ax.text(
            0.5,
            0.5,
            "no data in this run",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="#888888",
        )
    else:
        ax.legend(
            fontsize=6, loc="best", frameon=False, ncols=2 if drawn > 4 else 1
        )


def main(out_dir: Path, seed: int = 7) -> int:
    """Record, store, query and draw; write ``dashboard.png`` and ``dashboard.json``."""
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        print("needs prometheus and promtool (apt-get install prometheus)")
        return 2
    recorder, scenarios = record(seed)
    end = scenarios[-1][2]
    results = []
    with prometheus(recorder.openmetrics()) as url:
        for panel in _alerting.grafana_dashboard()["panels"]:
            if panel["type"] == "row":
                continue
            results.append(
                (
                    panel,
                    [query_range(url, t["expr"], 0.0, end) for t in panel["targets"]],
                )
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    draw(results, scenarios, out_dir / "dashboard.png")
    drawn = {p["title"]: sum(len(s) for s in series) for p, series in results}
    spec = panel_spec()
    for entry in spec:
        if entry["type"] != "row":
            entry["series_drawn"] = drawn[entry["title"]]
    (out_dir / "dashboard.json").write_text(
        json.dumps(
            {
                "seed": seed,
                "scrape_seconds": SCRAPE,
                "scenarios": scenarios,
                "panels": spec,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out_dir / 'dashboard.png'} and dashboard.json")
    return 0


if __name__ == "__main__":
    sys.exit(
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "_static")
    )
