"""The web middleware on real frameworks: Starlette/FastAPI, Flask, Django; real servers."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tipkit import deadline
from tipkit.breaker import CircuitBreaker
from tipkit.flags import EvaluationContext
from tipkit.flags._request import current_request_context
from tipkit.ratelimit import KeyedRateLimiter, TokenBucket
from tipkit.telemetry import counters, current_synthetic
from tipkit.telemetry._propagation import parse
from tipkit.testing import FakeClock, fake_flags
from tipkit.web import ASGIMiddleware, SharedSecret, Trust, WSGIMiddleware

sys.path.insert(0, str(Path(__file__).parent))
from web_servers import uvicorn_server, wsgi_server

FLAGS_DOC = {
    "beta": {
        "variants": {"on": True, "off": False},
        "default_variant": "off",
        "rules": [
            {
                "if": {"attr": "targeting_key", "op": "in", "value": ["u1"]},
                "serve": "on",
            }
        ],
    }
}


def _state(flags: Any) -> dict[str, Any]:
    """What a handler sees of tipkit's per-request state."""
    ctx = current_request_context()
    return {
        "key": None if ctx is None else getattr(ctx, "targeting_key", ctx),
        "beta": flags.is_enabled("beta"),
        "synthetic": current_synthetic(),
        "deadline": deadline.remaining(),
    }


def fastapi_app(flags: Any) -> Any:
    from fastapi import FastAPI

    api = FastAPI()

    @api.get("/")
    def root() -> dict[str, Any]:
        return _state(flags)

    @api.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    @api.get("/fail")
    def fail() -> Any:
        from fastapi.responses import PlainTextResponse

        return PlainTextResponse("no", status_code=500)

    return api


def flask_app(flags: Any) -> Any:
    import flask

    app = flask.Flask("web-test")

    @app.get("/")
    def root() -> Any:
        return flask.jsonify(_state(flags))

    return app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def flags() -> Any:
    return fake_flags(FLAGS_DOC)


def asgi_get(
    app: Any, path: str = "/", *, client: str = "127.0.0.1", **kw: Any
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.get(path, **kw)

    return asyncio.run(go())


# -- per-request context -------------------------------------------------------------
def test_default_context_takes_the_targeting_key_header(flags):
    """With no context_from, the x-targeting-key header is the targeting key."""
    app = ASGIMiddleware(fastapi_app(flags), flags=flags)
    body = asgi_get(app, headers={"x-targeting-key": "u1"}).json()
    assert ("u1", True) == (body["key"], body["beta"])


def test_default_context_from_a_cookie(flags):
    """targeting_cookie= reads the targeting key from that cookie."""
    app = ASGIMiddleware(fastapi_app(flags), targeting_cookie="uid")
    body = asgi_get(app, headers={"cookie": "uid=u1; other=2"}).json()
    assert "u1" == body["key"]


def test_context_from_gets_a_starlette_request(flags):
    """context_from builds the context from the starlette Request."""
    app = ASGIMiddleware(
        fastapi_app(flags),
        context_from=lambda req: EvaluationContext(req.query_params["user"]),
    )
    assert [True, False] == [
        asgi_get(app, f"/?user={u}").json()["beta"] for u in ("u1", "u2")
    ]


def test_a_raising_context_from_serves_defaults_and_is_counted(flags):
    """context_from that raises: 200 with the flag defaults, and one count."""
    before = counters.value(
        "tipkit.web.callback_errors", {"tipkit.web.callback": "context_from"}
    )

    def broken(req: Any) -> Any:
        raise KeyError("no user")

    app = ASGIMiddleware(fastapi_app(flags), context_from=broken)
    response = asgi_get(app, headers={"x-targeting-key": "u1"})
    after = counters.value(
        "tipkit.web.callback_errors", {"tipkit.web.callback": "context_from"}
    )
    assert (200, None, False, 1) == (
        response.status_code,
        response.json()["key"],
        response.json()["beta"],
        after - before,
    )


def test_context_does_not_leak_between_requests(flags):
    """A request without a key after one with a key sees no context."""
    app = ASGIMiddleware(fastapi_app(flags))
    asgi_get(app, headers={"x-targeting-key": "u1"})
    assert None is asgi_get(app).json()["key"]


# -- marks and deadline --------------------------------------------------------------
def test_synthetic_mark_honoured_only_from_trusted_networks(flags):
    """tipkit.synthetic=1 marks the request only when the client is trusted."""
    app = ASGIMiddleware(fastapi_app(flags), trust=["10.0.0.0/8"])
    hdr = {"baggage": "tipkit.synthetic=1"}
    assert ["test", None] == [
        asgi_get(app, client=c, headers=hdr).json()["synthetic"]
        for c in ("10.1.2.3", "192.0.2.1")
    ]


def test_empty_trust_trusts_nobody(flags):
    """By default no source may mark traffic synthetic."""
    app = ASGIMiddleware(fastapi_app(flags))
    body = asgi_get(app, headers={"baggage": "tipkit.synthetic=1"}).json()
    assert None is body["synthetic"]


def test_shared_secret_header_is_trusted(flags):
    """A request with the shared secret header may mark itself synthetic."""
    app = ASGIMiddleware(
        fastapi_app(flags), trust=[SharedSecret("x-probe-key", "s3cret-value")]
    )
    marked = {"baggage": "tipkit.synthetic=1"}
    good = asgi_get(app, headers={**marked, "x-probe-key": "s3cret-value"})
    bad = asgi_get(app, headers={**marked, "x-probe-key": "guess"})
    assert ["test", None] == [good.json()["synthetic"], bad.json()["synthetic"]]


def test_incoming_deadline_becomes_the_request_deadline(flags, clock):
    """tipkit.deadline_ms=1500 gives the handler 1.5 s (on the middleware's clock)."""
    limiter = KeyedRateLimiter("api", rate=100.0, capacity=100, clock=clock)
    app = ASGIMiddleware(fastapi_app(flags), limiter=limiter)
    body = asgi_get(app, headers={"baggage": "other=1, tipkit.deadline_ms=1500"}).json()
    assert 1.5 == body["deadline"]


@pytest.mark.parametrize(
    "baggage",
    [
        "tipkit.deadline_ms=-5",
        "tipkit.deadline_ms=abc",
        "tipkit.deadline_ms=1e9",
        "tipkit.deadline_ms=99999999999999",
        "tipkit.synthetic=yes",
        "tipkit.synthetic",
        ",,,;;;===",
        "x" * 9000,
        "tipkit.deadline_ms=" + "٣" * 3,
    ],
)
def test_malformed_marks_are_ignored(flags, baggage, caplog):
    """A malformed mark never fails the request: it is ignored with a debug log.

    Garbage with no ``tipkit.`` entry in it is not tipkit's to report (it is not
    a mark at all): only the answer is checked then.
    """
    app = ASGIMiddleware(fastapi_app(flags), trust=["127.0.0.1"])
    caplog.set_level("DEBUG", logger="tipkit")
    response = asgi_get(app, headers={"baggage": baggage.encode()})
    assert (200, None, None) == (
        response.status_code,
        response.json()["deadline"],
        response.json()["synthetic"],
    )
    ours = "tipkit." in baggage or len(baggage) > 8192
    logged = any(
        r.name == "tipkit" and "baggage" in r.getMessage() for r in caplog.records
    )
    assert ours == logged


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_parse_never_raises(value):
    """Any baggage value parses to marks (hypothesis): never an exception."""
    marks = parse(value)
    assert marks.deadline_ms is None or 0 <= marks.deadline_ms <= 86_400_000


# -- rate limit and breaker ----------------------------------------------------------
def test_429_with_retry_after_rounded_up_and_ratelimit_headers(flags, clock):
    """Over the limit: 429, Retry-After in whole seconds rounded up, IETF headers."""
    limiter = KeyedRateLimiter("api", rate=0.4, capacity=2, clock=clock)
    app = ASGIMiddleware(
        fastapi_app(flags), limiter=limiter, key_from=lambda r: r.client.host
    )
    ok = [asgi_get(app) for _ in range(2)]
    refused = asgi_get(app)
    assert [200, 200, 429] == [r.status_code for r in [*ok, refused]]
    # 1 token at 0.4/s takes 2.5 s: Retry-After 3.
    assert "3" == refused.headers["retry-after"]
    assert '"api";q=2;w=5' == refused.headers["ratelimit-policy"]
    assert '"api";r=0;t=3' == refused.headers["ratelimit"]
    assert '"api";r=1;t=3' == ok[0].headers["ratelimit"]


def test_key_from_separates_clients(flags, clock):
    """Each client has its own bucket."""
    limiter = KeyedRateLimiter("api", rate=1.0, capacity=1, clock=clock)
    app = ASGIMiddleware(fastapi_app(flags), limiter=limiter)
    codes = [
        asgi_get(app, client=c).status_code
        for c in ("10.0.0.1", "10.0.0.2", "10.0.0.1")
    ]
    assert [200, 200, 429] == codes


def test_a_raising_key_from_falls_back_to_the_client_address(flags, clock):
    """key_from that raises: the client address is the key, and it is counted."""
    limiter = KeyedRateLimiter("api", rate=1.0, capacity=1, clock=clock)

    def broken(req: Any) -> str:
        raise ValueError("no header")

    app = ASGIMiddleware(fastapi_app(flags), limiter=limiter, key_from=broken)
    before = counters.value(
        "tipkit.web.callback_errors", {"tipkit.web.callback": "key_from"}
    )
    codes = [asgi_get(app).status_code for _ in range(2)]
    after = counters.value(
        "tipkit.web.callback_errors", {"tipkit.web.callback": "key_from"}
    )
    assert ([200, 429], 2) == (codes, after - before)


def test_token_bucket_limits_every_request(flags, clock):
    """A TokenBucket limits the whole app (no key)."""
    app = ASGIMiddleware(
        fastapi_app(flags),
        limiter=TokenBucket("all", rate=1.0, capacity=1, clock=clock),
    )
    assert [200, 429] == [asgi_get(app).status_code for _ in range(2)]


def test_503_with_retry_after_on_an_open_breaker(flags, clock):
    """5xx answers open the breaker; then 503 with Retry-After, and the app is not run."""
    breaker = CircuitBreaker(
        "app",
        minimum_calls=2,
        failure_rate_threshold=0.5,
        open_duration=30.0,
        clock=clock,
    )
    app = ASGIMiddleware(fastapi_app(flags), breaker=breaker)
    first = [asgi_get(app, "/fail").status_code for _ in range(2)]
    refused = asgi_get(app, "/")
    assert ([500, 500], 503, "30") == (
        first,
        refused.status_code,
        refused.headers["retry-after"],
    )
    clock.advance(30.0)
    assert 200 == asgi_get(app, "/").status_code


def test_an_app_exception_counts_for_the_breaker_and_propagates(flags, clock):
    """An exception in the app is a breaker failure and reaches the server."""
    breaker = CircuitBreaker("app", minimum_calls=1, open_duration=5.0, clock=clock)
    app = ASGIMiddleware(fastapi_app(flags), breaker=breaker)
    with pytest.raises(RuntimeError, match="boom"):
        asgi_get(app, "/boom")
    assert 503 == asgi_get(app).status_code


def test_non_http_scopes_pass_through(flags):
    """Lifespan and websocket scopes reach the app untouched."""
    seen: list[str] = []

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    asyncio.run(ASGIMiddleware(raw)({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert ["lifespan"] == seen


def test_trust_refuses_a_bad_network():
    """A trust entry that is not a network is refused at construction."""
    with pytest.raises(ValueError, match="not a network"):
        Trust(["10.0.0.0/33"])


# -- real servers --------------------------------------------------------------------
def test_fastapi_under_uvicorn(flags):
    """Under a real uvicorn on loopback the context, marks and limits apply."""
    app = ASGIMiddleware(fastapi_app(flags), trust=["127.0.0.1"])
    with uvicorn_server(app) as url:
        body = httpx.get(
            url, headers={"x-targeting-key": "u1", "baggage": "tipkit.synthetic=1"}
        ).json()
    assert ("u1", True, "test") == (body["key"], body["beta"], body["synthetic"])


def test_flask_test_client(flags, clock):
    """Flask through its test client: context and 429."""
    app = flask_app(flags)
    limiter = KeyedRateLimiter("api", rate=1.0, capacity=1, clock=clock)
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, limiter=limiter)  # type: ignore[method-assign]
    client = app.test_client()
    first = client.get("/", headers={"x-targeting-key": "u1"})
    second = client.get("/")
    assert (200, True, 429, "1") == (
        first.status_code,
        first.json["beta"],
        second.status_code,
        second.headers["retry-after"],
    )


def test_flask_context_from_gets_a_werkzeug_request(flags):
    """WSGI context_from gets a werkzeug Request over the environ."""
    app = flask_app(flags)
    app.wsgi_app = WSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, context_from=lambda req: EvaluationContext(req.args["user"])
    )
    assert True is app.test_client().get("/?user=u1").json["beta"]


def test_flask_under_a_real_wsgi_server(flags):
    """Flask under a real threaded WSGI server on loopback."""
    app = flask_app(flags)
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, trust=["127.0.0.1"])  # type: ignore[method-assign]
    with wsgi_server(app) as url:
        body = httpx.get(
            url,
            headers={
                "x-targeting-key": "u1",
                "baggage": "tipkit.synthetic=1,tipkit.deadline_ms=2000",
            },
        ).json()
    assert ("u1", True, "test") == (body["key"], body["beta"], body["synthetic"])
    assert 0 < body["deadline"] <= 2.0


def test_wsgi_body_iterates_in_the_request_context(flags):
    """A streamed WSGI body still sees the request's context while it is iterated."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("content-type", "text/plain")])
        return (str(current_request_context().targeting_key).encode() for _ in range(2))

    wrapped = WSGIMiddleware(app)
    statuses: list[str] = []
    body = contextvars.copy_context().run(
        wrapped,
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_X_TARGETING_KEY": "u9"},
        lambda status, headers, exc_info=None: statuses.append(status),
    )
    chunks = list(body)
    body.close()  # type: ignore[attr-defined]
    assert (["200 OK"], [b"u9", b"u9"], None) == (
        statuses,
        chunks,
        current_request_context(),
    )


# -- two services --------------------------------------------------------------------
def test_two_services_carry_mark_deadline_and_traceparent():
    """A -> B over loopback: B sees A's synthetic mark, a smaller deadline, the trace id."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tipkit.http import Transport

    seen: dict[str, Any] = {}

    def b_handler(request: Any) -> Any:
        seen.update(
            synthetic=current_synthetic(),
            deadline=deadline.remaining(),
            traceparent=request.headers.get("traceparent"),
        )
        return JSONResponse({})

    service_b = ASGIMiddleware(
        Starlette(routes=[Route("/", b_handler)]), trust=["127.0.0.1"]
    )
    with uvicorn_server(service_b) as b_url:
        client = httpx.Client(transport=Transport())

        def a_handler(request: Any) -> Any:
            client.get(b_url)
            return JSONResponse({})

        service_a = ASGIMiddleware(
            Starlette(routes=[Route("/", a_handler)]), trust=["127.0.0.1"]
        )
        with uvicorn_server(service_a) as a_url:
            trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
            response = httpx.get(
                a_url,
                headers={
                    "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
                    "baggage": "tipkit.synthetic=1,tipkit.deadline_ms=5000",
                },
                timeout=30.0,
            )
        client.close()
    assert 200 == response.status_code
    assert "test" == seen["synthetic"]
    assert 0 < seen["deadline"] < 5.0
    assert trace_id == seen["traceparent"].split("-")[1]


# -- Django --------------------------------------------------------------------------
def _django(patterns: list[Any]) -> None:
    """Configure Django once per process, with *patterns* as this module's URLconf."""
    import django
    from django.conf import settings as dj

    if not dj.configured:
        dj.configure(
            DEBUG=False,
            SECRET_KEY="tipkit-tests",  # noqa: S106  # a test settings value
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["*"],
            MIDDLEWARE=["tipkit.web.django.TipkitMiddleware"],
            INSTALLED_APPS=[],
            TIPKIT={},
        )
        django.setup()
    from django.urls import clear_url_caches

    global urlpatterns  # noqa: PLW0603  # Django reads the ROOT_URLCONF module
    urlpatterns = patterns
    clear_url_caches()  # Django caches the resolver, and with it the old patterns


def test_django_test_client(flags, clock):
    """Django's test client through TipkitMiddleware configured by settings.TIPKIT."""
    from django.http import JsonResponse
    from django.test import Client, override_settings
    from django.urls import path

    limiter = KeyedRateLimiter("dj", rate=1.0, capacity=2, clock=clock)
    _django([path("", lambda request: JsonResponse(_state(flags)))])
    with override_settings(TIPKIT={"limiter": limiter, "trust": ["127.0.0.1"]}):
        client = Client()
        first = client.get(
            "/", headers={"x-targeting-key": "u1", "baggage": "tipkit.synthetic=1"}
        )
        client.get("/")
        third = client.get("/")
    assert (200, "u1", True, "test") == (
        first.status_code,
        first.json()["key"],
        first.json()["beta"],
        first.json()["synthetic"],
    )
    assert (429, "1") == (third.status_code, third.headers["Retry-After"])


urlpatterns: list[Any] = []


@pytest.mark.parametrize("face", ["sync", "async"])
def test_django_breaker_counts_5xx_then_answers_503(flags, clock, face):
    """Django, sync and async stacks: 5xx answers open the breaker, then a 503."""
    from django.http import HttpResponse
    from django.test import AsyncClient, Client, override_settings
    from django.urls import path

    _django([path("fail", lambda request: HttpResponse("no", status=500))])
    breaker = CircuitBreaker(
        "dj-app",
        minimum_calls=2,
        failure_rate_threshold=0.5,
        open_duration=30.0,
        clock=clock,
    )
    with override_settings(TIPKIT={"breaker": breaker}):
        if face == "sync":
            client = Client()
            answers = [client.get("/fail") for _ in range(3)]
        else:

            async def go() -> list[Any]:
                aclient = AsyncClient()
                return [await aclient.get("/fail") for _ in range(3)]

            answers = asyncio.run(go())
    assert ([500, 500, 503], "30") == (
        [a.status_code for a in answers],
        answers[-1]["Retry-After"],
    )


def test_wsgi_breaker_counts_5xx_then_answers_503(flags, clock):
    """WSGI: 5xx answers open the breaker; then 503 with Retry-After, app not run."""
    ran: list[str] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        ran.append(environ["PATH_INFO"])
        start_response("500 Internal Server Error", [("content-type", "text/plain")])
        return [b"no"]

    breaker = CircuitBreaker(
        "wsgi-app",
        minimum_calls=2,
        failure_rate_threshold=0.5,
        open_duration=30.0,
        clock=clock,
    )
    from werkzeug.test import Client as WerkzeugClient

    client = WerkzeugClient(WSGIMiddleware(app, breaker=breaker))
    answers = [client.get(f"/{i}") for i in range(3)]
    assert (["/0", "/1"], [500, 500, 503], "30") == (
        ran,
        [a.status_code for a in answers],
        answers[-1].headers["retry-after"],
    )


@pytest.mark.parametrize("stack", ["asgi", "wsgi"])
def test_a_deadline_gone_before_the_app_starts_is_a_504(flags, clock, stack):
    """With a breaker around the app, a caller whose deadline is spent gets a 504."""
    breaker = CircuitBreaker("late", clock=clock)
    baggage = {"baggage": "tipkit.deadline_ms=0"}
    if stack == "asgi":
        answer = asgi_get(
            ASGIMiddleware(fastapi_app(flags), breaker=breaker), headers=baggage
        )
        status = answer.status_code
    else:
        app = flask_app(flags)
        app.wsgi_app = WSGIMiddleware(app.wsgi_app, breaker=breaker)  # type: ignore[method-assign]
        status = app.test_client().get("/", headers=baggage).status_code
    assert 504 == status
