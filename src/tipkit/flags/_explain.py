"""Why a flag evaluated as it did (``Flags.explain``, ``tipkit flags explain``).

The narrative is read off the evaluator's own decisions: the layer comes from
the :class:`~tipkit.flags._precedence.Plan` the evaluation used, the serve of a
rule from :meth:`CompiledFlag.serving`, the bucket from the one bucketing
formula. Nothing here decides precedence again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tipkit.flags._bucketing import bucket
from tipkit.flags._compiled import CompiledFlag, FlagSet, Serve
from tipkit.flags._model import EvalError, EvaluationContext, EvaluationDetail
from tipkit.flags._precedence import Layer, Plan, prerequisite_met

__all__ = ["Explanation", "explain"]


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a flag evaluated as it did, step by step (``tipkit flags explain``)."""

    detail: EvaluationDetail
    bucket: int | None
    bucket_key: str | None
    steps: tuple[str, ...] = field(default=())


def explain(
    detail: EvaluationDetail,
    flag_set: FlagSet | None,
    plans: Mapping[str, Plan],
    context: EvaluationContext,
) -> Explanation:
    """Return the explanation of *detail*, evaluated on *flag_set* with *plans*."""
    key = detail.flag_key
    flag = None if flag_set is None else flag_set.flags.get(key)
    plan = plans.get(key)
    if flag is None or plan is None:
        steps = [
            "the provider is not ready"
            if flag_set is None
            else f"flag {key!r} is not defined"
        ]
        return Explanation(detail, None, None, tuple(steps))
    steps = []
    bucket_: int | None = None
    bucket_key: str | None = None
    if plan.layer is not Layer.RULES:
        steps.append(plan.layer.value)
    elif flag.prerequisites and not _prerequisites(
        flag, flag_set, plans, context, steps
    ):
        off = "the caller's default" if flag.off_variant is None else flag.off_variant
        steps.append(f"a prerequisite failed: serves the off variant ({off!r})")
    else:
        serve = _rules(flag, plan, context, steps)
        if serve is not None and serve.is_split:
            try:
                bucket_key = serve.bucket_key(context.attributes, context.targeting_key)
            except EvalError as exc:
                steps.append(f"cannot bucket: {exc.message}")
            else:
                if flag.scheme is not None:  # a vendor's bucketing (_schemes.py)
                    steps.append(
                        f"bucketed by {flag.scheme.describe()}: {bucket_key!r}"
                    )
                    steps.append(_result(detail))
                    return Explanation(detail, None, bucket_key, tuple(steps))
                bucket_ = bucket(flag.salt, bucket_key)
                steps.append(
                    f"bucket = murmur3('{flag.salt}.{bucket_key}') -> {bucket_} of 100000"
                )
                if plan.sticky is not None:
                    steps.append(
                        f"sticky (epoch {flag.sticky}): a variant recorded for this "
                        "unit wins while the split lists it"
                    )
    steps.append(_result(detail))
    return Explanation(detail, bucket_, bucket_key, tuple(steps))


def _prerequisites(
    flag: CompiledFlag,
    flag_set: FlagSet | None,
    plans: Mapping[str, Plan],
    context: EvaluationContext,
    steps: list[str],
    *,
    indent: str = "",
) -> bool:
    """Narrate *flag*'s prerequisites in order, each parent's own chain below it.

    Stops at the first that fails, as evaluation does; return whether all held.
    """
    attrs, tkey = context.attributes, context.targeting_key
    for pre in flag.prerequisites:
        met, out = prerequisite_met(pre, plans, attrs, tkey)
        parent = plans.get(pre.flag)
        if parent is None:
            served = "is not defined"
        elif parent.layer in (Layer.KILLED, Layer.DISABLED):
            served = "is killed" if parent.layer is Layer.KILLED else "is disabled"
        elif out is None:
            served = "cannot be evaluated for this context"
        else:
            served = f"serves {out.variant!r} ({out.reason.value})"
        needs = ", ".join(repr(v) for v in sorted(pre.variants))
        verdict = "met" if met else "not met"
        steps.append(
            f"{indent}prerequisite {pre.flag!r} (needs {needs}): {served}: {verdict}"
        )
        pflag = None if flag_set is None else flag_set.flags.get(pre.flag)
        if (
            pflag is not None
            and pflag.prerequisites
            and parent is not None
            and parent.layer is Layer.RULES
        ):
            _prerequisites(pflag, flag_set, plans, context, steps, indent=indent + "  ")
        if not met:
            return False
    return True


def _rules(
    flag: CompiledFlag, plan: Plan, context: EvaluationContext, steps: list[str]
) -> Serve | None:
    """Narrate which rule matched (first match wins); return what it serves."""
    attrs, tkey = context.attributes, context.targeting_key
    for rule in flag.rules:
        try:
            matched = rule.cond(attrs, tkey)
        except Exception as exc:  # pragma: no cover - conditions do not raise
            steps.append(f"rule {rule.id!r}: raised {type(exc).__name__}")
            return None
        steps.append(f"rule {rule.id!r}: {'matched' if matched else 'did not match'}")
        if matched:
            serve = flag.serving(rule, plan.serves)
            steps.append(f"serves {serve.describe()}")
            break
    else:
        serve = flag.serving(None, plan.serves)
        steps.append(
            f"no rule matched: fallthrough {serve.describe()}"
            if flag.rules
            else f"no rules: {serve.describe()}"
        )
    if any(serve is s for s in plan.serves.values()):
        steps.append("run-time split weights from the store (set_split)")
    return serve


def _result(detail: EvaluationDetail) -> str:
    error = (
        f", error {detail.error_code.value}: {detail.error_message}"
        if detail.error_code
        else ""
    )
    return (
        f"result: variant {detail.variant!r}, value {detail.value!r}, "
        f"reason {detail.reason.value}{error}"
    )
