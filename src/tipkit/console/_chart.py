"""A rollout's canary-vs-control chart as inline SVG, drawn on the server.

For each judged point (each transition the judge decided, then the latest
verdict) and each check: the control's rate, the canary's rate, the judge's
confidence bound on the canary's rate (control + the bound on the increase)
and the line it must stay under to pass (control + the check's margin). Only
numbers go in: no user data. Presentation attributes, never ``style=``, so the
console's Content-Security-Policy (no inline styles) holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any, Final

__all__ = ["Point", "points", "svg"]

WIDTH: Final = 640
HEIGHT: Final = 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 28, 44
CANARY: Final = "#d9480f"
CONTROL: Final = "#1c7ed6"
BOUND: Final = "#495057"
MARGIN: Final = "#c92a2a"

Point = tuple[str, dict[str, Any]]
"""(x label, one check's numbers as the judge stored them)."""


def points(rollout: Mapping[str, Any]) -> dict[str, list[Point]]:
    """Return ``{check label: [(x label, numbers), ...]}`` from a rollout view, oldest first."""
    judged: list[tuple[str, Mapping[str, Any]]] = [
        (f"{h.get('action', '?')} {float(h.get('percent', 0)):g}%", h["verdict"])
        for h in rollout.get("history", [])
        if isinstance(h.get("verdict"), Mapping)
    ]
    latest = rollout.get("verdict")
    if isinstance(latest, Mapping) and (not judged or judged[-1][1] != latest):
        judged.append(("now", latest))
    out: dict[str, list[Point]] = {}
    for label, verdict in judged:
        for check in verdict.get("guards", []) or []:
            if isinstance(check, Mapping):
                name = str(check.get("guard", "check"))
                out.setdefault(name, []).append((label, dict(check)))
    return out


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _pct(value: float) -> str:
    return f"{100 * value:.3g}%"


def svg(title: str, series: Sequence[Point]) -> str:  # noqa: C901  # one drawing
    """Return an ``<svg>`` element charting one check over *series*."""
    rows = []
    for label, c in series:
        control, canary = _num(c.get("control_rate")), _num(c.get("canary_rate"))
        lower, upper = _num(c.get("lower")), _num(c.get("upper"))
        margin = _num(c.get("margin"))
        if margin is None:
            margin = _num(c.get("max_increase"))
        rows.append((label, control, canary, lower, upper, margin))
    values = [0.0]
    for _, control, canary, _lower, upper, margin in rows:
        values += [v for v in (control, canary) if v is not None]
        if control is not None:
            values += [control + d for d in (upper, margin) if d is not None]
    top = max(max(values) * 1.15, 0.001)
    bottom = min(0.0, *values)
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def y(v: float) -> float:
        return round(_TOP + plot_h * (1 - (v - bottom) / (top - bottom)), 1)

    step = plot_w / max(len(rows), 1)

    def x(i: int) -> float:
        return round(_LEFT + step * (i + 0.5), 1)

    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
            f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'aria-label="{escape(title)}: canary and control rate, judge bound">'
        ),
        f"<title>{escape(title)}</title>",
        (
            f'<text x="{_LEFT}" y="16" font-size="13" font-weight="bold" '
            f'fill="#212529">{escape(title)}</text>'
        ),
    ]
    for k in range(5):
        v = bottom + (top - bottom) * k / 4
        parts.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y(v)}" y2="{y(v)}" '
            f'stroke="#dee2e6" stroke-width="1"/>'
            f'<text x="{_LEFT - 6}" y="{y(v) + 4}" font-size="11" text-anchor="end" '
            f'fill="#495057">{_pct(v)}</text>'
        )
    for i, (label, control, _canary, lower, upper, margin) in enumerate(rows):
        cx = x(i)
        parts.append(
            f'<text x="{cx}" y="{HEIGHT - _BOTTOM + 16}" font-size="11" '
            f'text-anchor="middle" fill="#495057">{escape(label)}</text>'
        )
        if control is None:
            continue
        if lower is not None and upper is not None:
            lo, hi = y(max(control + lower, 0.0)), y(control + upper)  # rates >= 0
            parts.append(
                f'<line class="bound" x1="{cx}" x2="{cx}" y1="{lo}" y2="{hi}" '
                f'stroke="{BOUND}" stroke-width="2"/>'
                f'<line x1="{cx - 7}" x2="{cx + 7}" y1="{hi}" y2="{hi}" '
                f'stroke="{BOUND}" stroke-width="2"/>'
                f'<line x1="{cx - 7}" x2="{cx + 7}" y1="{lo}" y2="{lo}" '
                f'stroke="{BOUND}" stroke-width="2"/>'
            )
        if margin is not None:
            ym = y(control + margin)
            parts.append(
                f'<line class="margin" x1="{cx - step / 2 + 4:.1f}" '
                f'x2="{cx + step / 2 - 4:.1f}" y1="{ym}" y2="{ym}" stroke="{MARGIN}" '
                f'stroke-width="2" stroke-dasharray="6 4"/>'
            )
    arms = (
        (CONTROL, "control", [r[1] for r in rows]),
        (CANARY, "canary", [r[2] for r in rows]),
    )
    for color, name, rates in arms:
        pts = [(x(i), y(v)) for i, v in enumerate(rates) if v is not None]
        if len(pts) > 1:
            line = " ".join(f"{a},{b}" for a, b in pts)
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                f'points="{line}"/>'
            )
        parts.extend(
            f'<circle class="{name}" cx="{a}" cy="{b}" r="4" fill="{color}"/>'
            for a, b in pts
        )
    legend = (
        (CONTROL, "control rate"),
        (CANARY, "canary rate"),
        (BOUND, "judge's bound on canary"),
        (MARGIN, "must stay below (margin)"),
    )
    lx = float(_LEFT)
    for color, text in legend:
        parts.append(
            f'<rect x="{lx:.0f}" y="{HEIGHT - 16}" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14:.0f}" y="{HEIGHT - 7}" font-size="11" '
            f'fill="#212529">{escape(text)}</text>'
        )
        lx += 22 + 6.2 * len(text)
    parts.append("</svg>")
    return "".join(parts)
