"""The flag-file linter behind ``tipkit flags check``: warnings, distinct from errors.

An error stops a document from loading (a :class:`~tipkit.errors.ConfigError`);
a warning is a document that loads but probably does not do what its author
meant. :func:`lint` returns the warnings of a valid document, sorted by line
and column:

- ``yaml11-word``: ``yes``/``no``/``on``/``off``/``y``/``n`` used as variant
  values that look boolean, or as a condition's value: in YAML 1.1 (and to
  most readers) these are booleans, but tipkit reads YAML 1.2, where they are
  strings, so ``variants: {on: yes, off: no}`` never turns on and
  ``value: yes`` never matches a boolean attribute;
- ``kill-serves-default``: a flag with no ``off_variant``, so a kill (or
  ``state: disabled``) serves whatever default the caller passed;
- ``split-moves-users`` (with a previous version of the file): a split whose
  new weights move more users between variants than the change requires,
  for example between two variants whose weights did not change;
- ``unused-segment``: a segment no flag refers to;
- ``rule-never-matches``: a rule whose condition repeats an earlier rule's
  (it is shadowed), or requires one attribute to equal two different values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final

from tipkit.flags._bucketing import BUCKETS
from tipkit.flags._compiled import CompiledFlag, FlagSet, Serve
from tipkit.flags._yaml import LocDict, line_of, line_of_item

__all__ = ["Warning", "lint", "split_moves"]

YAML11_WORDS: Final = frozenset(
    w
    for word in ("yes", "no", "on", "off", "y", "n")
    for w in (word, word.capitalize(), word.upper())
)


@dataclass(frozen=True, slots=True)
class Warning:  # noqa: A001  # the linter's own word; never imported as a bare name
    """One thing in a valid document that probably is not what was meant."""

    code: str
    message: str
    source: str
    line: int | None = None
    column: int | None = None
    flag: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        at = self.source
        if self.line is not None:
            at += f":{self.line}"
            if self.column is not None:
                at += f":{self.column}"
        where = [at]
        if self.flag is not None:
            where.append(f"flag {self.flag!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message} [{self.code}]"


def _warning(  # noqa: PLR0917  # one finding, all of whose parts are needed
    code: str, message: str, source: str, at: Any, flag: str | None, field: str | None
) -> Warning:
    return Warning(
        code,
        message,
        source,
        None if at is None else int(at),
        getattr(at, "column", None),
        flag,
        field,
    )


def lint(doc: Any, flag_set: FlagSet, previous: FlagSet | None = None) -> list[Warning]:
    """Return the warnings of the valid document *doc* (compiled to *flag_set*).

    With *previous* (the same file's earlier version), also compare splits.
    """
    source = flag_set.source
    found: list[Warning] = []
    flags = doc.get("flags") or {}
    for key, fdoc in flags.items():
        at = line_of(flags, key)
        found.extend(_yaml11_variants(source, key, fdoc))
        for rule_index, rdoc in enumerate(fdoc.get("rules") or []):
            field = f"rules[{rule_index}].if"
            found.extend(_yaml11_conditions(source, key, rdoc.get("if"), field))
        if "off_variant" not in fdoc:
            found.append(
                _warning(
                    "kill-serves-default",
                    "no off_variant: a kill or state: disabled serves the caller's "
                    "default (get(..., True) stays True); name the variant to serve",
                    source,
                    at,
                    key,
                    "off_variant",
                )
            )
        found.extend(_never_matching(source, key, fdoc))
    found.extend(_unused_segments(source, doc))
    if previous is not None:
        found.extend(_split_changes(source, flags, flag_set, previous))
    return sorted(found, key=lambda w: (w.line is None, w.line or 0, w.column or 0))


def _yaml11_variants(source: str, key: str, fdoc: Any) -> Iterator[Warning]:
    variants = fdoc.get("variants") or {}
    values = list(variants.values())
    words = [v for v in values if isinstance(v, str) and v in YAML11_WORDS]
    if words and len(words) == len(values):
        yield _warning(
            "yaml11-word",
            f"variant values {', '.join(repr(v) for v in values)} are strings, not "
            "booleans (tipkit reads YAML 1.2); write true/false if a boolean is "
            "meant, or quote them to keep strings",
            source,
            line_of(fdoc, "variants"),
            key,
            "variants",
        )


def _yaml11_conditions(
    source: str, key: str, cond: Any, field: str
) -> Iterator[Warning]:
    if not isinstance(cond, dict):
        return
    if "attr" in cond and "value" in cond:
        value = cond["value"]
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, str) and item in YAML11_WORDS:
                yield _warning(
                    "yaml11-word",
                    f"the value {item!r} is a string, so it never matches a boolean "
                    "attribute; write true/false if a boolean is meant",
                    source,
                    line_of(cond, "value"),
                    key,
                    f"{field}.value",
                )
        return
    for form in ("all", "any"):
        body = cond.get(form)
        if isinstance(body, list):
            for i, sub in enumerate(body):
                yield from _yaml11_conditions(source, key, sub, f"{field}.{form}[{i}]")
    if "not" in cond:
        yield from _yaml11_conditions(source, key, cond["not"], f"{field}.not")


def _canonical(cond: Any) -> str:
    return repr(_plain(cond))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return sorted((str(k), _plain(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _never_matching(source: str, key: str, fdoc: Any) -> Iterator[Warning]:
    rules = fdoc.get("rules") or []
    seen: dict[str, int] = {}
    for i, rdoc in enumerate(rules):
        at = line_of_item(rules, i, line_of(fdoc, "rules"))
        cond = rdoc.get("if")
        text = _canonical(cond)
        if text in seen:
            yield _warning(
                "rule-never-matches",
                f"the same condition as rules[{seen[text]}], which matches first: "
                "this rule never matches",
                source,
                at,
                key,
                f"rules[{i}]",
            )
            continue
        seen[text] = i
        clash = _contradiction(cond)
        if clash is not None:
            yield _warning(
                "rule-never-matches",
                f"'all' requires {clash!r} to equal two different values: this rule "
                "never matches",
                source,
                at,
                key,
                f"rules[{i}].if",
            )


def _contradiction(cond: Any) -> str | None:
    """Return an attribute that an ``all`` requires to equal two different values."""
    if not isinstance(cond, dict) or not isinstance(cond.get("all"), list):
        return None
    wanted: dict[str, Any] = {}
    for sub in cond["all"]:
        if isinstance(sub, dict) and sub.get("op") == "eq" and "attr" in sub:
            attr, value = sub["attr"], sub.get("value")
            if attr in wanted and wanted[attr] != value:
                return str(attr)
            wanted[attr] = value
    return None


def _segment_refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        ref = value.get("segment")
        if isinstance(ref, str):
            yield ref
        for item in value.values():
            yield from _segment_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _segment_refs(item)


def _unused_segments(source: str, doc: Any) -> Iterator[Warning]:
    segments = doc.get("segments") or {}
    used = set(_segment_refs(doc.get("flags") or {}))
    frontier = list(used)
    while frontier:  # segments used by used segments are used
        name = frontier.pop()
        for ref in _segment_refs(segments.get(name)):
            if ref not in used:
                used.add(ref)
                frontier.append(ref)
    for name in segments:
        if name not in used:
            yield _warning(
                "unused-segment",
                f"segment {name!r} is not used by any flag",
                source,
                line_of(segments, name),
                None,
                f"segments.{name}",
            )


def split_moves(old: Serve, new: Serve) -> tuple[int, int]:
    """Return ``(moved, needed)`` in thousandths of a percent of users.

    *moved* is how many buckets change variant from *old* to *new*; *needed*
    the fewest any assignment could move (the total weight gained by
    variants that grew).
    """
    old_w = _weights(old)
    new_w = _weights(new)
    needed = sum(max(0, new_w.get(v, 0) - old_w.get(v, 0)) for v in new_w)
    cuts = sorted({0, *old.bounds, *new.bounds, BUCKETS})
    moved = 0
    for lo, hi in pairwise(cuts):
        if _variant_at(old, lo) != _variant_at(new, lo):
            moved += hi - lo
    return moved, needed


def _weights(serve: Serve) -> dict[str, int]:
    assert serve.weights is not None  # only splits are compared
    return {
        str(o.variant): w for o, w in zip(serve.outcomes, serve.weights, strict=True)
    }


def _variant_at(serve: Serve, bucket: int) -> str | None:
    for bound, out in zip(serve.bounds, serve.outcomes, strict=True):
        if bucket < bound:
            return out.variant
    return None


def _splits(flag: CompiledFlag) -> dict[str, Serve]:
    found = {f"rule {r.id!r}": r.serve for r in flag.rules if r.serve.is_split}
    if flag.fallthrough.is_split:
        found["fallthrough"] = flag.fallthrough
    return found


def _split_changes(
    source: str, flags_doc: Any, flag_set: FlagSet, previous: FlagSet
) -> Iterator[Warning]:
    for key, flag in flag_set.flags.items():
        before = previous.flags.get(key)
        if before is None or (flag.sticky is not None and flag.sticky == before.sticky):
            continue  # sticky, same epoch: users served keep their variant
        old_splits = _splits(before)
        for where, serve in _splits(flag).items():
            old = old_splits.get(where)
            if old is None or old.bounds == serve.bounds:
                continue
            if (old.prefix, old.bucket_by) != (serve.prefix, serve.bucket_by):
                continue  # a new salt reshuffles everyone on purpose
            moved, needed = split_moves(old, serve)
            if moved > needed:
                fdoc = flags_doc.get(key)
                yield _warning(
                    "split-moves-users",
                    f"the {where} split moves {moved / 1000:g}% of users between "
                    f"variants where {needed / 1000:g}% must move: users change "
                    "between variants whose weights did not change; keep the order "
                    "and move weight only between neighbouring variants, or use "
                    "sticky bucketing",
                    source,
                    line_of(flags_doc, key)
                    if not isinstance(fdoc, LocDict)
                    else fdoc.line,
                    key,
                    where,
                )
