"""Conditions and segments of a flag document, compiled to closures at load.

:class:`Conditions` turns the ``if`` of a rule or segment into a
``cond(attributes, targeting_key) -> bool`` (operators from ``_targeting``),
resolves segments once each (with cycle detection) and reports every problem
into the document's :class:`Problems`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tipkit.errors import ConfigError, ConfigProblem
from tipkit.flags._targeting import Cond, compile_operator
from tipkit.flags._yaml import LocDict, line_of, line_of_item

__all__ = ["SEGMENT_KEYS", "Conditions", "Problems"]

SEGMENT_KEYS = ("description", "include", "exclude", "if")


class Problems:
    """Every problem found in one document: :meth:`error` raises them all at once."""

    __slots__ = ("found", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.found: list[ConfigProblem] = []

    def __len__(self) -> int:
        return len(self.found)

    def add(
        self,
        message: str,
        *,
        flag: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        """Record one problem with where it is."""
        self.found.append(
            ConfigProblem(
                message, source=self.source, flag=flag, field=field, line=line
            )
        )

    def mapping(self, doc: Mapping[str, Any], name: str) -> dict[Any, Any]:
        """Return the mapping ``doc[name]`` (``{}`` if absent, or reported if not one)."""
        section = doc.get(name)
        if section is None:
            return {}
        if not isinstance(section, dict):
            self.add(
                f"'{name}' must be a mapping, got {type(section).__name__}",
                field=name,
                line=line_of(doc, name),
            )
            return {}
        return section

    def error(self) -> ConfigError:
        """Return the :class:`ConfigError` listing every problem found."""
        return ConfigError(problems=self.found)


class Conditions:
    """Compile the conditions of one document; segments are resolved once each."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.segment_defs: dict[str, Any] = {}
        self.segment_lines: dict[str, int | None] = {}
        self.segment_conds: dict[str, Cond | None] = {}
        self.visiting: list[str] = []
        self.used_segments: set[str] = set()

    def define_segments(self, doc: Mapping[str, Any]) -> None:
        """Read and compile the document's ``segments`` (each once, cycles reported)."""
        segments = self.problems.mapping(doc, "segments")
        for name, seg in segments.items():
            if not isinstance(name, str) or not name:
                self.problems.add(
                    f"a segment name must be a non-empty string, got {name!r}",
                    field="segments",
                    line=line_of(segments, name),
                )
                continue
            self.segment_defs[name] = seg
            self.segment_lines[name] = line_of(segments, name)
        for name in self.segment_defs:
            self.segment(name)

    def condition(  # noqa: C901, PLR0911, PLR0912  # one case per condition form
        self, doc: Any, *, flag: str | None, field: str, line: int | None
    ) -> Cond | None:
        """Compile one condition; report its problems and return ``None`` if any."""

        def bad(message: str, at: int | None = None, sub: str = "") -> None:
            self.problems.add(
                message,
                flag=flag,
                field=field + sub,
                line=at if at is not None else line,
            )

        if not isinstance(doc, dict) or not doc:
            bad(
                "a condition must be a mapping such as "
                f"{{attr: country, op: eq, value: NZ}}, got {doc!r}"
            )
            return None
        keys = set(doc)
        here = doc.line if isinstance(doc, LocDict) else line
        if keys <= {"attr", "op", "value"} and "attr" in keys:
            attr, op = doc["attr"], doc.get("op")
            if not isinstance(attr, str) or not attr:
                bad(
                    f"'attr' must be an attribute name, got {attr!r}",
                    line_of(doc, "attr"),
                    ".attr",
                )
                return None
            if not isinstance(op, str):
                bad(
                    f"'op' must name an operator, got {op!r}",
                    line_of(doc, "op") or here,
                    ".op",
                )
                return None
            problems: list[str] = []
            cond = compile_operator(
                attr, op, doc.get("value"), "value" in doc, problems.append
            )
            for message in problems:
                sub = ".op" if message.startswith("unknown operator") else ".value"
                bad(message, line_of(doc, sub[1:]) or here, sub)
            return cond
        if len(keys) != 1:
            bad(
                f"a condition has one form: {{attr, op, value}}, {{all: [...]}}, {{any: [...]}}, "
                f"{{not: ...}} or {{segment: name}}; got keys {sorted(map(str, keys))}",
                here,
            )
            return None
        (form,) = keys
        body = doc[form]
        at = line_of(doc, form)
        if form in ("all", "any"):
            if not isinstance(body, list) or not body:
                bad(
                    f"'{form}' needs a non-empty list of conditions, got {body!r}",
                    at,
                    f".{form}",
                )
                return None
            parts = [
                self.condition(
                    c,
                    flag=flag,
                    field=f"{field}.{form}[{i}]",
                    line=line_of_item(body, i, at),
                )
                for i, c in enumerate(body)
            ]
            if any(p is None for p in parts):
                return None
            conds: tuple[Cond, ...] = tuple(p for p in parts if p is not None)
            if len(conds) == 1:
                return conds[0]
            if form == "all":
                return lambda a, k: all(c(a, k) for c in conds)
            return lambda a, k: any(c(a, k) for c in conds)
        if form == "not":
            inner = self.condition(body, flag=flag, field=f"{field}.not", line=at)
            return None if inner is None else (lambda a, k: not inner(a, k))
        if form == "segment":
            if not isinstance(body, str):
                bad(f"'segment' must name a segment, got {body!r}", at, ".segment")
                return None
            if body not in self.segment_defs:
                bad(
                    f"unknown segment {body!r}; defined segments: {sorted(self.segment_defs)}",
                    at,
                    ".segment",
                )
                return None
            self.used_segments.add(body)
            if body in self.visiting:
                cycle = " -> ".join([*self.visiting[self.visiting.index(body) :], body])
                bad(f"segment cycle: {cycle}", at, ".segment")
                return None
            resolved = self.segment(body)
            if resolved is None:
                return None
            return resolved
        bad(
            f"unknown condition form {form!r}; expected attr/op/value, all, any, not or segment",
            at,
        )
        return None

    def segment(self, name: str) -> Cond | None:
        """Return segment *name*'s condition, compiling it on first use."""
        if name in self.segment_conds:
            return self.segment_conds[name]
        self.visiting.append(name)
        try:
            cond = self._segment(name)
        finally:
            self.visiting.pop()
        self.segment_conds[name] = cond
        return cond

    def _segment(self, name: str) -> Cond | None:  # noqa: C901  # a validator reads best as one flat list of checks
        seg = self.segment_defs[name]
        field = f"segments.{name}"
        line = self.segment_lines[name]
        if not isinstance(seg, dict):
            self.problems.add(
                f"a segment must be a mapping with include/exclude/if, got {seg!r}",
                field=field,
                line=line,
            )
            return None
        ok = True
        for k in seg:
            if k not in SEGMENT_KEYS:
                self.problems.add(
                    f"unknown key {k!r} in a segment; expected one of: {', '.join(SEGMENT_KEYS)}",
                    field=f"{field}.{k}",
                    line=line_of(seg, k),
                )
                ok = False
        lists: dict[str, frozenset[str]] = {}
        for part in ("include", "exclude"):
            items = seg.get(part) or []
            if not isinstance(items, list) or not all(
                isinstance(i, str | int) and not isinstance(i, bool) for i in items
            ):
                self.problems.add(
                    f"'{part}' must be a list of targeting keys (strings), got {items!r}",
                    field=f"{field}.{part}",
                    line=line_of(seg, part),
                )
                ok = False
                items = []
            lists[part] = frozenset(str(i) for i in items)
        cond: Cond | None = None
        if "if" in seg:
            cond = self.condition(
                seg["if"], flag=None, field=f"{field}.if", line=line_of(seg, "if")
            )
            if cond is None:
                ok = False
        if not ok:
            return None
        include, exclude = lists["include"], lists["exclude"]

        def member(a: Mapping[str, Any], k: Any) -> bool:
            if k is not None and not isinstance(k, str):
                k = str(k) if isinstance(k, int) and not isinstance(k, bool) else None
            if k in exclude:
                return False
            if k in include:
                return True
            return cond is not None and cond(a, k)

        return member
