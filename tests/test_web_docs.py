"""The Web services page's examples run as written (docs/examples/web_*.py)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
sys.path.insert(0, str(EXAMPLES))
sys.path.insert(0, str(Path(__file__).parent))

import web_fastapi  # noqa: E402
import web_flask  # noqa: E402
import web_testing  # noqa: E402

from tipkit.telemetry._propagation import parse  # noqa: E402
from web_servers import uvicorn_server, wsgi_server  # noqa: E402


def test_fastapi_example_serves_and_limits():
    """The FastAPI example answers, sets the context, and limits per client."""

    async def go() -> list[httpx.Response]:
        # The example's limiter runs on the real clock (10/s, bursts of 20): keep
        # asking until it refuses, so a slow machine's refill cannot hide the 429.
        transport = httpx.ASGITransport(app=web_fastapi.app, client=("10.9.9.9", 1))
        got: list[httpx.Response] = []
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            while len(got) < 2000 and (not got or got[-1].status_code != 429):
                got.append(await c.get("/search?q=x", headers={"x-user-id": "u1"}))
        return got

    responses = asyncio.run(go())
    assert (
        "old" == responses[0].json()["engine"] or "new" == responses[0].json()["engine"]
    )
    assert (200, 429) == (responses[0].status_code, responses[-1].status_code)
    assert len(responses) >= 21  # the burst of 20 was served first
    assert int(responses[-1].headers["Retry-After"]) >= 1


def test_fastapi_example_kill_switch():
    """Killing payments-enabled pauses payments at once."""
    app = web_fastapi.app

    async def pay() -> dict[str, object]:
        transport = httpx.ASGITransport(app=app, client=("10.0.0.8", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return (await c.post("/pay")).json()

    before = asyncio.run(pay())
    web_fastapi.flags.kill("payments-enabled")
    try:
        after = asyncio.run(pay())
    finally:
        web_fastapi.flags.revive("payments-enabled")
    assert ({"status": "paid"}, {"status": "payments are paused"}) == (before, after)


def test_flask_example_rollout_and_limit():
    """The Flask example: free users never get the new checkout; the 11th call is a 429."""
    client = web_flask.app.test_client()
    codes = [client.get("/checkout", headers={"x-user-id": f"u{i}"}) for i in range(11)]
    assert [False] * 10 == [r.json["new"] for r in codes[:10]]
    assert 429 == codes[-1].status_code


@pytest.mark.parametrize(
    "test",
    [
        web_testing.test_new_search_for_a_user_in_the_rollout,
        web_testing.test_the_limit_refills_on_the_fake_clock,
    ],
)
def test_testing_section_examples_pass(test, monkeypatch):
    """The testing section's tests pass as written."""
    if "monkeypatch" in test.__code__.co_varnames:
        test(monkeypatch)
    else:
        test()


def test_fastapi_example_calls_its_upstream_and_passes_the_marks_on(monkeypatch):
    """/price calls a real upstream through the guarded client; deadline and mark travel."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    seen: list[str | None] = []

    async def rate(request: object) -> JSONResponse:
        seen.append(request.headers.get("baggage"))  # type: ignore[attr-defined]
        return JSONResponse({"rate": 1.25})

    rates = Starlette(routes=[Route("/rate", rate)])

    async def go(url: str) -> tuple[dict[str, object], dict[str, object]]:
        transport = httpx.ASGITransport(app=web_fastapi.app, client=("10.1.2.3", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            headers = {"baggage": "tipkit.synthetic=1,tipkit.deadline_ms=4000"}
            priced = (await c.get("/price?amount=8", headers=headers)).json()
            monkeypatch.setattr(web_fastapi, "RATES", f"{url}/missing")
            degraded = (await c.get("/price?amount=8")).json()
        await web_fastapi.upstream.aclose()
        return priced, degraded

    with uvicorn_server(rates) as url:
        monkeypatch.setattr(web_fastapi, "RATES", url)
        priced, degraded = asyncio.run(go(url))
    marks = parse(seen[0])
    assert {"amount": 10.0, "currency": "USD"} == priced
    assert {"amount": 8.0, "currency": "EUR"} == degraded  # a 404: no conversion
    assert (1, True) == (len(seen), marks.synthetic)
    assert marks.deadline_ms is not None
    assert 0 < marks.deadline_ms <= 4000


def test_flask_example_calls_its_upstream_and_passes_the_deadline_on(monkeypatch):
    """/stock/<item> calls a real upstream through the Adapter; the deadline travels."""
    import flask

    seen: list[str | None] = []
    stock = flask.Flask("stock")

    @stock.get("/items/<item>")
    def item(item: str) -> dict[str, object]:
        seen.append(flask.request.headers.get("baggage"))
        return {"count": 3 if item == "tea" else 0}

    client = web_flask.app.test_client()
    client.environ_base["REMOTE_ADDR"] = (
        "10.7.7.7"  # its own limit: others spent theirs
    )
    with wsgi_server(stock) as url:
        monkeypatch.setattr(web_flask, "STOCK", url)
        tea = client.get("/stock/tea", headers={"baggage": "tipkit.deadline_ms=3000"})
        cake = client.get("/stock/cake", headers={"x-user-id": "u2"})
    deadline_ms = parse(seen[0]).deadline_ms
    assert ({"item": "tea", "in_stock": True}, {"item": "cake", "in_stock": False}) == (
        tea.json,
        cake.json,
    )
    assert deadline_ms is not None
    assert 0 < deadline_ms <= 3000
