"""Plain-text views of what ``tipkit ops`` reads (``--json`` prints the data instead)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tipkit.audit import AuditRecord
from tipkit.clock import Clock

__all__ = ["bound_line", "duration", "render", "stamp"]


def duration(seconds: float) -> str:
    """Return *seconds* as ``1h02m``, ``3m05s`` or ``42s``."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def stamp(t: float) -> str:
    """Return epoch seconds *t* as ``2026-01-01T00:00:00Z``."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _flag_state(f: dict[str, Any]) -> str:
    parts = []
    if f["killed"]:
        parts.append("KILLED")
    if f["override"] is not None:
        parts.append(f"override={f['override']}")
    if f["split"]:
        parts.append("split " + " ".join(f"{v}={w:g}%" for v, w in f["split"].items()))
    return ", ".join(parts) or "serving its rules"


def bound_line(check: dict[str, Any]) -> str:
    """Return one judge check as ``error rate: canary 2.1% vs control 1.0%, bound ...``."""

    def pct(x: Any) -> str:
        return "n/a" if x is None else f"{100 * float(x):.2f}%"

    margin = check.get("max_increase")
    return (
        f"{check.get('guard', 'check')}: canary {pct(check.get('canary_rate'))} "
        f"({check.get('canary_bad', 0)}/{check.get('canary_count', 0)}) vs control "
        f"{pct(check.get('control_rate'))} ({check.get('control_bad', 0)}/"
        f"{check.get('control_count', 0)}); increase bound [{pct(check.get('lower'))}, "
        f"{pct(check.get('upper'))}] against margin {pct(margin)}"
        + (
            " FAILED"
            if check.get("failed")
            else " passed"
            if check.get("passed")
            else ""
        )
    )


def _rollout(r: dict[str, Any]) -> str:
    if r["status"] is None:
        return f"rollout {r['name']}: registered, no state in the store yet"
    lines = [
        (
            f"rollout {r['name']} (flag {r['flag']}): {r['status']}, stage "
            f"{r['stage'] + 1}/{len(r['stages'])} at {r['percent']:g}% canary, "
            f"attempt {r['attempt']}, {duration(r['time_in_stage'])} in stage"
        ),
        "stages: " + " -> ".join(f"{s:g}%" for s in r["stages"]),
    ]
    verdict = r.get("verdict")
    if verdict:
        lines.append(f"judge: {verdict.get('decision')}: {verdict.get('reason')}")
        lines.append(
            f"arms this stage: canary {verdict.get('stage_canary')}, "
            f"control {verdict.get('stage_control')}"
        )
        lines.extend("  " + bound_line(c) for c in verdict.get("guards", []))
    else:
        lines.append("judge: no verdict recorded yet")
    if r.get("runbook"):
        lines.append(f"runbook: {r['runbook']}")
    lines.append("history:")
    lines.extend(
        f"  {stamp(h['at'])} {h['action']:<12} {h['percent']:g}%  {h.get('reason', '')}"
        for h in r.get("history", [])
    )
    return "\n".join(lines)


def render(area: str, verb: str, data: Any, clock: Clock) -> str:  # noqa: PLR0911  # one view per area
    """Return *data* read for ``tipkit ops <area> <verb>`` as text."""
    now = clock.time()
    if area == "audit":
        recs: list[AuditRecord] = data
        return "\n".join(
            f"{stamp(r.time)} {r.id:<16} {r.actor:<16} {r.action:<22} {r.target}  "
            f"{r.reason}" + (f"  (made {stamp(r.made_at)})" if r.made_at else "")
            for r in recs
        )
    if area == "flags" and verb == "list":
        return (
            _table(
                [
                    [f["key"], ",".join(f["variants"]) or "?", _flag_state(f)]
                    for f in data
                ],
                ["FLAG", "VARIANTS", "STATE"],
            )
            if data
            else "no flags in this store"
        )
    if area == "flags":
        return (
            f"flag {data['key']} (namespace {data['namespace']})\n"
            f"variants: {', '.join(data['variants']) or 'unknown (not registered)'}\n"
            f"state: {_flag_state(data)}"
            + (f"\nrunbook: {data['runbook']}" if data.get("runbook") else "")
        )
    if area == "rollouts" and verb == "list":
        return (
            _table(
                [
                    [
                        r["name"],
                        str(r["status"] or "-"),
                        "-" if r["status"] is None else f"{r['percent']:g}%",
                        "-" if r["status"] is None else duration(r["time_in_stage"]),
                    ]
                    for r in data
                ],
                ["ROLLOUT", "STATUS", "CANARY", "IN STAGE"],
            )
            if data
            else "no rollouts in this store"
        )
    if area == "rollouts":
        return _rollout(data)
    if area == "breakers" and verb == "list":
        return (
            _table(
                [[b["name"], b["state"], str(b["instances"])] for b in data],
                ["BREAKER", "STATE", "PROCESSES"],
            )
            if data
            else "no shared breakers in this store"
        )
    if area == "breakers":
        cfg = ", ".join(f"{k}={v}" for k, v in data["config"].items())
        live = ", ".join(f"{k}={v}" for k, v in data["live"].items())
        return (
            f"breaker {data['name']}: {data['state']}"
            f" (shared: {data['shared_state'] or 'none'})\nconfig: {cfg or '-'}\n"
            f"live: {live or '-'}"
        )
    if verb == "list":
        return (
            _table(
                [
                    [
                        x["name"],
                        ", ".join(f"{k}={v}" for k, v in x["config"].items()),
                        f"{duration(max(now - x['heartbeat'], 0))} ago",
                    ]
                    for x in data
                ],
                ["LIMIT", "CONFIG", "HEARTBEAT"],
            )
            if data
            else "no shared limits in this store"
        )
    cfg = ", ".join(f"{k}={v}" for k, v in data["config"].items())
    return f"limit {data['name']}: {cfg}\nprocesses: {data['instances']}"
