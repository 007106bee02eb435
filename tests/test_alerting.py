"""Generated alerts, dashboard and Collector config: checked with promtool and the SDK."""
# ruff: noqa: E501  # promtool series selectors read best on one line

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    InMemoryMetricReader,
    Sum,
)

from tipkit._cli import main
from tipkit.breaker import CircuitBreaker
from tipkit.flags import Flags
from tipkit.ratelimit import TokenBucket
from tipkit.telemetry import _alerting, _catalog, instrument, traced, uninstrument
from tipkit.telemetry._alerting import (
    AlertOptions,
    collector_config,
    exported_series,
    expression_metrics,
    grafana_dashboard,
    prometheus_name,
    prometheus_rules,
)

PROMTOOL = shutil.which("promtool")
# Under CI=true a missing promtool fails the tests instead of skipping them.
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"),
    reason="promtool (Debian package prometheus) is not installed",
)


def _rules_file(tmp_path: Path, options: AlertOptions | None = None) -> Path:
    path = tmp_path / "tipkit-rules.yml"
    path.write_text(yaml.safe_dump(prometheus_rules(options), sort_keys=False))
    return path


def _all_rule_exprs(options: AlertOptions | None = None) -> list[str]:
    return [r["expr"] for g in prometheus_rules(options)["groups"] for r in g["rules"]]


def _panel_exprs() -> list[str]:
    return [
        t["expr"] for p in grafana_dashboard()["panels"] for t in p.get("targets", [])
    ]


# --------------------------------------------------------------------- names


def test_prometheus_names_follow_the_collector_translation() -> None:
    """Counters get _total, seconds and percent units a suffix, a unit-1 gauge _ratio."""
    assert "tipkit_breaker_calls_total" == prometheus_name("tipkit.breaker.calls")
    assert "tipkit_call_duration_seconds" == prometheus_name("tipkit.call.duration")
    assert "tipkit_rollout_stage_percent" == prometheus_name("tipkit.rollout.stage")
    assert "tipkit_breaker_state_ratio" == prometheus_name("tipkit.breaker.state")
    assert "tipkit_ratelimit_tokens" == prometheus_name("tipkit.ratelimit.tokens")
    assert "tipkit_bulkhead_active" == prometheus_name("tipkit.bulkhead.active")


def _sdk_series_names() -> set[str]:
    """Run real primitives under the SDK; translate what it exports, catalog aside."""
    reader = InMemoryMetricReader()
    instrument(meter_provider=MeterProvider(metric_readers=[reader]))
    try:
        flags = Flags.from_dict(
            {"flags": {"f": {"variants": {"on": True}, "default_variant": "on"}}}
        )
        flags.get("f", "u", default=False)
        breaker = CircuitBreaker("alert-test")
        breaker.call(lambda: 1)
        TokenBucket("alert-test", rate=1.0, capacity=1.0).try_acquire()
        traced("alert-test")(lambda: 1)()
        data = reader.get_metrics_data()
    finally:
        uninstrument()
    assert data is not None
    units = {"s": "_seconds", "%": "_percent"}
    names: set[str] = set()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name not in _catalog.METRICS:
                    continue  # a registry counter outside the catalog (default export)
                base = m.name.replace(".", "_")
                suffix = units.get(m.unit or "", "")
                if isinstance(m.data, Gauge) and m.unit == "1":
                    suffix = "_ratio"
                base += suffix
                if isinstance(m.data, Sum) and m.data.is_monotonic:
                    names.add(base + "_total")
                elif isinstance(m.data, Histogram):
                    names.update(base + s for s in ("_bucket", "_sum", "_count"))
                else:
                    names.add(base)
    return names


def test_catalog_names_match_what_the_sdk_exports() -> None:
    """Every catalogued series a real SDK run exports is named as the catalog predicts."""
    sdk = _sdk_series_names()
    assert len(sdk) >= 5, sdk
    assert set() == sdk - exported_series()


def test_every_rule_and_panel_reads_only_exported_metrics() -> None:
    """No rule or panel names a metric the catalog does not export."""
    exported = exported_series()
    used: set[str] = set()
    for expr in _all_rule_exprs() + _panel_exprs():
        used |= expression_metrics(expr)
    assert used, "no metric found in the expressions"
    assert set() == used - exported


def test_dashboard_covers_flags_breakers_limiters_and_rollouts() -> None:
    """The dashboard has a row per primitive, canary vs control, and valid panel ids."""
    dashboard = grafana_dashboard()
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert [
        "Flags",
        "Circuit breakers",
        "Rate limiters",
        "Rollouts",
        "State changes and latency",
    ] == rows
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    canary = [
        t for p in dashboard["panels"] if "canary" in p["title"] for t in p["targets"]
    ]
    assert canary
    assert "tipkit_rollout_arm" in canary[0]["legendFormat"]
    json.dumps(dashboard)  # serialisable as is


def test_collector_config_pipelines_reference_defined_components() -> None:
    """Every pipeline names receivers, processors and exporters the config defines."""
    config = collector_config(prometheus_endpoint="127.0.0.1:9464")
    assert "127.0.0.1:9464" == config["exporters"]["prometheus"]["endpoint"]
    assert config["exporters"]["prometheus"]["add_metric_suffixes"] is True
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline[kind]:
                assert name in config[kind], (kind, name)
    assert ["prometheus"] == config["service"]["pipelines"]["metrics"]["exporters"]


def test_alert_options_refuse_bad_values() -> None:
    """A shedding ratio outside (0, 1) or a malformed duration is refused."""
    with pytest.raises(ValueError, match="shedding_ratio"):
        AlertOptions(shedding_ratio=5)
    with pytest.raises(ValueError, match="breaker_for"):
        AlertOptions(breaker_for="a minute")


# ------------------------------------------------------------------------- CLI


def test_cli_prints_rules_dashboard_and_collector_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The three subcommands print YAML, JSON and YAML that parse."""
    assert 0 == main(["telemetry", "prometheus-rules", "--shedding-ratio", "0.1"])
    rules = yaml.safe_load(capsys.readouterr().out)
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert any(e.endswith("> 0.1") for e in exprs)
    assert 0 == main(["telemetry", "grafana"])
    assert "tipkit" == json.loads(capsys.readouterr().out)["uid"]
    assert 0 == main(["telemetry", "collector-config"])
    assert "otlp" in yaml.safe_load(capsys.readouterr().out)["receivers"]


def test_cli_no_synthetic_leaves_that_alert_out_and_reports_bad_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--no-synthetic drops one alert; a bad option exits 2 with a message."""
    assert 0 == main(["telemetry", "prometheus-rules", "--no-synthetic"])
    text = capsys.readouterr().out
    assert "TipkitSyntheticTrafficMissing" not in text
    assert 2 == main(["telemetry", "prometheus-rules", "--shedding-ratio", "2"])
    assert "shedding_ratio" in capsys.readouterr().out


# -------------------------------------------------------------------- promtool


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(  # noqa: S603  # a fixed tool and our own files
        [PROMTOOL, *args], capture_output=True, text=True, check=False, timeout=120
    )


@needs_promtool
def test_promtool_check_rules_accepts_the_generated_file(tmp_path: Path) -> None:
    """Promtool check rules parses every rule (PromQL included)."""
    result = _promtool("check", "rules", str(_rules_file(tmp_path)))
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def _annotations(alert: str, labels: dict[str, str], value: str = "") -> dict[str, str]:
    rule = next(
        r
        for g in prometheus_rules()["groups"]
        for r in g["rules"]
        if r.get("alert") == alert
    )
    out = {}
    for key, template in rule["annotations"].items():
        text = re.sub(
            r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template
        )
        out[key] = text.replace("{{ $value | humanizePercentage }}", value)
    return out


def _expect(
    alert: str, labels: dict[str, str], severity: str, value: str = ""
) -> dict[str, Any]:
    return {
        "exp_labels": {"severity": severity, "source": "tipkit", **labels},
        "exp_annotations": _annotations(alert, labels, value),
    }


EV = "tipkit_events_total"


def _unit_tests() -> list[dict[str, Any]]:
    """Synthetic series for every alert: each fires on its signal and not without it."""
    return [
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": 'tipkit_breaker_state_ratio{tipkit_breaker_name="pay",tipkit_state="open"}',
                    "values": "0 0 1 1 1 1",
                },
                {
                    "series": 'tipkit_breaker_state_ratio{tipkit_breaker_name="ok",tipkit_state="open"}',
                    "values": "0 0 0 0 0 0",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": "TipkitBreakerOpen", "exp_alerts": []},
                {
                    "eval_time": "4m",
                    "alertname": "TipkitBreakerOpen",
                    "exp_alerts": [
                        _expect(
                            "TipkitBreakerOpen",
                            {"tipkit_breaker_name": "pay"},
                            "warning",
                        )
                    ],
                },
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": f'{EV}{{tipkit_event="tipkit.rollout.rolled_back",tipkit_name="checkout"}}',
                    "values": "0 0 0 1 1 1",
                },
                # The SDK creates a counter's series at its first event, at 1.
                {
                    "series": f'{EV}{{tipkit_event="tipkit.rollout.rolled_back",tipkit_name="search"}}',
                    "values": "_ _ _ 1 1 1",
                },
                {
                    "series": f'{EV}{{tipkit_event="feature_flag.killed",tipkit_name="new-pricing"}}',
                    "values": "_ 1 1 1 1 1",
                },
                {
                    "series": f'{EV}{{tipkit_event="tipkit.rollout.judged",tipkit_name="checkout",tipkit_rollout_decision="FAIL"}}',
                    "values": "_ _ 1 1 1 1",
                },
                {
                    "series": f'{EV}{{tipkit_event="tipkit.rollout.judged",tipkit_name="search",tipkit_rollout_decision="PASS"}}',
                    "values": "0 1 2 3 4 5",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "2m",
                    "alertname": "TipkitRolloutRolledBack",
                    "exp_alerts": [],
                },
                {
                    "eval_time": "4m",
                    "alertname": "TipkitRolloutRolledBack",
                    "exp_alerts": [
                        _expect(
                            "TipkitRolloutRolledBack",
                            {"tipkit_name": name},
                            "critical",
                        )
                        for name in ("checkout", "search")
                    ],
                },
                {
                    "eval_time": "3m",
                    "alertname": "TipkitTripwireFired",
                    "exp_alerts": [
                        _expect(
                            "TipkitTripwireFired",
                            {"tipkit_name": "new-pricing"},
                            "critical",
                        )
                    ],
                },
                {
                    "eval_time": "3m",
                    "alertname": "TipkitJudgeVerdictFail",
                    "exp_alerts": [
                        _expect(
                            "TipkitJudgeVerdictFail",
                            {"tipkit_name": "checkout"},
                            "critical",
                        )
                    ],
                },
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": 'tipkit_ratelimit_requests_total{tipkit_ratelimit_name="api",tipkit_result="acquired"}',
                    "values": "0+60x20",
                },
                {
                    "series": 'tipkit_ratelimit_requests_total{tipkit_ratelimit_name="api",tipkit_result="rejected"}',
                    "values": "0x5 0+60x15",
                },
                {
                    "series": 'tipkit_ratelimit_requests_total{tipkit_ratelimit_name="calm",tipkit_result="acquired"}',
                    "values": "0+60x20",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "5m",
                    "alertname": "TipkitRateLimitShedding",
                    "exp_alerts": [],
                },
                {
                    "eval_time": "20m",
                    "alertname": "TipkitRateLimitShedding",
                    "exp_alerts": [
                        _expect(
                            "TipkitRateLimitShedding",
                            {"tipkit_ratelimit_name": "api"},
                            "warning",
                            "50%",
                        )
                    ],
                },
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": f'{EV}{{tipkit_event="tipkit.store.unavailable",tipkit_name="flags"}}',
                    "values": "0 1 1 1 2 2",
                },
                {
                    "series": f'{EV}{{tipkit_event="tipkit.store.recovered",tipkit_name="flags"}}',
                    "values": "_ _ 0 1 1 2",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "1m",
                    "alertname": "TipkitStoreUnavailable",
                    "exp_alerts": [
                        _expect(
                            "TipkitStoreUnavailable",
                            {"tipkit_name": "flags"},
                            "critical",
                        )
                    ],
                },
                {
                    "eval_time": "3m",
                    "alertname": "TipkitStoreUnavailable",
                    "exp_alerts": [],
                },
                {
                    "eval_time": "4m",
                    "alertname": "TipkitStoreUnavailable",
                    "exp_alerts": [
                        _expect(
                            "TipkitStoreUnavailable",
                            {"tipkit_name": "flags"},
                            "critical",
                        )
                    ],
                },
                {
                    "eval_time": "5m",
                    "alertname": "TipkitStoreUnavailable",
                    "exp_alerts": [],
                },
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": 'tipkit_flag_evaluations_total{feature_flag_key="f",user_agent_synthetic_type="test"}',
                    "values": "0+1x30 30x60",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "40m",
                    "alertname": "TipkitSyntheticTrafficMissing",
                    "exp_alerts": [],
                },
                {
                    "eval_time": "90m",
                    "alertname": "TipkitSyntheticTrafficMissing",
                    "exp_alerts": [
                        _expect("TipkitSyntheticTrafficMissing", {}, "warning")
                    ],
                },
            ],
        },
    ]


@needs_promtool
def test_promtool_unit_tests_fire_every_alert_on_synthetic_series(
    tmp_path: Path,
) -> None:
    """Promtool test rules: each alert fires on its signal, at the right time, and only then."""
    rules = _rules_file(tmp_path)
    tests = tmp_path / "tipkit-rules-test.yml"
    tests.write_text(
        yaml.safe_dump(
            {
                "rule_files": [rules.name],
                "evaluation_interval": "1m",
                "tests": _unit_tests(),
            },
            sort_keys=False,
        )
    )
    result = _promtool("test", "rules", str(tests))
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_promtool_unit_test() -> None:
    """No generated alert goes without a synthetic-series test."""
    alerts = {
        r["alert"]
        for g in prometheus_rules()["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    tested = {t["alertname"] for u in _unit_tests() for t in u["alert_rule_test"]}
    assert alerts == tested


def test_counted_events_are_catalogued_events() -> None:
    """Every event the alerts count is an exported event of the catalog."""
    assert set(_catalog.COUNTED_EVENTS) <= set(_catalog.EVENTS)
    assert _alerting.prometheus_name("tipkit.events") in exported_series()
