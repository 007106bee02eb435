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

from tipkit.flags._bucketing import _hash, bucket_of, split_bounds
from tipkit.flags._model import USE_DEFAULT, ErrorCode, EvalError, Outcome, Reason
from tipkit.flags._prereq import Prerequisite
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
    """What a rule or the fallthrough serves: one variant, or a percentage split.

    *shared* (the compiler's, per document) lets equal split tables, bounds
    and weight maps be one object across flags: a 10,000-flag document of
    one shape keeps one of each.
    """

    __slots__ = (
        "_fusable",
        "_run",
        "bounds",
        "bucket_by",
        "outcomes",
        "prefix",
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
        shared: dict[Any, Any] | None = None,
        scheme: Scheme | None = None,
    ) -> None:
        self.outcomes = outcomes
        self.weights = weights
        self.bucket_by = bucket_by
        # A two-way split on the targeting key, evaluated by its own runner: a
        # one-rule flag may inline it (see guarded()).
        self._fusable = (
            scheme is None
            and weights is not None
            and len(weights) == 2
            and bucket_by is None
        )
        self.scheme = scheme  # a vendor's bucketing (_schemes.py); None: tipkit's
        if weights is None:
            self.prefix = ""  # not hashed
            self.variant = outcomes[0].variant
            self.bounds: tuple[int, ...] = ()
            self._run: Run | None = None  # built when asked for (see run)
            return
        intern = shared.setdefault if shared is not None else _same
        self.prefix = f"{salt}."
        self.variant = None
        self.weights = intern(weights, weights)
        self.bounds = intern(("bounds", weights), split_bounds(weights))
        items = tuple(
            (str(o.variant), w) for o, w in zip(outcomes, weights, strict=True)
        )
        split = intern(("split", items), dict(items))
        for o in outcomes:
            o.split = split
        self._run = (
            self._split_runner()
            if scheme is None
            else scheme_runner(scheme, outcomes, weights, bucket_by, bucket_key_of)
        )

    @property
    def run(self) -> Run:
        """This serve's evaluator: ``run(attributes, targeting_key) -> Outcome``."""
        run = self._run
        if run is None:  # one variant: most serve inside a flag's runner, inlined
            run = self._run = _constant(self.outcomes[0])
        return run

    def with_run(self, run: Run) -> Serve:
        """Return a copy of this serve evaluated by *run* (sticky bucketing wraps splits)."""
        twin = object.__new__(Serve)
        for name in Serve.__slots__:
            object.__setattr__(twin, name, getattr(self, name))
        twin._run = run  # its own class
        twin._fusable = False  # evaluated by *run*, never inlined
        return twin

    @property
    def is_split(self) -> bool:
        """Whether this serves a percentage split."""
        return self.weights is not None

    def _split_runner(self) -> Run:  # noqa: C901  # one specialised closure per shape
        """Return the split's evaluator: the bucketing formula (``_bucketing``), inlined.

        The hash is inlined, not called through ``bucket_of``: a Python call is
        ~10% of an evaluation. Same formula, same surrogate handling (tested
        against ``bucket`` for every string shape).
        """
        prefix, bounds, outcomes, by = (
            self.prefix,
            self.bounds,
            self.outcomes,
            self.bucket_by,
        )
        if len(bounds) == 2:
            first, second = outcomes
            if by is None:

                def split2(  # noqa: PLR0917  # defaults bind locals: faster than cells
                    _a: Mapping[str, Any],
                    k: Any,
                    prefix: str = prefix,
                    cut: int = bounds[0],
                    first: Outcome = first,
                    second: Outcome = second,
                    h: Any = _hash,
                ) -> Outcome:
                    if k.__class__ is not str:
                        k = bucket_key_of(k)
                    t = prefix + k
                    if not t.isascii():
                        t = t.encode("utf-8", "surrogatepass")
                    n = h(t, 0, False)  # noqa: FBT003  # positional: a keyword costs ~15 ns
                    return first if (n * 100_000) >> 32 < cut else second

                return split2

            def split2_by(  # noqa: PLR0917  # defaults bind locals: faster than cells
                a: Mapping[str, Any],
                _k: Any,
                by: str = by,
                prefix: str = prefix,
                cut: int = bounds[0],
                first: Outcome = first,
                second: Outcome = second,
                h: Any = _hash,
            ) -> Outcome:
                k = a.get(by)
                if k.__class__ is not str:
                    k = bucket_key_of(k)
                t = prefix + k
                if not t.isascii():
                    t = t.encode("utf-8", "surrogatepass")  # type: ignore[assignment]  # str or bytes
                n = h(t, 0, False)  # noqa: FBT003  # positional: a keyword costs ~15 ns
                return first if (n * 100_000) >> 32 < cut else second

            return split2_by
        b = bucket_of

        def split(a: Mapping[str, Any], k: Any) -> Outcome:
            if by is not None:
                k = a.get(by)
            if k.__class__ is not str:
                k = bucket_key_of(k)
            return outcomes[bisect_right(bounds, b(prefix, k))]

        return split

    def guarded(self, cond: Cond, miss: Outcome) -> Run | None:
        """Return ``this split if cond(a, k) else miss`` as one closure, if it can be one.

        For a two-way split on the targeting key: the rule, the hash and the
        choice in one Python call instead of two (~40 ns). The formula is the
        one of ``_split_runner`` (tested against ``bucket`` for every string).
        """
        if not self._fusable:
            return None
        first, second = self.outcomes

        def rule_split2(  # noqa: PLR0917  # defaults bind locals: faster than cells
            a: Mapping[str, Any],
            k: Any,
            cond: Cond = cond,
            miss: Outcome = miss,
            prefix: str = self.prefix,
            cut: int = self.bounds[0],
            first: Outcome = first,
            second: Outcome = second,
            h: Any = _hash,
        ) -> Outcome:
            if not cond(a, k):
                return miss
            if k.__class__ is not str:
                k = bucket_key_of(k)
            t = prefix + k
            if not t.isascii():
                t = t.encode("utf-8", "surrogatepass")
            n = h(t, 0, False)  # noqa: FBT003  # positional: a keyword costs ~15 ns
            return first if (n * 100_000) >> 32 < cut else second

        return rule_split2

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


def _same(_key: Any, value: Any) -> Any:
    return value


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
        "_disabled",
        "bucket_by",
        "default_variant",
        "description",
        "enabled",
        "fallthrough",
        "key",
        "metadata",
        "off_variant",
        "prereq_failed",
        "prerequisites",
        "rules",
        "run",
        "salt",
        "scheme",
        "sticky",
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
        metadata: Mapping[str, Any] = _NO_METADATA,
        prerequisites: tuple[Prerequisite, ...] = (),
        sticky: str | None = None,
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
        self.metadata = metadata  # read-only: the document's, then the flag's own
        self._disabled: Outcome | None = None  # built when first asked for
        self.sticky = sticky  # the sticky-bucketing epoch, or None (see _sticky)
        # Parents that must serve one of their listed variants (see _precedence).
        self.prerequisites = prerequisites
        self.prereq_failed: Outcome | None = (
            self.outcome(off_variant, Reason.PREREQUISITE_FAILED)
            if prerequisites
            else None
        )
        self.run: Run = self._runner() if enabled else _constant(self.disabled_outcome)

    @property
    def disabled_outcome(self) -> Outcome:
        """What the flag serves when disabled or killed: its off variant, reason DISABLED."""
        out = self._disabled
        if out is None:  # two threads may both build one: equal, either is right
            out = self._disabled = self.outcome(self.off_variant, Reason.DISABLED)
        return out

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
            self.fallthrough, tuple((r.cond, r.serve) for r in self.rules)
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
            self.serving(None, serves),
            tuple((r.cond, self.serving(r, serves)) for r in self.rules),
        )

    def __repr__(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return (
            f"<CompiledFlag {self.key!r} {state} type={self.value_type} "
            f"variants={list(self.variants)} rules={len(self.rules)} version={self.version}>"
        )


def _make_runner(fall: Serve, rules: tuple[tuple[Cond, Serve], ...]) -> Run:  # noqa: C901  # one closure per shape
    """Return the evaluator of *rules* (first match wins), then *fall*.

    One rule (the common shape) gets a runner of its own, with a serve of one
    variant inlined as its outcome: one Python call fewer per evaluation.
    """
    if not rules:
        return fall.run
    if len(rules) == 1:
        ((cond, serve),) = rules
        if fall.weights is None:
            if serve.weights is None:

                def run1_const(
                    a: Mapping[str, Any],
                    k: Any,
                    cond: Cond = cond,
                    hit: Outcome = serve.outcomes[0],
                    miss: Outcome = fall.outcomes[0],
                ) -> Outcome:
                    return hit if cond(a, k) else miss

                return run1_const

            fused = serve.guarded(cond, fall.outcomes[0])
            if fused is not None:
                return fused

            def run1(
                a: Mapping[str, Any],
                k: Any,
                cond: Cond = cond,
                serve: Run = serve.run,
                miss: Outcome = fall.outcomes[0],
            ) -> Outcome:
                return serve(a, k) if cond(a, k) else miss

            return run1

        def run1_split(
            a: Mapping[str, Any],
            k: Any,
            cond: Cond = cond,
            serve: Run = serve.run,
            fall: Run = fall.run,
        ) -> Outcome:
            return serve(a, k) if cond(a, k) else fall(a, k)

        return run1_split
    pairs = tuple((c, s.run) for c, s in rules)
    fall_run = fall.run

    def run(a: Mapping[str, Any], k: Any) -> Outcome:
        for cond, serve in pairs:
            if cond(a, k):
                return serve(a, k)
        return fall_run(a, k)

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
