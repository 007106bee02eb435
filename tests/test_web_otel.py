"""The middleware under OpenTelemetry's real framework instrumentation and the real SDK.

One SERVER span per request whatever the arrangement: the instrumentation's when it is
outermost (tipkit's attributes added to it), tipkit's own when there is none, and the
incoming ``traceparent`` continued either way.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OTelASGI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OTelWSGI
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from tipkit.telemetry import instrument, uninstrument
from tipkit.testing import fake_flags
from tipkit.web import ASGIMiddleware, WSGIMiddleware

sys.path.insert(0, str(Path(__file__).parent))
from web_servers import JOIN_TIMEOUT, uvicorn_server, wsgi_server

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
HEADERS = {
    "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
    "baggage": "tipkit.synthetic=1,tipkit.deadline_ms=5000",
    "x-targeting-key": "u1",
}
TIPKIT_SCOPE = "tipkit"


class Spans(SpanProcessor):
    """Every ended span, and a way to wait for the server spans of a real server."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []
        self._changed = threading.Condition()

    def on_end(self, span: ReadableSpan) -> None:
        with self._changed:
            self.ended.append(span)
            self._changed.notify_all()

    def server(self) -> list[ReadableSpan]:
        """The SERVER spans ended so far."""
        with self._changed:
            return [s for s in self.ended if s.kind is trace.SpanKind.SERVER]

    def wait_for_server_spans(self, count: int) -> list[ReadableSpan]:
        """Wait until *count* SERVER spans ended (a real server ends them after replying)."""
        with self._changed:
            self._changed.wait_for(
                lambda: (
                    count <= sum(s.kind is trace.SpanKind.SERVER for s in self.ended)
                ),
                timeout=JOIN_TIMEOUT,
            )
        return self.server()


@pytest.fixture
def otel() -> Iterator[tuple[TracerProvider, Spans]]:
    """A real SDK tracer provider, given to tipkit and to the instrumentation."""
    spans = Spans()
    provider = TracerProvider()
    provider.add_span_processor(spans)
    instrument(tracer_provider=provider, logger_provider=LoggerProvider())
    yield provider, spans
    uninstrument()
    provider.shutdown()


def fastapi_app() -> Any:
    from fastapi import FastAPI

    api = FastAPI()

    @api.get("/items/{item}")
    def item(item: str) -> dict[str, Any]:
        return {"item": item, "trace_id": _current_trace_id()}

    return api


def flask_app() -> Any:
    import flask

    app = flask.Flask("web-otel")

    @app.get("/items/<item>")
    def item(item: str) -> Any:
        return flask.jsonify(item=item, trace_id=_current_trace_id())

    return app


def _current_trace_id() -> str:
    return format(trace.get_current_span().get_span_context().trace_id, "032x")


def asgi_get(app: Any, path: str, count: int = 1) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return [await c.get(path, headers=HEADERS) for _ in range(count)]

    return asyncio.run(go())


def flask_get(app: Any, path: str, count: int = 1) -> list[Any]:
    """GET through Flask's test client; closing the body ends the request (and span)."""
    client = app.test_client()
    responses = []
    for _ in range(count):
        response = client.get(path, headers=HEADERS)
        response.close()
        responses.append(response)
    return responses


def _assert_continues_the_caller(span: ReadableSpan) -> None:
    assert span.parent is not None
    assert (TRACE_ID, PARENT_ID, True) == (
        format(span.context.trace_id, "032x"),
        format(span.parent.span_id, "016x"),
        span.parent.is_remote,
    )


def _assert_carries_tipkit_attributes(span: ReadableSpan) -> None:
    attributes = dict(span.attributes or {})
    assert ("test", 5000) == (
        attributes.get("user_agent.synthetic.type"),
        attributes.get("tipkit.deadline_ms"),
    )


def _scope(span: ReadableSpan) -> str:
    return span.instrumentation_scope.name if span.instrumentation_scope else ""


# -- ASGI ------------------------------------------------------------------------------
def test_fastapi_instrumentation_outermost_one_server_span_with_tipkit_attributes(otel):
    """FastAPIInstrumentor outermost: its span per request carries tipkit's attributes."""
    provider, spans = otel
    app = fastapi_app()
    app.add_middleware(ASGIMiddleware, flags=fake_flags({}), trust=["127.0.0.1"])
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    try:
        responses = asgi_get(app, "/items/a", count=3)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    server = spans.server()
    assert [200] * 3 == [r.status_code for r in responses]
    assert [TRACE_ID] * 3 == [r.json()["trace_id"] for r in responses]
    assert 3 == len(server)
    assert [] == [s for s in spans.ended if _scope(s) == TIPKIT_SCOPE]
    for span in server:
        assert "opentelemetry.instrumentation.fastapi" == _scope(span)
        _assert_carries_tipkit_attributes(span)
        _assert_continues_the_caller(span)


def test_asgi_instrumentation_outermost_around_the_middleware(otel):
    """The plain ASGI instrumentation around ASGIMiddleware: one span, tipkit's attributes."""
    provider, spans = otel
    app = OTelASGI(
        ASGIMiddleware(fastapi_app(), trust=["127.0.0.1"]), tracer_provider=provider
    )
    (response,) = asgi_get(app, "/items/b")
    (span,) = spans.server()
    assert (200, "opentelemetry.instrumentation.asgi") == (
        response.status_code,
        _scope(span),
    )
    _assert_carries_tipkit_attributes(span)
    _assert_continues_the_caller(span)


def test_middleware_outside_an_instrumented_app_still_one_server_span(otel):
    """The middleware outermost: its span is SERVER, the instrumentation nests inside."""
    provider, spans = otel
    inner = fastapi_app()
    FastAPIInstrumentor.instrument_app(inner, tracer_provider=provider)
    try:
        (response,) = asgi_get(ASGIMiddleware(inner, trust=["127.0.0.1"]), "/items/c")
    finally:
        FastAPIInstrumentor.uninstrument_app(inner)
    (span,) = spans.server()
    nested = [
        s
        for s in spans.ended
        if _scope(s) == "opentelemetry.instrumentation.fastapi"
        and s.parent is not None
        and s.parent.span_id == span.context.span_id
    ]
    assert (200, TIPKIT_SCOPE, 200) == (
        response.status_code,
        _scope(span),
        dict(span.attributes or {})["http.response.status_code"],
    )
    assert [trace.SpanKind.INTERNAL] == [s.kind for s in nested]
    _assert_carries_tipkit_attributes(span)
    _assert_continues_the_caller(span)


def test_without_instrumentation_one_span_of_tipkit_per_request(otel):
    """No framework instrumentation: tipkit's own SERVER span, child of the traceparent."""
    _, spans = otel
    responses = asgi_get(
        ASGIMiddleware(fastapi_app(), trust=["127.0.0.1"]), "/items/d", count=2
    )
    server = spans.server()
    assert [TRACE_ID] * 2 == [r.json()["trace_id"] for r in responses]
    assert [TIPKIT_SCOPE] * 2 == [_scope(s) for s in server]
    assert len(spans.ended) == len(server)
    for span in server:
        assert ("GET /items/d", "GET", "/items/d") == (
            span.name,
            dict(span.attributes or {})["http.request.method"],
            dict(span.attributes or {})["url.path"],
        )
        _assert_carries_tipkit_attributes(span)
        _assert_continues_the_caller(span)


def test_fastapi_instrumented_under_uvicorn(otel):
    """Under a real uvicorn: one instrumentation span per request, tipkit's attributes."""
    provider, spans = otel
    app = fastapi_app()
    app.add_middleware(ASGIMiddleware, trust=["127.0.0.1"])
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    try:
        with uvicorn_server(app) as url, httpx.Client(base_url=url) as client:
            bodies = [client.get("/items/e", headers=HEADERS).json() for _ in range(2)]
            server = spans.wait_for_server_spans(2)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    assert [TRACE_ID] * 2 == [b["trace_id"] for b in bodies]
    assert ["opentelemetry.instrumentation.fastapi"] * 2 == [_scope(s) for s in server]
    for span in server:
        _assert_carries_tipkit_attributes(span)
        _assert_continues_the_caller(span)


# -- WSGI ------------------------------------------------------------------------------
def test_flask_wsgi_instrumentation_outermost(otel):
    """OTel's WSGI middleware outermost on Flask: its span carries tipkit's attributes."""
    provider, spans = otel
    app = flask_app()
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, trust=["127.0.0.1"])  # type: ignore[method-assign]
    app.wsgi_app = OTelWSGI(app.wsgi_app, tracer_provider=provider)  # type: ignore[method-assign]
    responses = flask_get(app, "/items/f", count=2)
    server = spans.server()
    assert [TRACE_ID] * 2 == [r.json["trace_id"] for r in responses]
    assert ["opentelemetry.instrumentation.wsgi"] * 2 == [_scope(s) for s in server]
    assert [] == [s for s in spans.ended if _scope(s) == TIPKIT_SCOPE]
    for span in server:
        _assert_carries_tipkit_attributes(span)
        _assert_continues_the_caller(span)


def test_flask_without_instrumentation_one_span_of_tipkit(otel):
    """Flask with no instrumentation: tipkit's own SERVER span, with the status code."""
    _, spans = otel
    app = flask_app()
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, trust=["127.0.0.1"])  # type: ignore[method-assign]
    (response,) = flask_get(app, "/items/g")
    (span,) = spans.ended
    assert (TRACE_ID, trace.SpanKind.SERVER, TIPKIT_SCOPE, 200) == (
        response.json["trace_id"],
        span.kind,
        _scope(span),
        dict(span.attributes or {})["http.response.status_code"],
    )
    _assert_carries_tipkit_attributes(span)
    _assert_continues_the_caller(span)


def test_flask_instrumented_under_a_real_wsgi_server(otel):
    """Under a real threaded WSGI server: one instrumentation span, tipkit's attributes."""
    provider, spans = otel
    app = flask_app()
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, trust=["127.0.0.1"])  # type: ignore[method-assign]
    app.wsgi_app = OTelWSGI(app.wsgi_app, tracer_provider=provider)  # type: ignore[method-assign]
    with wsgi_server(app) as url, httpx.Client(base_url=url) as client:
        body = client.get("/items/h", headers=HEADERS).json()
        (span,) = spans.wait_for_server_spans(1)
    assert (TRACE_ID, "opentelemetry.instrumentation.wsgi") == (
        body["trace_id"],
        _scope(span),
    )
    _assert_carries_tipkit_attributes(span)
    _assert_continues_the_caller(span)


def test_no_sdk_no_span_but_the_trace_context_is_continued():
    """With no SDK tipkit starts no span, yet the handler sees the caller's trace."""
    uninstrument()
    response = asgi_get(ASGIMiddleware(fastapi_app()), "/items/i")[0]
    assert TRACE_ID == response.json()["trace_id"]


def test_no_sdk_incoming_baggage_alone_is_still_made_current():
    """With no SDK and no traceparent, the caller's other baggage entries still travel."""
    from opentelemetry import baggage
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    uninstrument()

    async def echo(request: Any) -> JSONResponse:
        return JSONResponse(dict(baggage.get_all()))

    app = ASGIMiddleware(Starlette(routes=[Route("/", echo)]))

    async def go() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            headers = {"baggage": "tenant=acme,tipkit.deadline_ms=900"}
            return (await c.get("/", headers=headers)).json()

    assert "acme" == asyncio.run(go()).get("tenant")
