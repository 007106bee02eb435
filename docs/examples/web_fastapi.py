"""A FastAPI service: a kill switch, a 10% rollout, a guarded outgoing call, a 429."""
# ruff: noqa: D103

import httpx
from fastapi import FastAPI, Request

from tipkit.flags import EvaluationContext, Flags
from tipkit.http import AsyncTransport
from tipkit.ratelimit import KeyedRateLimiter
from tipkit.retry import retry
from tipkit.web import ASGIMiddleware

flags = Flags.from_dict(
    {
        "version": 1,
        "flags": {
            "payments-enabled": {  # a kill switch: flags.kill("payments-enabled")
                "variants": {"on": True, "off": False},
                "default_variant": "on",
                "off_variant": "off",  # what a kill serves
            },
            "new-search": {  # a 10% rollout, by user
                "variants": {"on": True, "off": False},
                "default_variant": "off",
                "fallthrough": {"split": {"on": 10, "off": 90}},
            },
        },
    }
)

# One breaker per upstream host, retries of idempotent calls honouring Retry-After.
upstream = httpx.AsyncClient(
    transport=AsyncTransport(
        breaker_per_host={"minimum_calls": 20, "open_duration": 30.0},
        retry=retry(on=httpx.TransportError, attempts=3),
    ),
    timeout=5.0,
)

api = FastAPI()


@api.get("/search")
async def search(q: str) -> dict[str, object]:
    # No context passed: the middleware set this request's context.
    engine = "new" if await flags.ais_enabled("new-search") else "old"
    return {"q": q, "engine": engine}


@api.post("/pay")
async def pay() -> dict[str, object]:
    if not flags.is_enabled("payments-enabled", default=True):
        return {"status": "payments are paused"}
    return {"status": "paid"}


def context_from(request: Request) -> EvaluationContext:
    return EvaluationContext(
        request.headers.get("x-user-id"),
        {"plan": request.headers.get("x-plan", "free")},
    )


app = ASGIMiddleware(
    api,
    flags=flags,
    context_from=context_from,
    limiter=KeyedRateLimiter("api", rate=10.0, capacity=20),  # 429 + Retry-After
    key_from=lambda request: request.client.host,
    trust=["10.0.0.0/8"],  # who may mark traffic synthetic
)
# Run it:  uvicorn web_fastapi:app
