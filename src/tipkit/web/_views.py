"""What the policy reads of a request, for each kind of server (``View`` s)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any

__all__ = ["ASGIView", "DjangoView", "WSGIView", "cookie_value"]

logger = logging.getLogger("tipkit")

_MAX_COOKIE = 8192


def cookie_value(header: str | None, name: str) -> str | None:
    """Return cookie *name* from a ``Cookie`` header; ``None`` if absent or malformed."""
    if not header or len(header) > _MAX_COOKIE:
        return None
    try:
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
    except CookieError:
        logger.debug("tipkit: malformed Cookie header ignored")
        return None
    morsel = jar.get(name)
    return None if morsel is None else morsel.value


def _user_id(user: Any) -> str | None:
    """The id of an authenticated user object (starlette's or Django's), else ``None``."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    for attr in ("identity", "pk", "display_name", "username"):
        try:
            value = getattr(user, attr, None)
        except NotImplementedError:
            continue
        if value is not None and value != "":
            return str(value)
    return None


class ASGIView:
    """A :class:`~tipkit.web._policy.View` over an ASGI ``http`` scope."""

    __slots__ = ("client", "method", "path", "scope")

    def __init__(self, scope: Mapping[str, Any]) -> None:
        self.scope = scope
        self.method: str = scope.get("method", "GET")
        self.path: str = scope.get("path", "/")
        client = scope.get("client")
        self.client: str | None = client[0] if client else None

    def header(self, name: str) -> str | None:
        wanted = name.encode("latin-1")
        found = [v for k, v in self.scope.get("headers", ()) if k.lower() == wanted]
        if not found:
            return None
        return ",".join(v.decode("latin-1") for v in found)

    def cookie(self, name: str) -> str | None:
        return cookie_value(self.header("cookie"), name)

    def user(self) -> str | None:
        try:
            return _user_id(self.scope.get("user"))
        except Exception:  # an auth backend's user object that raises
            return None


class WSGIView:
    """A :class:`~tipkit.web._policy.View` over a WSGI ``environ``."""

    __slots__ = ("client", "environ", "method", "path")

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.environ = environ
        self.method: str = environ.get("REQUEST_METHOD", "GET")
        self.path: str = environ.get("PATH_INFO", "/") or "/"
        self.client: str | None = environ.get("REMOTE_ADDR") or None

    def header(self, name: str) -> str | None:
        value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
        return value if isinstance(value, str) else None

    def cookie(self, name: str) -> str | None:
        return cookie_value(self.header("cookie"), name)

    def user(self) -> str | None:
        value = self.environ.get("REMOTE_USER")
        return value if isinstance(value, str) and value else None


class DjangoView:
    """A :class:`~tipkit.web._policy.View` over a Django ``HttpRequest``."""

    __slots__ = ("client", "method", "path", "request")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.method: str = request.method or "GET"
        self.path: str = request.path or "/"
        self.client: str | None = request.META.get("REMOTE_ADDR") or None

    def header(self, name: str) -> str | None:
        value = self.request.META.get("HTTP_" + name.upper().replace("-", "_"))
        return value if isinstance(value, str) else None

    def cookie(self, name: str) -> str | None:
        return cookie_value(self.header("cookie"), name)

    def user(self) -> str | None:
        try:
            return _user_id(getattr(self.request, "user", None))
        except Exception:  # a lazy user whose session backend fails
            return None
