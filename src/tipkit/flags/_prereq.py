"""Prerequisites, load side: read each flag's ``prerequisites``, then check the graph.

``prerequisites: [{flag: parent, variants: [on]}]`` serves a flag's rules only
while every parent serves one of the listed variants for the same context;
otherwise the flag serves its off variant with reason ``PREREQUISITE_FAILED``.
How that is decided at evaluation (and narrated by ``explain``) is written once
in ``_precedence``. Here: :func:`parse` validates one flag's list, and
:func:`check_graph` refuses, as ``ConfigError`` problems naming the flag, field
and line, a parent that is not defined, a variant the parent does not have, a
cycle, and a chain deeper than ``Limits.max_prerequisite_depth``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from tipkit.flags._conditions import Problems
from tipkit.flags._yaml import line_of, line_of_item

__all__ = ["PREREQ_KEYS", "Prerequisite", "check_graph", "parse"]

PREREQ_KEYS: Final = ("flag", "variants")


class Prerequisite:
    """One compiled prerequisite: the parent's key and the variants that satisfy it."""

    __slots__ = ("field", "flag", "line", "variants")

    def __init__(
        self, flag: str, variants: frozenset[str], field: str, line: int | None
    ) -> None:
        self.flag = flag
        self.variants = variants
        self.field = field  # where it was written, for load-time problems
        self.line = line

    def __repr__(self) -> str:
        return f"<Prerequisite {self.flag!r} variants={sorted(self.variants)}>"


def parse(  # noqa: C901  # a validator reads best as one flat list of checks
    key: str, fdoc: Mapping[str, Any], line: int | None, problems: Problems
) -> tuple[Prerequisite, ...]:
    """Validate flag *key*'s ``prerequisites`` (its shape only); return them."""
    if "prerequisites" not in fdoc:
        return ()
    raw = fdoc["prerequisites"]
    at = line_of(fdoc, "prerequisites") or line

    def bad(message: str, field: str, where: int | None) -> None:
        problems.add(message, flag=key, field=field, line=where)

    if not isinstance(raw, list):
        bad(
            "'prerequisites' must be a list of {flag: <key>, variants: [<name>, ...]}, "
            f"got {type(raw).__name__}",
            "prerequisites",
            at,
        )
        return ()
    out: list[Prerequisite] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        field = f"prerequisites[{i}]"
        iline = line_of_item(raw, i, at)
        if not isinstance(item, dict):
            bad(f"a prerequisite must be a mapping, got {item!r}", field, iline)
            continue
        unknown = [k for k in item if k not in PREREQ_KEYS]
        for k in unknown:
            bad(
                f"unknown key {k!r} in a prerequisite; expected one of: flag, variants",
                f"{field}.{k}",
                line_of(item, k) or iline,
            )
        parent = item.get("flag")
        variants = item.get("variants")
        if not isinstance(parent, str) or not parent:
            bad(
                f"'flag' must name the parent flag, got {parent!r}",
                f"{field}.flag",
                line_of(item, "flag") or iline,
            )
            continue
        if parent == key:
            bad(
                f"flag {key!r} cannot be its own prerequisite (a cycle)",
                f"{field}.flag",
                line_of(item, "flag") or iline,
            )
            continue
        if parent in seen:
            bad(
                f"prerequisite {parent!r} is listed twice",
                f"{field}.flag",
                line_of(item, "flag") or iline,
            )
            continue
        seen.add(parent)
        if (
            not isinstance(variants, list)
            or not variants
            or not all(isinstance(v, str) and v for v in variants)
        ):
            bad(
                "'variants' must be a non-empty list of the parent's variant names, "
                f"got {variants!r}",
                f"{field}.variants",
                line_of(item, "variants") or iline,
            )
            continue
        if not unknown:
            out.append(Prerequisite(parent, frozenset(variants), field, iline))
    return tuple(out)


def check_graph(  # noqa: C901, PLR0912  # one walk: parents, variants, cycles, depth
    prereqs: Mapping[str, tuple[Prerequisite, ...]],
    variants_of: Mapping[str, Mapping[str, Any]],
    declared: set[str],
    problems: Problems,
    max_depth: int,
) -> None:
    """Report missing parents, unknown variants, cycles and chains over *max_depth*.

    *prereqs* maps each flag with prerequisites to them, *variants_of* each
    flag that compiled to its variants, *declared* every key the document
    names (a parent that is declared but invalid has its own problems). The
    walk is iterative: no document can make it recurse.
    """
    for key, pres in prereqs.items():
        for p in pres:
            if p.flag not in declared:
                problems.add(
                    f"prerequisite flag {p.flag!r} is not defined in the document",
                    flag=key,
                    field=f"{p.field}.flag",
                    line=p.line,
                )
            elif p.flag in variants_of:
                missing = sorted(p.variants - set(variants_of[p.flag]))
                if missing:
                    problems.add(
                        f"prerequisite flag {p.flag!r} has no variant {missing[0]!r}; "
                        f"its variants are {sorted(variants_of[p.flag])}",
                        flag=key,
                        field=f"{p.field}.variants",
                        line=p.line,
                    )
    depth: dict[str, int] = {}  # longest chain below a flag (0: no prerequisites)
    reported: set[str] = set()
    for root in prereqs:
        if root in depth:
            continue
        path: list[str] = [root]
        on_path = {root}
        iters = [iter(prereqs.get(root, ()))]
        while iters:
            node = path[-1]
            nxt = next(iters[-1], None)
            if nxt is None:
                below = [depth.get(p.flag, 0) for p in prereqs.get(node, ())]
                depth[node] = 1 + max(below) if below else 0
                if depth[node] > max_depth and node not in reported:
                    reported.add(node)
                    problems.add(
                        f"prerequisites nest {depth[node]} deep, more than "
                        f"Limits.max_prerequisite_depth ({max_depth})",
                        flag=node,
                        field="prerequisites",
                        line=prereqs[node][0].line,
                    )
                iters.pop()
                on_path.discard(path.pop())
                continue
            child = nxt.flag
            if child in on_path:
                cycle = [*path[path.index(child) :], child]
                if node not in reported:
                    reported.add(node)
                    problems.add(
                        "prerequisites form a cycle: " + " -> ".join(cycle),
                        flag=node,
                        field=f"{nxt.field}.flag",
                        line=nxt.line,
                    )
                continue
            if child in depth or child not in prereqs:
                continue
            path.append(child)
            on_path.add(child)
            iters.append(iter(prereqs[child]))
