"""Web services: ASGI and WSGI middleware (and Django's, in :mod:`tipkit.web.django`).

::

    from tipkit.web import ASGIMiddleware, WSGIMiddleware

    app = ASGIMiddleware(app, flags=flags, limiter=limiter, trust=["10.0.0.0/8"])

Per request the middleware sets the flag evaluation context
(:func:`tipkit.flags.request_context`), honours the incoming deadline and
(from trusted sources) the synthetic mark carried in W3C ``baggage``
(``tipkit.deadline_ms``, ``tipkit.synthetic``: see ``docs/web.md``), answers
``429`` with ``Retry-After`` and the IETF ``RateLimit`` headers, ``503`` on an
open breaker, and traces the request. Needs ``pip install 'tipkit[web]'``.
"""

from __future__ import annotations

from tipkit.web._asgi import ASGIMiddleware
from tipkit.web._trust import SharedSecret, Trust
from tipkit.web._wsgi import WSGIMiddleware

__all__ = ["ASGIMiddleware", "SharedSecret", "Trust", "WSGIMiddleware"]
