"""Web middleware cost: tipkit vs a bare app, and the 429 path vs slowapi / flask-limiter.

Run:  python benchmarks/web.py [--number N] [--repeat R]

Every request is driven in process (ASGI: the app called with a scope, receive
and send; WSGI: the app called with an environ), so the figures are the
middleware's own cost, not a server's or a socket's. Prints microseconds per
request (median of --repeat runs) and the overhead over the bare app.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

from tipkit.ratelimit import KeyedRateLimiter
from tipkit.web import ASGIMiddleware, WSGIMiddleware

HUGE = 10**9


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


def asgi_us(app: Any, number: int, repeat: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def run() -> list[float]:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                await app(scope(), receive, send)
            times.append((time.perf_counter() - start) / number * 1e6)
        return times

    return statistics.median(asyncio.run(run()))


def wsgi_us(app: Any, number: int, repeat: int) -> float:
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

    def once() -> None:
        body = app(dict(environ), start_response)
        for _ in body:
            pass
        close: Callable[[], None] | None = getattr(body, "close", None)
        if close is not None:
            close()

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            once()
        times.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(times)


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
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, r = args.number, args.repeat
    logging.getLogger("slowapi").setLevel(logging.ERROR)
    logging.getLogger("flask-limiter").setLevel(logging.ERROR)

    bare = asgi_us(starlette_app(), n, r)
    wrapped = asgi_us(ASGIMiddleware(starlette_app()), n, r)
    limited = KeyedRateLimiter("bench", rate=HUGE, capacity=HUGE)
    with_limit = asgi_us(ASGIMiddleware(starlette_app(), limiter=limited), n, r)
    refusing = KeyedRateLimiter("bench-429", rate=1e-9, capacity=1)
    tipkit_429 = asgi_us(ASGIMiddleware(starlette_app(), limiter=refusing), n, r)
    slow_429 = asgi_us(slowapi_app(), n, r)

    wbare = wsgi_us(flask_app(), n, r)
    wwrapped = wsgi_us(WSGIMiddleware(flask_app().wsgi_app), n, r)
    wrefusing = KeyedRateLimiter("bench-w429", rate=1e-9, capacity=1)
    wtipkit_429 = wsgi_us(WSGIMiddleware(flask_app().wsgi_app, limiter=wrefusing), n, r)
    fl_429 = wsgi_us(flask_limiter_app(), n, r)

    print(f"{'case':<52} {'us/request':>10}")
    rows = [
        ("ASGI Starlette bare", bare, None),
        ("ASGI + ASGIMiddleware (context, marks, span)", wrapped, wrapped - bare),
        (
            "ASGI + ASGIMiddleware + keyed limiter (admitted)",
            with_limit,
            with_limit - bare,
        ),
        ("ASGI 429 path: tipkit", tipkit_429, None),
        ("ASGI 429 path: slowapi", slow_429, None),
        ("WSGI Flask bare", wbare, None),
        ("WSGI + WSGIMiddleware (context, marks, span)", wwrapped, wwrapped - wbare),
        ("WSGI 429 path: tipkit", wtipkit_429, None),
        ("WSGI 429 path: flask-limiter", fl_429, None),
    ]
    for name, us, over in rows:
        extra = "" if over is None else f"   overhead {over:+.1f} us"
        print(f"{name:<52} {us:>10.1f}{extra}")
    print(
        f"429 path: slowapi / tipkit = {slow_429 / tipkit_429:.1f}x, "
        f"flask-limiter / tipkit = {fl_429 / wtipkit_429:.1f}x"
    )


if __name__ == "__main__":
    main()
