"""Outgoing HTTP: guarded, retried and propagating clients for httpx and requests.

::

    from tipkit.http import Transport, AsyncTransport, Adapter

    client = httpx.Client(transport=Transport(breaker_per_host=True,
                                              retry=retry(on=httpx.TransportError)))
    session.mount("https://", Adapter(breaker_per_host=True))

Every request carries ``traceparent`` and the ``baggage`` entries
``tipkit.synthetic=1`` (inside :func:`~tipkit.telemetry.synthetic`) and
``tipkit.deadline_ms`` (the current deadline's remaining milliseconds), so the
next tipkit service sees them. The httpx classes need ``httpx``, the adapter
``requests`` (``pip install 'tipkit[web]'``); each is imported when first named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tipkit.http._policy import IDEMPOTENT, RETRY_STATUSES, retry_after_seconds

if TYPE_CHECKING:
    from tipkit.http._httpx import AsyncTransport, Transport
    from tipkit.http._requests import Adapter

__all__ = [
    "IDEMPOTENT",
    "RETRY_STATUSES",
    "Adapter",
    "AsyncTransport",
    "Transport",
    "retry_after_seconds",
]

_LAZY = {
    "Transport": ("tipkit.http._httpx", "httpx"),
    "AsyncTransport": ("tipkit.http._httpx", "httpx"),
    "Adapter": ("tipkit.http._requests", "requests"),
}


def __getattr__(name: str) -> Any:
    found = _LAZY.get(name)
    if found is None:
        raise AttributeError(f"module 'tipkit.http' has no attribute {name!r}")
    module, package = found
    import importlib  # noqa: PLC0415  # only when a client class is first named

    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name != package:
            raise
        raise ImportError(
            f"tipkit.http.{name} needs {package}: pip install 'tipkit[web]'"
        ) from exc
