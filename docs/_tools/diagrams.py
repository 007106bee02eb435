"""Draw the docs' pictures from tipkit's code, so they stay true.

Run: python docs/_tools/diagrams.py [OUT_DIR]   (default: docs/_static/diagrams)

Writes one PNG per picture and ``diagrams.json``, the facts each picture shows,
read from the code: the breaker's states from ``BreakerState``; the rollout's
stages, decisions and the judge's bounds from a real ``Rollout`` run on a
``FakeClock``; the composition order from ``docs/composition.md`` (the one
sentence that states it); the fleet's parts from the store's methods.
``tests/test_docs_site.py`` recomputes the facts and fails when a picture is
stale: run this script again and commit the result. The module map is drawn
by ``docs/_tools/architecture.py``.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "_static" / "diagrams"
INK, MUTED = "#1f2328", "#57606a"
COLOURS = {
    "closed": "#d9f0dc",
    "open": "#f7d9d9",
    "half_open": "#fbeccb",
    "forced_open": "#eeeeee",
    "disabled": "#eeeeee",
}

# -- facts --------------------------------------------------------------------------


def breaker_facts() -> dict[str, Any]:
    """Return the breaker's states (from the enum) and the transitions drawn."""
    from tipkit.breaker import BreakerState  # noqa: PLC0415  # the script runs standalone

    states = [s.value for s in BreakerState]
    transitions = [
        ("closed", "open", "failure or slow-call rate\n>= threshold over the window"),
        (
            "open",
            "half_open",
            "open_duration(times_opened)\nhas passed (on the next call)",
        ),
        ("half_open", "closed", "the half_open_calls trials\nare below the thresholds"),
        ("half_open", "open", "a trial fails, or\nmax_half_open_wait passes"),
        ("any", "forced_open", "force_open()"),
        ("any", "disabled", "disable()"),
        ("forced_open", "closed", "reset()"),
        ("disabled", "closed", "reset()"),
    ]
    return {"states": states, "transitions": [list(t) for t in transitions]}


def rollout_facts(seed: int = 7) -> dict[str, Any]:
    """Run a good change through a real Rollout and record stages and the judge's bound."""
    from tipkit import ErrorRateCheck, Flags, Rollout  # noqa: PLC0415
    from tipkit.testing import FakeClock  # noqa: PLC0415

    clock = FakeClock()
    flags = Flags.from_dict(
        {
            "flags": {
                "pricing": {
                    "variants": {"on": True, "off": False},
                    "default_variant": "off",
                    "off_variant": "off",
                }
            }
        },
        clock=clock,
    )
    rollout = Rollout(
        "pricing",
        flags=flags,
        min_stage_duration=120,
        min_samples=1000,
        checks=[ErrorRateCheck(max_increase=0.0, pass_below=0.01)],
        clock=clock,
    )
    stages = list(rollout.stages)
    rng = random.Random(seed)  # noqa: S311  # a simulation
    points: list[list[float]] = []
    changes: list[list[float]] = []
    percent, user = rollout.percent, 0
    while 0 < rollout.percent < 100 and user < 2_000_000:
        user += 1
        with rollout.observe(f"user-{user}") as arm:
            clock.advance(0.01)
            if rng.random() < 0.01:
                arm.fail()
        if user % 500 == 0:
            verdict = rollout.evaluate()
            if verdict is not None and verdict.checks:
                c = verdict.checks[0]
                if c.canary_count >= 100:
                    points.append(
                        [round(clock.monotonic() / 60, 3), c.upper, c.lower, c.margin]
                    )
        if rollout.percent != percent:
            changes.append([round(clock.monotonic() / 60, 3), percent, rollout.percent])
            percent = rollout.percent
    return {
        "stages": stages,
        "status": rollout.status().status,
        "changes": changes,
        "points": points,
    }


def composition_facts() -> dict[str, Any]:
    """Return the full order (outermost first) as docs/composition.md states it."""
    text = (ROOT / "docs" / "composition.md").read_text(encoding="utf-8")
    found = re.search(r"^(traced →.*?→ call)$", text, re.MULTILINE | re.DOTALL)
    if found is None:
        raise SystemExit(
            "docs/composition.md no longer states the order as 'traced → ... → call'"
        )
    order = [part.strip() for part in " ".join(found.group(1).split()).split("→")]
    return {"order": order}


def fleet_facts() -> dict[str, Any]:
    """Return the fleet's parts, each backed by a RedisStore method that exists."""
    from tipkit.stores._redis import RedisStore  # noqa: PLC0415

    parts = {
        "kill switches, overrides, splits": "compare_and_set",
        "rollout stage and counts": "increment",
        "shared token buckets (Lua, server clock)": "take_tokens",
        "change notices (pub/sub)": "watch",
        "audit log (stream)": "append_audit",
    }
    return {"parts": {k: v for k, v in parts.items() if hasattr(RedisStore, v)}}


def facts() -> dict[str, Any]:
    """Return every picture's facts (what the JSON file holds)."""
    return {
        "breaker": breaker_facts(),
        "rollout": rollout_facts(),
        "composition": composition_facts(),
        "fleet": fleet_facts(),
    }


# -- drawing ------------------------------------------------------------------------


def _box(  # noqa: PLR0917  # a box is its place, size, text and colour
    ax: Any, x: float, y: float, w: float, h: float, text: str, colour: str, **kw: Any
) -> None:
    from matplotlib.patches import FancyBboxPatch  # noqa: PLC0415

    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            fc=colour,
            ec=INK,
            lw=1.2,
        )
    )
    ax.text(x, y, text, ha="center", va="center", color=INK, **{"fontsize": 11, **kw})


def _arrow(
    ax: Any,
    a: tuple[float, float],
    b: tuple[float, float],
    label: str = "",
    rad: float = 0.0,
    **kw: Any,
) -> None:
    ax.annotate(
        "",
        xy=b,
        xytext=a,
        arrowprops={
            "arrowstyle": "-|>",
            "color": INK,
            "lw": 1.2,
            "connectionstyle": f"arc3,rad={rad}",
            "shrinkA": 4,
            "shrinkB": 4,
        },
    )
    if label:
        mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
        ax.text(
            mx + kw.pop("dx", 0.0),
            my + kw.pop("dy", 0.0),
            label,
            ha="center",
            va="center",
            fontsize=8.5,
            color=MUTED,
            **kw,
        )


def _figure(
    w: float, h: float, xlim: tuple[float, float], ylim: tuple[float, float]
) -> tuple[Any, Any]:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(w, h), dpi=110)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    return fig, ax


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig.savefig(
        path, bbox_inches="tight", metadata={"Software": None}, facecolor="white"
    )
    plt.close(fig)


def draw_breaker(f: dict[str, Any], path: Path) -> None:
    """The breaker's state machine."""
    fig, ax = _figure(9, 5.2, (0, 10), (0, 6))
    pos = {
        "closed": (1.6, 4.2),
        "open": (8.4, 4.2),
        "half_open": (5.0, 1.4),
        "forced_open": (1.6, 5.6),
        "disabled": (8.4, 5.6),
    }
    for state in f["states"]:
        x, y = pos[state]
        small = state in {"forced_open", "disabled"}
        _box(
            ax,
            x,
            y,
            2.0 if small else 2.2,
            0.6 if small else 0.9,
            state.upper(),
            COLOURS[state],
            fontsize=9 if small else 12,
            weight="bold",
        )
    _arrow(ax, (2.7, 4.35), (7.3, 4.35), f["transitions"][0][2], dy=0.45)
    _arrow(
        ax, (8.3, 3.75), (6.1, 1.6), f["transitions"][1][2], rad=-0.25, dx=1.5, dy=-0.3
    )
    _arrow(
        ax, (3.9, 1.6), (1.7, 3.75), f["transitions"][2][2], rad=-0.25, dx=-1.5, dy=-0.3
    )
    _arrow(
        ax, (5.6, 1.85), (7.8, 3.75), f["transitions"][3][2], rad=-0.1, dx=-1.2, dy=0.2
    )
    ax.text(
        5.0,
        5.6,
        "force_open() / disable()\nfrom any state; reset() → CLOSED",
        ha="center",
        va="center",
        fontsize=8.5,
        color=MUTED,
    )
    ax.text(
        5.0,
        0.25,
        "shadow mode: the same transitions, every call let through,"
        " rejections counted as would_reject",
        ha="center",
        fontsize=8.5,
        color=MUTED,
        style="italic",
    )
    _save(fig, path)


def draw_rollout(f: dict[str, Any], path: Path) -> None:
    """A rollout's stages and the judge's bound on the canary's harm."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 5.6), dpi=110, sharex=True, height_ratios=[1, 1.4]
    )
    t = [0.0] + [c[0] for c in f["changes"]]
    pct = [f["stages"][0]] + [c[2] for c in f["changes"]]
    top.step([*t, t[-1] * 1.02], [*pct, pct[-1]], where="post", color=INK, lw=2)
    top.set_yscale("log")
    top.set_yticks(f["stages"], [f"{s:g}%" for s in f["stages"]])
    top.minorticks_off()
    top.set_ylabel("canary share")
    top.set_title(
        "a good change promoted stage by stage (a real Rollout on a fake clock)",
        fontsize=10,
        loc="left",
    )
    for x in t[1:]:
        for ax in (top, bottom):
            ax.axvline(x, color="#2da44e", lw=0.8, ls=":")
    pts = f["points"]
    xs = [p[0] for p in pts]
    bottom.fill_between(
        xs,
        [100 * p[2] for p in pts],
        [100 * p[1] for p in pts],
        color="#cfe0f3",
        label="judge's always-valid interval for canary - control",
    )
    bottom.plot(
        xs,
        [100 * p[1] for p in pts],
        color="#0969da",
        lw=1.5,
        label="upper bound: PASS once below the margin",
    )
    bottom.plot(
        xs,
        [100 * p[3] for p in pts],
        color="#cf222e",
        lw=1.5,
        ls="--",
        label="pass margin (pass_below)",
    )
    bottom.axhline(0, color=MUTED, lw=0.8)
    bottom.set_ylim(-2.5, 3.0)
    bottom.set_ylabel("error-rate difference (pp)")
    bottom.set_xlabel("virtual minutes")
    bottom.legend(loc="upper right", fontsize=8, frameon=True)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def draw_composition(f: dict[str, Any], path: Path) -> None:
    """The composition order, outermost first."""
    order = f["order"]
    n = len(order)
    fig, ax = _figure(9, 1.0 + 0.42 * n, (0, 10), (0, n + 0.6))
    for i, name in enumerate(order):
        inset = 0.3 * i
        y = n - i
        colour = "#f6f8fa" if name in {"traced", "call"} else "#f8e6cc"
        from matplotlib.patches import Rectangle  # noqa: PLC0415

        ax.add_patch(
            Rectangle((0.4 + inset, 0.3), 9.2 - 2 * inset, y, fc=colour, ec=INK, lw=1)
        )
        ax.text(
            0.55 + inset,
            0.3 + y - 0.35,
            name,
            fontsize=10,
            color=INK,
            va="center",
            weight="bold" if name == "call" else "normal",
        )
    ax.text(
        9.5,
        n + 0.45,
        "outermost first: compose(a, b)(f) == a(b(f))",
        ha="right",
        fontsize=9,
        color=MUTED,
    )
    _save(fig, path)


def draw_fleet(f: dict[str, Any], path: Path) -> None:
    """Processes, Redis, pub/sub and the audit log."""
    fig, ax = _figure(9.5, 5.0, (0, 10), (0, 6))
    for i, x in enumerate((1.4, 3.9, 6.4)):
        _box(
            ax,
            x,
            4.9,
            2.2,
            1.1,
            f"app process {i + 1}\nFlags · Rollout · breaker\nlocal state, acts at once",
            "#cfe0f3",
            fontsize=8.5,
        )
    _box(
        ax,
        8.7,
        4.9,
        2.2,
        1.1,
        "operators\ntipkit ops · console\n(same public API)",
        "#e6e6e6",
        fontsize=8.5,
    )
    parts = list(f["parts"])
    body = "\n".join(f"• {p}" for p in parts)
    _box(ax, 4.4, 1.55, 6.6, 2.2, "", "#efe0f5")
    ax.text(
        1.3, 2.45, "Redis (RedisStore, AOF on)", fontsize=11, weight="bold", color=INK
    )
    ax.text(1.3, 1.35, body, fontsize=8.5, color=INK, va="center")
    for x in (1.4, 3.9, 6.4):
        _arrow(ax, (x - 0.2, 4.3), (x - 0.2, 2.7))
        _arrow(ax, (x + 0.25, 2.7), (x + 0.25, 4.3))
    _arrow(ax, (8.7, 4.3), (7.2, 2.7))
    ax.text(
        1.85, 3.5, "writes: kill,\nrollback, counts,\ntokens", fontsize=8, color=MUTED
    )
    ax.text(
        4.35,
        3.5,
        "pushed: a change\nreaches every\nprocess in ms",
        fontsize=8,
        color=MUTED,
    )
    ax.text(
        5.0,
        0.05,
        "a store outage delays a safety action, never loses it: each process acts locally first",
        ha="center",
        fontsize=8.5,
        color=MUTED,
        style="italic",
    )
    _save(fig, path)


DRAWERS = {
    "breaker-states.png": ("breaker", draw_breaker),
    "rollout-stages.png": ("rollout", draw_rollout),
    "composition-order.png": ("composition", draw_composition),
    "fleet.png": ("fleet", draw_fleet),
}


def main(out: Path = OUT) -> dict[str, Any]:
    """Draw every picture into *out* and write ``diagrams.json``; return the facts."""
    out.mkdir(parents=True, exist_ok=True)
    found = facts()
    for name, (key, draw) in DRAWERS.items():
        draw(found[key], out / name)
    (out / "diagrams.json").write_text(
        json.dumps(found, indent=1) + "\n", encoding="utf-8"
    )
    return found


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
