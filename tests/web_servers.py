"""Real servers on loopback for the web tests: bound before they start, so no waiting."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

JOIN_TIMEOUT = 30.0  # generous: a loaded CI machine


@contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    """Serve ASGI *app* with uvicorn on a free loopback port; yield its base URL.

    The socket is bound and listening before the server thread starts, so a
    client may connect at once (the kernel queues it): nothing to wait for.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(JOIN_TIMEOUT)
        sock.close()


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # stdlib's name
        pass


@contextmanager
def wsgi_server(app: Any) -> Iterator[str]:
    """Serve WSGI *app* with the stdlib's threaded wsgiref server on loopback; yield its URL.

    ``make_server`` binds and listens before returning: nothing to wait for.
    """
    server = make_server(
        "127.0.0.1",
        0,
        app,
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(JOIN_TIMEOUT)
