"""Reading flag documents: YAML (safe, YAML 1.2 core schema, positions) and JSON.

YAML is read from libyaml's event stream (PyYAML's C parser when present, its
pure-Python parser otherwise) by one iterative builder here, so tipkit's rules
hold whichever parser runs:

- the YAML 1.2 core schema: only ``true``/``false`` (``True``, ``TRUE``...)
  are booleans, so ``on``/``off``/``yes``/``no`` are strings; ``017`` is 17;
  ``1:20`` and ``12:30:00`` are strings;
- plain data only: a tag other than the core ones (``!!str``, ``!!int``...)
  is refused, so nothing is ever constructed or evaluated as code;
- duplicate keys are reported, each with the line of the first;
- aliases are resolved by reference, never copied, and may stand for at most
  ``Limits.alias_expansion`` times the values written (a "billion laughs" is
  refused at its alias); a self-referencing alias is refused;
- nesting, strings, integers and the number of values are bounded by
  :class:`~tipkit.flags._limits.Limits` while building, so no input recurses
  or grows without bound;
- every problem carries its line and column.

Mappings come back as :class:`LocDict` and sequences as :class:`LocList`, which
remember where each key or item is; :func:`line_of` returns a :class:`Line`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final, Self

import yaml

from tipkit.flags._limits import DEFAULT_LIMITS, FLOAT_MAX_INT, Limits

__all__ = [
    "Line",
    "LocDict",
    "LocList",
    "ParseError",
    "line_at",
    "line_of",
    "line_of_item",
    "parse_json",
    "parse_yaml",
    "position_of",
]

_Parser: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_COL: Final = 1 << 24  # positions are packed as line * _COL + column


class Line(int):
    """A 1-based line number that also knows its 1-based ``column``."""

    column: int | None

    def __new__(cls, line: int, column: int | None = None) -> Self:
        self = super().__new__(cls, line)
        self.column = column
        return self


def _unpack(pos: int | None) -> Line | None:
    return None if pos is None else Line(pos // _COL, pos % _COL or None)


class LocDict(dict[Any, Any]):
    """A dict that remembers the position of itself and of each key."""

    __slots__ = ("pos", "pos_of")

    def __init__(self, pos: int | None = None) -> None:
        super().__init__()
        self.pos = pos
        self.pos_of: dict[Any, int] = {}

    @property
    def line(self) -> Line | None:
        """Where the mapping starts (line, with its column)."""
        return _unpack(self.pos)

    def line_of(self, key: object) -> Line | None:
        """Return the position of *key* if known, else the mapping's own."""
        return _unpack(self.pos_of.get(key, self.pos))


class LocList(list[Any]):
    """A list that remembers the position of itself and of each item."""

    __slots__ = ("pos", "pos_of")

    def __init__(self, pos: int | None = None) -> None:
        super().__init__()
        self.pos = pos
        self.pos_of: list[int] = []

    @property
    def line(self) -> Line | None:
        """Where the list starts (line, with its column)."""
        return _unpack(self.pos)

    def line_of(self, index: int) -> Line | None:
        """Return the position of item *index* if known, else the list's own."""
        if 0 <= index < len(self.pos_of):
            return _unpack(self.pos_of[index])
        return _unpack(self.pos)


def line_at(obj: Any) -> int | None:
    """Return the line of a parsed mapping or list (``None`` for plain data)."""
    return getattr(obj, "line", None)


def line_of(obj: Any, key: Any) -> int | None:
    """Return the line of *key* in a parsed mapping (``None`` for plain data)."""
    return obj.line_of(key) if isinstance(obj, LocDict) else None


def line_of_item(obj: Any, index: int, default: int | None) -> int | None:
    """Return the line of item *index* of a parsed list, else *default*."""
    return obj.line_of(index) if isinstance(obj, LocList) else default


def position_of(text: str, offset: int) -> Line:
    """Return the 1-based line and column of character *offset* in *text*."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    return Line(line, offset - (text.rfind("\n", 0, offset) + 1) + 1)


class ParseError(ValueError):
    """The text is not valid YAML or JSON, or exceeds a limit; ``line`` says where."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


# -- scalars: the YAML 1.2 core schema --------------------------------------------
_NULLS: Final = frozenset(("", "~", "null", "Null", "NULL"))
_BOOLS: Final = {
    w: w[0] in "tT" for w in ("true", "True", "TRUE", "false", "False", "FALSE")
}
_INT: Final = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT: Final = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
_MAX_DIGITS: Final = 400  # a float holds no integer longer than 309 digits
_STR_TAG: Final = "tag:yaml.org,2002:str"
_CORE_TAGS: Final = {
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")
}
_CORE_TAGS.add("!")


def _number(text: str, want: str | None) -> Any:
    """Return the int or float *text* spells, or raise ``ValueError`` saying why not."""
    if len(text) > _MAX_DIGITS:
        raise ValueError(f"the number {text[:20]}... is too long")
    if (want in (None, "int")) and _INT.fullmatch(text):
        if text.startswith(("0o", "0x")):
            value = int(text[2:], 8 if text[1] == "o" else 16)
        else:
            value = int(text)
        if not -FLOAT_MAX_INT <= value <= FLOAT_MAX_INT:
            raise ValueError("an integer beyond the range of a float is refused")
        return value
    if (want in (None, "float")) and _FLOAT.fullmatch(text):
        number = float(text) if "n" not in text.lower() else math.inf
        if not math.isfinite(number):
            raise ValueError(f"{text!r} is not a finite number")
        return number
    raise ValueError(f"{text!r} is not a number")


def _plain_scalar(text: str, cache: dict[str, Any]) -> Any:
    """Resolve a plain scalar by the core schema (memoised: flag files repeat words)."""
    try:
        return cache[text]
    except KeyError:
        pass
    if text in _NULLS:
        value: Any = None
    elif text in _BOOLS:
        value = _BOOLS[text]
    elif text[:1] in "0123456789+-." and (
        _INT.fullmatch(text) or _FLOAT.fullmatch(text)
    ):
        value = _number(text, None)
    else:
        value = text
    if len(cache) < 4096:
        cache[text] = value
    return value


def _tagged_scalar(tag: str, text: str) -> Any:
    kind = tag.rsplit(":", 1)[-1]
    if tag in ("!", _STR_TAG):
        return text
    if kind == "null":
        if text not in _NULLS:
            raise ValueError(f"{text!r} is not null")
        return None
    if kind == "bool":
        if text not in _BOOLS:
            raise ValueError(f"{text!r} is not true or false")
        return _BOOLS[text]
    return _number(text, kind)


# -- the builder -------------------------------------------------------------------
_NO_KEY: Final = object()  # a mapping expects a key
_MERGE_KEY: Final = object()  # the key was ``<<``
_BAD_KEY: Final = object()  # the key was reported; drop its value


class _Frame:
    """One open mapping or sequence while building."""

    __slots__ = ("anchor", "key", "key_pos", "mark", "merges", "obj", "size")

    def __init__(self, obj: Any, anchor: str | None, mark: Any) -> None:
        self.obj = obj
        self.anchor = anchor
        self.mark = mark
        self.size = 1  # values this collection stands for, aliases expanded
        self.key: Any = _NO_KEY
        self.key_pos = 0
        self.merges: list[LocDict] | None = None


def _pos(mark: Any) -> int:
    return int((mark.line + 1) * _COL + mark.column + 1)


class _Builder:
    """Turn one document's events into LocDict/LocList data, enforcing the limits."""

    def __init__(self, limits: Limits, problems: list[ParseError]) -> None:
        self.limits = limits
        self.problems = problems
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.open_anchors: set[str] = set()
        self.stack: list[_Frame] = []
        self.written = 0
        self.extra = 0  # values aliases stand for beyond the alias itself
        self.cache: dict[str, Any] = {}
        self.root: Any = None
        self.biggest: tuple[str, int, Any] = ("", 0, None)

    def check_expansion(self) -> None:
        """Refuse a document whose aliases stand for too many values in all."""
        produced = self.written + self.extra
        if produced > self.limits.alias_expansion * self.written:
            name, _, mark = self.biggest
            raise self.fail(
                f"aliases expand the document to {produced} values, more than "
                f"Limits.alias_expansion ({self.limits.alias_expansion}) times the "
                f"{self.written} written (the largest is *{name})",
                mark,
            )

    @staticmethod
    def fail(message: str, mark: Any) -> ParseError:
        return ParseError(message, Line(mark.line + 1, mark.column + 1))

    def count(self, mark: Any) -> None:
        self.written += 1
        if self.written > self.limits.max_nodes:
            raise self.fail(
                f"more than Limits.max_nodes ({self.limits.max_nodes}) values", mark
            )

    def scalar(self, event: Any) -> Any:
        value: Any = event.value
        if len(value) > self.limits.max_string:
            raise self.fail(
                f"a string of {len(value)} characters is longer than "
                f"Limits.max_string ({self.limits.max_string})",
                event.start_mark,
            )
        tag = event.tag
        try:
            if tag is not None and tag not in _CORE_TAGS:
                raise ValueError(f"unsupported tag {tag!r}: documents are plain data")
            if tag is not None:
                return _tagged_scalar(tag, value)
            if event.implicit[0]:
                if (
                    value == "<<"
                    and self.stack
                    and self.stack[-1].obj.__class__ is LocDict
                    and self.stack[-1].key is _NO_KEY
                ):
                    return _MERGE_KEY
                return _plain_scalar(value, self.cache)
        except ValueError as exc:
            raise self.fail(f"invalid YAML: {exc}", event.start_mark) from None
        return value

    def alias(self, event: Any) -> tuple[Any, int]:
        name = event.anchor
        if name in self.open_anchors:
            raise self.fail(f"the alias *{name} refers to itself", event.start_mark)
        found = self.anchors.get(name)
        if found is None:
            raise self.fail(f"undefined alias *{name}", event.start_mark)
        obj, size = found
        self.extra += size - 1
        if size > self.biggest[1]:
            self.biggest = (name, size, event.start_mark)
        return obj, size

    def start(self, event: Any, *, mapping: bool) -> None:
        mark = event.start_mark
        if len(self.stack) >= self.limits.max_depth:
            raise self.fail(
                f"nesting deeper than Limits.max_depth ({self.limits.max_depth} levels)",
                mark,
            )
        tag = event.tag
        want = "tag:yaml.org,2002:map" if mapping else "tag:yaml.org,2002:seq"
        if tag is not None and tag not in (want, "!"):
            raise self.fail(
                f"invalid YAML: unsupported tag {tag!r}: documents are plain data", mark
            )
        obj: Any = LocDict(_pos(mark)) if mapping else LocList(_pos(mark))
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        self.stack.append(_Frame(obj, event.anchor, mark))

    def end(self) -> None:
        frame = self.stack.pop()
        obj = frame.obj
        for source in frame.merges or ():
            # Explicit keys win over merged ones, earlier sources over later.
            for key, value in source.items():
                if key not in obj:
                    obj[key] = value
                    obj.pos_of[key] = source.pos_of.get(key, source.pos or 0)
        if frame.anchor is not None:
            self.open_anchors.discard(frame.anchor)
        self.add(obj, frame.size, frame.mark, frame.anchor)

    def add(self, value: Any, size: int, mark: Any, anchor: str | None) -> None:
        """Put a finished value into the open collection (or make it the root)."""
        if anchor is not None:
            self.anchors[anchor] = (value, size)
        if not self.stack:
            self.root = value
            return
        frame = self.stack[-1]
        frame.size += size
        obj = frame.obj
        if obj.__class__ is LocList:
            obj.append(value)
            obj.pos_of.append(_pos(mark))
        elif frame.key is _NO_KEY:
            self.key(frame, value, mark)
        else:
            self.put(frame, value, mark)

    def key(self, frame: _Frame, value: Any, mark: Any) -> None:
        if value is _MERGE_KEY:
            frame.key = _MERGE_KEY
            return
        try:
            hash(value)
        except TypeError:
            self.problems.append(
                self.fail(f"a mapping key must be a scalar, got {value!r}", mark)
            )
            frame.key = _BAD_KEY
            return
        frame.key, frame.key_pos = value, _pos(mark)

    def put(self, frame: _Frame, value: Any, mark: Any) -> None:
        key, frame.key = frame.key, _NO_KEY
        obj = frame.obj
        if key is _BAD_KEY:
            return
        if key is _MERGE_KEY:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(s, LocDict) for s in sources):
                self.problems.append(
                    self.fail(
                        "a merge key (<<) needs a mapping or a list of them", mark
                    )
                )
                return
            frame.merges = [*(frame.merges or []), *sources]
            return
        if key in obj:
            self.problems.append(
                ParseError(
                    f"duplicate key {key!r} (first at line {obj.line_of(key)})",
                    _unpack(frame.key_pos),
                )
            )
            return
        obj[key] = value
        obj.pos_of[key] = frame.key_pos


def _build(loader: Any, builder: _Builder) -> Any:  # noqa: C901, PLR0912, PLR0915  # the hot loop, inlined
    """Drive *builder* over the events of one document; refuse a second document.

    The commonest event, a plain scalar without tag or anchor going into a
    mapping or a list, is handled inline (a flag file is mostly those); every
    other case goes through the builder's methods.
    """
    documents = 0
    scalar_event, alias_event = yaml.ScalarEvent, yaml.AliasEvent
    mapping_start, sequence_start = yaml.MappingStartEvent, yaml.SequenceStartEvent
    ends = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    get_event = loader.get_event
    stack, cache = builder.stack, builder.cache
    max_nodes, max_string = builder.limits.max_nodes, builder.limits.max_string
    while True:
        event = get_event()
        kind = event.__class__
        if kind is scalar_event:
            mark = event.start_mark
            builder.written += 1
            if builder.written > max_nodes:
                raise builder.fail(
                    f"more than Limits.max_nodes ({max_nodes}) values", mark
                )
            text = event.value
            if (
                stack
                and event.tag is None
                and event.anchor is None
                and event.implicit[0]
                and len(text) <= max_string
                and text != "<<"
            ):
                value = cache.get(text, _MISS)
                if value is _MISS:
                    value = builder.scalar(event)
                frame = stack[-1]
                frame.size += 1
                obj = frame.obj
                pos = (mark.line + 1) * _COL + mark.column + 1
                if obj.__class__ is LocList:
                    obj.append(value)
                    obj.pos_of.append(pos)
                    continue
                key = frame.key
                if key is _NO_KEY:
                    frame.key, frame.key_pos = value, pos
                    continue
                if key is not _MERGE_KEY and key is not _BAD_KEY and key not in obj:
                    frame.key = _NO_KEY
                    obj[key] = value
                    obj.pos_of[key] = frame.key_pos
                    continue
                frame.size -= 1
            builder.add(builder.scalar(event), 1, mark, event.anchor)
        elif kind is mapping_start or kind is sequence_start:
            builder.count(event.start_mark)
            builder.start(event, mapping=kind is mapping_start)
        elif kind in ends:
            builder.end()
        elif kind is alias_event:
            builder.count(event.start_mark)
            value, size = builder.alias(event)
            builder.add(value, size, event.start_mark, None)
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise builder.fail(
                    "invalid YAML: expected a single document, found more",
                    event.start_mark,
                )
        elif kind is yaml.StreamEndEvent:
            builder.check_expansion()
            return builder.root


_MISS: Final = object()


def parse_yaml(
    text: str, limits: Limits = DEFAULT_LIMITS
) -> tuple[Any, list[ParseError]]:
    """Parse YAML *text* safely; return the data and any duplicate-key problems.

    Raises:
        ParseError: the text is not YAML, holds more than one document, uses a
            tag or an alias it may not, or exceeds *limits* (with the line and
            column of the problem).
    """
    if len(text) > limits.max_bytes:
        raise ParseError(
            f"the document is larger than Limits.max_bytes ({limits.max_bytes})"
        )
    problems: list[ParseError] = []
    builder = _Builder(limits, problems)
    loader = _Parser(text)
    try:
        data = _build(loader, builder)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else Line(mark.line + 1, mark.column + 1)
        raise ParseError(f"invalid YAML: {exc.problem or exc}", line) from None
    except yaml.reader.ReaderError as exc:
        raise ParseError(
            f"invalid YAML: {exc.reason} (#x{exc.character:04x})"
            if isinstance(exc.character, int)
            else f"invalid YAML: {exc.reason}",
            position_of(text, exc.position),
        ) from None
    except yaml.YAMLError as exc:
        raise ParseError(f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return data, problems


def parse_json(  # noqa: C901  # one hook per JSON value kind
    text: str, limits: Limits = DEFAULT_LIMITS
) -> tuple[Any, list[ParseError]]:
    """Parse JSON *text*; return the data and any duplicate-key problems.

    Integers come back exact (and are refused beyond a float's range);
    ``NaN`` and ``Infinity`` are refused. Nesting is bounded by *limits*
    (checked by the caller's walk); JSON too deep to parse is a ParseError.

    Raises:
        ParseError: the text is not JSON (with the line and column of the error).
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
        raise ParseError(
            f"invalid JSON: {name} is not a number JSON allows",
            position_of(text, text.find(name)),
        )

    def integer(digits: str) -> int:
        if (
            len(digits) > _MAX_DIGITS
            or not -FLOAT_MAX_INT <= int(digits) <= FLOAT_MAX_INT
        ):
            raise ParseError(
                "invalid JSON: an integer beyond the range of a float is refused",
                position_of(text, text.find(digits[:50])),
            )
        return int(digits)

    def real(digits: str) -> float:
        number = float(digits)
        if not math.isfinite(number):
            raise ParseError(
                f"invalid JSON: {digits[:20]} is not a finite number",
                position_of(text, text.find(digits[:50])),
            )
        return number

    if len(text) > limits.max_bytes:
        raise ParseError(
            f"the document is larger than Limits.max_bytes ({limits.max_bytes})"
        )
    try:
        data = json.loads(
            text,
            object_pairs_hook=pairs,
            parse_constant=constant,
            parse_int=integer,
            parse_float=real,
        )
    except json.JSONDecodeError as exc:
        raise ParseError(
            f"invalid JSON: {exc.msg}", Line(exc.lineno, exc.colno)
        ) from None
    except RecursionError:
        raise ParseError(
            f"invalid JSON: nesting deeper than Limits.max_depth ({limits.max_depth})"
        ) from None
    return data, problems
