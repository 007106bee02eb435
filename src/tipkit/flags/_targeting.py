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

from tipkit.flags._regex import MAX_MATCH_INPUT, regex_cap, regex_problem

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

TARGETING_KEY_ATTR: Final = "targeting_key"
_MISSING: Final[Any] = object()


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


# -- compiling one operator -----------------------------------------------------------
_SHARED: dict[tuple[Any, ...], Cond] = {}
_SHARED_MAX: Final = 4096


def _frozen(value: Any) -> Any:
    """Return a hashable stand-in for a condition value (types kept: 1 and True differ)."""
    if isinstance(value, list):
        return (list, tuple(_frozen(v) for v in value))
    if isinstance(value, dict):
        return (dict, tuple((k, _frozen(v)) for k, v in value.items()))
    return (value.__class__, value)


def compile_operator(
    attr: str, op: str, value: Any, has_value: bool, report: Report
) -> Cond | None:
    """Compile ``{attr, op, value}`` to a condition; report problems and return ``None``.

    Conditions are pure, so equal ones (many flags target the same countries)
    share one compiled closure: less memory and a faster load.
    """
    try:
        key = (attr, op, has_value, _frozen(value))
        shared = _SHARED.get(key)
    except TypeError:  # an unhashable value inside: compile it on its own
        return _compile_operator(attr, op, value, has_value, report)
    if shared is not None:
        return shared
    problems: list[str] = []
    cond = _compile_operator(attr, op, value, has_value, problems.append)
    for message in problems:
        report(message)
    if cond is not None and not problems:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        _SHARED[key] = cond
    return cond


def _compile_operator(  # noqa: C901, PLR0911  # one case per operator family
    attr: str, op: str, value: Any, has_value: bool, report: Report
) -> Cond | None:
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
    cap = regex_cap(value)
    if isinstance(cap, str):
        report(cap)
        return None
    search = re.compile(value).search
    limit = cap  # measured: the longest input one search affords (<= MAX_MATCH_INPUT)
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

OPERATORS: Final = (*_BUILDERS, "exists")
"""Every operator a condition may name, in the order the docs list them."""
