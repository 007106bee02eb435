"""The one wire format for what tipkit carries from service to service.

Two W3C ``baggage`` entries (https://www.w3.org/TR/baggage/)::

    baggage: tipkit.synthetic=1,tipkit.deadline_ms=850

* ``tipkit.synthetic=1``: the request is synthetic (test) traffic. A receiver
  honours it only from a source it trusts (the web middleware's ``trust=``);
* ``tipkit.deadline_ms=<n>``: the milliseconds the caller had left when it sent
  the request (an integer, rounded down so a receiver never gets more time than
  the sender had). A relative budget, not a timestamp: hosts' clocks need not agree.

:func:`parse` reads them from incoming ``baggage`` header values and never
raises: a malformed entry is ignored with a debug log line on the ``tipkit``
logger; limits keep a hostile header cheap (W3C's 8192 bytes and 180 entries).
:func:`merge` writes them into an outgoing ``baggage`` value, dropping any
``tipkit.*`` entries already there (an incoming mark is never forwarded as is:
each hop states its own). :func:`outgoing` states the current context's mark
and deadline. The web middleware, the HTTP clients and the telemetry all use
this module, so the format is written down once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Final, NamedTuple
from urllib.parse import unquote

from tipkit._core import _scope

__all__ = [
    "DEADLINE_MS",
    "MAX_BAGGAGE_BYTES",
    "MAX_DEADLINE_MS",
    "SYNTHETIC",
    "Marks",
    "merge",
    "outgoing",
    "parse",
]

logger = logging.getLogger("tipkit")

SYNTHETIC: Final = "tipkit.synthetic"
DEADLINE_MS: Final = "tipkit.deadline_ms"
MAX_BAGGAGE_BYTES: Final = 8192
"""Longer ``baggage`` values are ignored whole (the W3C limit a sender must respect)."""
MAX_ENTRIES: Final = 180
MAX_DEADLINE_MS: Final = 86_400_000
"""A budget longer than a day is treated as malformed and ignored."""
_PREFIX: Final = "tipkit."


class Marks(NamedTuple):
    """What an incoming request said: its synthetic mark and remaining budget."""

    synthetic: bool
    deadline_ms: int | None

    @property
    def deadline_seconds(self) -> float | None:
        """The remaining budget in seconds, or ``None``."""
        return None if self.deadline_ms is None else self.deadline_ms / 1000.0


NO_MARKS: Final = Marks(synthetic=False, deadline_ms=None)


def _entries(values: Iterable[str]) -> Iterable[tuple[str, str]]:
    count = 0
    for value in values:
        for member in value.split(","):
            count += 1
            if count > MAX_ENTRIES:
                logger.debug("tipkit: baggage has more than %d entries", MAX_ENTRIES)
                return
            key, eq, rest = member.partition("=")
            if not eq:
                if key.strip().startswith(_PREFIX):
                    logger.debug("tipkit: ignored baggage entry %r", key.strip()[:40])
                continue
            yield key.strip(), rest.partition(";")[0].strip()


def parse(values: str | Iterable[str] | None) -> Marks:
    """Return the tipkit marks in incoming ``baggage`` header value(s). Never raises.

    Several values (repeated headers) are read as one list. A value over
    :data:`MAX_BAGGAGE_BYTES` is ignored whole; a malformed tipkit entry is
    ignored with a debug log; other entries are not looked at.
    """
    if values is None:
        return NO_MARKS
    if isinstance(values, str):
        values = (values,)
    values = tuple(values)
    if sum(len(v) for v in values) > MAX_BAGGAGE_BYTES:
        logger.debug("tipkit: baggage longer than %d bytes ignored", MAX_BAGGAGE_BYTES)
        return NO_MARKS
    synthetic = False
    deadline_ms: int | None = None
    for key, raw in _entries(values):
        if key == SYNTHETIC:
            value = unquote(raw)
            if value == "1":
                synthetic = True
            else:
                logger.debug("tipkit: ignored baggage %s=%r", SYNTHETIC, raw[:40])
        elif key == DEADLINE_MS:
            deadline_ms = _deadline_ms(unquote(raw))
    return Marks(synthetic, deadline_ms)


def _deadline_ms(value: str) -> int | None:
    if value.isascii() and value.isdigit() and len(value) <= 9:
        ms = int(value)
        if ms <= MAX_DEADLINE_MS:
            return ms
    logger.debug("tipkit: ignored baggage %s=%r", DEADLINE_MS, value[:40])
    return None


def merge(existing: str | None, *, synthetic: bool, deadline_ms: int | None) -> str:
    """Return a ``baggage`` value: *existing*'s other entries plus tipkit's own.

    Entries of *existing* whose key starts with ``tipkit.`` are dropped. Returns
    ``""`` when there is nothing to send.
    """
    kept: list[str] = []
    if existing:
        for member in existing.split(","):
            member = member.strip()  # noqa: PLW2901  # the stripped member is the member
            if member and not member.partition("=")[0].strip().startswith(_PREFIX):
                kept.append(member)
    if synthetic:
        kept.append(f"{SYNTHETIC}=1")
    if deadline_ms is not None:
        kept.append(f"{DEADLINE_MS}={max(0, deadline_ms)}")
    return ",".join(kept)


def current_marks() -> Marks:
    """Return the current context's synthetic mark and remaining deadline (in ms).

    The remaining time is rounded down: the next hop never gets more time
    than this one has. Reads the deadline's clock.
    """
    node = _scope.top()
    if node is None:
        return NO_MARKS
    dl = node[3]
    ms = None if dl is None else max(0, math.floor(dl.remaining() * 1000.0))
    return Marks(node[4] is not None, ms)


def outgoing(existing: str | None) -> str:
    """Return the ``baggage`` value for an outgoing request made in this context."""
    marks = current_marks()
    return merge(existing, synthetic=marks.synthetic, deadline_ms=marks.deadline_ms)
