"""Is a span recording, and making one current: the OpenTelemetry context, read fast.

Reads the API's default runtime context (a ContextVar) directly where it is the
one in use, so the checks on hot paths cost one call; falls back to the API's
public functions otherwise.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace

from tipkit._core._scope import top as _top
from tipkit.telemetry import _catalog
from tipkit.telemetry._events import Event

__all__ = [
    "SPAN_KEY",
    "WhenRecording",
    "attach_span",
    "current_context",
    "detach",
    "fast_context",
    "seen_in_span",
    "span_recording",
]

logger = logging.getLogger("tipkit")


# ------------------------------------------------------------- is a span recording?


def fast_context() -> tuple[Any, Any, Any, str, Any]:
    """Return ``(get, set, reset, span_key, Context)`` for callers inlining :func:`attach_span`.

    ``token = set(Context({**get(), span_key: span}))`` makes *span* current and
    ``reset(token)`` undoes it (it may raise: then call :func:`detach`, which
    logs). Those of the API's default runtime context; with another runtime
    context configured, stand-ins that go through :func:`attach_span` and the
    API's detach.
    """
    if _fast:
        return _context_get, _context_set, _context_reset, _SPAN_KEY, Context
    return (
        dict,
        attach_span,
        context_api.detach,
        "span",
        operator.itemgetter("span"),
    )  # pragma: no cover - OTEL_PYTHON_CONTEXT names another runtime context


try:  # the API's default runtime context: read its ContextVar directly
    from opentelemetry.context import _RUNTIME_CONTEXT, Context
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
    from opentelemetry.trace.propagation import _SPAN_KEY

    _fast = type(_RUNTIME_CONTEXT) is ContextVarsRuntimeContext
except ImportError:  # pragma: no cover - an API without these private names
    _fast = False

if _fast:
    _context_get = _RUNTIME_CONTEXT._current_context.get  # type: ignore[attr-defined]  # checked above

    def span_recording() -> bool:
        """Return whether the current span records (a ContextVar read, one call)."""
        span = _context_get().get(_SPAN_KEY)
        return span is not None and span.is_recording()

    current_context: Callable[[], Any] = _context_get
    """The current context: ``current_context().get(SPAN_KEY)`` is the current span or ``None``."""
    SPAN_KEY: str = _SPAN_KEY

    _context_set = _RUNTIME_CONTEXT._current_context.set  # type: ignore[attr-defined]  # checked above
    _context_reset = _RUNTIME_CONTEXT._current_context.reset  # type: ignore[attr-defined]  # checked above

    def attach_span(span: trace.Span) -> object:
        """Make *span* current; return the token for :func:`detach`.

        What ``context.attach(trace.set_span_in_context(span))`` does, in one
        frame instead of six.
        """
        return _context_set(Context({**_context_get(), _SPAN_KEY: span}))

    def detach(token: object) -> None:
        """Undo :func:`attach_span`; never raises (the API's detach logs, too)."""
        try:
            _context_reset(token)
        except Exception:
            logger.exception("tipkit: failed to detach context")

else:  # pragma: no cover - OTEL_PYTHON_CONTEXT names another runtime context

    def attach_span(span: trace.Span) -> object:
        """Make *span* current; return the token for :func:`detach`."""
        return context_api.attach(trace.set_span_in_context(span))

    def detach(token: object) -> None:
        """Undo :func:`attach_span`."""
        context_api.detach(token)  # type: ignore[arg-type]  # attach()'s token

    def span_recording() -> bool:
        """Return whether the current span records."""
        return trace.get_current_span().is_recording()

    SPAN_KEY = "span"

    def current_context() -> Any:
        """Return a mapping whose ``SPAN_KEY`` is the current span."""
        return {SPAN_KEY: trace.get_current_span()}


class WhenRecording:
    """The export's listening condition: event types it sends only to span events.

    ``bool(condition)`` is whether the current span records (one Python call,
    about 60 ns). ``probe`` is cheaper and coarser, for the flag evaluation's hot
    path: the current OpenTelemetry context itself, read by one C-level call and
    tested by C, so outside any span (an empty context) nothing else runs; inside
    a span or with baggage it is truthy and the caller asks ``bool(condition)``
    (or :func:`seen_in_span`, which checks the same).
    """

    __slots__ = ("_log_calls", "_log_state", "_span_calls", "_span_state")

    def __init__(
        self, log_calls: bool, log_state: bool, span_calls: bool, span_state: bool
    ) -> None:
        self._log_calls = log_calls
        self._log_state = log_state
        self._span_calls = span_calls
        self._span_state = span_state

    if _fast:
        # A builtin bound method has no __get__: read on an instance it comes
        # back as is, and calling it is one C call returning the API's Context
        # (a dict: empty, so falsy, when no span and no baggage is current).
        probe: Callable[[], object] = _context_get

        def __bool__(
            self, _get: Callable[[], Any] = _context_get, _key: str = _SPAN_KEY
        ) -> bool:
            # span_recording(), inlined. Defaults for globals, and an empty
            # context (no span, no baggage) answered first.
            ctx = _get()
            if not ctx:
                return False
            span = ctx.get(_key)
            return span is not None and span.is_recording()

    else:  # pragma: no cover - see span_recording
        probe = span_recording

        def __bool__(
            self, _get: Callable[[], Any] = span_recording, _key: str = ""
        ) -> bool:
            return bool(_get())

    def mode(self, cls: type[Event]) -> bool | None:
        """Return ``True`` (always wanted), ``False`` (never) or ``None`` (in a recording span).

        Counted events (:data:`~tipkit.telemetry._catalog.COUNTED_EVENTS`, the
        ones alerts are written on) are always wanted: they are rare. An event
        neither logged nor sent to spans is never wanted, so with no SDK a flag
        evaluation checks one plain ``False``.
        """
        if cls.otel_name in _catalog.COUNTED_EVENTS:
            return True
        spec = _catalog.EVENTS.get(cls.otel_name, _catalog.DEFAULT_EVENT)
        if self._log_calls if spec.per_call else self._log_state:
            return True
        if self._span_calls if spec.per_call else self._span_state:
            return None
        return False

    def __repr__(self) -> str:
        return (
            f"<when the current span records log_calls={self._log_calls} "
            f"log_state={self._log_state}>"
        )


# ------------------------------------------ one feature_flag.evaluation per span
#
# A span event costs the SDK several microseconds (it copies and checks every
# attribute): more than ten flag evaluations. A request that reads the same flag
# many times would spend most of its time recording the same event again. So
# when the OpenTelemetry export is the only listener (``FlagEvaluated.listened``
# is its WhenRecording condition), a span gets one ``feature_flag.evaluation``
# event per distinct result: the same precomputed outcome (flag, variant,
# reason, version), targeting key and synthetic mark. A result that differs in
# any of these (another user, a reload, a kill, an error) is recorded again.
# Counts stay exact in the ``tipkit.flag.evaluations`` metric; a listener that
# wants every evaluation (``instrument(flag_log_events=True)``, a test's
# capture, your own) makes the event built and recorded every time. What a span
# has seen is kept on the span object (SDK spans have a ``__dict__``; a span
# without one records every evaluation).

_SEEN = "_tipkit_flag_results"
_MAX_SEEN = 256  # distinct results remembered per span; later ones always record


def seen_in_span(span: Any, result: object, target: object) -> bool:
    """Return whether the recording *span* already has the event of *result* for *target*.

    For a caller that has just seen *span* (the current span, see
    :func:`current_span`) record. Remembers a new result, so the next call
    answers ``True``. *result* is a shared, immutable outcome (keyed by
    identity) and *target* the evaluation's targeting key. Never raises.
    """
    node = _top()
    key = (result, target, None if node is None else node[4])
    try:
        state = span.__dict__
        seen = state.get(_SEEN)
        if seen is None:
            seen = state.setdefault(_SEEN, set())
        elif key in seen:
            return True
        if len(seen) < _MAX_SEEN:
            seen.add(key)
    except (AttributeError, TypeError):  # no __dict__; an unhashable targeting key
        return False
    return False
