"""Django: ``MIDDLEWARE = [..., "tipkit.web.django.TipkitMiddleware", ...]``.

Configured by ``settings.TIPKIT``, a dict of the options of
:class:`~tipkit.web.ASGIMiddleware` (each value an object or a dotted path to
one, ``"myapp.flags.flags"``)::

    TIPKIT = {
        "flags": "myapp.flags.flags",
        "context_from": "myapp.flags.context_from",   # gets the HttpRequest
        "limiter": "myapp.limits.per_client",
        "key_from": "myapp.limits.client_key",
        "trust": ["10.0.0.0/8"],
    }

Place it after ``AuthenticationMiddleware`` for the default context to see
``request.user`` (its ``pk`` becomes the targeting key). Works in sync and
async stacks (Django calls it the way the next middleware needs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpResponse
from django.utils.module_loading import import_string

from tipkit.web._policy import Admission, Guarded, Policy, Refusal
from tipkit.web._views import DjangoView

__all__ = ["TipkitMiddleware"]

_OPTIONS = frozenset(
    {
        "flags",
        "context_from",
        "limiter",
        "key_from",
        "breaker",
        "trust",
        "targeting_header",
        "targeting_cookie",
        "rate_limit_headers",
    }
)
_RESOLVED = ("flags", "context_from", "limiter", "key_from", "breaker")


def _policy_from_settings() -> Policy:
    config = dict(getattr(settings, "TIPKIT", {}) or {})
    unknown = set(config) - _OPTIONS
    if unknown:
        raise ValueError(
            f"settings.TIPKIT: unknown option(s) {sorted(unknown)}; "
            f"expected some of {sorted(_OPTIONS)}"
        )
    for name in _RESOLVED:
        if isinstance(config.get(name), str):
            config[name] = import_string(config[name])
    return Policy(**config)


def _response(refusal: Refusal) -> HttpResponse:
    response = HttpResponse(refusal.body, status=refusal.status)
    for key, value in refusal.headers:
        response[key] = value
    return response


class TipkitMiddleware:
    """Django middleware with the options and answers of :class:`~tipkit.web.ASGIMiddleware`."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.policy = _policy_from_settings()
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __repr__(self) -> str:
        return f"<TipkitMiddleware {self.policy.describe()}>"

    def __call__(self, request: Any) -> Any:
        """Handle *request* (a coroutine when the stack below is async)."""
        if self._async:
            return self.__acall__(request)
        decided = self.policy.admit(DjangoView(request), lambda: request)
        if isinstance(decided, Refusal):
            return _response(decided)
        decided.enter()
        response: Any = None
        try:
            breaker = self.policy.breaker
            if breaker is None:
                response = self.get_response(request)
            else:
                outcome = Guarded(self.policy, lambda: response is not None)
                with outcome, breaker:
                    response = self.get_response(request)
                    outcome.answered(response.status_code)
                if outcome.refusal is not None:
                    response = _response(outcome.refusal)
        except BaseException as exc:
            decided.exit(None, exc)
            raise
        return self._finish(decided, response)

    async def __acall__(self, request: Any) -> Any:
        policy = self.policy
        decided = policy.admit(DjangoView(request), lambda: request)
        if isinstance(decided, Refusal):
            return _response(decided)
        decided.enter()
        response: Any = None
        try:
            breaker = policy.breaker
            if breaker is None:
                response = await self.get_response(request)
            else:
                outcome = Guarded(policy, lambda: response is not None)
                with outcome:
                    async with breaker:
                        response = await self.get_response(request)
                        outcome.answered(response.status_code)
                if outcome.refusal is not None:
                    response = _response(outcome.refusal)
        except BaseException as exc:
            decided.exit(None, exc)
            raise
        return self._finish(decided, response)

    @staticmethod
    def _finish(admission: Admission, response: Any) -> Any:
        for key, value in admission.headers:
            response[key] = value
        admission.exit(response.status_code)
        return response
