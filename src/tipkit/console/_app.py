"""The console's ASGI application: pages over :class:`tipkit.ops.Operator`, and its actions.

Reads and actions go through the same :class:`~tipkit.ops.Operator` as
``tipkit ops``: an action is a compare-and-set appended to the audit log in
one atomic step, attributed to the signed-in operator, with the reason typed
beside the button. Store work runs in Starlette's thread pool (the store's
sync methods block), never on the event loop.

Responses: 200 pages; 303 after an action (to the area's page, naming the
audit record); 400 refused (bad input, no reason, unknown target: nothing
changed); 401 not signed in or a wrong token; 403 a bad CSRF token or a
foreign ``Origin``; 409 another writer got there first; 503 the store is
unreachable. Every response carries a strict Content-Security-Policy (no
scripts at all), ``X-Frame-Options: DENY``, ``no-store`` caching and no
referrer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tipkit.audit import AuditRecord
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.console import _pages
from tipkit.console._security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Keys,
    Session,
)
from tipkit.errors import StoreError
from tipkit.ops import Conflict, Operator, Refused

__all__ = ["LOOPBACK_HOSTS", "create_app"]

LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost")
"""``Host`` headers a loopback console answers (a DNS-rebinding page is refused)."""

FORM_MAX: Final = 16 * 1024
"""Bytes a POSTed form may have (a reason is at most 1,000 characters)."""

AUDIT_SHOWN: Final = 500
"""Records the audit page shows at most (the newest)."""

_HEADERS: Final = (
    (
        b"content-security-policy",
        (
            b"default-src 'none'; style-src 'self'; img-src 'self'; "
            b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null"
    # on the console's own form posts, which the Origin check must refuse.
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)
_DONE = re.compile(r"^[0-9A-Za-z:._-]{1,64}$")
_AREA_OF: Final = {"flag": "flags", "rollout": "rollouts", "breaker": "breakers"}
_ACTIONS: Final[dict[tuple[str, str], Callable[..., AuditRecord | None]]] = {
    ("flag", "kill"): Operator.kill,
    ("flag", "revive"): Operator.revive,
    ("flag", "clear_override"): Operator.clear_override,
    ("flag", "clear_split"): Operator.clear_split,
    ("rollout", "pause"): Operator.pause,
    ("rollout", "resume"): Operator.resume,
    ("rollout", "promote"): Operator.promote,
    ("rollout", "rollback"): Operator.rollback,
    ("breaker", "open"): Operator.open_breaker,
    ("breaker", "disable"): Operator.disable_breaker,
    ("breaker", "reset"): Operator.reset_breaker,
}


class _SecurityHeaders:
    """Add the security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS:
                    headers[name.decode()] = value.decode()
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass(frozen=True, slots=True)
class _Console:
    """The console's state: the store, its secrets, its clock."""

    store: Any
    keys: Keys
    clock: Clock
    live_refresh: float

    # -- request plumbing ---------------------------------------------------------
    def session(self, request: Request) -> Session | None:
        return self.keys.session(request.cookies.get(SESSION_COOKIE))

    def context(
        self, request: Request, *, done: str | None = None
    ) -> tuple[_pages.Context, str | None]:
        """Return the page context and a CSRF nonce to set (if the browser has none)."""
        nonce = request.cookies.get(CSRF_COOKIE)
        fresh = None
        if not nonce or not re.fullmatch(r"[0-9a-f]{32}", nonce):
            nonce = fresh = self.keys.new_nonce()
        session = self.session(request)
        ctx = _pages.Context(
            csrf=self.keys.csrf_field(nonce),
            actor=None if session is None else session.actor,
            read_only=self.keys.read_only,
            now=self.clock.time(),
            done=done if done is None or _DONE.match(done) else None,
        )
        return ctx, fresh

    def html(self, body: str, fresh: str | None, status: int = 200) -> HTMLResponse:
        response = HTMLResponse(body, status_code=status)
        if fresh is not None:
            response.set_cookie(
                CSRF_COOKIE, fresh, httponly=True, samesite="strict", path="/"
            )
        return response

    def refuse(self, request: Request, status: int, title: str, why: str) -> Response:
        ctx, fresh = self.context(request)
        return self.html(_pages.error_page(title, why, ctx), fresh, status)

    async def form(self, request: Request) -> tuple[dict[str, str], Response | None]:
        """Return the POSTed form, or a 403 for a bad CSRF token or a foreign Origin."""
        origin = request.headers.get("origin")
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        form = await _urlencoded(request)
        if form is None:
            why = "a console form is a small application/x-www-form-urlencoded body"
            return {}, self.refuse(request, 400, "Refused", why)
        if origin is not None and origin != own:  # "null" (sandboxed) included
            why = "this form was not sent by the console's own page (Origin)"
            return form, self.refuse(request, 403, "Refused", why)
        if not self.keys.check_csrf(request.cookies.get(CSRF_COOKIE), form.get("csrf")):
            why = (
                "the form's CSRF token is missing or not this console's: reload "
                "the page and try again; nothing changed"
            )
            return form, self.refuse(request, 403, "Refused", why)
        return form, None

    # -- pages ---------------------------------------------------------------------
    def read(self, area: str, query: Mapping[str, str]) -> Any:
        """Read what page *area* shows (blocking store reads)."""
        op = Operator(self.store, actor="console", clock=self.clock)
        if area == "flags":
            return op.flags()
        if area == "rollouts":
            return op.rollouts()
        if area == "limits":
            return op.limits()
        if area == "breakers":
            grouped: dict[str, list[AuditRecord]] = {}
            for rec in op.audit():
                kind, _, name = rec.target.partition(":")
                if kind == "breaker":
                    grouped.setdefault(name, []).append(rec)
            return op.breakers(), {k: v[-10:] for k, v in grouped.items()}
        return op.audit(
            target=query.get("target") or None,
            actor=query.get("actor") or None,
            since=query.get("since") or None,
        )[-AUDIT_SHOWN:]

    async def page(self, request: Request) -> Response:
        area = request.url.path.strip("/")
        query = {k: v.strip() for k, v in request.query_params.items()}
        ctx, fresh = self.context(request, done=query.get("done"))
        try:
            data = await run_in_threadpool(self.read, area, query)
        except Refused as exc:
            return self.html(_pages.error_page("Refused", str(exc), ctx), fresh, 400)
        except StoreError as exc:
            why = f"the store is unreachable: {exc}"
            return self.html(
                _pages.error_page("Store unreachable", why, ctx), fresh, 503
            )
        if area == "flags":
            body = _pages.flags_page(data, ctx)
        elif area == "rollouts":
            body = _pages.rollouts_page(data, ctx)
        elif area == "breakers":
            body = _pages.breakers_page(data[0], data[1], ctx)
        elif area == "limits":
            body = _pages.limits_page(data, ctx)
        else:
            live = self.live_refresh if query.get("live") == "1" else None
            body = _pages.audit_page(data, query, ctx, live=live)
        return self.html(body, fresh)

    # -- signing in and out --------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        ctx, fresh = self.context(request)
        return self.html(_pages.login_page(ctx), fresh)

    async def login(self, request: Request) -> Response:
        form, refused = await self.form(request)
        if refused is not None:
            return refused
        ctx, fresh = self.context(request)
        if not self.keys.check_token(form.get("token", "")):
            why = (
                "no token is configured: the console is read-only"
                if self.keys.read_only
                else "wrong token"
            )
            return self.html(_pages.login_page(ctx, error=why), fresh, 401)
        try:
            cookie = self.keys.new_session(form.get("actor", ""))
        except ValueError as exc:
            return self.html(_pages.login_page(ctx, error=str(exc)), fresh, 400)
        response = RedirectResponse("/flags", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=int(SESSION_SECONDS),
            httponly=True,
            samesite="strict",
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        _, refused = await self.form(request)
        if refused is not None:
            return refused
        response = RedirectResponse("/flags", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- actions -------------------------------------------------------------------
    async def act(self, request: Request) -> Response:  # noqa: PLR0911  # one status per outcome
        form, refused = await self.form(request)
        if refused is not None:
            return refused
        session = self.session(request)
        if session is None:
            why = "actions need the console's token: sign in first; nothing changed"
            return self.refuse(request, 401, "Not signed in", why)
        kind, verb = form.get("kind", ""), form.get("verb", "")
        action = _ACTIONS.get((kind, verb))
        if action is None:
            why = f"unknown action {kind!r} {verb!r}"
            return self.refuse(request, 400, "Refused", why)
        op = Operator(self.store, actor=session.actor, clock=self.clock)
        try:
            done = await run_in_threadpool(
                action, op, form.get("target", ""), reason=form.get("reason", "")
            )
        except Conflict as exc:
            return self.refuse(request, 409, "Conflict", str(exc))
        except Refused as exc:
            return self.refuse(request, 400, "Refused", f"{exc}; nothing changed")
        except StoreError as exc:
            why = f"the store is unreachable: {exc}; nothing was written"
            return self.refuse(request, 503, "Store unreachable", why)
        mark = "unchanged" if done is None else done.id
        return RedirectResponse(f"/{_AREA_OF[kind]}?done={mark}", status_code=303)


async def _urlencoded(request: Request) -> dict[str, str] | None:
    """Return the form of a urlencoded body of at most :data:`FORM_MAX` bytes, or ``None``."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX:
            return None
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        return None
    return dict(pairs)


async def _css(_request: Request) -> Response:
    return Response(_pages.CSS, media_type="text/css")


async def _home(_request: Request) -> Response:
    return RedirectResponse("/flags", status_code=303)


def create_app(
    store: Any,
    *,
    token: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    live_refresh: float = 5.0,
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS,
) -> Starlette:
    """Return the console as an ASGI application over *store*.

    Args:
        store: the application's store (``RedisStore(url, prefix=...)``); it
            must keep an audit log for the actions to be audited.
        token: what operators sign in with (at least 16 characters); ``None``
            makes the console read-only.
        clock: ``time()`` stamps sessions and time in stage.
        live_refresh: seconds between reloads of the audit page in live mode.
        allowed_hosts: ``Host`` header names answered (anything else gets
            400): the loopback names by default.

    Raises:
        ValueError: a token shorter than 16 characters.
    """
    console = _Console(store, Keys(token, clock), clock, live_refresh)
    routes = [
        Route("/", _home),
        Route("/console.css", _css),
        Route("/login", console.login_form, methods=["GET"]),
        Route("/login", console.login, methods=["POST"]),
        Route("/logout", console.logout, methods=["POST"]),
        Route("/act", console.act, methods=["POST"]),
        *(Route(f"/{area}", console.page, methods=["GET"]) for area in _pages.AREAS),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(_SecurityHeaders),
            Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)),
        ],
    )
