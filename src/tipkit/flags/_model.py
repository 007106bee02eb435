"""The evaluation vocabulary: reasons, error codes, outcomes, contexts, details."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from tipkit.telemetry import _names
from tipkit.telemetry._counters import REGISTRY, Counter

__all__ = [
    "USE_DEFAULT",
    "Assignment",
    "ErrorCode",
    "EvalError",
    "EvaluationContext",
    "EvaluationDetail",
    "Outcome",
    "Reason",
    "assignment",
    "counter_for",
]


class Reason(StrEnum):
    """Why a flag evaluated to its value (OpenFeature's vocabulary and meanings)."""

    STATIC = "STATIC"
    """No rules, or an override: the value is not targeted."""
    DEFAULT = "DEFAULT"
    """Rules exist and none matched: the default (fallthrough) variant."""
    TARGETING_MATCH = "TARGETING_MATCH"
    """A rule matched and served a variant."""
    SPLIT = "SPLIT"
    """The value came from a percentage split (in a rule or the fallthrough)."""
    DISABLED = "DISABLED"
    """The flag is disabled or killed."""
    PREREQUISITE_FAILED = "PREREQUISITE_FAILED"
    """A prerequisite flag did not serve a listed variant: the off variant."""
    ERROR = "ERROR"
    """Something went wrong: the caller's default, with an error code."""


class ErrorCode(StrEnum):
    """What went wrong when the reason is ``ERROR`` (OpenFeature's vocabulary)."""

    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    PARSE_ERROR = "PARSE_ERROR"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    PROVIDER_NOT_READY = "PROVIDER_NOT_READY"
    GENERAL = "GENERAL"


USE_DEFAULT: Final[Any] = type(
    "UseDefault", (), {"__repr__": lambda _s: "USE_DEFAULT"}
)()
"""An outcome value meaning: serve the caller's default."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class EvalError(Exception):
    """Raised inside compiled flags when evaluation cannot go on; never escapes."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EvaluationContext:
    """Who a flag is evaluated for: a targeting key and attributes.

    Build one per request (or per user) and reuse it across evaluations: that is
    the fastest way to evaluate. The attributes mapping is copied once here.
    Thread-safe to share: it is never mutated by tipkit.
    """

    __slots__ = ("attributes", "targeting_key")

    def __init__(
        self,
        targeting_key: str | int | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self.targeting_key = targeting_key
        self.attributes: Mapping[str, Any] = (
            _EMPTY if not attributes else dict(attributes)
        )

    def __repr__(self) -> str:
        return (
            f"EvaluationContext(targeting_key={self.targeting_key!r}, "
            f"attributes={dict(self.attributes)!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EvaluationContext):
            return NotImplemented
        return self.targeting_key == other.targeting_key and dict(
            self.attributes
        ) == dict(other.attributes)

    __hash__ = None  # type: ignore[assignment]  # equal contexts may hold unhashable attributes


def counter_for(
    key: str, variant: str | None, reason: str, error_code: str | None = None
) -> Counter:
    """Return the evaluation counter for one (key, variant, reason).

    Callers keep the counter and call ``counter.inc()`` (not a cached bound
    ``inc``), so ``tipkit.telemetry.synthetic()`` can route increments.
    """
    attrs: dict[str, str] = {
        _names.FEATURE_FLAG_KEY: key,
        _names.FEATURE_FLAG_REASON: reason.lower(),
    }
    if variant is not None:
        attrs[_names.FEATURE_FLAG_VARIANT] = variant
    if error_code is not None:
        attrs[_names.ERROR_TYPE] = error_code.lower()
    return REGISTRY.counter(_names.FLAG_EVALUATIONS, attrs)


class Outcome:
    """One precomputed result of a flag: shared, immutable, built at load.

    The engine returns these from compiled flags, so a successful evaluation
    allocates nothing; ``counter.inc()`` counts it.
    """

    __slots__ = (
        "assigned",
        "counter",
        "error_code",
        "error_message",
        "flag_key",
        "flag_version",
        "mutable",
        "reason",
        "rule_id",
        "split",
        "value",
        "variant",
        "vclass",
    )

    def __init__(
        self,
        flag_key: str,
        value: Any,
        variant: str | None,
        reason: Reason,
        *,
        rule_id: str | None = None,
        error_code: ErrorCode | None = None,
        error_message: str | None = None,
        flag_version: str | None = None,
    ) -> None:
        self.flag_key = flag_key
        self.value = value
        self.variant = variant
        self.reason = reason
        self.rule_id = rule_id
        self.error_code = error_code
        self.error_message = error_message
        self.flag_version = flag_version
        # The weights (variant -> thousandths) of the split that serves this
        # outcome, set by that split; read off the hot path (the rollout checks a
        # request was assigned by the stage's split). Shared: never mutate it.
        self.split: Mapping[str, int] | None = None
        # The Assignment answering Flags.assign() with this outcome, built at its
        # first use and shared from then on (see assignment()).
        self.assigned: Assignment | None = None
        # Built at the first evaluation served (most outcomes of a big document
        # never are): holders call ``out.counter.inc()``, which builds it then.
        # Not a __getattr__ on an unset slot: any __getattr__ makes every
        # attribute read of an outcome slower (no specialised slot reads).
        self.counter: Counter | _LazyCounter = _LazyCounter(self)
        # Object values are copied out on each evaluation: the snapshot is shared.
        self.mutable = isinstance(value, dict | list)
        # The hot path serves the value as is when the caller's default has exactly
        # this class; everything else (defaults, coercion, copies) takes the slow path.
        self.vclass: type | None = (
            None if self.mutable or value is USE_DEFAULT else value.__class__
        )

    def __repr__(self) -> str:
        return (
            f"<Outcome {self.flag_key!r} variant={self.variant!r} reason={self.reason.value} "
            f"rule={self.rule_id!r} error={self.error_code}>"
        )


class _LazyCounter:
    """An outcome's counter until its first ``inc()``, which builds and installs it."""

    __slots__ = ("out",)

    def __init__(self, out: Outcome) -> None:
        self.out = out

    def inc(self) -> int:
        out = self.out
        counter = counter_for(out.flag_key, out.variant, out.reason, out.error_code)
        out.counter = counter
        return counter.inc()


@dataclass(frozen=True, slots=True)
class EvaluationDetail:
    """The full result of one evaluation.

    ``value`` is what the caller gets (the caller's default on errors and on a
    disabled flag without an ``off_variant``); ``variant`` is ``None`` whenever
    no variant was served.
    """

    flag_key: str
    value: Any
    variant: str | None
    reason: Reason
    rule_id: str | None = None
    error_code: ErrorCode | None = None
    error_message: str | None = None
    flag_version: str | None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    """Which variant a flag served for one context, and why (:meth:`Flags.assign`).

    ``value`` is the flag's value (``None`` when none was served: an error, or
    a disabled flag without an ``off_variant``); ``split`` is the weights
    (variant -> thousandths, summing to 100000) of the percentage split that
    served it, run-time weights included, else ``None``. Immutable; equal
    assignments may be one shared object.
    """

    flag_key: str
    value: Any
    variant: str | None
    reason: Reason
    rule_id: str | None = None
    split: Mapping[str, int] | None = None
    error_code: ErrorCode | None = None
    error_message: str | None = None
    flag_version: str | None = None


def assignment(value: Any, out: Outcome) -> Assignment:
    """Return the :class:`Assignment` of *out* serving *value* (the settled value).

    Shared per outcome (outcomes are built at load and shared), so an
    assignment allocates nothing after its first use; an object value is
    copied per call, so that assignment is built per call too.
    """
    cached = out.assigned
    if cached is not None and not out.mutable:
        return cached
    built = Assignment(
        out.flag_key,
        value,
        out.variant,
        out.reason,
        out.rule_id,
        out.split,
        out.error_code,
        out.error_message,
        out.flag_version,
    )
    if not out.mutable:
        # Two threads may both build one; either is right and the last one stays.
        out.assigned = built
    return built
