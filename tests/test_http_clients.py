"""Outgoing HTTP through tipkit: httpx (sync, async) and requests, against a real server."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from tipkit.deadline import deadline
from tipkit.errors import CircuitOpenError, RateLimitedError
from tipkit.http import Adapter, AsyncTransport, Transport, retry_after_seconds
from tipkit.ratelimit import KeyedRateLimiter
from tipkit.retry import retry
from tipkit.telemetry import synthetic
from tipkit.testing import FakeClock

sys.path.insert(0, str(Path(__file__).parent))
from web_servers import wsgi_server

_ids = itertools.count()


def _server_app() -> Any:
    import flask

    app = flask.Flask("upstream")
    calls: dict[str, int] = {}
    lock = threading.Lock()

    @app.route("/flaky/<token>/<int:fails>/<int:status>", methods=["GET", "POST"])
    def flaky(token: str, fails: int, status: int) -> Any:
        with lock:
            calls[token] = calls.get(token, 0) + 1
            n = calls[token]
        if n <= fails:
            return flask.Response("later", status=status, headers={"Retry-After": "2"})
        return flask.jsonify(calls=n)

    @app.get("/echo")
    def echo() -> Any:
        return flask.jsonify(dict(flask.request.headers))

    return app


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with wsgi_server(_server_app()) as base:
        yield base


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def flaky(url: str, fails: int, status: int = 503) -> str:
    return f"{url}/flaky/t{next(_ids)}/{fails}/{status}"


def test_retry_honours_retry_after(url, clock):
    """A 503 with Retry-After: 2 is retried after 2 s (on the retry's clock)."""
    policy = retry(on=httpx.TransportError, attempts=3, wait_initial=0.1, clock=clock)
    with httpx.Client(transport=Transport(retry=policy)) as client:
        response = client.get(flaky(url, 2))
    assert (200, 3, [2.0, 2.0]) == (
        response.status_code,
        response.json()["calls"],
        clock.sleeps,
    )


def test_gives_up_after_the_attempts_and_returns_the_last_answer(url, clock):
    """Out of attempts: the last 503 is returned, not raised."""
    policy = retry(on=httpx.TransportError, attempts=2, clock=clock)
    with httpx.Client(transport=Transport(retry=policy)) as client:
        response = client.get(flaky(url, 5))
    assert 503 == response.status_code


def test_post_is_not_retried_unless_told(url, clock):
    """POST is not idempotent: no retry, unless it carries an Idempotency-Key."""
    policy = retry(on=httpx.TransportError, attempts=3, clock=clock)
    with httpx.Client(transport=Transport(retry=policy)) as client:
        plain = client.post(flaky(url, 1))
        keyed = client.post(flaky(url, 1), headers={"Idempotency-Key": "k1"})
    assert (503, 200) == (plain.status_code, keyed.status_code)


def test_retry_methods_opt_in(url, clock):
    """retry_methods= makes POST retried."""
    policy = retry(on=httpx.TransportError, attempts=3, clock=clock)
    transport = Transport(retry=policy, retry_methods={"GET", "POST"})
    with httpx.Client(transport=transport) as client:
        assert 200 == client.post(flaky(url, 1)).status_code


def test_no_retry_past_the_deadline(url, clock):
    """A Retry-After longer than the deadline's time left returns the answer at once."""
    policy = retry(on=httpx.TransportError, attempts=3, clock=clock)
    with (
        httpx.Client(transport=Transport(retry=policy)) as client,
        deadline(1.0, clock=clock),
    ):
        response = client.get(flaky(url, 1))
    assert (503, []) == (response.status_code, clock.sleeps)


def test_breaker_per_host_opens_on_5xx(url, clock):
    """5xx answers count as failures of the host's breaker, which then refuses."""
    transport = Transport(
        breaker_per_host={"minimum_calls": 2, "open_duration": 10.0, "clock": clock}
    )
    with httpx.Client(transport=transport) as client:
        codes = [client.get(flaky(url, 9, 500)).status_code for _ in range(2)]
        with pytest.raises(CircuitOpenError):
            client.get(f"{url}/echo")
    assert [500, 500] == codes


def test_keyed_limiter_per_host(url, clock):
    """A KeyedRateLimiter limits each host; over it the request raises."""
    limiter = KeyedRateLimiter("out", rate=1.0, capacity=1, clock=clock)
    with httpx.Client(transport=Transport(limiter=limiter)) as client:
        client.get(f"{url}/echo")
        with pytest.raises(RateLimitedError):
            client.get(f"{url}/echo")


def test_propagates_synthetic_mark_and_deadline(url):
    """Inside synthetic() and a deadline, the request carries both as baggage."""
    with httpx.Client(transport=Transport()) as client, synthetic(), deadline(5.0):
        headers = client.get(
            f"{url}/echo", headers={"baggage": "tipkit.synthetic=0,a=b"}
        ).json()
    entries = dict(e.split("=") for e in headers["Baggage"].split(","))
    assert ("1", "b") == (entries["tipkit.synthetic"], entries["a"])
    assert 0 < int(entries["tipkit.deadline_ms"]) <= 5000


def test_nothing_added_outside_any_scope(url):
    """Outside synthetic() and deadlines no tipkit baggage is sent."""
    with httpx.Client(transport=Transport()) as client:
        headers = client.get(f"{url}/echo").json()
    assert "Baggage" not in headers


def test_async_transport(url, clock):
    """AsyncTransport retries with await clock.asleep and propagates."""
    policy = retry(on=httpx.TransportError, attempts=3, clock=clock)

    async def go() -> tuple[int, str]:
        async with httpx.AsyncClient(transport=AsyncTransport(retry=policy)) as client:
            first = await client.get(flaky(url, 1))
            with synthetic():
                echo = (await client.get(f"{url}/echo")).json()
        return first.status_code, echo["Baggage"]

    assert ((200, "tipkit.synthetic=1"), [2.0]) == (asyncio.run(go()), clock.sleeps)


def test_requests_adapter(url, clock):
    """The requests adapter retries with Retry-After and propagates."""
    session = requests.Session()
    session.mount(
        "http://",
        Adapter(retry=retry(on=requests.ConnectionError, attempts=3, clock=clock)),
    )
    response = session.get(flaky(url, 1), timeout=30)
    with synthetic():
        echo = session.get(f"{url}/echo", timeout=30).json()
    assert (200, [2.0], "tipkit.synthetic=1") == (
        response.status_code,
        clock.sleeps,
        echo["Baggage"],
    )


def test_retry_after_parses_dates_and_seconds():
    """Retry-After is a number of seconds or an HTTP date; junk is None."""
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert [5.0, 30.0, None, None] == [
        retry_after_seconds("5"),
        retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now),
        retry_after_seconds("soon"),
        retry_after_seconds(""),
    ]


def test_bad_options_are_refused():
    """A breaker option of another kind is a TypeError naming it."""
    with pytest.raises(TypeError, match="breaker_per_host"):
        Transport(breaker_per_host=3)


def _refusing(calls: list[int]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    return httpx.MockTransport(handler)


def test_transport_errors_are_retried_then_raised_sync_and_async(clock):
    """A transport error is retried as the policy says, then raised (both drivers)."""
    outcomes = []
    for run in ("sync", "async"):
        calls: list[int] = []
        options = {"retry": retry(on=httpx.TransportError, attempts=3, clock=clock)}
        if run == "sync":
            client = httpx.Client(transport=Transport(_refusing(calls), **options))
            with pytest.raises(httpx.ConnectError), client:
                client.get("http://upstream.test/x")
        else:

            async def go(calls: list[int] = calls, options: Any = options) -> None:
                transport = AsyncTransport(_refusing(calls), **options)
                async with httpx.AsyncClient(transport=transport) as client:
                    await client.get("http://upstream.test/x")

            with pytest.raises(httpx.ConnectError):
                asyncio.run(go())
        outcomes.append(len(calls))
    assert ([3, 3], 4) == (outcomes, len(clock.sleeps))
