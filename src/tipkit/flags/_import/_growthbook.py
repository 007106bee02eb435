"""GrowthBook features JSON (as its SDKs consume it) to a tipkit document.

Force rules become rules serving one variant; experiment rules become splits
under ``bucketing: {scheme: growthbook-v1|v2, seed: ...}``. Weights are floats
in GrowthBook: an experiment is imported only if tipkit's split (in
thousandths of a percent) puts every point of GrowthBook's hash grid (1,000 for
hash v1, 10,000 for v2) in the same variant, checked here point by point.
"""

from __future__ import annotations

import json
import math
from typing import Any

from tipkit.flags._bucketing import BUCKETS
from tipkit.flags._import._common import (
    Flag,
    ImportResult,
    Untranslatable,
    split,
    variant_names,
)

__all__ = ["import_growthbook"]

_OPS = {
    "$eq": "eq",
    "$ne": "ne",
    "$in": "in",
    "$nin": "not_in",
    "$gt": "gt",
    "$gte": "ge",
    "$lt": "lt",
    "$lte": "le",
    "$regex": "matches",
    "$veq": "semver_eq",
    "$vgt": "semver_gt",
    "$vgte": "semver_ge",
    "$vlt": "semver_lt",
    "$vlte": "semver_le",
}
_UNSUPPORTED_RULE_KEYS = ("parentConditions", "filters", "namespace", "ranges", "range")


def import_growthbook(data: Any) -> ImportResult:
    """Translate the GrowthBook features in *data*; see the module docstring."""
    if isinstance(data, dict) and isinstance(data.get("features"), dict):
        features = data["features"]
    elif isinstance(data, dict) and "encryptedFeatures" in data:
        raise ValueError("decrypt the features first: encrypted payloads are not read")
    elif isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        features = data
    else:
        raise ValueError("expected GrowthBook features JSON: {features: {key: {...}}}")
    result = ImportResult("growthbook", {"version": 1, "flags": {}})
    for key, raw in features.items():
        try:
            result.document["flags"][key] = _feature(str(key), raw)
        except Untranslatable as exc:
            result.skipped.append((str(key), exc.where, exc.why))
    return result


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _feature(key: str, raw: Any) -> dict[str, Any]:  # noqa: C901, PLR0912  # one case per rule form
    if not isinstance(raw, dict):
        raise Untranslatable("", "a feature must be a mapping")
    rules = [r for r in raw.get("rules") or [] if isinstance(r, dict)]
    values = {_key(raw.get("defaultValue")): raw.get("defaultValue")}
    for r in rules:
        if "force" in r:
            values.setdefault(_key(r["force"]), r["force"])
        for v in r.get("variations") or []:
            values.setdefault(_key(v), v)
    if None in values.values():
        raise Untranslatable(
            "defaultValue", "a null value (tipkit variants have values)"
        )
    names = dict(zip(values, variant_names(values.values()), strict=True))
    flag = Flag(key)
    flag.doc["variants"] = {names[k]: v for k, v in values.items()}
    default = names[_key(raw.get("defaultValue"))]
    flag.doc["default_variant"] = default
    flag.doc["off_variant"] = default  # a kill serves the feature's defaultValue
    fallthrough: Any = default
    for i, r in enumerate(rules):
        where = f"rules[{i}]"
        for bad in _UNSUPPORTED_RULE_KEYS:
            if r.get(bad):
                raise Untranslatable(where, f"{bad!r} is not imported")
        if r.get("fallbackAttribute"):
            raise Untranslatable(
                where, "fallbackAttribute (sticky bucketing) is not imported"
            )
        cond = (
            _condition(r["condition"], f"{where}.condition")
            if r.get("condition")
            else None
        )
        last = i == len(rules) - 1
        if "force" in r:
            serve = _force(flag, key, r, names, default, where, last=last)
        elif "variations" in r:
            serve = _experiment(flag, key, r, names, where)
        else:
            raise Untranslatable(where, "neither 'force' nor 'variations'")
        if serve is None:
            continue
        if cond is None:
            fallthrough = serve
            break
        flag.rules.append(
            {"id": str(r.get("id") or f"rule-{i}"), "if": cond, "serve": serve}
        )
    flag.doc["fallthrough"] = fallthrough
    return flag.build()


def _hashing(flag: Flag, r: dict[str, Any], where: str, seed: str) -> int:
    version = r.get("hashVersion") or 1
    if version not in (1, 2):
        raise Untranslatable(where, f"hashVersion {version!r}")
    attr = r.get("hashAttribute") or "id"
    by = None if attr == "id" else str(attr)
    flag.use_bucketing(where, {"scheme": f"growthbook-v{version}", "seed": seed}, by)
    return int(version)


def _force(  # noqa: PLR0917  # private, called once
    flag: Flag,
    key: str,
    r: dict[str, Any],
    names: dict[str, str],
    default: str,
    where: str,
    *,
    last: bool,
) -> Any:
    forced = names[_key(r["force"])]
    coverage = r.get("coverage")
    if coverage is None or coverage >= 1:
        return forced
    if coverage <= 0:
        return None  # includes nobody: GrowthBook moves on to the next rule
    if not last:
        raise Untranslatable(
            where,
            "a partial rollout followed by more rules: GrowthBook tries the next rule "
            "for the users it leaves out",
        )
    version = _hashing(flag, r, where, str(r.get("seed") or key))
    return _exact_split(
        where, [forced, default], [coverage, 1 - coverage], version, cut=coverage
    )


def _experiment(
    flag: Flag, key: str, r: dict[str, Any], names: dict[str, str], where: str
) -> Any:
    variations = r["variations"]
    if not isinstance(variations, list) or not variations:
        raise Untranslatable(where, "an experiment with no variations")
    coverage = r.get("coverage", 1)
    if coverage is not None and coverage < 1:
        raise Untranslatable(
            where,
            "experiment coverage below 1: GrowthBook's ranges leave gaps inside each",
        )
    n = len(variations)
    weights = r.get("weights")
    if not (
        isinstance(weights, list)
        and len(weights) == n
        and all(isinstance(w, int | float) and not isinstance(w, bool) for w in weights)
        and all(w >= 0 and math.isfinite(w) for w in weights)
        and 0.99 <= sum(weights) <= 1.01  # GrowthBook's tolerance
    ):
        weights = [1 / n] * n
    seed = str(r.get("seed") or r.get("key") or key)
    version = _hashing(flag, r, where, seed)
    picks = [names[_key(v)] for v in variations]
    return _exact_split(where, picks, [float(w) for w in weights], version)


def _gb_choose(n: float, weights: list[float]) -> int:
    start = 0.0
    for i, w in enumerate(weights):
        if start <= n < start + w:
            return i
        start += w
    return -1


def _exact_split(
    where: str,
    picks: list[str],
    weights: list[float],
    version: int,
    cut: float | None = None,
) -> dict[str, Any]:
    thousandths = [round(w * BUCKETS) for w in weights]
    thousandths[-1] = BUCKETS - sum(thousandths[:-1])
    if thousandths[-1] < 0:
        raise Untranslatable(where, f"weights {weights} do not fit in 100%")
    ours = [t / BUCKETS for t in thousandths]
    grid = 1000 if version == 1 else 10000
    for k in range(grid):
        n = k / grid
        theirs = (0 if n < cut else 1) if cut is not None else _gb_choose(n, weights)
        if theirs != _gb_choose(n, ours):
            raise Untranslatable(
                where,
                f"weights {weights} cannot be written to 0.001% without moving the users "
                f"at hash {n}",
            )
    return split(where, picks, thousandths)


def _condition(c: Any, where: str) -> dict[str, Any]:
    if not isinstance(c, dict) or not c:
        raise Untranslatable(where, f"condition {c!r}")
    parts: list[dict[str, Any]] = []
    for k, v in c.items():
        if k in ("$and", "$or", "$nor"):
            subs = [_condition(x, where) for x in v]
            form = {"$and": "all", "$or": "any", "$nor": "any"}[k]
            joined: dict[str, Any] = {form: subs}
            parts.append({"not": joined} if k == "$nor" else joined)
        elif k == "$not":
            parts.append({"not": _condition(v, where)})
        elif k.startswith("$"):
            raise Untranslatable(where, f"condition operator {k!r}")
        else:
            parts.extend(_attr_condition("targeting_key" if k == "id" else k, v, where))
    return parts[0] if len(parts) == 1 else {"all": parts}


def _attr_condition(attr: str, v: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(v, dict) or not any(str(k).startswith("$") for k in v):
        if isinstance(v, dict | list) or v is None:
            raise Untranslatable(where, f"an object or null comparison on {attr!r}")
        return [{"attr": attr, "op": "eq", "value": v}]
    out: list[dict[str, Any]] = []
    for op, arg in v.items():
        if op == "$exists":
            ex = {"attr": attr, "op": "exists"}
            out.append(ex if arg else {"not": ex})
        elif op == "$vne":
            out.append({"not": {"attr": attr, "op": "semver_eq", "value": arg}})
        elif op == "$not":
            inner = _attr_condition(attr, arg, where)
            out.append({"not": inner[0] if len(inner) == 1 else {"all": inner}})
        elif op in _OPS:
            out.append({"attr": attr, "op": _OPS[op], "value": arg})
        else:
            raise Untranslatable(where, f"condition operator {op!r} on {attr!r}")
    return out
