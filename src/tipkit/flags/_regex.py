r"""Which ``matches`` patterns may run: judged by measured cost, not by shape.

A flag document is untrusted input (``shared/DESIGN.md`` principle 11): a regex
in it must not make an evaluation stall the process (Python's ``re`` holds the
GIL while it backtracks). :func:`regex_cap` decides at load, once per pattern:

1. the pattern must compile (a huge repeat count is refused, not raised) and
   use no backreference (matching those is NP-hard in general);
2. it is run on adversarial inputs built from its own characters (runs of
   each character it can match, pairs of them, each followed by a character
   that makes the match fail, behind its literal prefix), at lengths 8, 16,
   32, ... up to :data:`MAX_MATCH_INPUT`, timing each search in CPU time
   (best of three). A length is only tried when the growth seen so far
   predicts it stays affordable, so an exponential pattern is judged at a
   few dozen characters and never hangs the load;
3. the pattern's input cap is the longest tried length whose worst search
   costs at most :data:`BUDGET` (1 ms): inputs longer than the cap never
   match. A pattern whose cap would fall below :data:`MIN_CAP` characters is
   refused, with how to rewrite it.

Linear patterns (``^[^@\s]+@[^@\s]+\.[a-z]{2,}$``, atomic groups such as
``(?>a+)+$``) get the full cap; ``^\S+@\S+\.\S+$`` (quadratic, a few ms at
1,024 characters) gets a shorter cap; ``[\s\S]*[\s\S]*x`` and ``\w*\w*x``
(cubic under ``search``) are refused. Costs are measured on the loading
machine, so a pattern near the edge may get a different cap on a much slower
one; the verdict is cached per pattern for the life of the process.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache
from typing import Any, Final

__all__ = ["BUDGET", "MAX_MATCH_INPUT", "MIN_CAP", "regex_cap", "regex_problem"]

MAX_MATCH_INPUT: Final = 1024
"""``matches`` never matches an attribute longer than this many characters."""

MIN_CAP: Final = 256
"""A pattern that cannot search this many characters within :data:`BUDGET` is refused."""

BUDGET: Final = 0.001
"""The most one search may cost (CPU seconds) at the pattern's input cap."""

_GIVE_UP: Final = 0.05  # never run a probe predicted to cost more than this
_FAIL_CHARS: Final = ("!", "\n", "\x00", " ")
_CANDIDATES: Final = ("a", "0", " ", "!", "@", ".", "-", "_", "x", "\n", "A", "é")
_MAX_ALPHABET: Final = 8
_REWRITE: Final = (
    "rewrite it so each part can match in one way only: anchor it (^...$), "
    "use a negated set where a greedy one overlaps what follows "
    r"([^@]+@ rather than .*@), or make repeats possessive (a++) or atomic "
    "((?>...)); prefer starts_with/ends_with/contains where they say the same"
)


def regex_problem(pattern: str) -> str | None:
    """Return why *pattern* is refused, or ``None`` if it may run."""
    verdict = regex_cap(pattern)
    return verdict if isinstance(verdict, str) else None


@lru_cache(maxsize=1024)
def regex_cap(pattern: str) -> int | str:
    """Return the input cap for *pattern* (characters), or why it is refused."""
    import re._parser as sre_parse  # type: ignore[import-not-found]  # noqa: PLC0415  # private, untyped; stable since 3.11; load time only

    try:
        tree = sre_parse.parse(pattern)
        search = re.compile(pattern).search
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        return f"invalid regular expression {pattern!r}: {exc}"
    if _has_backreference(sre_parse, tree):
        return (
            f"regular expression {pattern!r} uses a backreference, which can take "
            f"exponential time; {_REWRITE}"
        )
    cap = _measure(search, _shapes(sre_parse, tree))
    if cap < MIN_CAP:
        return (
            f"regular expression {pattern!r} can backtrack catastrophically: "
            f"a search of {max(cap * 2, 8)} characters built to defeat it costs more "
            f"than {BUDGET * 1000:g} ms; {_REWRITE}"
        )
    return cap


def _time(search: Any, text: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.thread_time()
        search(text)
        best = min(best, time.thread_time() - start)
        if best > BUDGET:
            break  # already over: no need for the best of three
    return best


def _measure(search: Any, shapes: list[tuple[str, str, str]]) -> int:
    """Return the longest length (power of two up to the cap) every probe affords."""
    cap = MAX_MATCH_INPUT
    # Each shape: prefix + body repeated to length n + a failing suffix.
    for prefix, body, suffix in shapes:
        n, last, growth = 8, 0.0, 2.0
        while n <= cap:
            # Assume the growth itself grows (it squares for exponential patterns).
            predicted = last * growth * growth
            if predicted > _GIVE_UP:
                cap = n // 2
                break
            text = prefix + (body * (n // len(body) + 1))[:n] + suffix
            cost = _time(search, text)
            if cost > BUDGET:
                cap = n // 2
                break
            if last > 0 and cost > 0:
                growth = max(growth, cost / last)
            last = cost
            n *= 2
        if cap < MIN_CAP:
            return cap
    return cap


def _shapes(c: Any, tree: Any) -> list[tuple[str, str, str]]:
    """Return adversarial ``(prefix, body, suffix)`` probes built from *tree*'s characters."""
    alphabet: list[str] = []
    for ch in _characters(c, tree):
        if ch not in alphabet:
            alphabet.append(ch)
    for ch in _CANDIDATES:
        if len(alphabet) >= _MAX_ALPHABET:
            break
        if ch not in alphabet:
            alphabet.append(ch)
    alphabet = alphabet[:_MAX_ALPHABET]
    prefix = _literal_prefix(c, tree)
    shapes: list[tuple[str, str, str]] = []
    for p in {"", prefix}:
        shapes.extend((p, ch, f) for ch in alphabet for f in ("", *_FAIL_CHARS))
        for a in alphabet:
            for b in alphabet:
                if a != b:
                    shapes.append((p, a + b, "!"))
                    shapes.append((p, a + b + b, "\n"))
    return shapes


def _literal_prefix(c: Any, items: Any) -> str:
    out = []
    for op, av in items:
        if op is c.AT:
            continue
        if op is not c.LITERAL:
            break
        out.append(chr(av))
    return "".join(out)


def _characters(c: Any, items: Any) -> list[str]:  # one case per node kind
    """Return characters the pattern mentions or can match, in pattern order."""
    found: list[str] = []
    for op, av in items:
        if op is c.LITERAL:
            found.append(chr(av))
        elif op is c.NOT_LITERAL:
            found.append("a" if chr(av) != "a" else "b")
        elif op is c.ANY:
            found.append("a")
        elif op is c.IN:
            pattern_set = re.compile(_set_source(c, av)) if av else None
            hits = [ch for ch in _CANDIDATES if pattern_set and pattern_set.match(ch)]
            found.extend(hits[:2])
            for sop, sav in av:
                if sop is c.LITERAL:
                    found.append(chr(sav))
                elif sop is c.RANGE:
                    found.append(chr(sav[0]))
        for sub in _children(c, op, av):
            found.extend(_characters(c, sub))
    return found


_CATEGORY_ESCAPES: Final = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}


def _set_source(c: Any, av: Any) -> str:
    """Rebuild a character set's source from its parse (to test candidates against it)."""
    parts: list[str] = []
    for sop, sav in av:
        if sop is c.NEGATE:
            parts.insert(0, "^")
        elif sop is c.LITERAL:
            parts.append(re.escape(chr(sav)))
        elif sop is c.RANGE:
            parts.append(f"{re.escape(chr(sav[0]))}-{re.escape(chr(sav[1]))}")
        elif sop is c.CATEGORY:
            parts.append(_CATEGORY_ESCAPES.get(str(sav), ""))
    return "[" + "".join(parts) + "]" if parts and parts != ["^"] else "[^\\x00]"


def _has_backreference(c: Any, items: Any) -> bool:
    for op, av in items:
        if op in (c.GROUPREF, c.GROUPREF_EXISTS):
            return True
        if any(_has_backreference(c, s) for s in _children(c, op, av)):
            return True
    return False


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
