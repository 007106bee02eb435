"""httpx transports: the sync and async drivers over :class:`ClientPolicy`."""

from __future__ import annotations

from typing import Any

import httpx

from tipkit._core._flow import adrive, drive
from tipkit.http._drive import aguarded, exchange, guarded
from tipkit.http._policy import ClientPolicy, remaining_timeout

__all__ = ["AsyncTransport", "Transport"]


def _host(request: httpx.Request) -> str:
    url = request.url
    return f"{url.host}:{url.port}" if url.port is not None else url.host


def _prepare(policy: ClientPolicy, request: httpx.Request) -> list[Any]:
    """Stamp the headers, shorten the timeouts to the deadline; return the host's guards."""
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
    return policy.guards(_host(request))


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
        plan = self.policy.plan(request.method, request.headers)
        return drive(exchange(plan, self.policy, self, request))  # type: ignore[no-any-return]

    def _attempt(self, request: httpx.Request) -> httpx.Response:
        guards = _prepare(self.policy, request)
        if not guards:
            return self._transport.handle_request(request)
        return guarded(guards, lambda: self._transport.handle_request(request))  # type: ignore[no-any-return]

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
        plan = self.policy.plan(request.method, request.headers)
        return await adrive(exchange(plan, self.policy, self, request))

    async def _aattempt(self, request: httpx.Request) -> httpx.Response:
        guards = _prepare(self.policy, request)
        if not guards:
            return await self._transport.handle_async_request(request)
        return await aguarded(  # type: ignore[no-any-return]
            guards, lambda: self._transport.handle_async_request(request)
        )

    async def aclose(self) -> None:
        await self._transport.aclose()
