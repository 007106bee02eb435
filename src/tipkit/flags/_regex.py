"""The backtracking analyser: which ``matches`` patterns are safe to run.

A flag document is untrusted input (``shared/DESIGN.md`` principle 11): a regex
in it must not make an evaluation hang. :func:`regex_problem` walks the parse
tree once, at load, and refuses the shapes that backtrack exponentially or
polynomially; evaluation then caps the input at :data:`MAX_MATCH_INPUT`.
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = ["MAX_MATCH_INPUT", "regex_problem"]

MAX_MATCH_INPUT: Final = 1024
"""``matches`` never matches an attribute longer than this many characters."""


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
            sub = _children(c, op, av)
            for s in sub:
                found = has_risk(s)
                if found:
                    return found
        return None

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
            for s in _children(c, op, av):
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
                for s in _children(c, op, av):
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
        children = _children(c, op, av)
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


def _children(c: Any, op: Any, av: Any) -> list[Any]:  # noqa: PLR0911  # one case per node kind
    """Return the sub-sequences of one parse-tree node (none for a leaf)."""
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
