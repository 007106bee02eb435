"""Draw tipkit's architecture from its code: modules as boxes, imports as arrows.

Run: python docs/_tools/architecture.py [OUT_DIR]   (default: docs/_static)

Writes ``architecture.png`` and ``architecture.json`` (the graph the picture
shows). Read from ``src/tipkit`` with :mod:`ast`, nothing imported:

* a box is a module of ``tipkit._core`` and of ``tipkit.telemetry`` (the layer
  every other part stands on, drawn in detail), a whole package elsewhere
  (``breaker/``), or a top-level module (``timeout``);
* an arrow is a module-level import (not under ``TYPE_CHECKING``, not inside a
  function), ``from tipkit.x import _y`` counting as an import of ``tipkit.x._y``;
* a box's row is its depth: 0 for a box importing no other box, else one more
  than the deepest box it imports, so every arrow points down.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
DETAILED = ("tipkit._core", "tipkit.telemetry")

# Layer colours (what the docs page calls the layers); a box's place comes from the code.
LAYERS = {
    "core": ("#cfe0f3", ("_core", "clock", "errors")),
    "telemetry": ("#d9f0dc", ("telemetry",)),
    "stores": ("#efe0f5", ("stores/",)),
    "guards": (
        "#f8e6cc",
        (
            "breaker/",
            "ratelimit/",
            "retry/",
            "timeout",
            "bulkhead",
            "deadline",
            "tripwire",
            "hedge",
            "fallback",
            "faults",
            "adaptive",
            "_quantile",
        ),
    ),
    "delivery": ("#f7d9d9", ("flags/", "rollout/", "experiment/", "_judge/")),
    "surfaces": (
        "#e6e6e6",
        ("web/", "http/", "testing", "tipkit", "_cli", "__main__", "_demo/"),
    ),
}


def layer_of(box: str) -> str:
    """Return the layer a box belongs to (by its name), ``surfaces`` if none."""
    for layer, (_, prefixes) in LAYERS.items():
        if any(
            box == p or box.startswith((p + ".", p + "/")) or box == p + "/"
            for p in prefixes
        ):
            return layer
    return "surfaces"


def modules() -> dict[str, Path]:
    """Return every module of tipkit by dotted name (a package is its __init__)."""
    found = {}
    for path in sorted((SRC / "tipkit").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def box_of(module: str) -> str:
    """Return the box a module is drawn in."""
    parts = module.split(".")
    if len(parts) == 1:
        return "tipkit"
    if module.startswith(DETAILED) and len(parts) > 2:  # tipkit.pkg.mod
        return ".".join(parts[1:3])
    if len(parts) == 2 and not (SRC / "tipkit" / parts[1]).is_dir():
        return parts[1]
    return parts[1] + "/"


def _type_checking(node: ast.If) -> bool:
    test = node.test
    name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
    return name == "TYPE_CHECKING"


def module_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Return the imports run when the module is imported."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _type_checking(node):
                stack.extend(node.body)
            stack.extend(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                stack.extend(block)
            for handler in node.handlers:
                stack.extend(handler.body)
    return found


def targets(
    module: str, node: ast.Import | ast.ImportFrom, known: dict[str, Path]
) -> set[str]:
    """Return the tipkit modules an import statement in *module* imports."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if known[module].name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    found = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in known:
            found.add(f"{base}.{alias.name}")
        elif base in known:
            found.add(base)
    return found


def graph() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return each box's row and the arrows between boxes, from the code."""
    known = modules()
    edges: set[tuple[str, str]] = set()
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in module_imports(tree):
            for target in targets(name, node, known):
                a, b = box_of(name), box_of(target)
                if a != b:
                    edges.add((a, b))
    boxes = sorted({box_of(name) for name in known})
    out: dict[str, set[str]] = {box: set() for box in boxes}
    for a, b in edges:
        out[a].add(b)
    depth: dict[str, int] = {}

    def row(box: str, seen: tuple[str, ...] = ()) -> int:
        if box in depth:
            return depth[box]
        if box in seen:  # an import cycle between boxes: drawn on one row
            return 0
        below = [row(b, (*seen, box)) for b in out[box]]
        depth[box] = 1 + max(below) if below else 0
        return depth[box]

    for box in boxes:
        row(box)
    return depth, sorted(edges)


def draw(depth: dict[str, int], edges: list[tuple[str, str]], path: Path) -> None:
    """Draw the boxes row by row (row 0 at the bottom) and the arrows between them."""
    import matplotlib as mpl  # noqa: PLC0415  # a docs tool: only the picture needs it

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415  # after choosing the backend

    rows: dict[int, list[str]] = {}
    for box, r in sorted(depth.items()):
        rows.setdefault(r, []).append(box)
    width = max(len(r) for r in rows.values())
    fig, ax = plt.subplots(figsize=(max(12, width * 1.5), len(rows) * 1.3 + 1))
    where: dict[str, tuple[float, float]] = {}
    for r, names in rows.items():
        for i, name in enumerate(names):
            where[name] = ((i + 0.5) * width / len(names), r * 1.3)
    for a, b in edges:
        (x1, y1), (x2, y2) = where[a], where[b]
        ax.annotate(
            "",
            xy=(x2, y2 + 0.22),
            xytext=(x1, y1 - 0.22),
            arrowprops={
                "arrowstyle": "->",
                "color": "#8899aa",
                "lw": 0.6,
                "alpha": 0.6,
            },
        )
    for name, (x, y) in where.items():
        ax.text(
            x,
            y,
            name,
            ha="center",
            va="center",
            fontsize=8,
            bbox={
                "boxstyle": "round,pad=0.35",
                "facecolor": LAYERS[layer_of(name)][0],
                "edgecolor": "#445566",
            },
        )
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-0.8, (len(rows) - 1) * 1.3 + 0.8)
    ax.axis("off")
    for layer, (colour, _) in LAYERS.items():
        ax.scatter(
            [], [], marker="s", s=90, color=colour, edgecolors="#445566", label=layer
        )
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_title(
        "tipkit: modules (core and telemetry) and packages as boxes, imports as arrows"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(out: Path | None = None) -> dict[str, object]:
    """Write architecture.png and architecture.json under *out*; return the graph."""
    out = ROOT / "docs" / "_static" if out is None else out
    depth, edges = graph()
    data: dict[str, object] = {
        "rows": depth,
        "layers": {box: layer_of(box) for box in depth},
        "arrows": [list(e) for e in edges],
    }
    (out / "architecture.json").write_text(
        json.dumps(data, indent=1, sort_keys=True) + "\n"
    )
    draw(depth, edges, out / "architecture.png")
    return data


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
