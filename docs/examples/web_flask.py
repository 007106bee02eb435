"""A Flask service: per-request flags, a per-client 429, a guarded outgoing call."""
# ruff: noqa: D103

import flask
import requests

from tipkit.flags import EvaluationContext, Flags
from tipkit.http import Adapter
from tipkit.ratelimit import KeyedRateLimiter
from tipkit.retry import retry
from tipkit.web import WSGIMiddleware

flags = Flags.from_dict(
    {
        "version": 1,
        "flags": {
            "new-checkout": {
                "variants": {"on": True, "off": False},
                "default_variant": "off",
                "rules": [
                    {
                        "if": {"attr": "plan", "op": "eq", "value": "pro"},
                        "serve": {"split": {"on": 10, "off": 90}},
                    }
                ],
            }
        },
    }
)

session = requests.Session()
session.mount(
    "https://",
    Adapter(
        breaker_per_host=True, retry=retry(on=requests.ConnectionError, attempts=3)
    ),
)

app = flask.Flask(__name__)


@app.get("/checkout")
def checkout() -> dict[str, object]:
    return {"new": flags.is_enabled("new-checkout")}


app.wsgi_app = WSGIMiddleware(  # type: ignore[method-assign]
    app.wsgi_app,
    flags=flags,
    context_from=lambda req: EvaluationContext(
        req.headers.get("x-user-id"), {"plan": req.headers.get("x-plan", "free")}
    ),
    limiter=KeyedRateLimiter("api", rate=5.0, capacity=10),
    key_from=lambda req: req.remote_addr,
)
# Run it:  flask --app web_flask run   (or any WSGI server: gunicorn web_flask:app)
