"""Unleash features (client API ``/api/client/features`` or an export) to tipkit.

Each strategy becomes a rule (its constraints the condition); a gradual
rollout with its variants becomes one split under ``bucketing: {scheme:
unleash}``, whose ``off``/``disabled`` weight is the part the rollout leaves
out: Unleash's two hashes (rollout seed 0, variants seed 86028157) are then
both reproduced. A strategy that leaves users out and is followed by another
strategy cannot be translated: Unleash would try the next strategy for them.
"""

from __future__ import annotations

from typing import Any

from tipkit.flags._import._common import Flag, ImportResult, Untranslatable, split

__all__ = ["import_unleash"]

_OPS = {
    "IN": "in",
    "NOT_IN": "not_in",
    "STR_CONTAINS": "contains",
    "STR_STARTS_WITH": "starts_with",
    "STR_ENDS_WITH": "ends_with",
    "NUM_EQ": "eq",
    "NUM_GT": "gt",
    "NUM_GTE": "ge",
    "NUM_LT": "lt",
    "NUM_LTE": "le",
    "SEMVER_EQ": "semver_eq",
    "SEMVER_GT": "semver_gt",
    "SEMVER_LT": "semver_lt",
}
_ATTR = {"userId": "targeting_key"}


def _features_of(data: Any, env: str | None) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or not isinstance(data.get("features"), list):
        raise ValueError(  # noqa: TRY004  # bad input, not a bug
            "expected Unleash features JSON: {features: [...]} from /api/client/features "
            "or a feature export"
        )
    features = [f for f in data["features"] if isinstance(f, dict)]
    if "featureStrategies" not in data:
        return features
    # An export: strategies and per-environment state are listed apart.
    envs = {e.get("environment") for e in data.get("featureEnvironments", [])}
    name = env or ("production" if "production" in envs else None)
    if name is None and len(envs) == 1:
        name = next(iter(envs))
    out = []
    for f in features:
        fe: dict[str, Any] = next(
            (
                e
                for e in data.get("featureEnvironments", [])
                if e.get("featureName") == f.get("name")
                and e.get("environment") == name
            ),
            {},
        )
        strategies = sorted(
            (
                s
                for s in data["featureStrategies"]
                if s.get("featureName") == f.get("name")
                and s.get("environment") == name
            ),
            key=lambda s: s.get("sortOrder", 0),
        )
        out.append(
            {
                **f,
                "enabled": fe.get("enabled", False),
                "strategies": strategies,
                "variants": fe.get("variants", f.get("variants", [])),
            }
        )
    return out


def import_unleash(data: Any, *, env: str | None = None) -> ImportResult:
    """Translate the Unleash features in *data*; see the module docstring."""
    result = ImportResult("unleash", {"version": 1, "flags": {}})
    for raw in _features_of(data, env):
        key = raw.get("name")
        if not isinstance(key, str) or not key:
            result.skipped.append((str(key), "name", "a feature needs a name"))
            continue
        try:
            result.document["flags"][key] = _feature(key, raw, result)
        except Untranslatable as exc:
            result.skipped.append((key, exc.where, exc.why))
    return result


def _feature(key: str, raw: dict[str, Any], result: ImportResult) -> dict[str, Any]:  # noqa: C901  # one pass over the strategies
    flag = Flag(key)
    feature_variants = [v for v in raw.get("variants") or [] if v.get("weight", 0) >= 0]
    strategies = [s for s in raw.get("strategies") or [] if not s.get("disabled")]
    any_variants = bool(feature_variants) or any(s.get("variants") for s in strategies)
    if any_variants:
        names = [str(v.get("name")) for v in feature_variants]
        for s in strategies:
            names += [str(v.get("name")) for v in s.get("variants") or []]
        if "disabled" in names:
            raise Untranslatable(
                "variants", "a variant named 'disabled' (Unleash's own)"
            )
        off = "disabled"
        flag.doc["variants"] = {n: n for n in dict.fromkeys([*names, off])}
    else:
        off = "off"
        flag.doc["variants"] = {"on": True, "off": False}
    if raw.get("description"):
        flag.doc["description"] = str(raw["description"])
    flag.doc["default_variant"] = off
    flag.doc["off_variant"] = off
    if not raw.get("enabled", False):
        flag.doc["state"] = "disabled"
    if any(v.get("payload") for v in feature_variants) or any(
        v.get("payload") for s in strategies for v in s.get("variants") or []
    ):
        result.notes.append(
            f"flag {key!r}: variant payloads are not carried; the value is the variant name"
        )
    fallthrough: Any = off
    for i, s in enumerate(strategies):
        where = f"strategies[{i}]"
        cond, serve, partial = _strategy(flag, key, s, feature_variants, off, where)
        if serve is None:
            continue  # a 0% rollout enables nobody: Unleash moves on
        if partial and i < len(strategies) - 1:
            raise Untranslatable(
                where,
                "a rollout below 100% followed by more strategies: Unleash tries the "
                "next strategy for the users it leaves out",
            )
        if cond is None:
            fallthrough = serve
            break
        flag.rules.append(
            {"id": str(s.get("id") or f"strategy-{i}"), "if": cond, "serve": serve}
        )
    if not strategies and raw.get("enabled", False):  # enabled with no strategy: on
        fallthrough = (
            _variants_serve(flag, feature_variants, key, 100, off, "variants", None)
            if feature_variants
            else "on"
        )
    flag.doc["fallthrough"] = fallthrough
    return flag.build()


def _strategy(  # noqa: C901, PLR0917  # one case per strategy kind
    flag: Flag,
    key: str,
    s: dict[str, Any],
    feature_variants: list[dict[str, Any]],
    off: str,
    where: str,
) -> tuple[Any, Any, bool]:
    """Return (condition or None, serve or None for nobody, leaves users out)."""
    conds = [
        _constraint(c, f"{where}.constraints[{j}]")
        for j, c in enumerate(s.get("constraints") or [])
    ]
    if s.get("segments"):
        raise Untranslatable(f"{where}.segments", "Unleash segments are not imported")
    name = s.get("name")
    params = s.get("parameters") or {}
    group, stickiness, rollout = key, "default", 100
    if name == "flexibleRollout":
        try:
            rollout = int(str(params.get("rollout", "100")))
        except ValueError:
            raise Untranslatable(where, f"rollout {params.get('rollout')!r}") from None
        group = str(params.get("groupId") or key)
        stickiness = str(params.get("stickiness") or "default")
    elif name == "userWithId":
        ids = [
            u.strip() for u in str(params.get("userIds", "")).split(",") if u.strip()
        ]
        conds.append({"attr": "targeting_key", "op": "in", "value": ids})
    elif name != "default":
        raise Untranslatable(where, f"strategy {name!r} has no tipkit equivalent")
    cond = None if not conds else conds[0] if len(conds) == 1 else {"all": conds}
    if rollout <= 0:
        return cond, None, True
    variants = s.get("variants") or feature_variants
    if not variants and off != "off":
        raise Untranslatable(
            where,
            "a strategy without variants in a flag whose other strategies have some",
        )
    if not variants and rollout >= 100:  # percent
        return cond, "on", False
    if variants:
        vgroup = group if s.get("variants") else key
        if rollout < 100 and vgroup != group:  # percent
            raise Untranslatable(
                where,
                f"the rollout hashes group {group!r} but feature variants hash {key!r}",
            )
        serve = _variants_serve(flag, variants, vgroup, rollout, off, where, stickiness)
        return cond, serve, rollout < 100  # percent
    flag.use_bucketing(where, _bucketing(group, off), _by(stickiness, where))
    return (
        cond,
        split(where, ["on", "off"], [rollout * 1000, (100 - rollout) * 1000]),
        True,
    )


def _bucketing(group: str, off: str) -> dict[str, Any]:
    b: dict[str, Any] = {"scheme": "unleash", "group": group}
    if off != "off":
        b["disabled"] = off
    return b


def _by(stickiness: str, where: str) -> str | None:
    if stickiness in ("default", "userId"):
        return None
    if stickiness == "random":
        raise Untranslatable(where, "random stickiness assigns no stable cohort")
    return stickiness


def _variants_serve(  # noqa: PLR0917  # private, called twice
    flag: Flag,
    variants: list[dict[str, Any]],
    group: str,
    rollout: int,
    off: str,
    where: str,
    stickiness: str | None,
) -> Any:
    weights = [int(v.get("weight", 0)) for v in variants]
    if sum(weights) != 1000:  # Unleash normalises to 1000
        raise Untranslatable(where, f"variant weights sum to {sum(weights)}, not 1000")
    stick = {str(v.get("stickiness") or "default") for v in variants}
    if stickiness is not None:
        stick.add(stickiness)
    bys = {_by(x, where) for x in stick}
    if len(bys) > 1:
        raise Untranslatable(
            where, f"variants and rollout stick to different fields {stick}"
        )
    if any(v.get("overrides") for v in variants):
        raise Untranslatable(where, "variant overrides are not imported")
    flag.use_bucketing(where, _bucketing(group, off), bys.pop())
    names = [str(v.get("name")) for v in variants]
    thousandths = [w * rollout for w in weights]
    if rollout < 100:  # percent
        names.append(off)
        thousandths.append((100 - rollout) * 1000)
    return split(where, names, thousandths)


def _constraint(c: dict[str, Any], where: str) -> dict[str, Any]:
    if c.get("caseInsensitive"):
        raise Untranslatable(where, "case-insensitive constraints")
    name = c.get("contextName")
    if name in ("currentTime", "sessionId") or not isinstance(name, str):
        raise Untranslatable(where, f"a constraint on {name!r}")
    attr = _ATTR.get(name, name)
    op = _OPS.get(str(c.get("operator")))
    if op is None:
        raise Untranslatable(where, f"operator {c.get('operator')!r}")
    values = c.get("values") or ([c["value"]] if "value" in c else [])
    if op in ("in", "not_in"):
        cond: dict[str, Any] = {
            "attr": attr,
            "op": op,
            "value": [str(v) for v in values],
        }
    else:
        if op in ("eq", "gt", "ge", "lt", "le"):
            try:
                values = [float(v) for v in values]
            except (TypeError, ValueError):
                raise Untranslatable(where, f"a number {values!r}") from None
        parts = [{"attr": attr, "op": op, "value": v} for v in values]
        if not parts:
            raise Untranslatable(where, "a constraint with no value")
        cond = parts[0] if len(parts) == 1 else {"any": parts}
    return {"not": cond} if c.get("inverted") else cond
