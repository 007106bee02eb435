"""The console's security: the operator token, a signed session and CSRF tokens.

* **Token.** Actions need the console's token (``--token`` or
  ``TIPKIT_CONSOLE_TOKEN``), typed once on the sign-in page and compared in
  constant time. Without a configured token the console is read-only.
* **Session.** Signing in sets an ``HttpOnly``, ``SameSite=Strict`` cookie
  holding the operator's name, the time it was issued and an HMAC-SHA256 over
  both with a key drawn at random when the console starts (a restart signs
  everyone out). It expires after :data:`SESSION_SECONDS`.
* **CSRF.** Every form carries a *signed double-submit* token: a random nonce
  kept in an ``HttpOnly`` cookie, and in a hidden field the same nonce with its
  HMAC. A POST is refused unless the field's signature is good and its nonce is
  the cookie's: a page on another site can neither read the cookie nor forge
  the signature. The ``Origin`` header, when sent, must be the console's own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from tipkit.audit import actor_or_default
from tipkit.clock import Clock

__all__ = [
    "CSRF_COOKIE",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "TOKEN_MIN",
    "Keys",
    "Session",
]

SESSION_COOKIE: Final = "tipkit_console_session"
CSRF_COOKIE: Final = "tipkit_console_csrf"
SESSION_SECONDS: Final = 8 * 3600.0
"""A session lasts one working shift."""
TOKEN_MIN: Final = 16
"""Characters a console token needs at least (``secrets.token_urlsafe()`` gives 43)."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in operator: the name their actions are audited under."""

    actor: str
    issued: float


class Keys:
    """The console's secrets: the operator token and the signing key.

    Args:
        token: the token operators sign in with; ``None`` makes the console
            read-only.
        clock: ``time()`` stamps and expires sessions.

    Raises:
        ValueError: a token shorter than :data:`TOKEN_MIN` characters.

    Thread-safe (immutable after construction).
    """

    __slots__ = ("_key", "_token", "clock")

    def __init__(self, token: str | None, clock: Clock) -> None:
        if token is not None and len(token) < TOKEN_MIN:
            raise ValueError(
                f"a console token needs at least {TOKEN_MIN} characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
        self._token = None if token is None else token.encode()
        self._key = secrets.token_bytes(32)
        self.clock = clock

    def __repr__(self) -> str:
        return f"<Keys read_only={self.read_only}>"

    @property
    def read_only(self) -> bool:
        """Whether no token is configured (then no action is possible)."""
        return self._token is None

    def _sign(self, *parts: str) -> str:
        mac = hmac.new(self._key, "|".join(parts).encode(), hashlib.sha256)
        return mac.hexdigest()

    # -- the token -------------------------------------------------------------------
    def check_token(self, given: str) -> bool:
        """Return whether *given* is the console's token (constant time)."""
        if self._token is None:
            return False
        return hmac.compare_digest(given.encode(), self._token)

    # -- sessions --------------------------------------------------------------------
    def new_session(self, actor: str) -> str:
        """Return the cookie value of a session for *actor* (a checked name).

        Raises:
            ValueError: *actor* is empty or too long.
        """
        name = actor_or_default(actor)
        issued = f"{self.clock.time():.3f}"
        encoded = name.encode().hex()  # cookie-safe: no quoting, no padding
        return f"{encoded}.{issued}.{self._sign('session', name, issued)}"

    def session(self, cookie: str | None) -> Session | None:
        """Return the session *cookie* proves, or ``None`` (absent, forged, expired)."""
        if not cookie or self._token is None:
            return None
        encoded, _, rest = cookie.partition(".")
        issued, _, sig = rest.rpartition(".")
        try:
            name = bytes.fromhex(encoded).decode()
            at = float(issued)
        except ValueError:  # UnicodeDecodeError is a ValueError
            return None
        if not hmac.compare_digest(sig, self._sign("session", name, issued)):
            return None
        if not 0 <= self.clock.time() - at < SESSION_SECONDS:
            return None
        return Session(name, at)

    # -- CSRF ------------------------------------------------------------------------
    @staticmethod
    def new_nonce() -> str:
        """Return a fresh CSRF nonce (for the cookie)."""
        return secrets.token_hex(16)

    def csrf_field(self, nonce: str) -> str:
        """Return the hidden-field value that goes with cookie *nonce*."""
        return f"{nonce}.{self._sign('csrf', nonce)}"

    def check_csrf(self, cookie: str | None, field: str | None) -> bool:
        """Return whether form *field* is signed by this console and matches *cookie*."""
        if not cookie or not field:
            return False
        nonce, _, sig = field.partition(".")
        return hmac.compare_digest(nonce, cookie) and hmac.compare_digest(
            sig, self._sign("csrf", nonce)
        )
