"""Is a span recording, and making one current: the OpenTelemetry context, read fast.

Reads the API's default runtime context (a ContextVar) directly where it is the
one in use, so the checks on hot paths cost one call; falls back to the API's
public functions otherwise.
"""

from __future__ import annotations

import logging

from opentelemetry import context as context_api
from opentelemetry import trace

from tipkit.telemetry import _catalog
from tipkit.telemetry._events import Event

__all__ = ["WhenRecording", "attach_span", "detach", "span_recording"]

logger = logging.getLogger("tipkit")


# ------------------------------------------------------------- is a span recording?

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


class WhenRecording:
    """The export's listening condition: event types it sends only to span events.

    ``bool(condition)`` is whether the current span records: a flag evaluation
    outside a recording span builds no event (one call, about 60 ns).
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

        def __bool__(self) -> bool:
            # span_recording(), inlined: this runs on every flag evaluation.
            span = _context_get().get(_SPAN_KEY)
            return span is not None and span.is_recording()

    else:  # pragma: no cover - see span_recording

        def __bool__(self) -> bool:
            return span_recording()

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
