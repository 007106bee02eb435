"""The flag document compiler: validate everything, report every problem, compile once.

:class:`Compiler` turns a parsed document (YAML or JSON, same schema) into an
immutable :class:`FlagSet`; conditions and segments are compiled by
``_conditions.Conditions``. Any problem raises one
:class:`~tipkit.errors.ConfigError` listing every problem found, each with its
source, line (YAML), flag and field.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from tipkit.flags._bucketing import BUCKETS, WeightError, thousandths
from tipkit.flags._compiled import CompiledFlag, CompiledRule, FlagSet, percent
from tipkit.flags._conditions import Conditions, Problems
from tipkit.flags._limits import DEFAULT_LIMITS, Limits
from tipkit.flags._metadata import (
    _NO_METADATA,
    METADATA_CHARS,
    METADATA_ENTRIES,
    _metadata,
)
from tipkit.flags._model import Reason
from tipkit.flags._prereq import Prerequisite, check_graph, parse
from tipkit.flags._schemes import flag_scheme
from tipkit.flags._shared import FlagBuilder, same_str, shared_variants
from tipkit.flags._sticky import parse as sticky_epoch
from tipkit.flags._targeting import Cond
from tipkit.flags._yaml import LocList, line_at, line_of

__all__ = ["METADATA_CHARS", "METADATA_ENTRIES", "Compiler"]

TOP_KEYS: Final = ("version", "metadata", "flags", "segments")
FLAG_KEYS: Final = (
    "description",
    "state",
    "variants",
    "default_variant",
    "off_variant",
    "salt",
    "bucket_by",
    "bucketing",
    "rules",
    "fallthrough",
    "metadata",
    "prerequisites",
    "sticky",
)
RULE_KEYS: Final = ("id", "description", "if", "serve")
_VALUE_TYPES: Final = {
    bool: "bool",
    str: "str",
    int: "int",
    float: "float",
    dict: "object",
    list: "object",
}


def _type_name(value: object) -> str | None:
    for cls, name in _VALUE_TYPES.items():
        if isinstance(value, cls):
            return name
    return None


_RuleSpec = tuple[str, Cond, Any, str, int | None]


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Compiler:
    """Compile one flag document (or one run-time split) into problems or a FlagSet."""

    def __init__(self, source: str, limits: Limits = DEFAULT_LIMITS) -> None:
        self.source = source
        self.limits = limits
        self.prereqs: dict[str, tuple[Prerequisite, ...]] = {}
        # Equal variant maps and split tables, one object per document.
        self.shared: dict[Any, Any] = {}
        self.problems = Problems(source)
        self.conditions = Conditions(self.problems)
        self.doc_metadata: Mapping[str, Any] = _NO_METADATA

    # -- document ----------------------------------------------------------------
    def document(self, doc: Any) -> FlagSet:
        """Compile *doc*; raise one ConfigError listing every problem."""
        if not isinstance(doc, dict):
            self.problems.add(
                f"a flag document must be a mapping with 'flags', got {type(doc).__name__}",
                line=line_at(doc),
            )
            raise self.problems.error()
        for key in doc:
            if key not in TOP_KEYS:
                self.problems.add(
                    f"unknown top-level key {key!r}; {_expected(key, TOP_KEYS)}",
                    field=str(key),
                    line=line_of(doc, key),
                )
        if "version" in doc and (
            doc["version"] != 1 or isinstance(doc["version"], bool)
        ):
            self.problems.add(
                f"unsupported document version {doc['version']!r}; expected 1",
                field="version",
                line=line_of(doc, "version"),
            )
        self.conditions.define_segments(doc)
        self.doc_metadata = _metadata(
            doc.get("metadata"),
            lambda msg, at: self.problems.add(msg, field="metadata", line=at),
            line_of(doc, "metadata"),
        )
        flags_doc = self.problems.mapping(doc, "flags")
        flags: dict[str, CompiledFlag] = {}
        for key, fdoc in flags_doc.items():
            if not isinstance(key, str) or not key:
                self.problems.add(
                    f"a flag key must be a non-empty string, got {key!r}",
                    field="flags",
                    line=line_of(flags_doc, key),
                )
                continue
            compiled = self.flag(key, fdoc, line_of(flags_doc, key))
            if compiled is not None:
                flags[key] = compiled
        if self.prereqs:  # the whole document's prerequisite graph (see _prereq)
            variants = {k: f.variants for k, f in flags.items()}
            declared = {k for k in flags_doc if isinstance(k, str)}
            depth = self.limits.max_prerequisite_depth
            check_graph(self.prereqs, variants, declared, self.problems, depth)
        if self.problems:
            raise self.problems.error()
        return FlagSet(
            flags,
            tuple(self.conditions.segment_defs),
            self.source,
            _digest(doc),
            metadata=self.doc_metadata,
        )

    # -- flags -----------------------------------------------------------------------
    def flag(self, key: str, fdoc: Any, line: int | None) -> CompiledFlag | None:  # noqa: C901  # a validator reads best as one flat list of checks
        """Compile one flag; report its problems and return ``None`` if any."""
        before = len(self.problems)

        def bad(message: str, field: str, at: int | None = None) -> None:
            self.problems.add(
                message, flag=key, field=field, line=at if at is not None else line
            )

        if not isinstance(fdoc, dict):
            bad(f"a flag must be a mapping, got {type(fdoc).__name__}", "")
            return None
        for k in fdoc:
            if k not in FLAG_KEYS:
                bad(
                    f"unknown key {k!r}; {_expected(k, FLAG_KEYS)}",
                    str(k),
                    line_of(fdoc, k),
                )
        description = fdoc.get("description", "")
        if not isinstance(description, str):
            bad(
                f"'description' must be a string, got {description!r}",
                "description",
                line_of(fdoc, "description"),
            )
        state = fdoc.get("state", "enabled")
        if state not in ("enabled", "disabled"):
            bad(
                f"'state' must be 'enabled' or 'disabled', got {state!r}",
                "state",
                line_of(fdoc, "state"),
            )
        variants, value_type = self.variants(key, fdoc, line)
        names = set(variants)

        def variant_ref(field: str, at: int | None) -> str | None:
            name = fdoc.get(field)
            if name is None:
                if field == "default_variant" and field in fdoc:
                    bad(
                        "'default_variant' is empty (null): name a variant, "
                        "or remove the key and give 'fallthrough'",
                        field,
                        at,
                    )
                return None
            if not isinstance(name, str):
                bad(
                    f"a variant name must be a string, got {name!r} ({type(name).__name__})",
                    field,
                    at,
                )
            elif variants and name not in names:
                bad(
                    f"unknown variant {name!r}; the flag's variants are {sorted(names)}",
                    field,
                    at,
                )
            else:
                return name
            return None

        default_variant = variant_ref(
            "default_variant", line_of(fdoc, "default_variant")
        )
        off_variant = variant_ref("off_variant", line_of(fdoc, "off_variant"))
        salt, bucket_by = self.hashing(key, fdoc, bad)
        self.conditions.used_segments = set()
        rule_specs = self.rules(key, fdoc, line, names)
        fall_spec: Any = None
        if "fallthrough" in fdoc:
            fall_spec = self.serve_spec(
                key,
                fdoc["fallthrough"],
                names,
                "fallthrough",
                line_of(fdoc, "fallthrough"),
            )
        elif default_variant is not None:
            fall_spec = default_variant
        elif "default_variant" not in fdoc:
            bad(
                "a flag needs 'default_variant' or 'fallthrough': "
                "what to serve when no rule matches",
                "default_variant",
            )
        own = _metadata(
            fdoc.get("metadata"),
            lambda msg, at: bad(msg, "metadata", at),
            line_of(fdoc, "metadata"),
        )
        prerequisites = parse(key, fdoc, line, self.problems)
        sticky = sticky_epoch(key, fdoc, self.problems)
        scheme = flag_scheme(key, fdoc, bad, rule_specs, fall_spec)  # see _schemes.py
        if len(self.problems) > before or fall_spec is None:
            return None
        if prerequisites:
            self.prereqs[key] = prerequisites
        version = _digest(
            fdoc,
            {
                s: self.conditions.segment_defs[s]
                for s in sorted(self.conditions.used_segments)
            },
        )
        flag = FlagBuilder(
            key, shared_variants(variants, self.shared), version, self.shared, scheme
        )
        reason_no_match = Reason.DEFAULT if rule_specs else Reason.STATIC
        rules = tuple(
            CompiledRule(
                self.shared.setdefault(rid, rid),
                cond,
                flag.serve(spec, Reason.TARGETING_MATCH, rid, salt, bucket_by),
            )
            for rid, cond, spec, _, _ in rule_specs
        )
        fallthrough = flag.serve(fall_spec, reason_no_match, None, salt, bucket_by)
        return CompiledFlag(
            key,
            description=description if isinstance(description, str) else "",
            enabled=state == "enabled",
            variants=flag.variants,
            value_type=value_type,
            default_variant=same_str(default_variant, self.shared),
            off_variant=same_str(off_variant, self.shared),
            salt=salt,
            bucket_by=bucket_by,
            rules=rules,
            fallthrough=fallthrough,
            version=version,
            prerequisites=prerequisites,
            sticky=sticky,
            metadata=MappingProxyType({**self.doc_metadata, **own})
            if own
            else self.doc_metadata,
            scheme=scheme,
        )

    def hashing(
        self,
        key: str,
        fdoc: dict[str, Any],
        bad: Callable[[str, str, int | None], None],
    ) -> tuple[str, str | None]:
        """Validate ``salt`` and ``bucket_by``; return them (defaults where bad)."""
        salt = fdoc.get("salt", key)
        if not isinstance(salt, str) or not salt:
            bad(
                f"'salt' must be a non-empty string, got {salt!r}",
                "salt",
                line_of(fdoc, "salt"),
            )
            salt = key
        bucket_by = fdoc.get("bucket_by")
        if bucket_by == "targeting_key":
            bucket_by = None
        elif bucket_by is not None and (
            not isinstance(bucket_by, str) or not bucket_by
        ):
            bad(
                f"'bucket_by' must be an attribute name, got {bucket_by!r}",
                "bucket_by",
                line_of(fdoc, "bucket_by"),
            )
            bucket_by = None
        return salt, bucket_by

    def rules(  # noqa: C901  # a validator reads best as one flat list of checks
        self, key: str, fdoc: dict[str, Any], line: int | None, names: set[str]
    ) -> list[_RuleSpec]:
        """Validate flag *key*'s rules; return ``(id, cond, serve spec, field, line)`` each.

        Outcomes need the compiled flag's key and version, so specs come first.
        """

        def bad(message: str, field: str, at: int | None = None) -> None:
            self.problems.add(
                message, flag=key, field=field, line=at if at is not None else line
            )

        raw_rules = fdoc.get("rules") or []
        if not isinstance(raw_rules, list):
            bad(
                f"'rules' must be a list, got {type(raw_rules).__name__}",
                "rules",
                line_of(fdoc, "rules"),
            )
            raw_rules = []
        rule_specs: list[_RuleSpec] = []
        seen_ids: dict[str, int | None] = {}
        for i, rdoc in enumerate(raw_rules):
            rline = raw_rules.line_of(i) if isinstance(raw_rules, LocList) else line
            field = f"rules[{i}]"
            if not isinstance(rdoc, dict):
                bad(
                    f"a rule must be a mapping with 'if' and 'serve', got {rdoc!r}",
                    field,
                    rline,
                )
                continue
            for k in rdoc:
                if k not in RULE_KEYS:
                    bad(
                        f"unknown key {k!r} in a rule; {_expected(k, RULE_KEYS)}",
                        f"{field}.{k}",
                        line_of(rdoc, k),
                    )
            rule_id = rdoc.get("id", field)
            if not isinstance(rule_id, str) or not rule_id:
                bad(
                    f"a rule id must be a non-empty string, got {rule_id!r}",
                    f"{field}.id",
                    line_of(rdoc, "id"),
                )
                rule_id = field
            elif rule_id in seen_ids:
                bad(
                    f"duplicate rule id {rule_id!r} (also at {_at(seen_ids[rule_id])})",
                    f"{field}.id",
                    line_of(rdoc, "id"),
                )
            seen_ids.setdefault(rule_id, line_of(rdoc, "id"))
            if "if" not in rdoc:
                bad("a rule needs a condition under 'if'", f"{field}.if", rline)
                cond = None
            else:
                cond = self.conditions.condition(
                    rdoc["if"], flag=key, field=f"{field}.if", line=line_of(rdoc, "if")
                )
            if "serve" not in rdoc:
                bad(
                    "a rule needs 'serve': a variant name or {split: {...}}",
                    f"{field}.serve",
                    rline,
                )
                continue
            serve_spec = self.serve_spec(
                key, rdoc["serve"], names, f"{field}.serve", line_of(rdoc, "serve")
            )
            if cond is not None and serve_spec is not None:
                rule_specs.append((rule_id, cond, serve_spec, field, rline))
        return rule_specs

    def variants(
        self, key: str, fdoc: dict[str, Any], line: int | None
    ) -> tuple[dict[str, Any], str]:
        """Validate the variants; return them (plain data) and the flag's value type."""
        raw = fdoc.get("variants")
        at = line_of(fdoc, "variants") if "variants" in fdoc else line
        if not isinstance(raw, dict) or not raw:
            self.problems.add(
                f"'variants' must be a non-empty mapping of name to value, got {raw!r}",
                flag=key,
                field="variants",
                line=at,
            )
            return {}, "unknown"
        out: dict[str, Any] = {}
        types: dict[str, str] = {}
        for name, value in raw.items():
            vline = line_of(raw, name)
            if not isinstance(name, str) or not name:
                self.problems.add(
                    "a variant name must be a non-empty string, "
                    f"got {name!r} ({type(name).__name__}); "
                    "quote it in YAML",
                    flag=key,
                    field="variants",
                    line=vline,
                )
                continue
            tname = _type_name(value)
            if tname is None:
                self.problems.add(
                    f"variant {name!r} has no value type: expected bool, str, int, "
                    f"float or object, got {value!r}",
                    flag=key,
                    field=f"variants.{name}",
                    line=vline,
                )
                continue
            out[name] = _plain(value)
            types[name] = tname
        kinds = set(types.values())
        if kinds == {"int", "float"}:
            # An int among floats is a float flag: 1 and 1.5 are both numbers to users.
            out = {n: float(v) for n, v in out.items()}
            return out, "float"
        if len(kinds) > 1:
            listing = ", ".join(f"{n!r} is {t}" for n, t in types.items())
            self.problems.add(
                f"mixed value types: one value type per flag ({listing})",
                flag=key,
                field="variants",
                line=at,
            )
        return out, next(iter(kinds)) if kinds else "unknown"

    def serve_spec(  # noqa: C901  # a validator reads best as one flat list of checks
        self, key: str, spec: Any, names: set[str], field: str, line: int | None
    ) -> Any:
        """Validate a serve: a variant name, or a split as ``[(variant, thousandths)]``."""
        if isinstance(spec, str):
            if names and spec not in names:
                self.problems.add(
                    f"unknown variant {spec!r}; the flag's variants are {sorted(names)}",
                    flag=key,
                    field=field,
                    line=line,
                )
                return None
            return spec
        if (
            isinstance(spec, dict)
            and list(spec) == ["split"]
            and isinstance(spec["split"], dict)
        ):
            split = spec["split"]
            if not split:
                self.problems.add(
                    "a split needs at least one variant",
                    flag=key,
                    field=f"{field}.split",
                    line=line,
                )
                return None
            weights: list[tuple[str, int]] = []
            ok = True
            for name, w in split.items():
                wline = line_of(split, name)
                wfield = f"{field}.split.{name}"
                if not isinstance(name, str):
                    self.problems.add(
                        f"a variant name must be a string, got {name!r} ({type(name).__name__})",
                        flag=key,
                        field=wfield,
                        line=wline,
                    )
                    ok = False
                    continue
                if names and name not in names:
                    self.problems.add(
                        f"unknown variant {name!r}; the flag's variants are {sorted(names)}",
                        flag=key,
                        field=wfield,
                        line=wline,
                    )
                    ok = False
                try:
                    weights.append((name, thousandths(w)))
                except WeightError as exc:
                    self.problems.add(str(exc), flag=key, field=wfield, line=wline)
                    ok = False
            if ok:
                total = sum(w for _, w in weights)
                if total != BUCKETS:
                    self.problems.add(
                        f"split weights must sum to exactly 100, got {percent(total)}",
                        flag=key,
                        field=f"{field}.split",
                        line=line_of(spec, "split"),
                    )
                    ok = False
            return weights if ok else None
        self.problems.add(
            f"expected a variant name or {{split: {{variant: percent, ...}}}}, got {spec!r}",
            flag=key,
            field=field,
            line=line,
        )
        return None


def _plain(value: Any) -> Any:
    """Return *value* with LocDict/LocList replaced by plain dicts and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _expected(key: object, allowed: tuple[str, ...]) -> str:
    """Return 'did you mean ...? expected one of: ...' for an unknown *key*."""
    near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return f"{hint}expected one of: {', '.join(allowed)}"


def _at(line: int | None) -> str:
    return "an earlier rule" if line is None else f"line {line}"
