"""The WSGI middleware (Flask, Django's WSGI application, any WSGI app)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tipkit.web._policy import Admission, Guarded, Middleware, Once, Refusal
from tipkit.web._views import WSGIView

__all__ = ["WSGIMiddleware"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _status_of(line: str) -> int | None:
    head = line[:3]
    return int(head) if head.isdigit() else None


class _Body:
    """The app's body, iterated in the request's context; closing ends the request."""

    __slots__ = ("_admission", "_closed", "_ctx", "_it", "_iterable", "_status")

    def __init__(
        self,
        iterable: Iterable[bytes],
        ctx: contextvars.Context,
        admission: Admission,
        status: list[int | None],
    ) -> None:
        self._iterable = iterable
        self._it: Iterator[bytes] | None = None
        self._ctx = ctx
        self._admission = admission
        self._status = status
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._it is None:
            self._it = self._ctx.run(iter, self._iterable)
        return self._ctx.run(next, self._it)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                self._ctx.run(close)
        finally:
            self._ctx.run(self._admission.exit, self._status[0], None)


class WSGIMiddleware(Middleware[WSGIApp]):
    """The WSGI twin of :class:`~tipkit.web.ASGIMiddleware` (same options, same answers).

    ::

        app.wsgi_app = WSGIMiddleware(app.wsgi_app, flags=flags, limiter=limiter)

    ``context_from`` and ``key_from`` get a ``werkzeug.wrappers.Request`` over
    the environ; the authenticated user is ``REMOTE_USER``. The request's
    scopes (flag context, deadline, synthetic mark, span) stay in force while
    the response body is iterated, and end when the server closes it. A
    *breaker* sees the app call (an exception or a 5xx status set by then).
    Thread-safe: each request runs in a copy of the caller's context.
    """

    request_module = "werkzeug.wrappers"

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        policy = self.policy
        view = WSGIView(environ)
        request = Once(lambda: _request(environ))
        decided = policy.admit(view, request)
        if isinstance(decided, Refusal):
            return _refuse(start_response, decided)
        if policy.flags is not None:
            environ["tipkit.flags"] = policy.flags
        ctx = contextvars.copy_context()
        return ctx.run(self._run, ctx, decided, environ, start_response)

    def _run(
        self,
        ctx: contextvars.Context,
        admission: Admission,
        environ: dict[str, Any],
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        status: list[int | None] = [None]
        extra = admission.headers

        def start(
            line: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            status[0] = _status_of(line)
            return start_response(line, [*headers, *extra], exc_info)

        admission.enter()
        try:
            breaker = self.policy.breaker
            if breaker is None:
                body = self.app(environ, start)
            else:
                refusal, body = self._guarded(breaker, environ, start, status)
                if refusal is not None:
                    admission.exit(refusal.status)
                    return _refuse(start_response, refusal)
        except BaseException as exc:
            admission.exit(status[0], exc)
            raise
        return _Body(body, ctx, admission, status)

    def _guarded(
        self,
        breaker: Any,
        environ: dict[str, Any],
        start: StartResponse,
        status: list[int | None],
    ) -> tuple[Refusal | None, Iterable[bytes]]:
        body: Iterable[bytes] = ()
        outcome = Guarded(self.policy, lambda: status[0] is not None)
        with outcome, breaker:
            body = self.app(environ, start)
            outcome.answered(status[0])
        return outcome.refusal, body


def _refuse(start_response: StartResponse, refusal: Refusal) -> list[bytes]:
    headers = [*refusal.headers, ("content-length", str(len(refusal.body)))]
    start_response(f"{refusal.status} {refusal.reason}", headers)
    return [refusal.body]


def _request(environ: dict[str, Any]) -> Any:
    from werkzeug.wrappers import Request  # noqa: PLC0415  # optional extra

    return Request(environ)
