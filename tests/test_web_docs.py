"""The Web services page's examples run as written (docs/examples/web_*.py)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
sys.path.insert(0, str(EXAMPLES))

import web_fastapi  # noqa: E402
import web_flask  # noqa: E402
import web_testing  # noqa: E402


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
    asyncio.run(web_fastapi.upstream.aclose())


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
