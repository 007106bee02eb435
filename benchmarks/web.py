"""Web middleware cost: tipkit vs a bare app, and the 429 path vs slowapi / flask-limiter.

Run:  python benchmarks/web.py [--number N] [--repeat R]

Every request is driven in process (ASGI: the app called with a scope, receive
and send; WSGI: the app called with an environ), so the figures are the
middleware's own cost, not a server's or a socket's. Prints microseconds per
request and the overhead over the bare app. The cases take turns, --repeat
rounds of --number requests each, and each reports its best round: on a shared,
loaded machine the best round is the one least disturbed by others. Time is the
process's CPU time (no request here waits on I/O), so the time the process spends
descheduled by other load is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

from tipkit.ratelimit import KeyedRateLimiter
from tipkit.web import ASGIMiddleware, WSGIMiddleware

HUGE = 10**9
BASELINES = {  # a case -> the bare case its overhead is measured against
    "ASGI raw app + ASGIMiddleware": "ASGI raw app bare",
    "WSGI raw app + WSGIMiddleware": "WSGI raw app bare",
    "ASGI raw app + ASGIMiddleware, SDK span recorded": "ASGI raw app bare",
    "WSGI raw app + WSGIMiddleware, SDK span recorded": "WSGI raw app bare",
    "ASGI + ASGIMiddleware (context, marks, span)": "ASGI Starlette bare",
    "ASGI + ASGIMiddleware + keyed limiter (admitted)": "ASGI Starlette bare",
    "WSGI + WSGIMiddleware (context, marks, span)": "WSGI Flask bare",
}


def scope(path: str = "/") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"x-targeting-key", b"u1")],
        "client": ("127.0.0.1", 5000),
        "server": ("bench", 80),
    }


def asgi_us(app: Any, number: int) -> float:
    """Microseconds per request over one round of *number* requests."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def run() -> float:
        start = time.process_time()
        for _ in range(number):
            await app(scope(), receive, send)
        return (time.process_time() - start) / number * 1e6

    return asyncio.run(run())


def wsgi_us(app: Any, number: int) -> float:
    """Microseconds per request over one round of *number* requests."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_TARGETING_KEY": "u1",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "SERVER_PROTOCOL": "HTTP/1.1",
    }

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        return None

    start = time.process_time()
    for _ in range(number):
        body = app(dict(environ), start_response)
        for _ in body:
            pass
        close: Callable[[], None] | None = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.process_time() - start) / number * 1e6


def under_sdk(measure: Callable[[], float]) -> float:
    """Run *measure* with tipkit instrumented by a real SDK tracer (spans recorded).

    The spans go to a processor that drops them: the figure is making and
    ending the span, not exporting it.
    """
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    from tipkit.telemetry import instrument, uninstrument

    provider = TracerProvider()
    provider.add_span_processor(SpanProcessor())
    instrument(tracer_provider=provider)
    try:
        return measure()
    finally:
        uninstrument()


def best_of(cases: dict[str, Callable[[], float]], repeat: int) -> dict[str, float]:
    """Run the *cases* in turns, *repeat* rounds; return each one's best round."""
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, run in cases.items():
            rounds[name].append(run())
    return {name: min(times) for name, times in rounds.items()}


async def raw_asgi_app(scope: Any, receive: Any, send: Any) -> None:
    """The smallest ASGI app: the middleware's own cost shows against it."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def raw_wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    """The smallest WSGI app."""
    start_response("200 OK", [])
    return [b"ok"]


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    return Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])


def flask_app() -> Any:
    import flask

    app = flask.Flask("bench")
    app.get("/")(lambda: "ok")
    return app


def slowapi_app() -> Any:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    limiter = Limiter(key_func=get_remote_address, headers_enabled=True)

    @limiter.limit("1/hour")
    async def root(request: Any) -> Any:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", root)])
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    return app


def flask_limiter_app() -> Any:
    import flask
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    app = flask.Flask("bench-limiter")
    limiter = Limiter(get_remote_address, app=app, headers_enabled=True)
    app.get("/")(limiter.limit("1/hour")(lambda: "ok"))
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    n = args.number
    logging.getLogger("slowapi").setLevel(logging.ERROR)
    logging.getLogger("flask-limiter").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="flask_limiter")  # in-memory storage

    admitting = KeyedRateLimiter("bench", rate=HUGE, capacity=HUGE)
    refusing = KeyedRateLimiter("bench-429", rate=1e-9, capacity=1)
    wrefusing = KeyedRateLimiter("bench-w429", rate=1e-9, capacity=1)
    apps = {
        "ASGI raw app bare": (asgi_us, raw_asgi_app),
        "ASGI raw app + ASGIMiddleware": (asgi_us, ASGIMiddleware(raw_asgi_app)),
        "WSGI raw app bare": (wsgi_us, raw_wsgi_app),
        "WSGI raw app + WSGIMiddleware": (wsgi_us, WSGIMiddleware(raw_wsgi_app)),
        "ASGI Starlette bare": (asgi_us, starlette_app()),
        "ASGI + ASGIMiddleware (context, marks, span)": (
            asgi_us,
            ASGIMiddleware(starlette_app()),
        ),
        "ASGI + ASGIMiddleware + keyed limiter (admitted)": (
            asgi_us,
            ASGIMiddleware(starlette_app(), limiter=admitting),
        ),
        "ASGI 429 path: tipkit": (
            asgi_us,
            ASGIMiddleware(starlette_app(), limiter=refusing),
        ),
        "ASGI 429 path: slowapi": (asgi_us, slowapi_app()),
        "WSGI Flask bare": (wsgi_us, flask_app()),
        "WSGI + WSGIMiddleware (context, marks, span)": (
            wsgi_us,
            WSGIMiddleware(flask_app().wsgi_app),
        ),
        "WSGI 429 path: tipkit": (
            wsgi_us,
            WSGIMiddleware(flask_app().wsgi_app, limiter=wrefusing),
        ),
        "WSGI 429 path: flask-limiter": (wsgi_us, flask_limiter_app()),
    }
    cases = {
        name: functools.partial(measure, app, n)
        for name, (measure, app) in apps.items()
    }
    cases["ASGI raw app + ASGIMiddleware, SDK span recorded"] = functools.partial(
        under_sdk, cases["ASGI raw app + ASGIMiddleware"]
    )
    cases["WSGI raw app + WSGIMiddleware, SDK span recorded"] = functools.partial(
        under_sdk, cases["WSGI raw app + WSGIMiddleware"]
    )
    us = best_of(cases, args.repeat)
    print(f"{'case':<52} {'us/request':>10}")
    for name, value in us.items():
        overhead = ""
        baseline = BASELINES.get(name)
        if baseline is not None:
            bare = us[baseline]
            overhead = f"   overhead {value - bare:+.1f} us"
        print(f"{name:<52} {value:>10.1f}{overhead}")
    slow = us["ASGI 429 path: slowapi"] / us["ASGI 429 path: tipkit"]
    fl = us["WSGI 429 path: flask-limiter"] / us["WSGI 429 path: tipkit"]
    print(
        f"429 path: slowapi / tipkit = {slow:.1f}x, flask-limiter / tipkit = {fl:.1f}x"
    )


if __name__ == "__main__":
    main()
