"""The requests adapter: the requests driver over :class:`ClientPolicy`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from tipkit._core._flow import drive
from tipkit.http._drive import exchange, guarded
from tipkit.http._policy import ClientPolicy, remaining_timeout

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
        headers: Any = request.headers  # str values: requests prepared them
        plan = self.policy.plan(request.method or "GET", headers)
        return drive(exchange(plan, self.policy, self, request, kwargs))  # type: ignore[no-any-return]

    def _attempt(self, request: PreparedRequest, kwargs: dict[str, Any]) -> Response:
        headers: Any = request.headers
        self.policy.stamp(headers)
        timeout = kwargs.get("timeout")
        if isinstance(timeout, tuple):
            kwargs = {**kwargs, "timeout": tuple(remaining_timeout(t) for t in timeout)}
        else:
            kwargs = {**kwargs, "timeout": remaining_timeout(timeout)}
        guards = self.policy.guards(_host(request.url or ""))
        if not guards:
            return super().send(request, **kwargs)
        send = super().send
        return guarded(guards, lambda: send(request, **kwargs))  # type: ignore[no-any-return]
