"""Reading flag documents: YAML (safe, strict booleans, line numbers) and JSON.

YAML is read with a safe loader whose only booleans are ``true``/``false``
(``True``/``TRUE``/``False``/``FALSE`` too, as in YAML 1.2's core schema).
PyYAML's ``safe_load`` follows YAML 1.1, where ``on``, ``off``, ``yes``, ``no``,
``y`` and ``n`` are booleans: a variant named ``on`` would silently become
``True``. Nothing in a document is ever evaluated as code: only plain data types
are constructed.

Mappings come back as :class:`LocDict` and sequences as :class:`LocList`, which
remember the line of each key or item, so validation can say where a problem is.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

__all__ = [
    "LocDict",
    "LocList",
    "ParseError",
    "line_at",
    "line_of",
    "line_of_item",
    "parse_json",
    "parse_yaml",
]


class LocDict(dict[Any, Any]):
    """A dict that remembers the (1-based) line of itself and of each key."""

    __slots__ = ("line", "lines")

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[Any, int] = {}

    def line_of(self, key: object) -> int | None:
        """Return the line of *key* if known, else the mapping's own line."""
        return self.lines.get(key, self.line)


class LocList(list[Any]):
    """A list that remembers the (1-based) line of itself and of each item."""

    __slots__ = ("line", "lines")

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.lines: list[int | None] = []

    def line_of(self, index: int) -> int | None:
        """Return the line of item *index* if known, else the list's own line."""
        if 0 <= index < len(self.lines):
            return self.lines[index]
        return self.line


def line_at(obj: Any) -> int | None:
    """Return the line of a parsed mapping or list (``None`` for plain data)."""
    return getattr(obj, "line", None)


def line_of(obj: Any, key: Any) -> int | None:
    """Return the line of *key* in a parsed mapping (``None`` for plain data)."""
    return obj.line_of(key) if isinstance(obj, LocDict) else None


def line_of_item(obj: Any, index: int, default: int | None) -> int | None:
    """Return the line of item *index* of a parsed list, else *default*."""
    return obj.line_of(index) if isinstance(obj, LocList) else default


class ParseError(ValueError):
    """The text is not valid YAML or JSON; ``line`` says where, when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class _StrictBoolLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core booleans only."""


# Drop YAML 1.1's bool resolver (yes/no/on/off/y/n) and add the YAML 1.2 one.
_StrictBoolLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictBoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


def _build(
    loader: _StrictBoolLoader, node: yaml.Node, problems: list[ParseError]
) -> Any:
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in (
        _MAP_TAG,
        _SEQ_TAG,
    ):
        # Documents are plain data: no tags that construct objects, even inert ones.
        raise ParseError(f"invalid YAML: unsupported tag {node.tag!r}", _line(node))
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        out = LocDict(_line(node))
        for key_node, value_node in node.value:
            key = _build(loader, key_node, problems)
            try:
                hash(key)
            except TypeError:
                problems.append(
                    ParseError(
                        f"a mapping key must be a scalar, got {key!r}", _line(key_node)
                    )
                )
                continue
            if key in out:
                problems.append(
                    ParseError(
                        f"duplicate key {key!r} (first at line {out.lines[key]})",
                        _line(key_node),
                    )
                )
                continue
            out[key] = _build(loader, value_node, problems)
            out.lines[key] = _line(key_node)
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = LocList(_line(node))
        for item in node.value:
            seq.append(_build(loader, item, problems))
            seq.lines.append(_line(item))
        return seq
    return loader.construct_object(node, deep=True)


def parse_yaml(text: str) -> tuple[Any, list[ParseError]]:
    """Parse YAML *text* safely; return the data and any duplicate-key problems.

    Raises:
        ParseError: the text is not YAML (with the line of the error), or holds
            more than one document.
    """
    loader = _StrictBoolLoader(text)
    try:
        node = loader.get_single_node()
        problems: list[ParseError] = []
        data = None if node is None else _build(loader, node, problems)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else int(mark.line) + 1
        raise ParseError(f"invalid YAML: {exc.problem or exc}", line) from exc
    except (
        yaml.YAMLError
    ) as exc:  # pragma: no cover - every PyYAML error we meet is marked
        raise ParseError(f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return data, problems


def parse_json(text: str) -> tuple[Any, list[ParseError]]:
    """Parse JSON *text*; return the data and any duplicate-key problems.

    Integers of any size come back exact; ``NaN`` and ``Infinity`` are refused.

    Raises:
        ParseError: the text is not JSON (with the line of the error).
    """
    problems: list[ParseError] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                problems.append(ParseError(f"duplicate key {key!r}"))
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise ParseError(f"invalid JSON: {name} is not a number JSON allows")

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc.msg}", exc.lineno) from exc
    return data, problems
