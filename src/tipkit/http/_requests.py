"""The requests adapter: the requests driver over :class:`ClientPolicy`."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any
from urllib.parse import urlsplit

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from tipkit.http._policy import ClientPolicy, ServerFailure, remaining_timeout

__all__ = ["Adapter"]


def _host(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


class Adapter(HTTPAdapter):
    """A requests transport adapter with the options of :class:`~tipkit.http.Transport`.

    ::

        session = requests.Session()
        session.mount("https://", Adapter(breaker_per_host=True, retry=retry(
            on=requests.ConnectionError, attempts=3)))

    urllib3's own retries are off (``max_retries=0``): tipkit's plan decides.
    A ``timeout=`` given to the request (a number or a ``(connect, read)``
    pair) is shortened to the current deadline; with none, the deadline's
    remaining time becomes the timeout. Thread-safe as requests' adapter is.
    """

    def __init__(
        self, *, pool_connections: int = 10, pool_maxsize: int = 10, **options: Any
    ) -> None:
        self.policy = ClientPolicy(**options)
        super().__init__(
            pool_connections=pool_connections, pool_maxsize=pool_maxsize, max_retries=0
        )

    def __repr__(self) -> str:
        return f"<tipkit.http.Adapter {self.policy.describe()}>"

    def send(  # type: ignore[override]  # requests' signature, kwargs passed on
        self, request: PreparedRequest, **kwargs: Any
    ) -> Response:
        policy = self.policy
        headers: Any = request.headers  # str values: requests prepared them
        plan = policy.plan(request.method or "GET", headers)
        while True:
            try:
                response = self._attempt(request, kwargs)
            except Exception as exc:
                wait = plan.after_error(exc)
                if wait is None:
                    raise
            else:
                wait = plan.after_response(
                    response.status_code, response.headers.get("retry-after")
                )
                if wait is None:
                    return response
                response.close()
            policy.clock.sleep(wait)

    def _attempt(self, request: PreparedRequest, kwargs: dict[str, Any]) -> Response:
        policy = self.policy
        headers: Any = request.headers
        policy.stamp(headers)
        timeout = kwargs.get("timeout")
        if isinstance(timeout, tuple):
            kwargs = {**kwargs, "timeout": tuple(remaining_timeout(t) for t in timeout)}
        else:
            kwargs = {**kwargs, "timeout": remaining_timeout(timeout)}
        guards = policy.guards(_host(request.url or ""))
        if not guards:
            return super().send(request, **kwargs)
        try:
            with ExitStack() as stack:
                for guard in guards:
                    stack.enter_context(guard)
                response = super().send(request, **kwargs)
                if response.status_code >= 500:
                    raise ServerFailure(response)
        except ServerFailure as failure:
            response = failure.response
        return response
