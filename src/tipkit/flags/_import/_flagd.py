"""flagd flag definitions (``{flags: {...}, $evaluators: {...}}``) to tipkit.

``targeting`` is JsonLogic: an ``if`` chain becomes rules in order, a
``fractional`` a split under ``bucketing: {scheme: flagd}`` (the shorthand,
which hashes the flag key with the targeting key) or ``{scheme: flagd,
prefix: ...}`` with ``bucket_by`` (an explicit ``var`` or ``cat`` of a literal
or the flag key with one ``var``). Bucketing is that of flagd-core 2 (CBOR of
the bucketing value); flags from flagd versions that bucket differently keep
their definitions but not their cohorts (see docs/bucketing.md).
"""

from __future__ import annotations

from typing import Any

from tipkit.flags._bucketing import BUCKETS
from tipkit.flags._import._common import Flag, ImportResult, Untranslatable, split

__all__ = ["import_flagd"]

_CMP = {
    "==": "eq",
    "===": "eq",
    "!=": "ne",
    "!==": "ne",
    "<": "lt",
    "<=": "le",
    ">": "gt",
    ">=": "ge",
    "starts_with": "starts_with",
    "ends_with": "ends_with",
}
_SEMVER = {
    "=": "semver_eq",
    "<": "semver_lt",
    "<=": "semver_le",
    ">": "semver_gt",
    ">=": "semver_ge",
}
_MAX_REF_DEPTH = 32


def import_flagd(data: Any, *, version: int = 3) -> ImportResult:
    """Translate the flagd flags in *data*; see the module docstring.

    *version* is the flagd ``fractional`` hash the flags were served with: 3
    (the current spec, CBOR) or 2 (flagd's Go server before it).
    """
    if not isinstance(data, dict) or not isinstance(data.get("flags"), dict):
        raise ValueError("expected a flagd flag definition: {flags: {key: {...}}}")  # noqa: TRY004  # bad input, not a bug
    evaluators = data.get("$evaluators") or {}
    result = ImportResult("flagd", {"version": 1, "flags": {}})
    for key, raw in data["flags"].items():
        try:
            result.document["flags"][str(key)] = _flag(
                str(key), raw, evaluators, version
            )
        except Untranslatable as exc:
            result.skipped.append((str(key), exc.where, exc.why))
    if any("bucketing" in f for f in result.document["flags"].values()):
        result.notes.append(
            f"fractional splits bucket as flagd's fractional v{version}; if your flagd "
            "served another version, import with --flagd-version (docs/bucketing.md)"
        )
    return result


def _resolve(node: Any, evaluators: dict[str, Any], depth: int = 0) -> Any:
    if depth > _MAX_REF_DEPTH:
        raise Untranslatable("targeting", "$ref nesting too deep (a cycle?)")
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            name = node["$ref"]
            if name not in evaluators:
                raise Untranslatable("targeting", f"$ref to unknown evaluator {name!r}")
            return _resolve(evaluators[name], evaluators, depth + 1)
        return {k: _resolve(v, evaluators, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, evaluators, depth + 1) for v in node]
    return node


def _flag(
    key: str, raw: Any, evaluators: dict[str, Any], version: int
) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Untranslatable("", "a flag must be a mapping")
    variants = raw.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise Untranslatable("variants", "a flag needs variants")
    default = raw.get("defaultVariant")
    if default not in variants:
        raise Untranslatable("defaultVariant", f"{default!r} is not a variant")
    flag = Flag(key)
    flag.flagd_version = version
    flag.doc["variants"] = dict(variants)
    flag.doc["default_variant"] = default
    if raw.get("state", "ENABLED") == "DISABLED":
        flag.doc["state"] = "disabled"  # flagd then answers the caller's default
    else:
        flag.doc["off_variant"] = default  # a kill in tipkit serves defaultVariant
    targeting = _resolve(raw.get("targeting") or {}, evaluators)
    flag.doc["fallthrough"] = (
        _branch(flag, key, targeting, variants, "targeting", chain=True)
        if targeting
        else default
    )
    return flag.build()


def _branch(
    flag: Flag,
    key: str,
    node: Any,
    variants: dict[str, Any],
    where: str,
    *,
    chain: bool,
) -> Any:
    """Return the serve of *node*; an ``if`` chain adds rules (only where *chain*)."""
    if isinstance(node, str):
        if node not in variants:
            raise Untranslatable(where, f"serves unknown variant {node!r}")
        return node
    if node is None:
        return flag.doc["default_variant"]
    if isinstance(node, dict) and set(node) == {"fractional"}:
        return _fractional(flag, key, node["fractional"], variants, where)
    if chain and isinstance(node, dict) and set(node) == {"if"}:
        args = node["if"]
        if not isinstance(args, list) or len(args) < 2:  # cond, then
            raise Untranslatable(where, "an 'if' needs a condition and a result")
        pairs = len(args) // 2
        for i in range(pairs):
            sub = f"{where}.if[{2 * i}]"
            flag.rules.append(
                {
                    "id": f"if-{len(flag.rules)}",
                    "if": _cond(args[2 * i], sub),
                    "serve": _branch(
                        flag, key, args[2 * i + 1], variants, sub, chain=False
                    ),
                }
            )
        rest = args[-1] if len(args) % 2 else None
        return _branch(flag, key, rest, variants, f"{where}.else", chain=True)
    raise Untranslatable(where, f"targeting {str(node)[:80]} has no tipkit equivalent")


def _fractional(  # noqa: C901  # one pass: bucketing value, entries, weights
    flag: Flag, key: str, args: Any, variants: dict[str, Any], where: str
) -> Any:
    if not isinstance(args, list) or not args:
        raise Untranslatable(where, "fractional needs variants")
    bucketing: dict[str, Any] = {"scheme": "flagd"}
    if flag.flagd_version != 3:  # flagd's fractional v3 is the default
        bucketing["version"] = flag.flagd_version
    by = None
    if not isinstance(args[0], list):
        prefix, by = _bucket_expr(key, args[0], where)
        bucketing["prefix"] = prefix
        args = args[1:]
    names, weights = [], []
    for a in args:
        if not isinstance(a, list) or not 1 <= len(a) <= 2 or a[0] not in variants:
            raise Untranslatable(where, f"fractional entry {a!r}")
        w = a[1] if len(a) == 2 else 1
        if isinstance(w, bool) or not isinstance(w, int):
            raise Untranslatable(where, f"fractional weight {w!r}")
        names.append(a[0])
        weights.append(max(0, w))
    total = sum(weights)
    if total <= 0:
        raise Untranslatable(where, "fractional weights sum to 0")
    if any(w * BUCKETS % total for w in weights):
        if total >= BUCKETS:
            raise Untranslatable(
                where,
                f"weights {weights} are not whole thousandths of a percent of their "
                f"total, and the total is {BUCKETS} or more",
            )
        # Thirds and the like: each running sum rounded to 0.001%, and the
        # flagd total in the bucketing so tipkit buckets with flagd's integers.
        bucketing["total"] = total
    cums = []
    acc = 0
    for w in weights:
        acc += w
        cums.append((2 * acc * BUCKETS + total) // (2 * total))
    flag.use_bucketing(where, bucketing, by)
    thousandths = [c - p for c, p in zip(cums, [0, *cums[:-1]], strict=True)]
    return split(where, names, thousandths)


def _var(node: Any) -> str | None:
    if isinstance(node, dict) and set(node) == {"var"}:
        name = node["var"]
        if isinstance(name, list) and name:
            name = name[0]
        if isinstance(name, str):
            return name
    return None


def _attr(name: str, where: str) -> str:
    if name == "targetingKey":
        return "targeting_key"
    if name.startswith("$flagd."):
        raise Untranslatable(where, f"a condition on {name!r}")
    return name


def _bucket_expr(key: str, node: Any, where: str) -> tuple[str, str | None]:
    name = _var(node)
    if name is not None:
        return "", None if name == "targetingKey" else _attr(name, where)
    if (
        isinstance(node, dict)
        and set(node) == {"cat"}
        and isinstance(node["cat"], list)
    ):
        parts = node["cat"]
        if len(parts) == 2 and _var(parts[1]) is not None:  # prefix, var
            head = parts[0]
            prefix = key if _var(head) == "$flagd.flagKey" else head
            if isinstance(prefix, str):
                name = str(_var(parts[1]))
                return prefix, None if name == "targetingKey" else _attr(name, where)
    raise Untranslatable(where, f"a bucketing expression {node!r}")


def _cond(node: Any, where: str) -> dict[str, Any]:  # noqa: C901  # one case per operator
    if not isinstance(node, dict) or len(node) != 1:
        raise Untranslatable(where, f"condition {node!r}")
    ((op, args),) = node.items()
    if op in ("and", "or"):
        return {"all" if op == "and" else "any": [_cond(a, where) for a in args]}
    if op in ("!", "not"):
        inner = args[0] if isinstance(args, list) else args
        return {"not": _cond(inner, where)}
    if not isinstance(args, list):
        raise Untranslatable(where, f"condition {node!r}")
    if op == "sem_ver" and len(args) == 3 and _var(args[0]) and args[1] in _SEMVER:
        return {
            "attr": _attr(str(_var(args[0])), where),
            "op": _SEMVER[args[1]],
            "value": args[2],
        }
    if op == "in" and len(args) == 2:
        if _var(args[0]) and isinstance(args[1], list):
            return {
                "attr": _attr(str(_var(args[0])), where),
                "op": "in",
                "value": args[1],
            }
        if isinstance(args[0], str) and _var(args[1]):
            return {
                "attr": _attr(str(_var(args[1])), where),
                "op": "contains",
                "value": args[0],
            }
    if op in _CMP and len(args) == 2:
        left, right = args
        if _var(left) and not isinstance(right, dict | list):
            return {
                "attr": _attr(str(_var(left)), where),
                "op": _CMP[op],
                "value": right,
            }
    raise Untranslatable(where, f"condition {str(node)[:80]} has no tipkit equivalent")
