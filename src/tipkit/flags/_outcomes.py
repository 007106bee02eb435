"""The slow half of an evaluation: contexts, errors, the caller's default, events.

The engine's fast paths serve a precomputed :class:`Outcome` when the context
is a common class and the caller's default has the value's class. Everything
else comes here: reading any context, turning a failure into an ``ERROR``
outcome (never an exception), applying the caller's default (absent values,
type coercion, copies of object values) and publishing ``FlagEvaluated``.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

from tipkit.flags._compiled import Run
from tipkit.flags._events import FlagEvaluated
from tipkit.flags._model import (
    _EMPTY,
    USE_DEFAULT,
    ErrorCode,
    EvalError,
    EvaluationContext,
    EvaluationDetail,
    Outcome,
    Reason,
)
from tipkit.flags._request import REQUEST, current_request_context
from tipkit.telemetry._events import BUS
from tipkit.telemetry._spans import (
    SPAN_KEY,
    WhenRecording,
    current_context,
    seen_in_span,
)

__all__ = [
    "OnceLog",
    "as_context",
    "detail",
    "error_outcome",
    "failed",
    "finish",
    "publish",
    "read_context",
    "settle",
]

logger = logging.getLogger("tipkit")


class OnceLog:
    """Log each kind of plumbing failure once (at most 1000 kinds) to ``tipkit``."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, tag: str, message: str, key: Any, exc: BaseException) -> None:
        """Log *message* % *key* with *exc* unless *tag* was logged before."""
        if tag not in self._seen and len(self._seen) < 1000:
            self._seen.add(tag)
            logger.warning(message, key, exc_info=exc)


def read_context(run: Run, context: Any) -> Outcome:
    """Evaluate *run* for any context (the fast paths handle the common classes inline).

    Raises:
        EvalError: ``INVALID_CONTEXT`` for a context of another kind, or one
            whose reading raised.
    """
    if context is None:
        node = REQUEST.get()  # request_context(): read only when given no context
        if node is None:
            return run(_EMPTY, None)
        context = node[0]
    if context.__class__ is EvaluationContext:
        return run(context.attributes, context.targeting_key)
    try:
        tkey: Any
        if isinstance(context, EvaluationContext):
            attrs: Mapping[str, Any] = dict(context.attributes)
            tkey = context.targeting_key
        elif isinstance(context, Mapping):
            attrs = dict(context)
            tkey = attrs.get("targeting_key")
        elif isinstance(context, str):
            attrs, tkey = _EMPTY, str.__str__(context)
        elif isinstance(context, int) and not isinstance(context, bool):
            attrs, tkey = _EMPTY, context
        else:
            raise EvalError(
                ErrorCode.INVALID_CONTEXT,
                f"a context must be a targeting key, a mapping or an EvaluationContext, "
                f"got {type(context).__name__}",
            )
    except EvalError:
        raise
    except Exception as exc:
        raise EvalError(
            ErrorCode.INVALID_CONTEXT,
            f"the context could not be read ({type(exc).__name__})",
        ) from exc
    return run(attrs, tkey)


def error_outcome(
    key: Any, code: ErrorCode, message: str, version: str | None = None
) -> Outcome:
    """Return a fresh ``ERROR`` outcome (serving the caller's default) for *key*."""
    if isinstance(key, str):
        flag_key = str.__str__(key)
    else:
        try:
            flag_key = repr(key)
        except Exception:  # a hostile repr must not escape evaluation
            flag_key = f"<{type(key).__name__}>"
    return Outcome(
        flag_key,
        USE_DEFAULT,
        None,
        Reason.ERROR,
        error_code=code,
        error_message=message,
        flag_version=version,
    )


def _not_a_string(key: Any) -> Outcome:
    return error_outcome(
        key,
        ErrorCode.GENERAL,
        f"a flag key must be a string, got {type(key).__name__}",
    )


def failed(
    key: Any,
    exc: Exception,
    known: Callable[[str], bool],
    not_ready: tuple[ErrorCode, str] | None,
    log: OnceLog,
) -> Outcome:
    """Return the ``ERROR`` outcome for an evaluation of *key* that raised *exc*.

    *known* says whether the snapshot has *key* (a ``KeyError`` for an unknown
    key is ``FLAG_NOT_FOUND``, or the provider's error while it is not ready,
    given as *not_ready*). Never raises, whatever *key*'s hash or repr do.
    """
    if key.__class__ is not str:
        # A key's own hash or repr may raise: never let it reach app code.
        if not isinstance(key, str):
            return _not_a_string(key)
        key = str.__str__(key)
    if isinstance(exc, EvalError):
        return error_outcome(key, exc.code, exc.message)
    if isinstance(exc, KeyError) and not known(key):
        if not_ready is not None:
            return error_outcome(key, *not_ready)
        return error_outcome(key, ErrorCode.FLAG_NOT_FOUND, f"flag {key!r} not found")
    log(
        f"eval:{key!r}:{type(exc).__name__}",
        "tipkit: evaluating flag %r raised",
        key,
        exc,
    )
    return error_outcome(
        key, ErrorCode.GENERAL, f"{type(exc).__name__} while evaluating"
    )


def settle(key: str, out: Outcome, default: Any) -> tuple[Any, Outcome]:
    """Apply the caller's default: absent values, type coercion, copies."""
    value = out.value
    if value is USE_DEFAULT:
        return default, out
    if default is None or value.__class__ is default.__class__:
        return (copy.deepcopy(value) if out.mutable else value), out
    return _coerce(key, value, default, out)


def finish(
    key: str, out: Outcome, default: Any, context: Any, log: OnceLog
) -> tuple[Any, Outcome]:
    """Apply the caller's default to *out*, count it and publish it: ``(value, out)``."""
    value, out = settle(key, out, default)
    out.counter.inc()
    if FlagEvaluated.listened:
        publish(value, out, context, log)
    return value, out


_FLOAT_MAX = int(sys.float_info.max)


def _number_type(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _coerce(key: str, value: Any, default: Any, out: Outcome) -> tuple[Any, Outcome]:
    """Convert *value* to the type of *default*, or answer TYPE_MISMATCH."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            return int(value), out
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        if _number_type(value) and -_FLOAT_MAX <= value <= _FLOAT_MAX:
            return float(value), out  # in range: float() cannot overflow
        ok = False
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, Mapping):
        ok = isinstance(value, Mapping)
    elif isinstance(default, list | tuple):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if ok:
        return (copy.deepcopy(value) if out.mutable else value), out
    expected = type(default).__name__
    return default, error_outcome(
        key,
        ErrorCode.TYPE_MISMATCH,
        f"flag {key!r} served a {type(value).__name__}, the default is a {expected}",
        out.flag_version,
    )


def detail(value: Any, out: Outcome) -> EvaluationDetail:
    """Return the :class:`EvaluationDetail` of *out* serving *value*."""
    return EvaluationDetail(
        out.flag_key,
        value,
        out.variant,
        out.reason,
        out.rule_id,
        out.error_code,
        out.error_message,
        out.flag_version,
    )


def publish(value: Any, out: Outcome, context: Any, log: OnceLog) -> None:
    """Publish one ``FlagEvaluated`` (call when ``listened`` or ``probe()`` is truthy).

    When only the OpenTelemetry export listens (for the recording span), an
    evaluation outside a recording span, or whose result the span already
    carries, builds nothing: a span gets one ``feature_flag.evaluation`` per
    distinct result (see :mod:`tipkit.telemetry._spans`).
    """
    listened = FlagEvaluated.listened
    if listened.__class__ is WhenRecording:
        # The exact question the flags engine's probe() left open, inline.
        span = current_context().get(SPAN_KEY)
        if span is None or not span.is_recording():
            return
        # _target(context), inline: this runs on every evaluation in a span.
        cls = context.__class__
        if cls is dict:
            target = context.get("targeting_key")
        elif cls is EvaluationContext:
            target = context.targeting_key
        else:
            target = _target(context)
        if seen_in_span(span, out, target):
            return
    elif listened is not True and not listened:  # a coarse probe said "maybe"
        return
    try:
        BUS.publish(
            FlagEvaluated(
                name=out.flag_key,
                flag_key=out.flag_key,
                value=value,
                variant=out.variant,
                reason=out.reason,
                error_code=out.error_code,
                error_message=out.error_message,
                flag_version=out.flag_version,
                rule_id=out.rule_id,
                context=as_context(context),
            )
        )
    except Exception as exc:  # pragma: no cover - the bus never raises; belt and braces
        log(
            "publish",
            "tipkit: publishing a flag evaluation failed for %r",
            out.flag_key,
            exc,
        )


def _target(context: Any) -> Any:
    """Return the targeting key ``as_context(context)`` would have, cheaply."""
    cls = context.__class__
    if cls is dict:
        return context.get("targeting_key")
    if cls is EvaluationContext:
        return context.targeting_key
    if cls is str:
        return context
    return as_context(context).targeting_key


def as_context(context: Any) -> EvaluationContext:
    """Return *context* as an EvaluationContext (for listeners and explain); never raises."""
    if context is None:
        context = current_request_context()
    try:
        if isinstance(context, EvaluationContext):
            return context
        if isinstance(context, Mapping):
            attrs = dict(context)
            return EvaluationContext(attrs.get("targeting_key"), attrs)
        if isinstance(context, str | int) and not isinstance(context, bool):
            return EvaluationContext(context)
    except Exception:
        logger.debug("tipkit: a context could not be read", exc_info=True)
    return EvaluationContext()
