"""Targeting: conditions compiled once, at load, to small closures.

A compiled condition is ``cond(attributes, targeting_key) -> bool``. It never
raises for a missing attribute or an attribute of the wrong type: that makes the
condition false. Values written in the document are checked and converted when
the document is loaded, so evaluation only compares.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

__all__ = [
    "MAX_MATCH_INPUT",
    "OPERATORS",
    "Cond",
    "Report",
    "compile_operator",
    "parse_semver",
    "regex_problem",
]

Cond = Callable[[Mapping[str, Any], Any], bool]
Report = Callable[[str], None]

MAX_MATCH_INPUT: Final = 1024
"""``matches`` never matches an attribute longer than this many characters."""

TARGETING_KEY_ATTR: Final = "targeting_key"
_MISSING: Final[Any] = object()

OPERATORS: Final = (
    "eq",
    "ne",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "ends_with",
    "matches",
    "lt",
    "le",
    "gt",
    "ge",
    "semver_eq",
    "semver_lt",
    "semver_le",
    "semver_gt",
    "semver_ge",
    "before",
    "after",
    "exists",
)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float)


# -- semantic versions ------------------------------------------------------------
_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?$"
)

SemverKey = tuple[int, int, int, tuple[tuple[int, int | str], ...]]


@lru_cache(maxsize=4096)
def parse_semver(text: str) -> SemverKey | None:
    """Return a key that orders versions by SemVer 2.0.0 precedence, or ``None``.

    A leading ``v`` is accepted; build metadata is ignored. A release sorts after
    its pre-releases; numeric identifiers sort before alphanumeric ones.
    """
    if len(text) > 256:
        return None
    m = _SEMVER.match(text)
    if m is None:
        return None
    pre: tuple[tuple[int, int | str], ...]
    if m.group(4) is None:
        pre = ((2, 0),)  # a release outranks every pre-release
    else:
        pre = tuple(
            (0, int(p)) if p.isdigit() else (1, p) for p in m.group(4).split(".")
        )
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), pre)


# -- dates --------------------------------------------------------------------
def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


@lru_cache(maxsize=4096)
def _parse_iso(text: str) -> datetime | None:
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        return None


def _to_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, str):
        return _parse_iso(value) if len(value) <= 64 else None
    if _is_number(value):
        try:
            return datetime.fromtimestamp(value, tz=UTC)  # type: ignore[arg-type]  # checked by _is_number
        except (OverflowError, OSError, ValueError):
            return None
    return None


# -- regular expressions ---------------------------------------------------------
def regex_problem(pattern: str) -> str | None:  # noqa: C901  # one walk over the parse tree
    """Return why *pattern* is refused, or ``None`` if it is safe to run.

    Refused: patterns that do not compile, backreferences, and a quantifier
    applied to anything that itself contains a quantifier or an alternation
    (``(a+)+``, ``(a|aa)*``): the shapes that backtrack exponentially; and
    more than two unbounded quantifiers whose ends can shift (``.*a.*a.*b``),
    which backtrack polynomially. A quantifier followed directly by a character
    its set cannot match has one possible end and does not count.
    """
    import re._parser as sre_parse  # type: ignore[import-not-found]  # noqa: PLC0415  # private, untyped; stable since 3.11; load time only

    try:
        tree = sre_parse.parse(pattern)
    except re.error as exc:
        return f"invalid regular expression {pattern!r}: {exc}"
    c = sre_parse

    def has_risk(items: Any) -> str | None:
        for op, av in items:
            if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                return "quantifier"
            if op is c.BRANCH:
                return "alternation"
            sub = _children(op, av)
            for s in sub:
                found = has_risk(s)
                if found:
                    return found
        return None

    def _children(op: Any, av: Any) -> list[Any]:  # noqa: PLR0911  # one case per node kind
        if op is c.SUBPATTERN:
            return [av[-1]]
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            return [av[2]]
        if op is c.BRANCH:
            return list(av[1])
        if op in (c.ASSERT, c.ASSERT_NOT):
            return [av[1]]
        if op is c.ATOMIC_GROUP:
            return [av]
        if op is c.GROUPREF_EXISTS:
            return [x for x in av[1:] if x is not None]
        return []

    def walk(items: Any) -> str | None:
        for op, av in items:
            if op in (c.GROUPREF, c.GROUPREF_EXISTS):
                return f"regular expression {pattern!r} uses a backreference"
            if op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[1] > 1:
                risk = has_risk(av[2])
                if risk is not None:
                    return (
                        f"regular expression {pattern!r} can backtrack catastrophically "
                        f"(a quantifier over a group containing a {risk})"
                    )
            for s in _children(op, av):
                found = walk(s)
                if found:
                    return found
        return None

    found = walk(tree)
    if found is not None:
        return found
    # Sequential quantifiers over overlapping characters backtrack polynomially
    # (``.*a.*a.*b`` is O(n**4) under search): bound the number of ways the
    # engine can arrive at each quantifier times that quantifier's reach, so the
    # input cap keeps the worst case per start position near O(n**2).
    #
    # A quantifier over one character set that is followed at once, in the same
    # sequence, by a mandatory character its set can never match ends at the
    # first character outside its set or not at all: it scans O(n) but hands at
    # most one position on. It is counted like a possessive one: its reach is
    # checked against the paths arriving at it, and it does not multiply the
    # paths after it. The count is deliberately not restarted at the separator:
    # every path that arrives at the quantifier replays everything after it, so
    # ``.*.*[a-z]+@.*.*!`` is still O(n**4) per start and stays refused.
    # Anything undecidable here (case-insensitive matching, categories in a
    # negated set, separators inside groups or optional) keeps the full product.
    budget = (MAX_MATCH_INPUT + 1) ** 2
    caseless = bool(
        tree.state.flags & (re.IGNORECASE | re.LOCALE)
    ) or _any_caseless_group(c, tree)

    def reach(items: Any, paths: int) -> int:
        items = list(items)
        for i, (op, av) in enumerate(items):
            if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                scanned: int = paths * (min(av[1], MAX_MATCH_INPUT) + 1)
                if scanned > budget:
                    return scanned
                forced = op is c.POSSESSIVE_REPEAT or (
                    not caseless
                    and i + 1 < len(items)
                    and _forced_end(c, av[2], items[i + 1])
                )
                inner = reach(av[2], scanned)
                if inner > budget:
                    return inner
                if not forced:
                    paths = inner
            elif op is c.ATOMIC_GROUP:
                inner = reach(av, paths)
                if inner > budget:
                    return inner
            else:
                for s in _children(op, av):
                    paths = reach(s, paths)
                    if paths > budget:
                        return paths
        return paths

    if reach(tree, 1) > budget:
        return (
            f"regular expression {pattern!r} can backtrack polynomially (more than "
            "two unbounded quantifiers whose ends can shift); make them possessive "
            "(a*+, a++) or atomic, or end each with a character it cannot match"
        )
    return None


_SEPARATOR_MAX_CHARS: Final = 512
_CATEGORY_ESCAPES: Final = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}


def _any_caseless_group(c: Any, items: Any) -> bool:
    """Return whether any inline group turns on case-insensitive or locale matching."""
    for op, av in items:
        if op is c.SUBPATTERN and av[1] & (re.IGNORECASE | re.LOCALE):
            return True
        children: list[Any] = []
        if op is c.SUBPATTERN:
            children = [av[-1]]
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            children = [av[2]]
        elif op is c.BRANCH:
            children = list(av[1])
        elif op in (c.ASSERT, c.ASSERT_NOT):
            children = [av[1]]
        elif op is c.ATOMIC_GROUP:
            children = [av]
        elif op is c.GROUPREF_EXISTS:
            children = [x for x in av[1:] if x is not None]
        if any(_any_caseless_group(c, s) for s in children):
            return True
    return False


def _separator_chars(c: Any, item: Any) -> list[str] | None:
    """Return every character a mandatory one-character *item* matches, or ``None`` if unsure."""
    op, av = item
    if op is c.LITERAL:
        return [chr(av)]
    if op is not c.IN:
        return None
    chars: list[str] = []
    for sop, sav in av:
        if sop is c.LITERAL:
            chars.append(chr(sav))
        elif sop is c.RANGE and sav[1] - sav[0] < _SEPARATOR_MAX_CHARS:
            chars.extend(chr(x) for x in range(sav[0], sav[1] + 1))
        else:  # NEGATE, categories, huge ranges: not enumerable here
            return None
        if len(chars) > _SEPARATOR_MAX_CHARS:
            return None
    return chars


def _set_member(c: Any, body: Any, ch: str) -> bool:
    """Return whether the one-character *body* might match *ch* (``True`` when unsure)."""
    if len(body) != 1:
        return True
    op, av = body[0]
    if op is c.LITERAL:
        return chr(av) == ch
    if op is c.NOT_LITERAL:
        return chr(av) != ch
    if op is not c.IN:
        return True  # ANY (with or without DOTALL) and anything unforeseen
    negated = any(sop is c.NEGATE for sop, _ in av)
    hit = False
    for sop, sav in av:
        if sop is c.NEGATE:
            continue
        if sop is c.LITERAL:
            hit = hit or chr(sav) == ch
        elif sop is c.RANGE:
            hit = hit or sav[0] <= ord(ch) <= sav[1]
        elif sop is c.CATEGORY and not negated and str(sav) in _CATEGORY_ESCAPES:
            # Over-approximate: a member under either ASCII or Unicode rules.
            esc = _CATEGORY_ESCAPES[str(sav)]
            hit = hit or bool(re.fullmatch(esc, ch) or re.fullmatch(esc, ch, re.ASCII))
        else:
            return True
    return not hit if negated else hit


def _forced_end(c: Any, body: Any, following: Any) -> bool:
    """Return whether a quantifier over *body* followed by *following* has at most one end."""
    chars = _separator_chars(c, following)
    return chars is not None and not any(_set_member(c, body, ch) for ch in chars)


# -- compiling one operator -----------------------------------------------------------
def compile_operator(  # noqa: C901, PLR0911  # one case per operator family
    attr: str, op: str, value: Any, has_value: bool, report: Report
) -> Cond | None:
    """Compile ``{attr, op, value}`` to a condition; report problems and return ``None``."""
    if op == "exists":
        if has_value:
            report("operator 'exists' takes no value")
            return None
        if attr == TARGETING_KEY_ATTR:
            return lambda _a, k: k is not None
        return lambda a, _k: a.get(attr) is not None
    if not has_value:
        report(f"operator {op!r} needs a value")
        return None
    build = _BUILDERS.get(op)
    if build is None:
        report(f"unknown operator {op!r}; expected one of: {', '.join(OPERATORS)}")
        return None
    if attr != TARGETING_KEY_ATTR:
        fused = _fused(attr, op, value)
        if fused is not None:
            return fused
    test = build(value, report)
    if test is None:
        return None
    if attr == TARGETING_KEY_ATTR:

        def on_key(_a: Mapping[str, Any], k: Any) -> bool:
            return k is not None and test(k)

        return on_key
    missing = _MISSING

    def on_attr(a: Mapping[str, Any], _k: Any) -> bool:
        v = a.get(attr, missing)
        return v is not missing and v is not None and test(v)

    return on_attr


Test = Callable[[Any], bool]


def _fused(attr: str, op: str, value: Any) -> Cond | None:
    """Return one closure for the commonest shapes: a string compared with an attribute.

    Saves a call per condition on the hot path; the semantics are those of the
    general form (a missing or non-string attribute makes the condition false).
    """
    if op == "eq" and isinstance(value, str):

        def eq_str(a: Mapping[str, Any], _k: Any) -> bool:
            return a.get(attr) == value

        return eq_str
    if (
        op == "in"
        and isinstance(value, list)
        and value
        and all(isinstance(v, str) for v in value)
    ):
        members = frozenset(value)

        def in_str(a: Mapping[str, Any], _k: Any) -> bool:
            v = a.get(attr)
            return v.__class__ is str and v in members

        return in_str
    if op in ("starts_with", "ends_with") and isinstance(value, str):
        ends = op == "ends_with"

        def affix(a: Mapping[str, Any], _k: Any) -> bool:
            v = a.get(attr)
            if not isinstance(v, str):
                return False
            return v.endswith(value) if ends else v.startswith(value)

        return affix
    return None


def _eq_test(value: Any, report: Report) -> Test | None:
    if isinstance(value, bool):
        return lambda v: v is value
    if isinstance(value, str):
        return lambda v: v.__class__ is str and v == value
    if _is_number(value):
        return lambda v: v.__class__ is not bool and _is_number(v) and v == value
    report(f"value must be a string, number or boolean, got {value!r}")
    return None


def _ne(value: Any, report: Report) -> Test | None:
    eq = _eq_test(value, report)
    return None if eq is None else (lambda v: not eq(v))


def _member_sets(
    value: Any, report: Report
) -> tuple[frozenset[Any], frozenset[Any], frozenset[Any]] | None:
    if not isinstance(value, list):
        report(f"value must be a list, got {value!r}")
        return None
    bad = [v for v in value if not (isinstance(v, str | bool) or _is_number(v))]
    if bad:
        report(f"list items must be strings, numbers or booleans, got {bad[0]!r}")
        return None
    strs = frozenset(v for v in value if isinstance(v, str))
    bools = frozenset(v for v in value if isinstance(v, bool))
    nums = frozenset(v for v in value if _is_number(v))
    return strs, nums, bools


def _in(value: Any, report: Report) -> Test | None:
    sets = _member_sets(value, report)
    if sets is None:
        return None
    strs, nums, bools = sets
    if not nums and not bools:
        return lambda v: v.__class__ is str and v in strs

    def test(v: Any) -> bool:
        if isinstance(v, str):
            return v in strs
        if isinstance(v, bool):
            return v in bools
        if _is_number(v):
            return v in nums
        return False

    return test


def _not_in(value: Any, report: Report) -> Test | None:
    inside = _in(value, report)
    return None if inside is None else (lambda v: not inside(v))


def _contains(value: Any, report: Report) -> Test | None:
    eq = _eq_test(value, report)
    if eq is None:
        return None

    def test(v: Any) -> bool:
        if isinstance(v, str):
            return isinstance(value, str) and value in v
        if isinstance(v, list | tuple | set | frozenset):
            return any(eq(item) for item in v)
        return False

    return test


def _prefixes(value: Any, report: Report) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    report(f"value must be a string or a list of strings, got {value!r}")
    return None


def _starts_with(value: Any, report: Report) -> Test | None:
    p = _prefixes(value, report)
    return None if p is None else (lambda v: isinstance(v, str) and v.startswith(p))


def _ends_with(value: Any, report: Report) -> Test | None:
    p = _prefixes(value, report)
    return None if p is None else (lambda v: isinstance(v, str) and v.endswith(p))


def _matches(value: Any, report: Report) -> Test | None:
    if not isinstance(value, str):
        report(f"value must be a regular expression string, got {value!r}")
        return None
    problem = regex_problem(value)
    if problem is not None:
        report(problem)
        return None
    search = re.compile(value).search
    limit = MAX_MATCH_INPUT
    return lambda v: isinstance(v, str) and len(v) <= limit and search(v) is not None


def _number(value: Any, report: Report) -> bool:
    if _is_number(value):
        return True
    report(f"value must be a number, got {value!r}")
    return False


def _lt(value: Any, report: Report) -> Test | None:
    return (lambda v: _is_number(v) and v < value) if _number(value, report) else None


def _le(value: Any, report: Report) -> Test | None:
    return (lambda v: _is_number(v) and v <= value) if _number(value, report) else None


def _gt(value: Any, report: Report) -> Test | None:
    return (lambda v: _is_number(v) and v > value) if _number(value, report) else None


def _ge(value: Any, report: Report) -> Test | None:
    return (lambda v: _is_number(v) and v >= value) if _number(value, report) else None


def _semver(
    compare: Callable[[SemverKey, SemverKey], bool],
) -> Callable[[Any, Report], Test | None]:
    def build(value: Any, report: Report) -> Test | None:
        want = parse_semver(value) if isinstance(value, str) else None
        if want is None:
            report(f"value must be a semantic version such as '2.3.0', got {value!r}")
            return None

        def test(v: Any) -> bool:
            if not isinstance(v, str):
                return False
            got = parse_semver(v)
            return got is not None and compare(got, want)

        return test

    return build


def _datetime(after: bool) -> Callable[[Any, Report], Test | None]:
    def build(value: Any, report: Report) -> Test | None:
        when = _parse_iso(value) if isinstance(value, str) else None
        if when is None:
            report(
                f"value must be an ISO-8601 datetime such as '2026-03-01T00:00:00Z', got {value!r}"
            )
            return None

        def test(v: Any) -> bool:
            got = _to_datetime(v)
            if got is None:
                return False
            return got > when if after else got < when

        return test

    return build


_BUILDERS: dict[str, Callable[[Any, Report], Test | None]] = {
    "eq": _eq_test,
    "ne": _ne,
    "in": _in,
    "not_in": _not_in,
    "contains": _contains,
    "starts_with": _starts_with,
    "ends_with": _ends_with,
    "matches": _matches,
    "lt": _lt,
    "le": _le,
    "gt": _gt,
    "ge": _ge,
    "semver_eq": _semver(lambda a, b: a == b),
    "semver_lt": _semver(lambda a, b: a < b),
    "semver_le": _semver(lambda a, b: a <= b),
    "semver_gt": _semver(lambda a, b: a > b),
    "semver_ge": _semver(lambda a, b: a >= b),
    "before": _datetime(after=False),
    "after": _datetime(after=True),
}
