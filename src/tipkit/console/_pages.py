"""The console's pages as HTML strings, rendered on the server (no JavaScript).

Every value that comes from the store is escaped. The pages show flag keys,
names, states and numbers only: the audit reason an operator typed, and
nothing about users.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, Final

from tipkit.audit import AuditRecord
from tipkit.console._chart import points, svg
from tipkit.ops._render import bound_line, duration, stamp

__all__ = [
    "AREAS",
    "Context",
    "audit_page",
    "breakers_page",
    "error_page",
    "flags_page",
    "layout",
    "limits_page",
    "login_page",
    "rollouts_page",
]

AREAS: Final = ("flags", "rollouts", "breakers", "limits", "audit")


@dataclass(frozen=True, slots=True)
class Context:
    """What every page needs: the CSRF field, who is signed in, a done notice."""

    csrf: str
    actor: str | None
    read_only: bool
    now: float
    done: str | None = None


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def layout(
    title: str, active: str, body: str, ctx: Context, *, refresh: float | None = None
) -> str:
    """Return a whole page: navigation, who is signed in, *body*."""
    nav = "".join(
        f'<a href="/{a}"{" class=active" if a == active else ""}>{a}</a>' for a in AREAS
    )
    if ctx.actor:
        who = (
            f'signed in as <b id="actor">{_e(ctx.actor)}</b> '
            f'<form method="post" action="/logout" class="inline">'
            f'<input type="hidden" name="csrf" value="{_e(ctx.csrf)}">'
            f'<button type="submit">sign out</button></form>'
        )
    elif ctx.read_only:
        who = "read-only: start the console with --token to act"
    else:
        who = '<a href="/login" id="login-link">sign in to act</a>'
    meta = f'<meta http-equiv="refresh" content="{refresh:g}">' if refresh else ""
    notice = ""
    if ctx.done is not None:
        notice = (
            '<p class="notice" id="done">nothing to change</p>'
            if ctx.done == "unchanged"
            else f'<p class="notice" id="done">done: audit record {_e(ctx.done)}</p>'
        )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{_e(title)} · tipkit console</title>"
        '<link rel="stylesheet" href="/console.css"></head><body>'
        f'<header><span class="brand">tipkit console</span><nav>{nav}</nav>'
        f'<span class="who">{who}</span></header><main>'
        f"<h1>{_e(title)}</h1>{notice}{body}</main></body></html>"
    )


def _action(ctx: Context, kind: str, verb: str, target: str, label: str) -> str:
    """One action: a form with the CSRF field, a required reason and a button."""
    if not ctx.actor:
        return ""
    danger = " danger" if verb in {"kill", "rollback", "open"} else ""
    return (
        f'<form method="post" action="/act" class="act" id="{_e(verb)}-{_e(target)}">'
        f'<input type="hidden" name="csrf" value="{_e(ctx.csrf)}">'
        f'<input type="hidden" name="kind" value="{_e(kind)}">'
        f'<input type="hidden" name="verb" value="{_e(verb)}">'
        f'<input type="hidden" name="target" value="{_e(target)}">'
        '<input name="reason" required maxlength="1000" placeholder="reason" '
        'aria-label="reason">'
        f'<button type="submit" class="btn{danger}">{_e(label)}</button></form>'
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _flag_state(f: Mapping[str, Any]) -> str:
    parts = []
    if f["killed"]:
        parts.append('<span class="tag killed">killed</span>')
    if f["override"] is not None:
        parts.append(f'<span class="tag override">override {_e(f["override"])}</span>')
    if f["split"]:
        split = " ".join(f"{_e(v)}={float(w):g}%" for v, w in f["split"].items())
        parts.append(f'<span class="tag split">split {split}</span>')
    return " ".join(parts) or '<span class="tag ok">serving its rules</span>'


def flags_page(flags: Sequence[Mapping[str, Any]], ctx: Context) -> str:
    """The flags: killed, overridden or split, with kill and revive buttons."""
    rows = [
        [
            f'<code class="key">{_e(f["key"])}</code>',
            _e(f["namespace"]),
            _e(", ".join(f["variants"]) or "?"),
            f'<span id="state-{_e(f["key"])}">{_flag_state(f)}</span>',
            _action(ctx, "flag", "revive", f["key"], "revive")
            if f["killed"]
            else _action(ctx, "flag", "kill", f["key"], "kill"),
        ]
        for f in flags
    ]
    body = _table(
        ["flag", "namespace", "variants", "state", ""], rows, "no flags in this store"
    )
    return layout("Flags", "flags", body, ctx)


def _timeline(r: Mapping[str, Any]) -> str:
    stages = r.get("stages") or []
    cells = []
    for i, s in enumerate(stages):
        cls = "done" if i < r["stage"] else "now" if i == r["stage"] else "next"
        if r["status"] == "rolled_back" and i == r["stage"]:
            cls = "back"
        elif r["status"] == "completed":
            cls = "done"
        cells.append(f'<li class="{cls}">{float(s):g}%</li>')
    return f'<ol class="timeline">{"".join(cells)}</ol>'


def _history(r: Mapping[str, Any]) -> str:
    rows = [
        [
            _e(stamp(float(h.get("at", 0)))),
            _e(h.get("action", "")),
            f"{float(h.get('percent', 0)):g}%",
            _e(h.get("reason", "")),
        ]
        for h in reversed(r.get("history", []))
    ]
    return _table(["at", "transition", "canary", "reason"], rows, "no transitions yet")


def _rollout(r: Mapping[str, Any], ctx: Context) -> str:
    name = r["name"]
    head = f'<section class="card" id="rollout-{_e(name)}"><h2>{_e(name)}</h2>'
    if r["status"] is None:
        return head + "<p>registered; no state in the store yet</p></section>"
    facts = (
        f'<p>flag <code>{_e(r["flag"])}</code> · <b class="status">'
        f"{_e(r['status'])}</b> · canary {float(r['percent']):g}% · stage "
        f"{r['stage'] + 1}/{len(r['stages'])} · attempt {r['attempt']} · "
        f"{_e(duration(r['time_in_stage']))} in stage"
        + (
            f' · <a href="{_e(r["runbook"])}" rel="noreferrer">runbook</a>'
            if r.get("runbook")
            else ""
        )
        + "</p>"
    )
    verdict = r.get("verdict")
    judge = (
        f'<p class="judge">judge: <b>{_e(verdict.get("decision"))}</b> '
        f'{_e(verdict.get("reason"))}</p><ul class="checks">'
        + "".join(f"<li>{_e(bound_line(c))}</li>" for c in verdict.get("guards", []))
        + "</ul>"
        if verdict
        else '<p class="judge">judge: no verdict recorded yet</p>'
    )
    charts = "".join(svg(label, series) for label, series in points(r).items())
    actions = "".join(
        _action(ctx, "rollout", verb, name, verb)
        for verb in ("pause", "resume", "promote", "rollback")
    )
    return (
        head
        + facts
        + _timeline(r)
        + judge
        + (f'<div class="charts">{charts}</div>' if charts else "")
        + (f'<div class="actions">{actions}</div>' if actions else "")
        + "<h3>history</h3>"
        + _history(r)
        + "</section>"
    )


def rollouts_page(rollouts: Sequence[Mapping[str, Any]], ctx: Context) -> str:
    """Each rollout: its stage timeline, the judge's chart and its controls."""
    body = "".join(_rollout(r, ctx) for r in rollouts) or (
        '<p class="empty">no rollouts in this store</p>'
    )
    return layout("Rollouts", "rollouts", body, ctx)


def breakers_page(
    breakers: Sequence[Mapping[str, Any]],
    transitions: Mapping[str, Sequence[AuditRecord]],
    ctx: Context,
) -> str:
    """Each shared breaker: its state, its configuration and recent transitions."""
    sections = []
    for b in breakers:
        name = b["name"]
        cfg = ", ".join(f"{_e(k)}={_e(v)}" for k, v in b["config"].items()) or "-"
        recs = transitions.get(name, ())
        rows = [
            [
                _e(stamp(r.time)),
                _e(r.before.get("state", "?")) + " → " + _e(r.after.get("state", "?")),
                _e(r.actor),
                _e(r.reason),
            ]
            for r in reversed(recs)
        ]
        actions = "".join(
            _action(ctx, "breaker", verb, name, verb)
            for verb in ("open", "disable", "reset")
        )
        sections.append(
            f'<section class="card" id="breaker-{_e(name)}"><h2>{_e(name)}</h2>'
            f'<p>state <span class="tag state-{_e(b["state"])}">{_e(b["state"])}</span>'
            f" · shared {_e(b['shared_state'] or 'none')} · processes "
            f"{_e(b['instances'])}</p><p>config: {cfg}</p>"
            + (f'<div class="actions">{actions}</div>' if actions else "")
            + "<h3>recent transitions</h3>"
            + _table(["at", "state", "actor", "reason"], rows, "none recorded")
            + "</section>"
        )
    body = "".join(sections) or '<p class="empty">no shared breakers in this store</p>'
    return layout("Breakers", "breakers", body, ctx)


def limits_page(limits: Sequence[Mapping[str, Any]], ctx: Context) -> str:
    """The shared rate limiters: rate, capacity, processes, heartbeat."""
    rows = [
        [
            f"<code>{_e(x['name'])}</code>",
            _e(x["config"].get("rate", "?")) + "/s",
            _e(x["config"].get("capacity", "?")),
            "yes" if x["config"].get("keyed") else "no",
            _e(x["instances"]),
            _e(duration(max(ctx.now - float(x["heartbeat"]), 0.0))) + " ago",
        ]
        for x in limits
    ]
    body = _table(
        ["limit", "rate", "capacity", "keyed", "processes", "heartbeat"],
        rows,
        "no shared limits in this store",
    )
    return layout("Limits", "limits", body, ctx)


def _state(s: Mapping[str, Any]) -> str:
    return _e(", ".join(f"{k}={json.dumps(v)}" for k, v in s.items()) or "-")


def audit_page(
    records: Sequence[AuditRecord],
    filters: Mapping[str, str],
    ctx: Context,
    *,
    live: float | None,
) -> str:
    """The audit log, newest first, filtered by target, actor and time; live on demand."""
    inputs = "".join(
        f'<label>{name} <input name="{name}" value="{_e(filters.get(name, ""))}" '
        f'placeholder="{hint}"></label>'
        for name, hint in (
            ("target", "checkout"),
            ("actor", "alice"),
            ("since", "1h"),
        )
    )
    checked = " checked" if live else ""
    form = (
        f'<form method="get" action="/audit" class="filters">{inputs}'
        f'<label><input type="checkbox" name="live" value="1"{checked}> live</label>'
        '<button type="submit">filter</button></form>'
    )
    rows = [
        [
            _e(stamp(r.time))
            + (f"<br><small>made {_e(stamp(r.made_at))}</small>" if r.made_at else ""),
            f"<code>{_e(r.id)}</code>",
            _e(r.actor),
            _e(r.action),
            f"<code>{_e(r.target)}</code>",
            _state(r.before) + " → " + _state(r.after),
            _e(r.reason)
            + (
                f' · <a href="{_e(r.runbook)}" rel="noreferrer">runbook</a>'
                if r.runbook
                else ""
            ),
        ]
        for r in reversed(records)
    ]
    body = form + _table(
        ["time", "id", "actor", "action", "target", "change", "reason"],
        rows,
        "no records",
    )
    return layout("Audit log", "audit", body, ctx, refresh=live)


def login_page(ctx: Context, *, error: str | None = None) -> str:
    """Sign in with the console's token and the name actions are audited under."""
    if ctx.read_only:
        body = "<p>This console is read-only: start it with --token to act.</p>"
        return layout("Sign in", "", body, ctx)
    err = f'<p class="error" id="error">{_e(error)}</p>' if error else ""
    body = (
        f'{err}<form method="post" action="/login" class="login">'
        f'<input type="hidden" name="csrf" value="{_e(ctx.csrf)}">'
        '<label>your name <input name="actor" required maxlength="200" '
        'autocomplete="username"></label>'
        '<label>console token <input name="token" type="password" required '
        'autocomplete="current-password"></label>'
        '<button type="submit" id="sign-in">sign in</button></form>'
    )
    return layout("Sign in", "", body, ctx)


def error_page(title: str, message: str, ctx: Context) -> str:
    """A refusal or a failure, saying why and that nothing changed."""
    body = f'<p class="error" id="error">{_e(message)}</p><p><a href="/">back</a></p>'
    return layout(title, "", body, ctx)


CSS: Final = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#212529;background:#f8f9fa}
header{display:flex;gap:1.5em;align-items:center;background:#212529;color:#fff;
padding:.6em 1.2em}
header a{color:#adb5bd;text-decoration:none;margin-right:1em}
header a.active{color:#fff;font-weight:bold}
.brand{font-weight:bold}.who{margin-left:auto}.who a{color:#fff}
main{padding:1em 1.5em;max-width:1100px}
table{border-collapse:collapse;background:#fff;width:100%;margin:.5em 0}
th,td{border-bottom:1px solid #dee2e6;padding:.35em .6em;text-align:left;
vertical-align:top}
.card{background:#fff;border:1px solid #dee2e6;border-radius:6px;padding:.6em 1em;
margin:1em 0}
.tag{border-radius:4px;padding:.05em .45em;background:#e9ecef}
.killed,.state-forced_open,.state-open{background:#ffe3e3;color:#c92a2a}
.override,.split,.state-disabled{background:#fff3bf}.ok,.state-closed{background:#d3f9d8}
form.act,form.inline{display:inline-flex;gap:.3em;margin:.1em .3em .1em 0}
form.act input{width:12em}
.btn{cursor:pointer}.danger{background:#c92a2a;color:#fff;border:1px solid #a51111}
.timeline{display:flex;list-style:none;padding:0;gap:4px}
.timeline li{padding:.2em .8em;background:#e9ecef;border-radius:4px}
.timeline .done{background:#d3f9d8}.timeline .now{background:#1c7ed6;color:#fff}
.timeline .back{background:#c92a2a;color:#fff}
.notice{background:#d3f9d8;padding:.4em .8em}.error{background:#ffe3e3;padding:.4em .8em}
.filters,.login{display:flex;gap:1em;align-items:end;flex-wrap:wrap}
.login{flex-direction:column;align-items:start}
.chart{background:#fff;margin:.3em 1em .3em 0}
"""
