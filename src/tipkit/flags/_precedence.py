"""Flag precedence, written once: kill > disabled > override > prerequisites > rules.

:func:`plan` decides, for every flag of a snapshot and the store's state, which
layer serves it and builds the evaluator for that layer. The engine evaluates
with the plans' ``run``; ``explain`` narrates from the same plans, so the two
cannot disagree. Overrides: the store's, then local ones. A run-time split
(``set_split``) is not a layer of its own: it replaces the weights of the rule
or fallthrough it targets, inside the rules.

Prerequisites are checked, in the order written, before the rules of a flag
served by its rules; :func:`prerequisite_met` is the one test, used by the
evaluator (:func:`_gated`) and by ``explain``. A flag without prerequisites
keeps its plain evaluator: they cost nothing unless used.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from enum import Enum
from functools import partial
from typing import Any

from tipkit.flags._compiled import CompiledFlag, Run, Serve
from tipkit.flags._model import EvalError, Outcome, Reason
from tipkit.flags._prereq import Prerequisite
from tipkit.flags._sticky import Sticky
from tipkit.flags._store_sync import StoreState

__all__ = ["BadSplit", "Layer", "Plan", "plan", "prerequisite_met"]


class Layer(Enum):
    """The layer of the precedence that serves a flag, highest first."""

    KILLED = "the flag is killed (kill switch in the store)"
    DISABLED = "the flag's state is 'disabled'"
    OVERRIDE = "an override is in place (set in the store)"
    LOCAL_OVERRIDE = "an override is in place (local to this Flags)"
    RULES = "the flag's rules decide"


class Plan:
    """How one flag is served: its layer, its evaluator and any run-time splits."""

    __slots__ = ("layer", "run", "serves", "sticky")

    def __init__(
        self,
        layer: Layer,
        run: Run,
        serves: Mapping[str | None, Serve] | None = None,
        sticky: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.layer = layer
        self.run = run
        # Run-time splits by target (rule id, None: the fallthrough).
        self.serves: Mapping[str | None, Serve] = serves or {}
        # Async evaluation of a sticky flag: ``await sticky(complete, key, ctx, default)``.
        self.sticky = sticky


BadSplit = Callable[[CompiledFlag, "str | None", Mapping[str, int], ValueError], None]
"""Told of a run-time split that no longer fits its flag (it is left out)."""


def _layer(
    key: str, flag: CompiledFlag, state: StoreState, local: Mapping[str, Any]
) -> Layer:
    if key in state.kills:
        return Layer.KILLED
    if not flag.enabled:
        return Layer.DISABLED
    if key in state.overrides:
        return Layer.OVERRIDE
    if key in local:
        return Layer.LOCAL_OVERRIDE
    return Layer.RULES


def plan(
    flags: Mapping[str, CompiledFlag],
    state: StoreState,
    local: Mapping[str, Any],
    bad_split: BadSplit,
    sticky: Sticky | None = None,
) -> dict[str, Plan]:
    """Return the plan of every flag in *flags*, and of overrides of unknown keys.

    *state* is the store's (kills, overrides, splits), *local* the overrides
    local to one ``Flags``. A key that only an override names is served as
    the override's value (no variant), unless it is killed. With *sticky*,
    the splits of a flag with a ``sticky`` epoch keep their units' variants.
    """
    plans: dict[str, Plan] = {}
    for key, flag in flags.items():
        layer = _layer(key, flag, state, local)
        if layer is Layer.KILLED:
            plans[key] = Plan(layer, _const(flag.disabled_outcome))
        elif layer is Layer.DISABLED:
            plans[key] = Plan(layer, flag.run)
        elif layer is Layer.OVERRIDE:
            spec = state.overrides[key]
            plans[key] = Plan(layer, _const(_override_outcome(key, spec, flag)))
        elif layer is Layer.LOCAL_OVERRIDE:
            spec = local[key]
            plans[key] = Plan(layer, _const(_override_outcome(key, spec, flag)))
        else:
            splits = state.splits.get(key)
            plans[key] = _rules_plan(flag, splits, bad_split, sticky, plans)
    for source, layer in (
        (local, Layer.LOCAL_OVERRIDE),
        (state.overrides, Layer.OVERRIDE),
    ):
        for key, value in source.items():
            if key not in flags and key not in state.kills:
                plans[key] = Plan(layer, _const(_override_outcome(key, value, None)))
    return plans


def _rules_plan(
    flag: CompiledFlag,
    splits: Mapping[str | None, Mapping[str, int]] | None,
    bad_split: BadSplit,
    sticky: Sticky | None,
    plans: Mapping[str, Plan],
) -> Plan:
    """Plan a flag its rules serve: run-time splits, sticky splits, prerequisites."""
    serves = _split_serves(flag, splits, bad_split)
    run = flag.runner_with(serves) if serves else flag.run
    asticky = None
    if sticky is not None and flag.sticky is not None:
        run = flag.runner_with({**serves, **sticky.serves(flag, serves)})
        asticky = partial(sticky.arun, by=flag.bucket_by)
    if flag.prereq_failed is not None:
        run = _gated(run, flag.prerequisites, flag.prereq_failed, plans)
    return Plan(Layer.RULES, run, serves, asticky)


def _split_serves(
    flag: CompiledFlag,
    splits: Mapping[str | None, Mapping[str, int]] | None,
    bad_split: BadSplit,
) -> dict[str | None, Serve]:
    """Return *flag*'s run-time splits as serves by target.

    A split that no longer fits the flag (a reload removed the rule or a
    variant) goes to *bad_split* and is left out: the document's weights serve.
    """
    serves: dict[str | None, Serve] = {}
    for rule_id, weights in (splits or {}).items():
        try:
            serves[rule_id] = flag.split_serve(rule_id, weights)
        except ValueError as exc:
            bad_split(flag, rule_id, weights, exc)
    return serves


_OFF_LAYERS = (Layer.KILLED, Layer.DISABLED)


def prerequisite_met(
    pre: Prerequisite,
    plans: Mapping[str, Plan],
    attributes: Mapping[str, Any],
    key: Any,
) -> tuple[bool, Outcome | None]:
    """Return whether *pre* holds for the context, and what its parent served.

    It holds when the parent is served by its rules or an override (not
    killed, not disabled), and serves one of the listed variants without its
    own prerequisite failing. A parent missing at run time, or one that cannot
    be evaluated for this context (no bucket key), fails it. Evaluation and
    ``explain`` both ask here.
    """
    parent = plans.get(pre.flag)
    if parent is None:
        return False, None
    try:
        out = parent.run(attributes, key)
    except EvalError:
        return False, None
    return (
        parent.layer not in _OFF_LAYERS
        and out.variant in pre.variants
        and out.reason is not Reason.PREREQUISITE_FAILED,
        out,
    )


def _gated(
    run: Run,
    prereqs: tuple[Prerequisite, ...],
    failed: Outcome,
    plans: Mapping[str, Plan],
) -> Run:
    """Return *run* behind its prerequisites: *failed* unless every one holds.

    Parents are looked up in *plans* (this refresh's, filled in after this
    is built) at evaluation: a chain is evaluated parent first, and its
    depth is bounded at load (``Limits.max_prerequisite_depth``).
    """
    met = prerequisite_met

    def gated(a: Mapping[str, Any], k: Any) -> Outcome:
        for pre in prereqs:
            if not met(pre, plans, a, k)[0]:
                return failed
        return run(a, k)

    return gated


def _const(outcome: Outcome) -> Run:
    return lambda _a, _k: outcome


def _override_outcome(key: str, spec: Any, flag: CompiledFlag | None) -> Outcome:
    if flag is not None:
        if isinstance(spec, str) and spec in flag.variants:
            return flag.outcome(spec, Reason.STATIC)
        for name, value in flag.variants.items():
            if type(value) is type(spec) and value == spec:
                return flag.outcome(name, Reason.STATIC)
    return Outcome(
        key,
        spec,
        None,
        Reason.STATIC,
        flag_version=None if flag is None else flag.version,
    )
