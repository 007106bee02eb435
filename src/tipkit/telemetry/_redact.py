"""The PII rules for log records, the same as for spans: exception text stays home.

Spans export an exception's type, never its message or traceback text, unless
``traced(exception_messages=True)``. Every record the ``tipkit`` logger writes
follows the same rule through :class:`RedactingFilter`, installed on that logger
when :mod:`tipkit.telemetry` is imported:

* an exception attached to the record (``exc_info``) keeps its traceback's
  locations (file, line and function names; not the source lines, which can
  quote data) but each message in the chain is replaced by
  ``<redacted sha256:0123abcd>``: the type and a short hash of the text, so
  equal errors can still be told apart and grouped;
* an exception passed as a ``%s`` argument becomes ``ValueError#0123abcd``.

:func:`configure_logging` with ``log_exception_text=True`` lets the text through
(a service that keeps its logs where personal data may go).

"Production mode" (``TIPKIT_ENV=production``, or ``deployment.environment`` /
``deployment.environment.name`` = ``production`` in ``OTEL_RESOURCE_ATTRIBUTES``)
makes opt-ins that export data, such as ``traced(record_args=...)``, warn at
decoration time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path
from types import FrameType
from typing import Final

__all__ = [
    "RedactingFilter",
    "configure_logging",
    "in_production",
    "summary",
    "warn_in_production",
]

_PRODUCTION: Final = frozenset({"production", "prod"})
_TIPKIT_DIR: Final = str(Path(__file__).resolve().parent.parent)


def in_production() -> bool:
    """Return whether this process says it runs in production (read from the environment)."""
    if os.environ.get("TIPKIT_ENV", "").strip().lower() in _PRODUCTION:
        return True
    for item in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = item.partition("=")
        if key.strip() in ("deployment.environment", "deployment.environment.name"):
            return value.strip().lower() in _PRODUCTION
    return False


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def summary(exc: BaseException) -> str:
    """Return ``<type>#<hash of the message>``: what a log record may say of *exc*."""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else cls.__name__
    return f"{name}#{_digest(str(exc))}"


def _redacted_traceback(exc: BaseException) -> str:
    """Format *exc* and its chain as ``logging`` would, with every message hashed."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            link = "\nThe above exception was the direct cause of the following exception:\n\n"
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            link = "\nDuring handling of the above exception, another exception occurred:\n\n"
            current = current.__context__
        else:
            current = None
    # Oldest first, as Python prints a chain; chain[i]'s link leads to chain[i - 1].
    parts: list[str] = []
    for i in range(len(chain) - 1, -1, -1):
        error, link = chain[i]
        parts.append("Traceback (most recent call last):\n")
        # Locations only: a source line can quote data (an f-string, a literal).
        parts.extend(
            f'  File "{f.filename}", line {f.lineno}, in {f.name}\n'
            for f in traceback.extract_tb(error.__traceback__)
        )
        cls = type(error)
        parts.append(
            f"{cls.__module__}.{cls.__qualname__}: "
            f"<redacted sha256:{_digest(str(error))}>\n"
        )
        if i > 0:
            parts.append(link)
    return "".join(parts).rstrip("\n")


class RedactingFilter(logging.Filter):
    """Hash the exception text of every record on the ``tipkit`` logger (never drops one).

    Thread-safe: it rewrites the record it is given and keeps no state but its
    ``allow_text`` switch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.allow_text = False

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact *record* in place unless exception text is allowed; keep it."""
        if self.allow_text:
            return True
        info = record.exc_info
        if info and info[1] is not None:
            record.exc_text = _redacted_traceback(info[1])
            record.exc_info = None
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, BaseException) for a in args):
            record.args = tuple(
                summary(a) if isinstance(a, BaseException) else a for a in args
            )
        return True


FILTER: Final = RedactingFilter()
_logger = logging.getLogger("tipkit")
if FILTER not in _logger.filters:  # pragma: no branch - imported once
    _logger.addFilter(FILTER)


def configure_logging(*, log_exception_text: bool = False) -> None:
    """Set whether tipkit's log records may carry exception messages and their text.

    Off by default: exception messages of user code (a comparator, a listener,
    a provider) can carry personal data, so records keep the traceback's code
    locations and the exception type, and replace each message by a hash.
    Thread-safe; affects every record the ``tipkit`` logger writes from now on.
    """
    FILTER.allow_text = bool(log_exception_text)


def warn_in_production(what: str) -> None:
    """Warn (at the first frame outside tipkit) that *what* exports data in production."""
    if not in_production():
        return
    level = 2  # stacklevel 2 is our caller, _getframe(1)
    frame: FrameType | None = sys._getframe(1)  # the caller's line, whatever its depth
    while frame is not None and frame.f_code.co_filename.startswith(_TIPKIT_DIR):
        level += 1
        frame = frame.f_back
    warnings.warn(what, UserWarning, stacklevel=level)


def hash_context_id(target: str, key: bytes | None = None) -> str:
    """Return the exported form of a targeting key: 32 hex digits.

    HMAC-SHA-256 with *key* when one is given, else plain SHA-256. A plain hash
    of a guessable id (an e-mail address, a sequential user id) can be reversed by
    hashing candidates: pass a secret *key* when that matters.
    """
    data = target.encode("utf-8", "surrogatepass")  # a lone surrogate must not raise
    if key is None:
        return hashlib.sha256(data).hexdigest()[:32]
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:32]
