"""LaunchDarkly flag JSON (SDK/relay data, or the REST API) to a tipkit document.

Bucketing is LaunchDarkly's (``bucketing: {scheme: launchdarkly, salt: ...}``);
rollout weights are already thousandths of a percent, so a rollout becomes a
split with the same numbers. Individual targets become the first rules, then
the flag's rules in order, then the fallthrough.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tipkit.flags._bucketing import BUCKETS
from tipkit.flags._import._common import (
    Flag,
    ImportResult,
    Untranslatable,
    split,
    variant_names,
)

__all__ = ["import_launchdarkly"]

_OPS = {
    "in": "eq",
    "startsWith": "starts_with",
    "endsWith": "ends_with",
    "contains": "contains",
    "matches": "matches",
    "lessThan": "lt",
    "lessThanOrEqual": "le",
    "greaterThan": "gt",
    "greaterThanOrEqual": "ge",
    "semVerEqual": "semver_eq",
    "semVerLessThan": "semver_lt",
    "semVerGreaterThan": "semver_gt",
    "before": "before",
    "after": "after",
}


def _flags_of(
    data: Any, env: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    segments: dict[str, Any] = {}
    if isinstance(data, dict) and isinstance(data.get("flags"), dict):
        segs = data.get("segments")
        segments = segs if isinstance(segs, dict) else {}
        return list(data["flags"].values()), segments
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    if isinstance(data, dict) and "key" in data:
        data = [data]
    if not isinstance(data, list):
        raise ValueError(  # noqa: TRY004  # bad input, not a bug
            "expected LaunchDarkly flag JSON: {flags: {...}} (SDK/relay data), "
            "{items: [...]} or a list of flags (REST API), or one flag"
        )
    return [_rest_to_sdk(f, env) for f in data if isinstance(f, dict)], segments


def _rest_to_sdk(flag: dict[str, Any], env: str | None) -> dict[str, Any]:
    """Flatten a REST API flag (variations with values, per-environment config)."""
    if "environments" not in flag:
        return flag
    envs = flag.get("environments") or {}
    name = env or ("production" if "production" in envs else None)
    if name is None and len(envs) == 1:
        name = next(iter(envs))
    if name not in envs:
        return {
            "key": flag.get("key"),
            "_error": f"choose an environment: {sorted(envs)}",
        }
    out = {**flag, **envs[name]}
    out["variations"] = [
        v.get("value") if isinstance(v, dict) else v for v in flag.get("variations", [])
    ]
    return out


def import_launchdarkly(data: Any, *, env: str | None = None) -> ImportResult:
    """Translate LaunchDarkly flags in *data*; see the module docstring."""
    flags, segments = _flags_of(data, env)
    result = ImportResult("launchdarkly", {"version": 1, "flags": {}})
    names_of = {  # every flag's variant names: a prerequisite names its parent's
        raw["key"]: variant_names(raw["variations"])
        for raw in flags
        if isinstance(raw.get("key"), str) and isinstance(raw.get("variations"), list)
    }
    for raw in flags:
        key = raw.get("key")
        if not isinstance(key, str) or not key:
            result.skipped.append((str(key), "key", "a flag needs a string key"))
            continue
        try:
            doc = _flag(key, raw, segments, result)
            prerequisites = _prerequisites(raw, names_of, flags, result)
            if prerequisites:
                doc = {"prerequisites": prerequisites, **doc}
            result.document["flags"][key] = doc
        except Untranslatable as exc:
            result.skipped.append((key, exc.where, exc.why))
    return result


def _prerequisites(
    raw: dict[str, Any],
    names_of: dict[str, list[str]],
    flags: list[dict[str, Any]],
    result: ImportResult,
) -> list[dict[str, Any]]:
    """LaunchDarkly ``prerequisites: [{key, variation}]`` as tipkit's, by variant name.

    Both fail a prerequisite whose parent is off or serves another variation, and
    then serve the child's off variation. One difference, noted: LaunchDarkly
    passes a child that requires its parent's *off* variation when the parent's
    own prerequisite failed; tipkit fails it.
    """
    out = []
    by_key = {f.get("key"): f for f in flags}
    for i, pre in enumerate(raw.get("prerequisites") or []):
        where = f"prerequisites[{i}]"
        parent, index = pre.get("key"), pre.get("variation")
        names = names_of.get(parent) if isinstance(parent, str) else None
        if names is None:
            raise Untranslatable(where, f"parent flag {parent!r} is not in this export")
        if not isinstance(index, int) or not 0 <= index < len(names):
            raise Untranslatable(where, f"variation {index!r} of {parent!r} is not one")
        parent_raw = by_key.get(parent) or {}
        if parent_raw.get("prerequisites") and parent_raw.get("offVariation") == index:
            result.notes.append(
                f"flag {raw.get('key')!r}: requires {parent!r}'s off variation, which "
                "LaunchDarkly also passes when the parent's own prerequisite fails"
            )
        out.append({"flag": parent, "variants": [names[index]]})
    return out


def _flag(  # noqa: C901, PLR0912  # one flat pass over the flag
    key: str, raw: dict[str, Any], segments: dict[str, Any], result: ImportResult
) -> dict[str, Any]:
    if "_error" in raw:
        raise Untranslatable("environments", raw["_error"])
    values = raw.get("variations")
    if not isinstance(values, list) or not values:
        raise Untranslatable("variations", "a flag needs variations")
    names = variant_names(values)
    flag = Flag(key)
    flag.doc["variants"] = dict(zip(names, values, strict=True))
    if raw.get("description"):
        flag.doc["description"] = str(raw["description"])
    if not raw.get("on", False):
        flag.doc["state"] = "disabled"
    off = raw.get("offVariation")
    if isinstance(off, int) and 0 <= off < len(names):
        flag.doc["off_variant"] = names[off]
    salt = raw.get("salt")
    if not isinstance(salt, str) or not salt:
        salt = None
    for t in raw.get("contextTargets") or []:
        if t.get("contextKind", "user") != "user":
            raise Untranslatable("contextTargets", "targets of non-user context kinds")
    for i, t in enumerate(raw.get("targets") or []):
        values_ = t.get("values") or []
        if values_:
            flag.rules.append(
                {
                    "id": f"targets-{i}",
                    "if": {"attr": "targeting_key", "op": "in", "value": list(values_)},
                    "serve": _serve(flag, salt, t, names, f"targets[{i}]"),
                }
            )
    for i, rule in enumerate(raw.get("rules") or []):
        where = f"rules[{i}]"
        conds = [
            _clause(c, segments, f"{where}.clauses[{j}]")
            for j, c in enumerate(rule.get("clauses") or [])
        ]
        cond = conds[0] if len(conds) == 1 else {"all": conds}
        if not conds:
            raise Untranslatable(where, "a rule with no clauses")
        rid = rule.get("id") or f"rule-{i}"
        flag.rules.append(
            {
                "id": str(rid),
                "if": cond,
                "serve": _serve(flag, salt, rule, names, where),
            }
        )
    fall = raw.get("fallthrough") or {}
    flag.doc["fallthrough"] = _serve(flag, salt, fall, names, "fallthrough")
    if raw.get("trackEvents") or raw.get("trackEventsFallthrough"):
        result.notes.append(f"flag {key!r}: LaunchDarkly event tracking is not carried")
    return flag.build()


def _serve(
    flag: Flag, salt: str | None, vr: dict[str, Any], names: list[str], where: str
) -> Any:
    var = vr.get("variation")
    if isinstance(var, int) and 0 <= var < len(names):
        return names[var]
    rollout = vr.get("rollout")
    if not isinstance(rollout, dict) or not rollout.get("variations"):
        raise Untranslatable(where, "neither a variation nor a rollout")
    if rollout.get("contextKind", "user") != "user":
        raise Untranslatable(f"{where}.rollout", "a rollout by a non-user context kind")
    if salt is None:
        raise Untranslatable(
            "salt", "a rollout needs the flag's salt (SDK or REST data)"
        )
    bucketing: dict[str, Any] = {"scheme": "launchdarkly", "salt": salt}
    if isinstance(rollout.get("seed"), int):
        bucketing["seed"] = rollout["seed"]
    by = None if rollout.get("kind") == "experiment" else rollout.get("bucketBy")
    if by in (None, "", "key", "/key"):
        by = None
    elif not isinstance(by, str) or by.startswith("/"):
        raise Untranslatable(f"{where}.rollout.bucketBy", f"an attribute path {by!r}")
    flag.use_bucketing(f"{where}.rollout", bucketing, by)
    picks: list[str] = []
    weights: list[int] = []
    total = 0
    for wv in rollout["variations"]:
        idx, w = wv.get("variation"), wv.get("weight", 0)
        if (
            not isinstance(idx, int)
            or not 0 <= idx < len(names)
            or not isinstance(w, int)
        ):
            raise Untranslatable(f"{where}.rollout", f"a bad weighted variation {wv!r}")
        w = max(0, min(w, BUCKETS - total))  # past 100000 nobody is bucketed
        total += w
        picks.append(names[idx])
        weights.append(w)
    # LaunchDarkly serves the last variation to buckets past the sum of weights.
    weights[-1] += BUCKETS - total
    return split(f"{where}.rollout", picks, weights)


def _clause(c: dict[str, Any], segments: dict[str, Any], where: str) -> dict[str, Any]:
    op = c.get("op")
    values = list(c.get("values") or [])
    cond: dict[str, Any]
    if c.get("contextKind", "user") != "user":
        raise Untranslatable(where, "a clause on a non-user context kind")
    if op == "segmentMatch":
        cond = {"any": [_segment(segments.get(str(s)), str(s), where) for s in values]}
    else:
        attr = c.get("attribute")
        if attr in ("key", "/key"):
            attr = "targeting_key"
        if (
            not isinstance(attr, str)
            or attr in ("kind", "/kind")
            or attr.startswith("/")
        ):
            raise Untranslatable(where, f"clause attribute {attr!r}")
        tipkit_op = _OPS.get(str(op))
        if tipkit_op is None or not values:
            raise Untranslatable(where, f"operator {op!r} has no tipkit equivalent")
        if op in ("before", "after"):
            values = [_iso(v, where) for v in values]
        if tipkit_op == "eq":
            cond = (
                {"attr": attr, "op": "eq", "value": values[0]}
                if len(values) == 1
                else {"attr": attr, "op": "in", "value": values}
            )
        else:
            parts = [{"attr": attr, "op": tipkit_op, "value": v} for v in values]
            cond = parts[0] if len(parts) == 1 else {"any": parts}
    return {"not": cond} if c.get("negate") else cond


def _segment(seg: Any, name: str, where: str) -> dict[str, Any]:
    if not isinstance(seg, dict):
        raise Untranslatable(where, f"segment {name!r} is not in the file")
    if seg.get("rules") or seg.get("unbounded"):
        raise Untranslatable(where, f"segment {name!r} has rules or is a big segment")
    included = list(seg.get("included") or [])
    if not included:
        raise Untranslatable(where, f"segment {name!r} includes nobody")
    # Without rules, LaunchDarkly's 'excluded' list cannot remove anyone included.
    return {"attr": "targeting_key", "op": "in", "value": included}


def _iso(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (
            datetime.fromtimestamp(value / 1000, UTC).isoformat().replace("+00:00", "Z")
        )
    raise Untranslatable(where, f"a date {value!r}")
