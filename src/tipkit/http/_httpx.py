"""httpx transports: the sync and async drivers over :class:`ClientPolicy`."""

from __future__ import annotations

from contextlib import AsyncExitStack, ExitStack
from typing import Any

import httpx

from tipkit.http._policy import ClientPolicy, ServerFailure, remaining_timeout

__all__ = ["AsyncTransport", "Transport"]


def _host(request: httpx.Request) -> str:
    url = request.url
    return f"{url.host}:{url.port}" if url.port is not None else url.host


def _prepare(policy: ClientPolicy, request: httpx.Request) -> None:
    """Stamp the headers and shorten the timeouts to the deadline (each attempt)."""
    policy.stamp(request.headers)
    timeout = request.extensions.get("timeout")
    if isinstance(timeout, dict):
        request.extensions["timeout"] = {
            k: remaining_timeout(v) for k, v in timeout.items()
        }
    else:
        left = remaining_timeout(None)
        if left is not None:
            request.extensions["timeout"] = dict.fromkeys(
                ("connect", "read", "write", "pool"), left
            )


class Transport(httpx.BaseTransport):
    """An httpx transport that guards, retries and propagates every request.

    ::

        client = httpx.Client(transport=Transport(
            breaker_per_host={"failure_rate_threshold": 0.5},
            retry=retry(on=httpx.TransportError, attempts=3),
            limiter=KeyedRateLimiter("out", rate=50.0, capacity=50),
        ))

    Args:
        transport: the transport that sends (default ``httpx.HTTPTransport()``).
        breaker_per_host: ``True``, a dict of :class:`~tipkit.breaker.CircuitBreaker`
            options, or a callable ``host -> breaker``: one breaker per
            ``host:port``, made on first use. An exception or a 5xx answer is a
            failure; an open breaker raises :class:`~tipkit.errors.CircuitOpenError`.
        bulkhead_per_host: the same, for a :class:`~tipkit.bulkhead.Bulkhead`.
        limiter: a :class:`~tipkit.ratelimit.KeyedRateLimiter` (keyed by
            ``host:port``; raises :class:`~tipkit.errors.RateLimitedError`) or a
            :class:`~tipkit.ratelimit.TokenBucket` (one for every host; may wait).
        retry: a policy made by :func:`tipkit.retry.retry`: its ``attempts``,
            ``timeout``, backoff, budget and ``on=`` (which exceptions) apply.
            Answers in *retry_statuses* are retried too, after the larger of
            the backoff and their ``Retry-After`` (up to *max_retry_after*
            seconds; a longer ask returns the answer). Only *retry_methods*
            (the idempotent ones by default) and requests carrying an
            ``Idempotency-Key`` header are retried. Never sleeps past the
            current deadline. Rejections by the guards above are not retried.
        propagate: write ``traceparent`` (OpenTelemetry's propagators) and the
            ``baggage`` entries ``tipkit.synthetic`` and ``tipkit.deadline_ms``
            (the remaining deadline, rounded down); timeouts are shortened to
            the remaining deadline.

    Thread-safe; sleeps through the retry policy's clock.
    """

    def __init__(
        self, transport: httpx.BaseTransport | None = None, **options: Any
    ) -> None:
        self._transport = transport if transport is not None else httpx.HTTPTransport()
        self.policy = ClientPolicy(**options)

    def __repr__(self) -> str:
        return f"<tipkit.http.Transport {self.policy.describe()}>"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        policy = self.policy
        plan = policy.plan(request.method, request.headers)
        while True:
            try:
                response = self._attempt(request)
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

    def _attempt(self, request: httpx.Request) -> httpx.Response:
        policy = self.policy
        _prepare(policy, request)
        guards = policy.guards(_host(request))
        if not guards:
            return self._transport.handle_request(request)
        try:
            with ExitStack() as stack:
                for guard in guards:
                    stack.enter_context(guard)
                response = self._transport.handle_request(request)
                if response.status_code >= 500:
                    raise ServerFailure(response)
        except ServerFailure as failure:
            response = failure.response
        return response

    def close(self) -> None:
        self._transport.close()


class AsyncTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`Transport` (same options; waits with ``await``).

    The guards' async faces are used (a store-backed guard awaits its store's
    async methods); nothing blocks the event loop.
    """

    def __init__(
        self, transport: httpx.AsyncBaseTransport | None = None, **options: Any
    ) -> None:
        self._transport = (
            transport if transport is not None else httpx.AsyncHTTPTransport()
        )
        self.policy = ClientPolicy(**options)

    def __repr__(self) -> str:
        return f"<tipkit.http.AsyncTransport {self.policy.describe()}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        policy = self.policy
        plan = policy.plan(request.method, request.headers)
        while True:
            try:
                response = await self._attempt(request)
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
                await response.aclose()
            await policy.clock.asleep(wait)

    async def _attempt(self, request: httpx.Request) -> httpx.Response:
        policy = self.policy
        _prepare(policy, request)
        guards = policy.guards(_host(request))
        if not guards:
            return await self._transport.handle_async_request(request)
        try:
            async with AsyncExitStack() as stack:
                for guard in guards:
                    await stack.enter_async_context(guard)
                response = await self._transport.handle_async_request(request)
                if response.status_code >= 500:
                    raise ServerFailure(response)
        except ServerFailure as failure:
            response = failure.response
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()
