"""``traced()``: a span around a block or a call, and the place tipkit's events attach.

Uses ``start_span`` plus an explicit context attach rather than
``start_as_current_span`` (a generator-based context manager that costs several
microseconds even with no SDK), and builds attributes only for recording spans.
"""

from __future__ import annotations

import functools
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Final, ParamSpec, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from tipkit._core import _scope
from tipkit._core._check import check_clock, check_name
from tipkit._core._decorate import Decorates
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.telemetry import _catalog, _otel, _spans
from tipkit.telemetry import _names as n
from tipkit.telemetry._counters import REGISTRY
from tipkit.telemetry._events import AttributeValue
from tipkit.telemetry._redact import warn_in_production

__all__ = ["error_type", "traced"]

logger = logging.getLogger("tipkit")

_attach_span = _spans.attach_span
_detach = _spans.detach
_current_synthetic = _scope.current_synthetic
_top = _scope.top
_SYN: Final = n.SYNTHETIC_TYPE

P = ParamSpec("P")
R = TypeVar("R")

# An open span: (span, context token or None, start time or None, name). A
# `with traced(...)` block keeps it in the scope stack, so one traced object can
# be entered from many threads and tasks at once.
_Entry = tuple[trace.Span, object, float | None, str]
_NO_SPAN: Final = trace.INVALID_SPAN
_UNSET: Final[Any] = object()
_NEVER_PLAIN: Final = type("_NeverPlain", (), {"_CURRENT": True})
_Recorder = Callable[[tuple[Any, ...], dict[str, Any]], Mapping[str, AttributeValue]]


def error_type(exc: BaseException) -> str:
    """Return the ``error.type`` of *exc*: its fully qualified class name."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


_HISTOGRAMS: weakref.WeakKeyDictionary[Any, metrics.Histogram] = (
    weakref.WeakKeyDictionary()
)


def _histogram(provider: metrics.MeterProvider) -> metrics.Histogram:
    found = _HISTOGRAMS.get(provider)
    if found is None:
        spec = _catalog.METRICS[n.CALL_DURATION]
        found = _HISTOGRAMS[provider] = provider.get_meter(
            n.SCOPE, _otel.VERSION
        ).create_histogram(
            n.CALL_DURATION,
            unit=spec.unit,
            description=spec.description,
            explicit_bucket_boundaries_advisory=_catalog.DURATION_BUCKETS,
        )
    return found


class Traced(Decorates):
    """A span factory made by :func:`traced`: decorator and (async) context manager."""

    __slots__ = (
        "_own",
        "_static",
        "attributes",
        "clock",
        "exception_messages",
        "kind",
        "meter_provider",
        "name",
        "record_args",
        "record_exception",
        "tracer_provider",
    )

    def __init__(  # noqa: PLR0917  # built only by traced(), which takes keywords
        self,
        name: str | None,
        attributes: Mapping[str, AttributeValue] | None,
        record_exception: bool,
        exception_messages: bool,
        record_args: tuple[str, ...],
        kind: SpanKind,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
        clock: Clock,
    ) -> None:
        self.name = name
        self.attributes = dict(attributes or {})
        self.record_exception = record_exception
        self.exception_messages = exception_messages
        self.record_args = record_args
        self.kind = kind
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.clock = clock
        self._static: dict[str, AttributeValue] = dict(self.attributes)
        # An injected provider's tracer, found once (None: the no-op provider).
        self._own: trace.Tracer | None = (
            _UNSET if tracer_provider is None else _otel.own_tracer(tracer_provider)
        )

    def __repr__(self) -> str:
        return (
            f"<traced {self.name!r} attributes={self.attributes} "
            f"record_exception={self.record_exception} open={_scope.count(Traced)}>"
        )

    # -- the two halves every face shares -------------------------------------

    def _start(
        self,
        name: str,
        record: _Recorder | None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> _Entry:
        # The API's own work (start_span, attach) and nothing else unless the span
        # records: attributes are built after is_recording(), the clock is read
        # only when a duration histogram is on, and with no SDK there is no span.
        own = self._own
        tracer = _otel.live_tracer() if own is _UNSET else own
        if tracer is None:
            span: trace.Span = _NO_SPAN
            token = None
        else:
            mark = _current_synthetic()
            span = tracer.start_span(
                name,
                kind=self.kind,
                attributes=self._static
                if mark is None
                else {**self._static, n.SYNTHETIC_TYPE: mark},
            )
            if record is not None or (
                _otel._CURRENT is not None and not _otel._CURRENT.tracing
            ):
                self._after_recording(span, name, record, args, kwargs or {})
            token = _attach_span(span)
        if self.meter_provider is None and REGISTRY.histogram_sink is None:
            return span, token, None, name
        return span, token, self.clock.monotonic(), name

    @staticmethod
    def _after_recording(
        span: trace.Span,
        name: str,
        record: _Recorder | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Record allow-listed arguments and notice a new global provider, if recording."""
        if not span.is_recording():
            return
        if record is not None:
            try:
                span.set_attributes(record(args, kwargs))
            except Exception:  # telemetry must never break the traced call
                logger.exception("traced(%r): could not record arguments", name)
        inst = _otel._CURRENT
        if inst is not None and not inst.tracing:
            inst.poll()

    def _finish_failed(self, entry: _Entry, exc: BaseException) -> None:
        self._finish(entry, exc)

    def _finish(self, entry: _Entry, exc: BaseException | None) -> None:
        span, token, started, name = entry
        etype = None if exc is None else error_type(exc)
        if etype is not None and span.is_recording():
            self._failed(span, etype, exc)
        if started is not None:
            # Recorded while the span is still current: the SDK's trace-based
            # exemplar filter links the histogram point to this span.
            self._record_duration(self.clock.monotonic() - started, name, etype)
        if token is not None:
            _detach(token)
            span.end()

    def _failed(self, span: trace.Span, etype: str, exc: BaseException | None) -> None:
        span.set_attribute(n.ERROR_TYPE, etype)
        if self.exception_messages:
            span.set_status(Status(StatusCode.ERROR, f"{etype}: {exc}"))
            if self.record_exception:
                span.record_exception(exc)  # type: ignore[arg-type]  # not None here
        else:
            # The message and the traceback text of user code may carry
            # personal data: only the type leaves unless allow-listed.
            span.set_status(Status(StatusCode.ERROR))
            if self.record_exception:
                span.add_event("exception", {n.EXCEPTION_TYPE: etype})

    def _record_duration(self, elapsed: float, name: str, etype: str | None) -> None:
        attributes: dict[str, AttributeValue] = {n.CALL_NAME: name}
        if etype is not None:
            attributes[n.ERROR_TYPE] = etype
        if self.meter_provider is not None:
            histogram = _histogram(self.meter_provider)
            histogram.record(elapsed, _otel.exported_attributes(attributes))
        else:
            REGISTRY.record(n.CALL_DURATION, elapsed, attributes)

    # -- context manager faces -------------------------------------------------

    def __enter__(self) -> trace.Span:
        if self.name is None:
            raise TypeError(
                "traced() used as a context manager needs a name: "
                'with traced("checkout"): ...'
            )
        entry = self._start(self.name, None)
        _scope.push(self, entry)
        return entry[0]

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._finish(_scope.pop(self)[1], exc)

    async def __aenter__(self) -> trace.Span:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: object, exc: BaseException | None, tb: object
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator face: Decorates.__call__ dispatches here, once per function ------

    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:  # noqa: C901  # the wrapper inlines its hot path
        """Wrap *fn* in a span named after this object (or *fn*'s qualname).

        Raises:
            ValueError: a name in ``record_args`` is not a parameter of *fn*.
        """
        name, record = self._naming(fn)
        plain = (
            self.tracer_provider is None
            and self.meter_provider is None
            and not _otel.ENV_TRACER_PROVIDER
        )
        otel, own, kind = _otel, self._own, self.kind
        # No SDK and nothing instrumented: call fn bare. `gate._CURRENT` is
        # instrument()'s configuration, or never None when this span has its
        # own providers (one attribute read instead of a flag and a read).
        gate: Any = otel if plain else _NEVER_PLAIN
        static = self._static or None
        registry, meter_provider, clock = REGISTRY, self.meter_provider, self.clock
        after_recording, failed = self._after_recording, self._finish_failed
        live_tracer, record_duration = _otel.live_tracer, self._record_duration
        # Everything the span path needs, in one closure cell: a call copies
        # every cell its function reads into the frame, and the no-SDK path
        # should pay for three, not twenty.
        config = (
            otel,
            own,
            kind,
            static,
            registry,
            meter_provider,
            clock,
            after_recording,
            failed,
            live_tracer,
            record_duration,
            name,
            record,
            # attach_span/detach inline where the API's default context is in use.
            *_spans.fast_context(),
        )

        # The span by hand, inline (each call saved is ~50 ns): what the API
        # costs, plus a scope read, and attributes only when the span records.
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if gate._CURRENT is None and trace._TRACER_PROVIDER is None:
                # No SDK, nothing instrumented. fn(*args) when there are no
                # keywords: passing an empty **kwargs on costs ~20 ns.
                if kwargs:
                    return fn(*args, **kwargs)
                return fn(*args)  # type: ignore[call-arg]  # no keywords were given
            (
                otel,
                own,
                kind,
                static,
                registry,
                meter_provider,
                clock,
                after_recording,
                failed,
                live_tracer,
                record_duration,
                name,
                record,
                context_get,
                context_set,
                context_reset,
                span_key,
                new_context,
            ) = config
            tracer = live_tracer() if own is _UNSET else own
            if tracer is None:
                span: trace.Span = _NO_SPAN
                token = None
            else:
                node = _top()
                mark = None if node is None else node[4]
                span = tracer.start_span(
                    name,
                    None,
                    kind,
                    static if mark is None else {**(static or {}), _SYN: mark},
                )
                inst = otel._CURRENT
                if record is not None or (inst is not None and not inst.tracing):
                    after_recording(span, name, record, args, kwargs)
                # What _attach_span does, inline (a call is ~50 ns here):
                token = context_set(new_context({**context_get(), span_key: span}))
            if meter_provider is None and registry.histogram_sink is None:
                started = None
            else:
                started = clock.monotonic()
            try:
                result = fn(*args, **kwargs) if kwargs else fn(*args)  # type: ignore[call-arg]  # as above
            except BaseException as exc:
                failed((span, token, started, name), exc)
                raise
            if started is not None:
                record_duration(clock.monotonic() - started, name, None)
            if token is not None:
                try:  # _detach(token), inline
                    context_reset(token)
                except Exception:  # _detach logs it, as the API's detach does
                    _detach(token)
                span.end()
            return result

        return wrapper

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        """Wrap the ``async def`` *fn* in a span, as :meth:`_wrap_sync` does."""
        name, record = self._naming(fn)
        start, finish = self._start, self._finish

        @functools.wraps(fn)
        async def awrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            entry = start(name, record, args, kwargs)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                finish(entry, exc)
                raise
            finish(entry, None)
            return result

        return awrapper

    def _naming(self, fn: Callable[..., Any]) -> tuple[str, _Recorder | None]:
        """Return the span name for *fn* and its argument recorder (or ``None``)."""
        name: str = self.name or getattr(fn, "__qualname__", None) or repr(fn)
        return name, self._arg_recorder(fn)

    def _arg_recorder(self, fn: Callable[..., Any]) -> _Recorder | None:
        if not self.record_args:
            return None
        signature = inspect.signature(fn)
        unknown = [a for a in self.record_args if a not in signature.parameters]
        if unknown:
            raise ValueError(
                f"traced(record_args=...): {unknown} not parameters of "
                f"{fn.__qualname__}{signature}"
            )
        warn_in_production(
            f"traced(record_args={self.record_args!r}) on {fn.__qualname__} exports "
            "these argument values on every recording span in production: keep "
            "personal data out of them"
        )
        wanted = self.record_args

        def record(
            args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Mapping[str, AttributeValue]:
            bound = signature.bind_partial(*args, **kwargs)
            return {
                f"tipkit.arg.{k}": _otel.attribute_value(bound.arguments[k])
                for k in wanted
                if k in bound.arguments
            }

        return record


def traced(
    name: str | None = None,
    *,
    attributes: Mapping[str, AttributeValue] | None = None,
    record_exception: bool = True,
    exception_messages: bool = False,
    record_args: tuple[str, ...] | list[str] = (),
    kind: SpanKind = SpanKind.INTERNAL,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Traced:
    """Make a span around a call or a block, as a decorator or a context manager.

    The span becomes current inside, so events tipkit publishes there (a breaker
    trip, a flag evaluation) attach to it. On an exception the span gets status
    ERROR and ``error.type``; with *record_exception* an ``exception`` event
    carrying ``exception.type`` is added. Exception messages and tracebacks
    (which can carry personal data) are exported only with
    ``exception_messages=True``. Arguments are never recorded unless named in
    *record_args* (exported as ``tipkit.arg.<name>``); return values never.

    Once :func:`~tipkit.telemetry.instrument` is in effect (or *meter_provider* is
    given), the duration is recorded in ``tipkit.call.duration`` (s), read from
    *clock*. Spans go to *tracer_provider*, else to the provider passed to
    ``instrument()``, else to the global one (a no-op span on a bare install).

    Args:
        name: the span name; as a decorator defaults to the function's qualname.
        attributes: static span attributes (low-cardinality values you choose).
        record_exception: add an ``exception`` event on errors.
        exception_messages: allow-list exception messages and tracebacks.
        record_args: names of parameters whose values are recorded on the span.
        kind: the span kind.
        tracer_provider: inject a tracer provider instead of the configured one.
        meter_provider: inject a meter provider for the duration histogram.
        clock: where durations are read from.

    Thread-safe and task-safe: one ``traced`` object may be used concurrently.

    Raises:
        TypeError: *name* is not a non-empty string, or an attribute value is not
            a str, bool, int or float.
    """
    check_name(name, "traced(name=...)", optional=True)
    check_clock(clock, "traced(clock=...)")
    for key, value in (attributes or {}).items():
        if not isinstance(value, str | bool | int | float):
            raise TypeError(
                f"traced(attributes=...): {key!r} must be str, bool, int or float, "
                f"got {type(value).__name__}"
            )
    return Traced(
        name,
        attributes,
        bool(record_exception),
        bool(exception_messages),
        tuple(record_args),
        kind,
        tracer_provider,
        meter_provider,
        clock,
    )
