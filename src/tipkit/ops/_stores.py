"""Open the store an operator tool points at: ``redis://...`` or an in-process ``memory://name``."""

from __future__ import annotations

import os
import threading
from typing import Any, Final

__all__ = ["ENV_PREFIX", "ENV_STORE", "TIMEOUT", "open_store", "serve_memory"]

ENV_STORE: Final = "TIPKIT_STORE"
ENV_PREFIX: Final = "TIPKIT_STORE_PREFIX"
TIMEOUT: Final = 2.0
"""Seconds an operator command waits for the store (an operator is not a request)."""

_MEMORY: dict[str, Any] = {}
_LOCK = threading.Lock()


def serve_memory(name: str, store: Any) -> str:
    """Make *store* (a ``MemoryStore``) reachable as ``memory://<name>`` in this process.

    For tests, demos and an application embedding the console: a
    ``MemoryStore`` is not shared across processes. Returns the URL.
    """
    with _LOCK:
        _MEMORY[name] = store
    return f"memory://{name}"


def open_store(url: str | None, prefix: str | None) -> Any:
    """Return the store at *url* (default ``$TIPKIT_STORE``) with *prefix*.

    ``redis://``, ``rediss://`` and ``unix://`` URLs open a ``RedisStore(url,
    prefix=prefix)`` (the same meaning as in the application; the default
    prefix is ``$TIPKIT_STORE_PREFIX``, else ``"tipkit:"``), with a
    :data:`TIMEOUT` and no change notifications. ``memory://name`` is a store
    given to :func:`serve_memory` in this process.

    Raises:
        ValueError: no URL, or a URL of an unknown kind or memory name.
    """
    url = url or os.environ.get(ENV_STORE)
    if not url:
        raise ValueError(f"no store: give --store URL or set {ENV_STORE}")
    if url.startswith("memory://"):
        with _LOCK:
            found = _MEMORY.get(url.removeprefix("memory://"))
        if found is None:
            raise ValueError(f"no in-process store is served as {url}")
        return found
    if (
        url.startswith(("redis://", "rediss://", "unix://"))
        or "+cluster://" in url
        or (
            "+sentinel://" in url  # RedisStore's Cluster and Sentinel URL forms
        )
    ):
        from tipkit.stores._redis import RedisStore  # noqa: PLC0415  # the optional extra

        prefix = prefix if prefix is not None else os.environ.get(ENV_PREFIX, "tipkit:")
        return RedisStore(url, prefix=prefix, timeout=TIMEOUT, push=False)
    raise ValueError(
        f"unknown store URL {url!r}: use redis://host:port/db or memory://name"
    )
