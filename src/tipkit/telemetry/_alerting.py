"""Alerts, dashboards and a Collector config, generated from the telemetry catalog.

tipkit exports OpenTelemetry metrics; a team scrapes them with Prometheus through
an OpenTelemetry Collector. This module writes what the team would otherwise
write by hand, from :data:`~tipkit.telemetry._catalog.METRICS`, so a metric
renamed in the catalog renames it in every rule and panel:

* :func:`prometheus_name`: the name the Collector's Prometheus exporter gives
  an OpenTelemetry metric (dots become underscores, a unit suffix such as
  ``_seconds`` or ``_percent``, ``_ratio`` for a unit-``1`` gauge, ``_total``
  for a monotonic counter; ``{annotation}`` units add nothing);
* :func:`prometheus_rules`: recording and alerting rules (a rule file for
  ``rule_files:``, checked in the tests by ``promtool check rules`` and
  ``promtool test rules``);
* :func:`grafana_dashboard`: a Grafana dashboard (flags, breakers, limiters,
  rollouts with canary against control, state changes);
* :func:`collector_config`: an OpenTelemetry Collector configuration that
  receives OTLP and exposes the metrics to Prometheus.

:func:`expression_metrics` lists the metric names a PromQL expression reads;
the tests check every rule and panel against :func:`exported_series`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from tipkit.telemetry import _catalog
from tipkit.telemetry import _names as n

__all__ = [
    "AlertOptions",
    "collector_config",
    "exported_series",
    "expression_metrics",
    "grafana_dashboard",
    "label",
    "prometheus_name",
    "prometheus_rules",
]

_UNITS: Final = {
    "s": "seconds",
    "ms": "milliseconds",
    "By": "bytes",
    "%": "percent",
}


def label(key: str) -> str:
    """Return the Prometheus label name of attribute *key* (``tipkit.breaker.name``)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def prometheus_name(name: str, spec: _catalog.MetricSpec | None = None) -> str:
    """Return the Prometheus metric name the Collector gives metric *name*.

    Follows the OpenTelemetry-to-Prometheus translation of the Collector's
    ``prometheus`` exporter with ``add_metric_suffixes`` on (its default).
    For a histogram this is the base name (``..._bucket``, ``_sum`` and
    ``_count`` follow).
    """
    spec = spec or _catalog.METRICS[name]
    out = label(name)
    unit = spec.unit
    suffix = _UNITS.get(unit)
    if suffix is None and unit == "1" and spec.kind == "gauge":
        suffix = "ratio"
    if suffix is not None and not out.endswith(f"_{suffix}"):
        out = f"{out}_{suffix}"
    if spec.kind == "counter":
        out = f"{out}_total"
    return out


def exported_series() -> frozenset[str]:
    """Return every Prometheus series name tipkit's catalog can produce."""
    names: set[str] = set()
    for name, spec in _catalog.METRICS.items():
        base = prometheus_name(name, spec)
        if spec.kind == "histogram":
            names.update(f"{base}{s}" for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(base)
    return frozenset(names)


_METRIC_TOKEN: Final = re.compile(r"\btipkit_[a-z0-9_]+\b")


def expression_metrics(expr: str) -> set[str]:
    """Return the ``tipkit_*`` metric names a PromQL expression reads."""
    cleaned = re.sub(r"\{[^}]*\}", "", expr)  # label names are not metrics
    cleaned = re.sub(r"\bby\s*\([^)]*\)", "", cleaned)
    return set(_METRIC_TOKEN.findall(cleaned))


# ------------------------------------------------------------------ metric names

_BREAKER_STATE: Final = prometheus_name(n.BREAKER_STATE)
_BREAKER_CALLS: Final = prometheus_name(n.BREAKER_CALLS)
_RATELIMIT: Final = prometheus_name(n.RATELIMIT_REQUESTS)
_TOKENS: Final = prometheus_name(n.RATELIMIT_TOKENS)
_FLAGS: Final = prometheus_name(n.FLAG_EVALUATIONS)
_ROLLOUT: Final = prometheus_name(n.ROLLOUT_REQUESTS)
_STAGE: Final = prometheus_name(n.ROLLOUT_STAGE)
_EVENTS: Final = prometheus_name(n.EVENTS)
_DURATION: Final = prometheus_name(n.CALL_DURATION)

_L_BREAKER: Final = label(n.BREAKER_NAME)
_L_LIMITER: Final = label(n.RATELIMIT_NAME)
_L_ROLLOUT: Final = label(n.ROLLOUT_NAME)
_L_FLAG: Final = label(n.FEATURE_FLAG_KEY)
_L_VARIANT: Final = label(n.FEATURE_FLAG_VARIANT)
_L_REASON: Final = label(n.FEATURE_FLAG_REASON)
_L_STATE: Final = label(n.STATE)
_L_RESULT: Final = label(n.RESULT)
_L_OUTCOME: Final = label(n.OUTCOME)
_L_ARM: Final = label(n.ARM)
_L_EVENT: Final = label(n.EVENT)
_L_SUBJECT: Final = label(n.SUBJECT)
_L_DECISION: Final = label(n.ROLLOUT_DECISION)
_L_SYNTHETIC: Final = label(n.SYNTHETIC_TYPE)
_L_CALL: Final = label(n.CALL_NAME)


@dataclass(frozen=True)
class AlertOptions:
    """What the generated alerts page on.

    Attributes:
        shedding_ratio: alert when a rate limiter rejects more than this share
            of its requests over *shedding_window* (0.05 = 5%).
        shedding_window: the PromQL range for the shedding ratio.
        breaker_for: how long a breaker must stay open before it pages.
        synthetic_window: alert when no synthetic (probe) traffic was counted
            for this long; ``None`` leaves the alert out (no probes run).
        runbook_base: the runbook URL prefix (the alert name is appended).
        group: the rule group's name.
    """

    shedding_ratio: float = 0.05
    shedding_window: str = "5m"
    breaker_for: str = "1m"
    synthetic_window: str | None = "30m"
    runbook_base: str = "https://tipkit.readthedocs.io/en/latest/telemetry.html#"
    group: str = "tipkit"

    def __post_init__(self) -> None:
        if not 0.0 < self.shedding_ratio < 1.0:
            raise ValueError(
                f"shedding_ratio must be between 0 and 1, got {self.shedding_ratio!r}"
            )
        for field in ("shedding_window", "breaker_for", "synthetic_window"):
            value = getattr(self, field)
            if value is not None and not re.fullmatch(r"[0-9]+[smhd]", value):
                raise ValueError(
                    f"{field} must be a Prometheus duration like 5m, got {value!r}"
                )


def _event(name: str, extra: str = "") -> str:
    return f'{_EVENTS}{{{_L_EVENT}="{name}"{extra}}}'


def _rose(sel: str) -> str:  # a counter is born at 1: increase() sees no rise then
    return f"sum by ({_L_SUBJECT}) (({sel} unless {sel} offset 10m) or increase({sel}[10m]))"


def _alert(  # noqa: PLR0917  # a table of rules reads best positionally
    options: AlertOptions,
    name: str,
    expr: str,
    severity: str,
    summary: str,
    description: str,
    for_: str | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity, "source": "tipkit"}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{options.runbook_base}{name.lower()}",
    }
    return rule


def recording_rules(options: AlertOptions) -> list[dict[str, Any]]:
    """Return the recording rules the dashboard and the alerts share."""
    w = options.shedding_window
    return [
        {
            "record": "tipkit:ratelimit_rejected:ratio_rate" + w,
            "expr": (
                f'sum by ({_L_LIMITER}) (rate({_RATELIMIT}{{{_L_RESULT}="rejected"}}[{w}]))'
                f" / sum by ({_L_LIMITER}) (rate({_RATELIMIT}[{w}]))"
            ),
        },
        {
            "record": "tipkit:breaker_calls:rate" + w,
            "expr": f"sum by ({_L_BREAKER}, {_L_OUTCOME}) (rate({_BREAKER_CALLS}[{w}]))",
        },
        {
            "record": "tipkit:flag_evaluations:rate" + w,
            "expr": (
                f"sum by ({_L_FLAG}, {_L_VARIANT}, {_L_REASON}) (rate({_FLAGS}[{w}]))"
            ),
        },
        {
            "record": "tipkit:rollout_failures:ratio_rate" + w,
            "expr": (
                f"sum by ({_L_ROLLOUT}, {_L_ARM}) "
                f'(rate({_ROLLOUT}{{{_L_OUTCOME}="failure"}}[{w}]))'
                f" / sum by ({_L_ROLLOUT}, {_L_ARM}) (rate({_ROLLOUT}[{w}]))"
            ),
        },
    ]


def alerting_rules(options: AlertOptions) -> list[dict[str, Any]]:
    """Return the alerting rules: one per safety signal a team pages on."""
    o = options
    failed = _event("tipkit.rollout.judged", f',{_L_DECISION}="FAIL"')
    unavailable = f"sum by ({_L_SUBJECT}) ({_event('tipkit.store.unavailable')})"
    recovered = f"sum by ({_L_SUBJECT}) ({_event('tipkit.store.recovered')})"
    rules = [
        _alert(
            o,
            "TipkitBreakerOpen",
            f'max by ({_L_BREAKER}) ({_BREAKER_STATE}{{{_L_STATE}="open"}}) == 1',
            "warning",
            "Circuit breaker {{ $labels." + _L_BREAKER + " }} is open",
            "Calls to the dependency are failing fast; see the breaker's runbook.",
            o.breaker_for,
        ),
        _alert(
            o,
            "TipkitRolloutRolledBack",
            f"{_rose(_event('tipkit.rollout.rolled_back'))} > 0",
            "critical",
            "Rollout {{ $labels." + _L_SUBJECT + " }} rolled back",
            "Every user is back on the control: the canary was judged harmful.",
        ),
        _alert(
            o,
            "TipkitTripwireFired",
            f"{_rose(_event('feature_flag.killed'))} > 0",
            "critical",
            "Tripwire killed flag {{ $labels." + _L_SUBJECT + " }}",
            "The flag's error rate passed its tripwire; it now serves its default.",
        ),
        _alert(
            o,
            "TipkitRateLimitShedding",
            f"tipkit:ratelimit_rejected:ratio_rate{o.shedding_window} > {o.shedding_ratio:g}",
            "warning",
            "Rate limiter {{ $labels."
            + _L_LIMITER
            + " }} sheds {{ $value | humanizePercentage }}",
            f"More than {o.shedding_ratio:.0%} of requests are rejected.",
            o.shedding_window,
        ),
        _alert(
            o,
            "TipkitStoreUnavailable",
            f"{unavailable} > ({recovered} or {unavailable} * 0)",
            "critical",
            "{{ $labels." + _L_SUBJECT + " }} lost its store",
            "The primitive follows its on_error policy until the store answers.",
        ),
        _alert(
            o,
            "TipkitJudgeVerdictFail",
            f"{_rose(failed)} > 0",
            "critical",
            "Rollout {{ $labels." + _L_SUBJECT + " }}: the judge found harm",
            "A rollout stage was judged FAIL: the canary is worse than the control.",
        ),
    ]
    if o.synthetic_window is not None:
        w = o.synthetic_window
        rules.append(
            _alert(
                o,
                "TipkitSyntheticTrafficMissing",
                f'(sum(increase({{__name__=~"tipkit_.+_total",{_L_SYNTHETIC}=~".+"}}'
                f"[{w}])) or vector(0)) == 0",
                "warning",
                "No synthetic traffic for " + w,
                "Probes stopped: tipkit counted no request marked "
                "user_agent.synthetic.type.",
                w,
            )
        )
    return rules


def prometheus_rules(options: AlertOptions | None = None) -> dict[str, Any]:
    """Return the Prometheus rule file (as data: dump it as YAML)."""
    o = options or AlertOptions()
    return {
        "groups": [
            {"name": f"{o.group}-recording", "rules": recording_rules(o)},
            {"name": f"{o.group}-alerts", "rules": alerting_rules(o)},
        ]
    }


# --------------------------------------------------------------------- dashboard


def _panel(
    pid: int,
    title: str,
    targets: list[tuple[str, str]],
    grid: tuple[int, int, int, int],
    *,
    kind: str = "timeseries",
    unit: str = "short",
    description: str = "",
) -> dict[str, Any]:
    x, y, w, h = grid
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard_panels(options: AlertOptions | None = None) -> list[dict[str, Any]]:
    """Return the dashboard's panels (rows of flags, breakers, limiters, rollouts)."""
    o = options or AlertOptions()
    w = o.shedding_window
    rows: list[tuple[str, list[tuple[str, list[tuple[str, str]], str, str]]]] = [
        (
            "Flags",
            [
                (
                    "Flag evaluations by variant",
                    [
                        (
                            f"sum by ({_L_FLAG}, {_L_VARIANT}) (rate({_FLAGS}[{w}]))",
                            f"{{{{{_L_FLAG}}}}} {{{{{_L_VARIANT}}}}}",
                        )
                    ],
                    "reqps",
                    "Evaluations per second, by flag and the variant served.",
                ),
                (
                    "Flag errors",
                    [
                        (
                            f'sum by ({_L_FLAG}) (rate({_FLAGS}{{{_L_REASON}="error"}}[{w}]))',
                            f"{{{{{_L_FLAG}}}}}",
                        )
                    ],
                    "reqps",
                    "Evaluations that fell back to the caller's default.",
                ),
            ],
        ),
        (
            "Circuit breakers",
            [
                (
                    "Breaker state (1 = open)",
                    [
                        (
                            f'max by ({_L_BREAKER}) ({_BREAKER_STATE}{{{_L_STATE}="open"}})',
                            f"{{{{{_L_BREAKER}}}}}",
                        )
                    ],
                    "short",
                    "Which breakers are open now.",
                ),
                (
                    "Breaker calls by outcome",
                    [
                        (
                            f"sum by ({_L_BREAKER}, {_L_OUTCOME}) (rate({_BREAKER_CALLS}[{w}]))",
                            f"{{{{{_L_BREAKER}}}}} {{{{{_L_OUTCOME}}}}}",
                        )
                    ],
                    "reqps",
                    "Successes, failures and fast rejections.",
                ),
            ],
        ),
        (
            "Rate limiters",
            [
                (
                    "Requests acquired and rejected",
                    [
                        (
                            f"sum by ({_L_LIMITER}, {_L_RESULT}) (rate({_RATELIMIT}[{w}]))",
                            f"{{{{{_L_LIMITER}}}}} {{{{{_L_RESULT}}}}}",
                        )
                    ],
                    "reqps",
                    "Admitted and shed requests per second.",
                ),
                (
                    "Shed share",
                    [
                        (
                            f"tipkit:ratelimit_rejected:ratio_rate{w}",
                            f"{{{{{_L_LIMITER}}}}}",
                        ),
                    ],
                    "percentunit",
                    f"Alert above {o.shedding_ratio:.0%}.",
                ),
            ],
        ),
        (
            "Rollouts",
            [
                (
                    "Rollout stage",
                    [(f"max by ({_L_ROLLOUT}) ({_STAGE})", f"{{{{{_L_ROLLOUT}}}}}")],
                    "percent",
                    "Share of traffic on the new code.",
                ),
                (
                    "Failure ratio: canary vs control",
                    [
                        (
                            (
                                f"sum by ({_L_ROLLOUT}, {_L_ARM}) "
                                f'(rate({_ROLLOUT}{{{_L_OUTCOME}="failure"}}[{w}]))'
                                f" / sum by ({_L_ROLLOUT}, {_L_ARM}) (rate({_ROLLOUT}[{w}]))"
                            ),
                            f"{{{{{_L_ROLLOUT}}}}} {{{{{_L_ARM}}}}}",
                        )
                    ],
                    "percentunit",
                    "The judge compares these two lines.",
                ),
            ],
        ),
        (
            "State changes and latency",
            [
                (
                    "Rollbacks, kills, verdicts, store outages",
                    [
                        (
                            f"sum by ({_L_EVENT}, {_L_SUBJECT}) (increase({_EVENTS}[{w}]))",
                            f"{{{{{_L_EVENT}}}}} {{{{{_L_SUBJECT}}}}}",
                        )
                    ],
                    "short",
                    "Counted from tipkit's events.",
                ),
                (
                    "traced() p99 latency",
                    [
                        (
                            (
                                "histogram_quantile(0.99, sum by (le, "
                                f"{_L_CALL}) (rate({_DURATION}_bucket[{w}])))"
                            ),
                            f"{{{{{_L_CALL}}}}}",
                        )
                    ],
                    "s",
                    "Exemplars link slow points to their traces.",
                ),
            ],
        ),
    ]
    panels: list[dict[str, Any]] = []
    pid = 1
    y = 0
    for title, row in rows:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        pid += 1
        y += 1
        for i, (ptitle, targets, unit, description) in enumerate(row):
            panels.append(
                _panel(
                    pid,
                    ptitle,
                    targets,
                    (12 * i, y, 12, 8),
                    unit=unit,
                    description=description,
                )
            )
            pid += 1
        y += 8
    return panels


def grafana_dashboard(options: AlertOptions | None = None) -> dict[str, Any]:
    """Return the Grafana dashboard JSON model (import it, pick the Prometheus source)."""
    return {
        "uid": "tipkit",
        "title": "tipkit: flags, breakers, limiters, rollouts",
        "tags": ["tipkit"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "annotations": {"list": []},
        "panels": dashboard_panels(options),
    }


# ------------------------------------------------------------ collector config


def collector_config(*, prometheus_endpoint: str = "0.0.0.0:8889") -> dict[str, Any]:
    """Return an OpenTelemetry Collector config: OTLP in, Prometheus out.

    Metrics go to the ``prometheus`` exporter (scrape *prometheus_endpoint*),
    traces and logs to the ``debug`` exporter (replace it with your backend).
    ``add_metric_suffixes`` stays on, so names match :func:`prometheus_name`;
    exemplars are enabled so histogram points link to traces.
    """
    exporter: dict[str, Any] = {
        "endpoint": prometheus_endpoint,
        "enable_open_metrics": True,  # exemplars need OpenMetrics
        "add_metric_suffixes": True,
        "resource_to_telemetry_conversion": {"enabled": True},
    }
    return {
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": "0.0.0.0:4317"},
                    "http": {"endpoint": "0.0.0.0:4318"},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": {
            "prometheus": exporter,
            "debug": {"verbosity": "basic"},
        },
        "service": {
            "pipelines": {
                "metrics": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["prometheus"],
                },
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["debug"],
                },
                "logs": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["debug"],
                },
            }
        },
    }
