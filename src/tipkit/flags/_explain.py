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
from tipkit.flags._precedence import Layer, Plan

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
    steps.append(_result(detail))
    return Explanation(detail, bucket_, bucket_key, tuple(steps))


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
