"""Testing the FastAPI example with fake flags and the fake clock (pytest style)."""
# ruff: noqa: D103, ANN001, ANN003, ANN201, ANN202

import asyncio

import httpx
import web_fastapi

from tipkit.ratelimit import KeyedRateLimiter
from tipkit.testing import FakeClock, fake_flags
from tipkit.web import ASGIMiddleware


def get(app, path, **kwargs):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.get(path, **kwargs)

    return asyncio.run(go())


def test_new_search_for_a_user_in_the_rollout(monkeypatch):
    # fake_flags: a real Flags over in-memory flags that records evaluations.
    flags = fake_flags({"new-search": True})
    monkeypatch.setattr(web_fastapi, "flags", flags)
    app = ASGIMiddleware(web_fastapi.api, context_from=web_fastapi.context_from)
    response = get(app, "/search?q=tea", headers={"x-user-id": "u1"})
    assert response.json() == {"q": "tea", "engine": "new"}


def test_the_limit_refills_on_the_fake_clock():
    clock = FakeClock()
    limiter = KeyedRateLimiter("api", rate=1.0, capacity=1, clock=clock)
    app = ASGIMiddleware(web_fastapi.api, limiter=limiter)
    assert get(app, "/search?q=a").status_code == 200
    refused = get(app, "/search?q=a")
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "1")
    clock.advance(1.0)  # no sleeping: the bucket refills on the fake clock
    assert get(app, "/search?q=a").status_code == 200
