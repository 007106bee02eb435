"""The ASGI middleware (Starlette, FastAPI, any ASGI app)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tipkit.web._policy import Guarded, Middleware, Once, Policy, Refusal
from tipkit.web._views import ASGIView

__all__ = ["ASGIMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_refusal(send: Send, refusal: Refusal) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in refusal.headers]
    headers.append((b"content-length", str(len(refusal.body)).encode()))
    await send(
        {"type": "http.response.start", "status": refusal.status, "headers": headers}
    )
    await send({"type": "http.response.body", "body": refusal.body})


async def _limit(
    policy: Policy, view: ASGIView, request: Once
) -> tuple[Refusal | None, list[tuple[str, str]]]:
    if policy.limiter is None:
        return None, []
    if policy.blocking_limiter:
        decision = await asyncio.to_thread(policy.check, view, request)
    else:
        decision = policy.check(view, request)
    return policy.limit(decision)


class ASGIMiddleware(Middleware[ASGIApp]):
    """Give every HTTP request its flag context, marks, deadline, rate limit and span.

    ::

        app = ASGIMiddleware(
            app,
            flags=flags,
            context_from=lambda req: EvaluationContext(req.headers.get("x-user")),
            limiter=KeyedRateLimiter("api", rate=10.0, capacity=20),
            key_from=lambda req: req.client.host,
        )

    Per ``http`` request (``websocket`` and ``lifespan`` pass through untouched):

    * with a *limiter* (a :class:`~tipkit.ratelimit.KeyedRateLimiter` keyed by
      ``key_from(request)``, the client address by default, or a
      :class:`~tipkit.ratelimit.TokenBucket`): a refused request gets ``429``
      with ``Retry-After`` (whole seconds, rounded up) and the IETF
      ``RateLimit`` / ``RateLimit-Policy`` headers (on admitted responses too,
      unless ``rate_limit_headers=False``);
    * the evaluation context of every flag evaluation given none
      (:func:`tipkit.flags.request_context`) is ``context_from(request)``, or by
      default the targeting key of the authenticated user (``scope["user"]``),
      else of header *targeting_header*, else of cookie *targeting_cookie*;
    * the incoming W3C ``baggage`` entries ``tipkit.deadline_ms`` (a deadline
      scope for the request) and ``tipkit.synthetic=1`` (a
      :func:`~tipkit.telemetry.synthetic` scope, only from a source in
      *trust*: client networks and :class:`SharedSecret` headers; empty, the
      default, trusts nobody);
    * the trace: attributes on the server span of a framework instrumentation
      when there is one, else one span of tipkit's own, child of the incoming
      ``traceparent``;
    * with a *breaker* around the app: ``503`` with ``Retry-After`` while it is
      open; an exception or a 5xx response counts as a failure.

    ``context_from`` and ``key_from`` get a ``starlette.requests.Request``; when
    they raise, the defaults are served and the failure is counted
    (``tipkit.web.callback_errors``). A malformed header is ignored with a
    debug log line: never a 500. A limiter with a ``store=`` is asked in a
    worker thread (its check blocks on the store); in process it never blocks.
    Thread- and task-safe: per-request state lives in the request's context.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.policy
        view = ASGIView(scope)
        request = Once(lambda: _request(scope, receive))
        refusal, headers = await _limit(policy, view, request)
        if refusal is not None:
            await _send_refusal(send, refusal)
            return
        if policy.flags is not None:
            scope["tipkit.flags"] = policy.flags
        admission = policy.admit_after_limit(view, request, headers)
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        status: list[int | None] = [None]

        async def send_on(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                if extra:
                    message = {
                        **message,
                        "headers": [*message.get("headers", ()), *extra],
                    }
            await send(message)

        admission.enter()
        error: BaseException | None = None
        try:
            if policy.breaker is None:
                await self.app(scope, receive, send_on)
            else:
                await self._guarded(scope, receive, send, send_on, status)
        except BaseException as exc:
            error = exc
            raise
        finally:
            admission.exit(status[0], error)

    async def _guarded(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        send_on: Send,
        status: list[int | None],
    ) -> None:
        outcome = Guarded(self.policy, lambda: status[0] is not None)
        with outcome:
            async with self.policy.breaker:
                await self.app(scope, receive, send_on)
                outcome.answered(status[0])
        if outcome.refusal is not None:
            await _send_refusal(send, outcome.refusal)
            status[0] = outcome.refusal.status


def _request(scope: Scope, receive: Receive) -> Any:
    from starlette.requests import Request  # noqa: PLC0415  # optional extra

    return Request(scope, receive)
