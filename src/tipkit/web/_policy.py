"""What every tipkit middleware does to a request, whatever the framework.

A framework adapter (``_asgi``, ``_wsgi``, ``django``) gives a :class:`View`
of the request (headers, client address, cookies, user) and a factory of the
framework's own request object for the user's callbacks; :meth:`Policy.admit`
then decides, in this order:

1. the rate limit (``limiter`` keyed by ``key_from``): a refusal is a 429 with
   ``Retry-After`` (whole seconds, rounded up) and the IETF ``RateLimit`` /
   ``RateLimit-Policy`` headers;
2. the incoming marks (:mod:`tipkit.telemetry._propagation`): the remaining
   deadline from anyone, the synthetic mark only from a trusted source;
3. the evaluation context (``context_from``, else the default: the targeting
   key from a header, a cookie or the authenticated user);
4. the trace: attributes on the current server span when a framework's
   OpenTelemetry instrumentation made one, else one span of tipkit's own,
   child of the incoming ``traceparent``.

The adapter then runs the app inside :meth:`Admission.enter` /
:meth:`Admission.exit` (the breaker, when there is one, around it). Nothing
here raises into the request: a bad header is ignored (debug log), a user
callback that raises is counted and its default used.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, Generic, Protocol, Self, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from tipkit.deadline import deadline
from tipkit.errors import CircuitOpenError, DeadlineExceededError
from tipkit.flags._model import EvaluationContext
from tipkit.flags._request import request_context
from tipkit.telemetry import _propagation
from tipkit.telemetry._counters import REGISTRY
from tipkit.telemetry._otel import live_tracer
from tipkit.telemetry._synthetic import synthetic
from tipkit.web._trust import Trust, TrustLike

__all__ = ["Admission", "Guarded", "Middleware", "Policy", "Refusal", "View"]

logger = logging.getLogger("tipkit")

ERRORS = "tipkit.web.callback_errors"
REJECTED = "tipkit.web.rejected"


class View(Protocol):
    """What the policy reads of a request (header names are lower-case)."""

    method: str
    path: str
    client: str | None

    def header(self, name: str) -> str | None:
        """Return the header's value (repeated headers joined by ``,``), or ``None``."""

    def cookie(self, name: str) -> str | None:
        """Return the cookie's value, or ``None``."""

    def user(self) -> str | None:
        """Return the authenticated user's id, or ``None``."""


class Refusal:
    """A response the middleware sends instead of running the app."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        self.status = status
        self.headers = [*headers, ("content-type", "text/plain; charset=utf-8")]
        self.body = body.encode()

    @property
    def reason(self) -> str:
        """The status line's reason phrase."""
        return {
            429: "Too Many Requests",
            503: "Service Unavailable",
            504: "Gateway Timeout",
        }.get(self.status, "Error")


def _whole_seconds(seconds: float) -> int:
    """``Retry-After`` is whole seconds: round up, and never say 0 for a refusal."""
    return max(1, math.ceil(seconds - 1e-9))


class _Getter:
    """OpenTelemetry's getter over a :class:`View` (for ``propagate.extract``)."""

    def get(self, carrier: View, key: str) -> list[str] | None:
        value = carrier.header(key.lower())
        return None if value is None else [value]

    def keys(self, carrier: View) -> list[str]:  # noqa: ARG002  # the Getter protocol
        return []


_GETTER = _Getter()
_FIELDS: list[tuple[object, tuple[str, ...]]] = []
_READ_ALREADY = frozenset({"baggage", "tracestate"})  # read, or void without a parent


def _carries_context(view: View, baggage: bool) -> bool:
    """Whether the request has a header the global propagators read (``traceparent``...).

    *baggage*: whether it has a ``baggage`` header (the policy has looked already).
    """
    if baggage:
        return True
    textmap = propagate.get_global_textmap()
    if not _FIELDS or _FIELDS[0][0] is not textmap:
        # The textmap is set once at startup; its fields are a set built per call.
        fields = (f.lower() for f in textmap.fields)
        _FIELDS[:] = [(textmap, tuple(f for f in fields if f not in _READ_ALREADY))]
    return any(view.header(field) is not None for field in _FIELDS[0][1])


class Admission:
    """A request let through: what to add to its response, and its scopes."""

    __slots__ = (
        "_policy",
        "_span",
        "_stack",
        "_token",
        "context",
        "has_baggage",
        "headers",
        "marks",
        "trusted",
        "view",
    )

    def __init__(  # noqa: PLR0917  # built in one place, by Policy
        self,
        policy: Policy,
        view: View,
        headers: list[tuple[str, str]],
        context: Any,
        marks: _propagation.Marks,
        trusted: bool,
    ) -> None:
        self._policy = policy
        self.view = view
        self.headers = headers
        self.context = context
        self.marks = marks
        self.trusted = trusted
        self.has_baggage = False
        self._stack: ExitStack | None = None
        self._span: Any = None
        self._token: Any = None

    def enter(self) -> None:
        """Enter the request's scopes in the current context (never raises)."""
        stack = self._stack = ExitStack()
        try:
            if self.context is not None:
                stack.enter_context(request_context(self.context))
            if self.marks.synthetic and self.trusted:
                stack.enter_context(synthetic("test"))
            seconds = self.marks.deadline_seconds
            if seconds is not None:
                stack.enter_context(
                    deadline(seconds, name="request", clock=self._policy.clock)
                )
            self._start_span()
        except Exception:  # never into the request: serve without the scope
            logger.debug("tipkit: could not enter a request scope", exc_info=True)

    def _start_span(self) -> None:
        view = self.view
        attrs: dict[str, Any] = {}
        if self.marks.synthetic and self.trusted:
            attrs["user_agent.synthetic.type"] = "test"
        if self.marks.deadline_ms is not None:
            attrs["tipkit.deadline_ms"] = self.marks.deadline_ms
        current = trace.get_current_span()
        if current.is_recording():
            # A framework instrumentation made the server span: add to it.
            if attrs:
                current.set_attributes(attrs)
            return
        tracer = live_tracer()
        if tracer is None:
            # No SDK: no span can record. The incoming trace context (and
            # baggage) is still made current, so outgoing calls carry it on.
            if _carries_context(view, self.has_baggage):
                parent = propagate.extract(view, getter=_GETTER)  # type: ignore[arg-type]  # duck-typed getter
                self._token = otel_context.attach(parent)
            return
        parent = propagate.extract(view, getter=_GETTER)  # type: ignore[arg-type]  # duck-typed getter
        span = tracer.start_span(
            f"{view.method} {self._policy.route_name(view)}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": view.method,
                "url.path": view.path,
                **attrs,
            },
        )
        if span.get_span_context().is_valid:  # sampled out too: its decision travels on
            self._span = span
            parent = trace.set_span_in_context(span, parent)
        self._token = otel_context.attach(parent)

    def exit(self, status: int | None, error: BaseException | None = None) -> None:
        """Leave the scopes; close the span with *status* (``None``: no response)."""
        span = self._span
        if span is not None:
            try:
                if status is not None:
                    span.set_attribute("http.response.status_code", status)
                if error is not None:
                    span.record_exception(error)
                if error is not None or (status is not None and status >= 500):
                    span.set_status(trace.Status(trace.StatusCode.ERROR))
                span.end()
            except Exception:
                logger.debug("tipkit: could not end the request span", exc_info=True)
        if self._token is not None:
            try:
                otel_context.detach(self._token)
            except Exception:
                logger.debug(
                    "tipkit: could not detach the trace context", exc_info=True
                )
        if self._stack is not None:
            self._stack.close()


class Policy:
    """The middleware's configuration and its per-request decision (thread-safe)."""

    __slots__ = (
        "_breaker_rejected",
        "_context_errors",
        "_key_errors",
        "_limited",
        "breaker",
        "clock",
        "context_from",
        "flags",
        "key_from",
        "limiter",
        "rate_limit_headers",
        "targeting_cookie",
        "targeting_header",
        "trust",
    )

    def __init__(
        self,
        *,
        flags: Any = None,
        context_from: Callable[[Any], Any] | None = None,
        limiter: Any = None,
        key_from: Callable[[Any], str] | None = None,
        breaker: Any = None,
        trust: TrustLike | Trust = (),
        targeting_header: str | None = "x-targeting-key",
        targeting_cookie: str | None = None,
        rate_limit_headers: bool = True,
        clock: Any = None,
    ) -> None:
        for arg, fn in (("context_from", context_from), ("key_from", key_from)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{arg} must be callable, got {fn!r}")
        if limiter is not None and not callable(getattr(limiter, "check", None)):
            raise TypeError(
                f"limiter must be a KeyedRateLimiter or TokenBucket, got {limiter!r}"
            )
        self.flags = flags
        self.context_from = context_from
        self.limiter = limiter
        self.key_from = key_from
        self.breaker = breaker
        self.trust = trust if isinstance(trust, Trust) else Trust(trust)
        self.targeting_header = (
            None if targeting_header is None else targeting_header.lower()
        )
        self.targeting_cookie = targeting_cookie
        self.rate_limit_headers = bool(rate_limit_headers)
        if clock is None:
            clock = getattr(limiter, "_clock", None) or getattr(breaker, "_clock", None)
        if clock is None:
            from tipkit.clock import SYSTEM_CLOCK  # noqa: PLC0415  # only when none is given

            clock = SYSTEM_CLOCK
        self.clock = clock
        self._context_errors = REGISTRY.counter(
            ERRORS, {"tipkit.web.callback": "context_from"}
        )
        self._key_errors = REGISTRY.counter(ERRORS, {"tipkit.web.callback": "key_from"})
        self._limited = REGISTRY.counter(
            REJECTED, {"tipkit.web.reason": "rate_limited"}
        )
        self._breaker_rejected = REGISTRY.counter(
            REJECTED, {"tipkit.web.reason": "breaker_open"}
        )

    def describe(self) -> str:
        """The configuration, for the middlewares' reprs."""
        parts = [f"trust={self.trust!r}"]
        if self.limiter is not None:
            parts.append(f"limiter={self.limiter!r}")
        if self.breaker is not None:
            parts.append(f"breaker={self.breaker!r}")
        if self.context_from is not None:
            parts.append(f"context_from={self.context_from!r}")
        return " ".join(parts)

    @staticmethod
    def route_name(view: View) -> str:
        """The span's name after the method: the path (no route templates at this layer)."""
        return view.path if len(view.path) <= 64 else view.path[:64]

    # -- the decision -------------------------------------------------------------
    def rate_key(self, view: View, request: Callable[[], Any]) -> str:
        """Return the limiter's key for this request (the client address by default)."""
        if self.key_from is not None:
            try:
                return str(self.key_from(request()))
            except Exception:
                self._key_errors.inc()
                logger.debug("tipkit: key_from raised; keyed by client", exc_info=True)
        return view.client or "unknown"

    def limit(self, decision: Any) -> tuple[Refusal | None, list[tuple[str, str]]]:
        """Return the refusal (or ``None``) and the headers for a limiter's *decision*."""
        headers: list[tuple[str, str]] = []
        limiter = self.limiter
        if self.rate_limit_headers:
            rate = float(limiter.rate)
            name = limiter.name.replace('"', "").replace("\\", "")
            window = max(1, math.ceil(decision.limit / rate))
            if decision.allowed:
                reset = math.ceil((decision.limit - decision.remaining) / rate)
            else:
                reset = _whole_seconds(decision.retry_after)
            headers.append(
                ("ratelimit-policy", f'"{name}";q={int(decision.limit)};w={window}')
            )
            headers.append(
                ("ratelimit", f'"{name}";r={int(decision.remaining)};t={reset}')
            )
        if decision.allowed:
            return None, headers
        self._limited.inc()
        headers.append(("retry-after", str(_whole_seconds(decision.retry_after))))
        return Refusal(429, headers, "Too Many Requests\n"), headers

    def breaker_open(self, error: CircuitOpenError) -> Refusal:
        """Return the 503 for an open breaker (``Retry-After`` when it says when)."""
        self._breaker_rejected.inc()
        headers: list[tuple[str, str]] = []
        if error.retry_after is not None:
            headers.append(("retry-after", str(_whole_seconds(error.retry_after))))
        return Refusal(503, headers, "Service Unavailable\n")

    def admit_after_limit(
        self, view: View, request: Callable[[], Any], headers: list[tuple[str, str]]
    ) -> Admission:
        """Return the admission of a request the limiter let through."""
        baggage = view.header("baggage")
        marks = _propagation.parse(baggage) if baggage else _propagation.NO_MARKS
        trusted = bool(marks.synthetic) and self.trust.trusts(view.client, view.header)
        admission = Admission(
            self, view, headers, self.context(view, request), marks, trusted
        )
        admission.has_baggage = baggage is not None
        return admission

    def context(self, view: View, request: Callable[[], Any]) -> Any:
        """Return the request's evaluation context (``None``: none). Never raises."""
        if self.context_from is not None:
            try:
                return self.context_from(request())
            except Exception:
                self._context_errors.inc()
                logger.debug(
                    "tipkit: context_from raised; served defaults", exc_info=True
                )
                return None
        try:
            return self.default_context(view)
        except Exception:  # a broken cookie header, say: defaults
            logger.debug("tipkit: could not build the default context", exc_info=True)
            return None

    def default_context(self, view: View) -> EvaluationContext | None:
        """The targeting key from the user, else the header, else the cookie."""
        key = view.user()
        if not key and self.targeting_header is not None:
            key = view.header(self.targeting_header)
        if not key and self.targeting_cookie is not None:
            key = view.cookie(self.targeting_cookie)
        if not key or len(key) > 256:
            return None
        return EvaluationContext(key)

    def admit(self, view: View, request: Callable[[], Any]) -> Admission | Refusal:
        """Decide for one request: a :class:`Refusal`, or its :class:`Admission`."""
        headers: list[tuple[str, str]] = []
        if self.limiter is not None:
            refusal, headers = self.limit(self.check(view, request))
            if refusal is not None:
                return refusal
        return self.admit_after_limit(view, request, headers)

    def check(self, view: View, request: Callable[[], Any]) -> Any:
        """Ask the limiter (blocks on a store round trip when it has one)."""
        limiter = self.limiter
        if hasattr(limiter, "max_keys"):
            return limiter.check(self.rate_key(view, request))
        return limiter.check()

    @property
    def blocking_limiter(self) -> bool:
        """Whether the limiter's check does I/O (a store): async code runs it in a thread."""
        return getattr(self.limiter, "_shared", None) is not None


AppT = TypeVar("AppT")


class Middleware(Generic[AppT]):
    """What the ASGI and WSGI middlewares share: their options, their policy, their repr."""

    #: The module whose ``Request`` the callbacks get, and the extra that brings it.
    request_module = "starlette.requests"

    def __init__(
        self,
        app: AppT,
        *,
        flags: Any = None,
        context_from: Callable[[Any], Any] | None = None,
        limiter: Any = None,
        key_from: Callable[[Any], str] | None = None,
        breaker: Any = None,
        trust: TrustLike | Trust = (),
        targeting_header: str | None = "x-targeting-key",
        targeting_cookie: str | None = None,
        rate_limit_headers: bool = True,
    ) -> None:
        if context_from is not None or key_from is not None:
            self._need_request_module()
        self.app = app
        self.policy = Policy(
            flags=flags,
            context_from=context_from,
            limiter=limiter,
            key_from=key_from,
            breaker=breaker,
            trust=trust,
            targeting_header=targeting_header,
            targeting_cookie=targeting_cookie,
            rate_limit_headers=rate_limit_headers,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.policy.describe()} app={self.app!r}>"

    def _need_request_module(self) -> None:
        try:
            importlib.import_module(self.request_module)
        except ModuleNotFoundError as exc:  # pragma: no cover - in the test env
            raise ImportError(
                f"{type(self).__name__}(context_from=/key_from=) hands your "
                f"callbacks a {self.request_module.split('.')[0]} Request: "
                "pip install 'tipkit[web]'"
            ) from exc


class Once:
    """A lazily built value (the framework's request object, built at most once)."""

    __slots__ = ("_build", "_value")

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._value: Any = None

    def __call__(self) -> Any:
        if self._value is None:
            self._value = self._build()
        return self._value


class Guarded:
    """The answer of an app run inside the breaker (``with Guarded(...):`` around it).

    Inside, :meth:`answered` raises :class:`ServerError` for a 5xx, so the breaker
    counts it as a failure; on the way out that error is swallowed (the app's answer
    stands). A refusal (the breaker open, or the caller's deadline already gone) is
    turned into :attr:`refusal` (503 or 504) when the app had not started answering
    (*started* says whether it had), and propagates when it had: the response is
    half sent. Any other exception propagates.
    """

    __slots__ = ("_policy", "_started", "refusal")

    def __init__(self, policy: Policy, started: Callable[[], bool]) -> None:
        self._policy = policy
        self._started = started
        self.refusal: Refusal | None = None

    @staticmethod
    def answered(status: int | None) -> None:
        """Note the app's status: a 5xx is a failure for the breaker."""
        if status is not None and status >= 500:  # the 5xx class
            raise ServerError(status)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> bool:
        if error is None:
            return False
        if isinstance(error, ServerError):
            return True
        if not isinstance(error, CircuitOpenError | DeadlineExceededError):
            return False
        if self._started():
            return False
        if isinstance(error, CircuitOpenError):
            self.refusal = self._policy.breaker_open(error)
        else:  # the caller's deadline had passed before the app could start
            self.refusal = Refusal(504, [], "Gateway Timeout\n")
        return True


class ServerError(Exception):  # see ServerFailure in tipkit.http
    """Raised inside the breaker's block for a 5xx response, so the breaker counts it."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the app answered {status}")
        self.status = status
