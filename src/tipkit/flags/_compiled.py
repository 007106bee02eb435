"""Compiled flags: what a validated document becomes, ready to evaluate.

A :class:`CompiledFlag` is a closure over precomputed :class:`Outcome` objects
and split tables; evaluating it allocates nothing. Built by the document
compiler (``_compile.py``), served by providers, evaluated by the engine.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from tipkit.flags._bucketing import bucket_of, split_bounds
from tipkit.flags._model import USE_DEFAULT, ErrorCode, EvalError, Outcome, Reason
from tipkit.flags._schemes import Scheme, scheme_runner
from tipkit.flags._targeting import Cond

__all__ = [
    "CompiledFlag",
    "CompiledRule",
    "FlagSet",
    "Run",
    "Serve",
    "bucket_key_of",
    "percent",
]

_NO_METADATA: Mapping[str, Any] = MappingProxyType({})

Run = Callable[[Mapping[str, Any], Any], Outcome]
"""A compiled flag: ``run(attributes, targeting_key) -> Outcome``."""


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
        "scheme",
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
        scheme: Scheme | None = None,
    ) -> None:
        self.outcomes = outcomes
        self.weights = weights
        self.bucket_by = bucket_by
        self.prefix = f"{salt}."
        self.scheme = scheme  # a vendor's bucketing (_schemes.py); None: tipkit's
        self.variant = outcomes[0].variant if weights is None else None
        if weights is None:
            self.bounds: tuple[int, ...] = ()
            only = outcomes[0]
            self.run: Run = lambda _a, _k: only
        else:
            self.bounds = split_bounds(weights)
            self.run = (
                self._split_runner()
                if scheme is None
                else scheme_runner(scheme, outcomes, weights, bucket_by, bucket_key_of)
            )
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
            f"{o.variant}: {percent(w)}%"
            for o, w in zip(self.outcomes, self.weights, strict=True)
        )
        return f"split {{{parts}}}"


def percent(thousandths_: int) -> str:
    """Return *thousandths_* as a percent string (``10.5`` for 10500)."""
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
        "metadata",
        "off_variant",
        "rules",
        "run",
        "salt",
        "scheme",
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
        metadata: Mapping[str, Any] = _NO_METADATA,
        scheme: Scheme | None = None,
    ) -> None:
        self.key = key
        self.scheme = scheme
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
        self.metadata = metadata  # read-only: the document's, then the flag's own
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
            scheme=self.scheme,
        )

    def _rule(self, rule_id: str) -> CompiledRule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        ids = [r.id for r in self.rules]
        raise ValueError(f"flag {self.key!r} has no rule {rule_id!r}; its rules: {ids}")

    def serving(
        self, rule: CompiledRule | None, serves: Mapping[str | None, Serve]
    ) -> Serve:
        """Return what *rule* (``None``: the fallthrough) serves, given run-time *serves*.

        *serves* maps a rule id (``None``: the fallthrough) to a run-time split
        replacing that target's own serve; the evaluator and ``explain`` both ask
        here, so they cannot disagree.
        """
        if rule is None:
            return serves.get(None, self.fallthrough)
        return serves.get(rule.id, rule.serve)

    def runner_with(self, serves: Mapping[str | None, Serve]) -> Run:
        """Return this flag's evaluator with *serves* (by rule id, ``None``: fallthrough)."""
        return _make_runner(
            self.serving(None, serves).run,
            tuple((r.cond, self.serving(r, serves).run) for r in self.rules),
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

    __slots__ = ("flags", "metadata", "segments", "source", "version")

    def __init__(
        self,
        flags: dict[str, CompiledFlag],
        segments: tuple[str, ...],
        source: str,
        version: str,
        *,
        metadata: Mapping[str, Any] = _NO_METADATA,
    ) -> None:
        self.flags = flags
        self.metadata = metadata
        self.segments = segments
        self.source = source
        self.version = version

    def __repr__(self) -> str:
        return (
            f"<FlagSet {self.source!r} flags={len(self.flags)} "
            f"segments={len(self.segments)} version={self.version}>"
        )
