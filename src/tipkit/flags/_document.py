"""Flag documents: validate everything, report every problem, compile once.

:func:`compile_document` turns a parsed document (YAML or JSON, same schema) into
an immutable :class:`FlagSet` whose flags are closures over precomputed outcomes
and split tables. Any problem raises one :class:`~tipkit.errors.ConfigError`
listing every problem found, each with its source, line (YAML), flag and field.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from tipkit.errors import ConfigError, ConfigProblem
from tipkit.flags._bucketing import (
    BUCKETS,
    WeightError,
    bucket_of,
    split_bounds,
    thousandths,
)
from tipkit.flags._model import USE_DEFAULT, ErrorCode, EvalError, Outcome, Reason
from tipkit.flags._targeting import Cond, compile_operator
from tipkit.flags._yaml import LocDict, LocList, ParseError, parse_json, parse_yaml

__all__ = [
    "CompiledFlag",
    "CompiledRule",
    "FlagSet",
    "Serve",
    "check_split",
    "compile_document",
    "load_file",
    "load_text",
]

Run = Callable[[Mapping[str, Any], Any], Outcome]

TOP_KEYS: Final = ("version", "flags", "segments")
FLAG_KEYS: Final = (
    "description",
    "state",
    "variants",
    "default_variant",
    "off_variant",
    "salt",
    "bucket_by",
    "rules",
    "fallthrough",
)
RULE_KEYS: Final = ("id", "description", "if", "serve")
SEGMENT_KEYS: Final = ("description", "include", "exclude", "if")
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


def bucket_key_of(key: Any) -> str:
    """Return *key* as a bucket key string.

    Raises:
        EvalError: ``TARGETING_KEY_MISSING`` for ``None``, ``INVALID_CONTEXT``
            for anything but a string or an int.
    """
    if key.__class__ is str:
        return str(key)
    if key is None:
        raise EvalError(
            ErrorCode.TARGETING_KEY_MISSING, "no targeting key to bucket on"
        )
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    if isinstance(key, str):
        return str.__str__(key)
    raise EvalError(
        ErrorCode.INVALID_CONTEXT,
        f"the bucket key must be a string or an int, got {type(key).__name__}",
    )


class Serve:
    """What a rule or the fallthrough serves: one variant, or a percentage split."""

    __slots__ = (
        "bounds",
        "bucket_by",
        "outcomes",
        "prefix",
        "run",
        "variant",
        "weights",
    )

    def __init__(
        self,
        outcomes: tuple[Outcome, ...],
        *,
        weights: tuple[int, ...] | None = None,
        salt: str = "",
        bucket_by: str | None = None,
    ) -> None:
        self.outcomes = outcomes
        self.weights = weights
        self.bucket_by = bucket_by
        self.prefix = f"{salt}."
        self.variant = outcomes[0].variant if weights is None else None
        if weights is None:
            self.bounds: tuple[int, ...] = ()
            only = outcomes[0]
            self.run: Run = lambda _a, _k: only
        else:
            self.bounds = split_bounds(weights)
            self.run = self._split_runner()
            split = {str(o.variant): w for o, w in zip(outcomes, weights, strict=True)}
            for o in outcomes:
                o.split = split

    @property
    def is_split(self) -> bool:
        """Whether this serves a percentage split."""
        return self.weights is not None

    def _split_runner(self) -> Run:
        prefix, bounds, outcomes, by = (
            self.prefix,
            self.bounds,
            self.outcomes,
            self.bucket_by,
        )
        b = bucket_of
        if len(bounds) == 2:
            first, second = outcomes
            cut = bounds[0]
            if by is None:

                def split2(_a: Mapping[str, Any], k: Any) -> Outcome:
                    if k.__class__ is not str:
                        k = bucket_key_of(k)
                    return first if b(prefix, k) < cut else second

                return split2

            def split2_by(a: Mapping[str, Any], _k: Any) -> Outcome:
                k = a.get(by)
                if k.__class__ is not str:
                    k = bucket_key_of(k)
                return first if b(prefix, k) < cut else second

            return split2_by

        def split(a: Mapping[str, Any], k: Any) -> Outcome:
            if by is not None:
                k = a.get(by)
            if k.__class__ is not str:
                k = bucket_key_of(k)
            return outcomes[bisect_right(bounds, b(prefix, k))]

        return split

    def bucket_key(self, attributes: Mapping[str, Any], targeting_key: Any) -> str:
        """Return the bucket key this split would hash for the context."""
        return bucket_key_of(
            attributes.get(self.bucket_by) if self.bucket_by else targeting_key
        )

    def describe(self) -> str:
        """Return ``variant`` or ``split {a: 10%, b: 90%}``."""
        if self.weights is None:
            return f"variant {self.variant!r}"
        parts = ", ".join(
            f"{o.variant}: {_percent(w)}%"
            for o, w in zip(self.outcomes, self.weights, strict=True)
        )
        return f"split {{{parts}}}"


def _percent(thousandths_: int) -> str:
    # Decimal, not str(int): a weight of 10**5000 must be reported, not raise.
    return str(Decimal(thousandths_) / 1000)


def _constant(outcome: Outcome) -> Run:
    return lambda _a, _k: outcome


class CompiledRule:
    """One targeting rule: its id, compiled condition and what it serves."""

    __slots__ = ("cond", "id", "serve")

    def __init__(self, rule_id: str, cond: Cond, serve: Serve) -> None:
        self.id = rule_id
        self.cond = cond
        self.serve = serve


class CompiledFlag:
    """One validated flag, ready to evaluate; immutable and shared across threads."""

    __slots__ = (
        "bucket_by",
        "default_variant",
        "definition",
        "description",
        "disabled_outcome",
        "enabled",
        "fallthrough",
        "key",
        "off_variant",
        "rules",
        "run",
        "salt",
        "value_type",
        "variants",
        "version",
    )

    def __init__(
        self,
        key: str,
        *,
        description: str,
        enabled: bool,
        variants: dict[str, Any],
        value_type: str,
        default_variant: str | None,
        off_variant: str | None,
        salt: str,
        bucket_by: str | None,
        rules: tuple[CompiledRule, ...],
        fallthrough: Serve,
        version: str,
        definition: Any,
    ) -> None:
        self.key = key
        self.description = description
        self.enabled = enabled
        self.variants = variants
        self.value_type = value_type
        self.default_variant = default_variant
        self.off_variant = off_variant
        self.salt = salt
        self.bucket_by = bucket_by
        self.rules = rules
        self.fallthrough = fallthrough
        self.version = version
        self.definition = definition
        self.disabled_outcome = self.outcome(off_variant, Reason.DISABLED)
        self.run: Run = self._runner() if enabled else _constant(self.disabled_outcome)

    def outcome(
        self, variant: str | None, reason: Reason, rule_id: str | None = None
    ) -> Outcome:
        """Return a fresh outcome serving *variant* (or the caller's default if ``None``)."""
        value = USE_DEFAULT if variant is None else self.variants[variant]
        return Outcome(
            self.key, value, variant, reason, rule_id=rule_id, flag_version=self.version
        )

    def _runner(self) -> Run:
        return _make_runner(
            self.fallthrough.run, tuple((r.cond, r.serve.run) for r in self.rules)
        )

    def split_serve(self, rule_id: str | None, weights: Mapping[str, int]) -> Serve:
        """Return the split serving *weights* (thousandths) in place of a serve.

        The target is the fallthrough (*rule_id* ``None``) or the rule with that
        id. Variants keep the order of the target's own split, then the flag's
        variant order for the rest, so raising the first-listed variant's weight
        only adds users to it; salt and ``bucket_by`` are the flag's. A target
        serving one variant becomes a split. Reason ``SPLIT``, rule id kept.

        Raises:
            ValueError: no such rule, an unknown variant, or weights that are
                negative or do not sum to 100000.
        """
        target = self.fallthrough if rule_id is None else self._rule(rule_id).serve
        for name, w in weights.items():
            if name not in self.variants:
                raise ValueError(f"flag {self.key!r} has no variant {name!r}")
            if w.__class__ is not int or w < 0:
                raise ValueError(f"flag {self.key!r}: bad weight {w!r} for {name!r}")
        first = [str(o.variant) for o in target.outcomes if target.is_split]
        order = [n for n in (*first, *self.variants) if n in weights]
        names = tuple(dict.fromkeys(order))
        return Serve(
            tuple(self.outcome(n, Reason.SPLIT, rule_id) for n in names),
            weights=tuple(weights[n] for n in names),
            salt=self.salt,
            bucket_by=self.bucket_by,
        )

    def _rule(self, rule_id: str) -> CompiledRule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        ids = [r.id for r in self.rules]
        raise ValueError(f"flag {self.key!r} has no rule {rule_id!r}; its rules: {ids}")

    def runner_with(self, serves: Mapping[str | None, Serve]) -> Run:
        """Return this flag's evaluator with *serves* (by rule id, ``None``: fallthrough)."""
        fall = serves.get(None, self.fallthrough).run
        return _make_runner(
            fall, tuple((r.cond, serves.get(r.id, r.serve).run) for r in self.rules)
        )

    def __repr__(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return (
            f"<CompiledFlag {self.key!r} {state} type={self.value_type} "
            f"variants={list(self.variants)} rules={len(self.rules)} version={self.version}>"
        )


def _make_runner(fall: Run, pairs: tuple[tuple[Cond, Run], ...]) -> Run:
    if not pairs:
        return fall
    if len(pairs) == 1:
        ((cond, serve),) = pairs

        def run1(a: Mapping[str, Any], k: Any) -> Outcome:
            return serve(a, k) if cond(a, k) else fall(a, k)

        return run1

    def run(a: Mapping[str, Any], k: Any) -> Outcome:
        for cond, serve in pairs:
            if cond(a, k):
                return serve(a, k)
        return fall(a, k)

    return run


class FlagSet:
    """An immutable, validated snapshot of a flag document."""

    __slots__ = ("flags", "segments", "source", "version")

    def __init__(
        self,
        flags: dict[str, CompiledFlag],
        segments: tuple[str, ...],
        source: str,
        version: str,
    ) -> None:
        self.flags = flags
        self.segments = segments
        self.source = source
        self.version = version

    def __repr__(self) -> str:
        return (
            f"<FlagSet {self.source!r} flags={len(self.flags)} "
            f"segments={len(self.segments)} version={self.version}>"
        )


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Compiler:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[ConfigProblem] = []
        self.segment_defs: dict[str, Any] = {}
        self.segment_lines: dict[str, int | None] = {}
        self.segment_conds: dict[str, Cond | None] = {}
        self.visiting: list[str] = []
        self.used_segments: set[str] = set()

    def problem(
        self,
        message: str,
        *,
        flag: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.problems.append(
            ConfigProblem(
                message, source=self.source, flag=flag, field=field, line=line
            )
        )

    # -- document ----------------------------------------------------------------
    def document(self, doc: Any) -> FlagSet:  # noqa: C901, PLR0912  # a validator reads best as one flat list of checks
        if not isinstance(doc, dict):
            self.problem(
                f"a flag document must be a mapping with 'flags', got {type(doc).__name__}",
                line=_line(doc),
            )
            raise self.error()
        for key in doc:
            if key not in TOP_KEYS:
                self.problem(
                    f"unknown top-level key {key!r}; expected one of: {', '.join(TOP_KEYS)}",
                    field=str(key),
                    line=_line_of(doc, key),
                )
        if "version" in doc and (
            doc["version"] != 1 or isinstance(doc["version"], bool)
        ):
            self.problem(
                f"unsupported document version {doc['version']!r}; expected 1",
                field="version",
                line=_line_of(doc, "version"),
            )
        segments = doc.get("segments")
        if segments is None:
            segments = {}
        if not isinstance(segments, dict):
            self.problem(
                f"'segments' must be a mapping, got {type(segments).__name__}",
                field="segments",
                line=_line_of(doc, "segments"),
            )
            segments = {}
        for name, seg in segments.items():
            if not isinstance(name, str) or not name:
                self.problem(
                    f"a segment name must be a non-empty string, got {name!r}",
                    field="segments",
                    line=_line_of(segments, name),
                )
                continue
            self.segment_defs[name] = seg
            self.segment_lines[name] = _line_of(segments, name)
        for name in self.segment_defs:
            self.segment(name)
        flags_doc = doc.get("flags")
        if flags_doc is None:
            flags_doc = {}
        if not isinstance(flags_doc, dict):
            self.problem(
                f"'flags' must be a mapping, got {type(flags_doc).__name__}",
                field="flags",
                line=_line_of(doc, "flags"),
            )
            flags_doc = {}
        flags: dict[str, CompiledFlag] = {}
        for key, fdoc in flags_doc.items():
            if not isinstance(key, str) or not key:
                self.problem(
                    f"a flag key must be a non-empty string, got {key!r}",
                    field="flags",
                    line=_line_of(flags_doc, key),
                )
                continue
            compiled = self.flag(key, fdoc, _line_of(flags_doc, key))
            if compiled is not None:
                flags[key] = compiled
        if self.problems:
            raise self.error()
        return FlagSet(flags, tuple(self.segment_defs), self.source, _digest(doc))

    def error(self) -> ConfigError:
        return ConfigError(problems=self.problems)

    # -- flags -----------------------------------------------------------------------
    def flag(self, key: str, fdoc: Any, line: int | None) -> CompiledFlag | None:  # noqa: C901, PLR0912, PLR0915  # a validator reads best as one flat list of checks
        before = len(self.problems)

        def bad(message: str, field: str, at: int | None = None) -> None:
            self.problem(
                message, flag=key, field=field, line=at if at is not None else line
            )

        if not isinstance(fdoc, dict):
            bad(f"a flag must be a mapping, got {type(fdoc).__name__}", "")
            return None
        for k in fdoc:
            if k not in FLAG_KEYS:
                bad(
                    f"unknown key {k!r}; expected one of: {', '.join(FLAG_KEYS)}",
                    str(k),
                    _line_of(fdoc, k),
                )
        description = fdoc.get("description", "")
        if not isinstance(description, str):
            bad(
                f"'description' must be a string, got {description!r}",
                "description",
                _line_of(fdoc, "description"),
            )
        state = fdoc.get("state", "enabled")
        if state not in ("enabled", "disabled"):
            bad(
                f"'state' must be 'enabled' or 'disabled', got {state!r}",
                "state",
                _line_of(fdoc, "state"),
            )
        variants, value_type = self.variants(key, fdoc, line)
        names = set(variants)

        def variant_ref(field: str, at: int | None) -> str | None:
            name = fdoc.get(field)
            if name is None:
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
            "default_variant", _line_of(fdoc, "default_variant")
        )
        off_variant = variant_ref("off_variant", _line_of(fdoc, "off_variant"))
        salt = fdoc.get("salt", key)
        if not isinstance(salt, str) or not salt:
            bad(
                f"'salt' must be a non-empty string, got {salt!r}",
                "salt",
                _line_of(fdoc, "salt"),
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
                _line_of(fdoc, "bucket_by"),
            )
            bucket_by = None
        self.used_segments = set()
        # Outcome factories need the compiled flag's key and version; collect specs first.
        raw_rules = fdoc.get("rules") or []
        if not isinstance(raw_rules, list):
            bad(
                f"'rules' must be a list, got {type(raw_rules).__name__}",
                "rules",
                _line_of(fdoc, "rules"),
            )
            raw_rules = []
        rule_specs: list[tuple[str, Cond, Any, str, int | None]] = []
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
                        f"unknown key {k!r} in a rule; expected one of: {', '.join(RULE_KEYS)}",
                        f"{field}.{k}",
                        _line_of(rdoc, k),
                    )
            rule_id = rdoc.get("id", field)
            if not isinstance(rule_id, str) or not rule_id:
                bad(
                    f"a rule id must be a non-empty string, got {rule_id!r}",
                    f"{field}.id",
                    _line_of(rdoc, "id"),
                )
                rule_id = field
            elif rule_id in seen_ids:
                bad(
                    f"duplicate rule id {rule_id!r} (also at {_at(seen_ids[rule_id])})",
                    f"{field}.id",
                    _line_of(rdoc, "id"),
                )
            seen_ids.setdefault(rule_id, _line_of(rdoc, "id"))
            if "if" not in rdoc:
                bad("a rule needs a condition under 'if'", f"{field}.if", rline)
                cond = None
            else:
                cond = self.condition(
                    rdoc["if"], flag=key, field=f"{field}.if", line=_line_of(rdoc, "if")
                )
            if "serve" not in rdoc:
                bad(
                    "a rule needs 'serve': a variant name or {split: {...}}",
                    f"{field}.serve",
                    rline,
                )
                continue
            serve_spec = self.serve_spec(
                key, rdoc["serve"], names, f"{field}.serve", _line_of(rdoc, "serve")
            )
            if cond is not None and serve_spec is not None:
                rule_specs.append((rule_id, cond, serve_spec, field, rline))
        fall_spec: Any = None
        if "fallthrough" in fdoc:
            fall_spec = self.serve_spec(
                key,
                fdoc["fallthrough"],
                names,
                "fallthrough",
                _line_of(fdoc, "fallthrough"),
            )
        elif default_variant is not None:
            fall_spec = default_variant
        elif "default_variant" not in fdoc:
            bad(
                "a flag needs 'default_variant' or 'fallthrough': "
                "what to serve when no rule matches",
                "default_variant",
            )
        if len(self.problems) > before or fall_spec is None:
            return None
        version = _digest(
            fdoc, {s: self.segment_defs[s] for s in sorted(self.used_segments)}
        )
        flag = _FlagBuilder(key, variants, version)
        reason_no_match = Reason.DEFAULT if rule_specs else Reason.STATIC
        rules = tuple(
            CompiledRule(
                rid,
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
            variants=variants,
            value_type=value_type,
            default_variant=default_variant,
            off_variant=off_variant,
            salt=salt,
            bucket_by=bucket_by,
            rules=rules,
            fallthrough=fallthrough,
            version=version,
            definition=fdoc,
        )

    def variants(
        self, key: str, fdoc: dict[str, Any], line: int | None
    ) -> tuple[dict[str, Any], str]:
        raw = fdoc.get("variants")
        at = _line_of(fdoc, "variants") if "variants" in fdoc else line
        if not isinstance(raw, dict) or not raw:
            self.problem(
                f"'variants' must be a non-empty mapping of name to value, got {raw!r}",
                flag=key,
                field="variants",
                line=at,
            )
            return {}, "unknown"
        out: dict[str, Any] = {}
        types: dict[str, str] = {}
        for name, value in raw.items():
            vline = _line_of(raw, name)
            if not isinstance(name, str) or not name:
                self.problem(
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
                self.problem(
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
            self.problem(
                f"mixed value types: one value type per flag ({listing})",
                flag=key,
                field="variants",
                line=at,
            )
        return out, next(iter(kinds)) if kinds else "unknown"

    def serve_spec(  # noqa: C901  # a validator reads best as one flat list of checks
        self, key: str, spec: Any, names: set[str], field: str, line: int | None
    ) -> Any:
        if isinstance(spec, str):
            if names and spec not in names:
                self.problem(
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
                self.problem(
                    "a split needs at least one variant",
                    flag=key,
                    field=f"{field}.split",
                    line=line,
                )
                return None
            weights: list[tuple[str, int]] = []
            ok = True
            for name, w in split.items():
                wline = _line_of(split, name)
                wfield = f"{field}.split.{name}"
                if not isinstance(name, str):
                    self.problem(
                        f"a variant name must be a string, got {name!r} ({type(name).__name__})",
                        flag=key,
                        field=wfield,
                        line=wline,
                    )
                    ok = False
                    continue
                if names and name not in names:
                    self.problem(
                        f"unknown variant {name!r}; the flag's variants are {sorted(names)}",
                        flag=key,
                        field=wfield,
                        line=wline,
                    )
                    ok = False
                try:
                    weights.append((name, thousandths(w)))
                except WeightError as exc:
                    self.problem(str(exc), flag=key, field=wfield, line=wline)
                    ok = False
            if ok:
                total = sum(w for _, w in weights)
                if total != BUCKETS:
                    self.problem(
                        f"split weights must sum to exactly 100, got {_percent(total)}",
                        flag=key,
                        field=f"{field}.split",
                        line=_line_of(spec, "split"),
                    )
                    ok = False
            return weights if ok else None
        self.problem(
            f"expected a variant name or {{split: {{variant: percent, ...}}}}, got {spec!r}",
            flag=key,
            field=field,
            line=line,
        )
        return None

    # -- conditions ----------------------------------------------------------------
    def condition(  # noqa: C901, PLR0911, PLR0912  # one case per condition form
        self, doc: Any, *, flag: str | None, field: str, line: int | None
    ) -> Cond | None:
        def bad(message: str, at: int | None = None, sub: str = "") -> None:
            self.problem(
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
                    _line_of(doc, "attr"),
                    ".attr",
                )
                return None
            if not isinstance(op, str):
                bad(
                    f"'op' must name an operator, got {op!r}",
                    _line_of(doc, "op") or here,
                    ".op",
                )
                return None
            problems: list[str] = []
            cond = compile_operator(
                attr, op, doc.get("value"), "value" in doc, problems.append
            )
            for message in problems:
                sub = ".op" if message.startswith("unknown operator") else ".value"
                bad(message, _line_of(doc, sub[1:]) or here, sub)
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
        at = _line_of(doc, form)
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
                    line=_line_of_item(body, i, at),
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
            self.problem(
                f"a segment must be a mapping with include/exclude/if, got {seg!r}",
                field=field,
                line=line,
            )
            return None
        ok = True
        for k in seg:
            if k not in SEGMENT_KEYS:
                self.problem(
                    f"unknown key {k!r} in a segment; expected one of: {', '.join(SEGMENT_KEYS)}",
                    field=f"{field}.{k}",
                    line=_line_of(seg, k),
                )
                ok = False
        lists: dict[str, frozenset[str]] = {}
        for part in ("include", "exclude"):
            items = seg.get(part) or []
            if not isinstance(items, list) or not all(
                isinstance(i, str | int) and not isinstance(i, bool) for i in items
            ):
                self.problem(
                    f"'{part}' must be a list of targeting keys (strings), got {items!r}",
                    field=f"{field}.{part}",
                    line=_line_of(seg, part),
                )
                ok = False
                items = []
            lists[part] = frozenset(str(i) for i in items)
        cond: Cond | None = None
        if "if" in seg:
            cond = self.condition(
                seg["if"], flag=None, field=f"{field}.if", line=_line_of(seg, "if")
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


class _FlagBuilder:
    """Builds the shared outcomes of one flag (one per variant, reason and rule)."""

    def __init__(self, key: str, variants: dict[str, Any], version: str) -> None:
        self.key = key
        self.variants = variants
        self.version = version

    def outcome(self, variant: str, reason: Reason, rule_id: str | None) -> Outcome:
        return Outcome(
            self.key,
            self.variants[variant],
            variant,
            reason,
            rule_id=rule_id,
            flag_version=self.version,
        )

    def serve(
        self,
        spec: Any,
        reason: Reason,
        rule_id: str | None,
        salt: str,
        bucket_by: str | None,
    ) -> Serve:
        if isinstance(spec, str):
            return Serve((self.outcome(spec, reason, rule_id),))
        names = tuple(n for n, _ in spec)
        weights = tuple(w for _, w in spec)
        return Serve(
            tuple(self.outcome(n, Reason.SPLIT, rule_id) for n in names),
            weights=weights,
            salt=salt,
            bucket_by=bucket_by,
        )


def _plain(value: Any) -> Any:
    """Return *value* with LocDict/LocList replaced by plain dicts and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _line(obj: Any) -> int | None:
    return getattr(obj, "line", None)


def _line_of(obj: Any, key: Any) -> int | None:
    return obj.line_of(key) if isinstance(obj, LocDict) else None


def _line_of_item(obj: Any, index: int, default: int | None) -> int | None:
    return obj.line_of(index) if isinstance(obj, LocList) else default


def _at(line: int | None) -> str:
    return "an earlier rule" if line is None else f"line {line}"


def compile_document(doc: Any, source: str = "<dict>") -> FlagSet:
    """Validate *doc* and compile it; return the :class:`FlagSet`.

    Raises:
        ConfigError: listing every problem, each with its source, flag, field
            and (for YAML) line.
    """
    return _Compiler(source).document(doc)


def check_split(
    key: str, weights: object, variants: Mapping[str, Any], field: str, source: str
) -> dict[str, int]:
    """Validate run-time split *weights* exactly as a document's split; return thousandths.

    Raises:
        ConfigError: listing every problem (unknown variant, a weight that is
            negative, a bool, not a number or has more than 3 decimals, weights
            not summing to exactly 100), each naming the flag and the weight.
    """
    compiler = _Compiler(source)
    if not isinstance(weights, Mapping):
        compiler.problem(
            f"split weights must be a mapping of variant to percent, got {weights!r}",
            flag=key,
            field=f"{field}.split",
        )
        raise compiler.error()
    pairs = compiler.serve_spec(
        key, {"split": dict(weights)}, set(variants), field, None
    )
    if pairs is None:
        raise compiler.error()
    return dict(pairs)


def load_text(text: str, source: str, *, fmt: str) -> FlagSet:
    """Parse *text* as ``"yaml"`` or ``"json"`` and compile it.

    Raises:
        ConfigError: the text does not parse, or the document is invalid.
    """
    try:
        doc, dupes = parse_yaml(text) if fmt == "yaml" else parse_json(text)
    except ParseError as exc:
        raise ConfigError(exc.message, source=source, line=exc.line) from exc
    compiler = _Compiler(source)
    for d in dupes:
        compiler.problem(d.message, line=d.line)
    return compiler.document(doc)


def format_of(path: Path) -> str:
    """Return ``"json"`` or ``"yaml"`` from *path*'s extension.

    Raises:
        ConfigError: the extension is neither.
    """
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    raise ConfigError(
        f"unknown flag file type {suffix!r}: use .yaml, .yml or .json", source=str(path)
    )


def load_file(path: str | Path) -> FlagSet:
    """Read and compile the flag file at *path* (JSON or YAML by extension).

    Raises:
        ConfigError: the file is missing or unreadable, or the document is invalid.
    """
    p = Path(path)
    fmt = format_of(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("flag file not found", source=str(p)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read flag file: {exc}", source=str(p)) from exc
    return load_text(text, str(p), fmt=fmt)
