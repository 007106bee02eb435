"""Fallbacks: answer with a value when a guard refuses, instead of raising.

::

    @fallback(lambda exc: cached_price(), name="price")
    @breaker
    def price(): ...

    breaker = CircuitBreaker("price", fallback=lambda exc: cached_price())  # the same
    price_guard = compose(breaker, limiter, fallback=[])  # on a composition

A fallback is a value, or a synchronous function of the exception that returns
one. By default it answers only tipkit's own refusals
(:class:`~tipkit.errors.RejectedError`: open breaker, rate limited, bulkhead or
adaptive limit full), never the dependency's errors: those are the caller's
business unless it says so with ``fallback_on=``. ``retry(on=...)`` keeps its
meaning (what to retry); ``fallback_on=`` is what to answer for.

Every answered error is counted (``tipkit.fallback.calls``, by error type) and
published as :class:`FallbackUsed`. A fallback cannot be a ``with`` block (a
block has no value to replace): use it as a decorator, ``call``/``acall``, or
on :func:`~tipkit.compose`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tipkit._core._fallback import (
    FALLBACK_CALLS,
    FALLBACK_NAME,
    NO_FALLBACK,
    ExcTypes,
    Fallback,
    FallbackUsed,
)
from tipkit.errors import RejectedError

__all__ = [
    "FALLBACK_CALLS",
    "FALLBACK_NAME",
    "NO_FALLBACK",
    "ExcTypes",
    "Fallback",
    "FallbackUsed",
    "fallback",
]

V = TypeVar("V")


def fallback(
    value: V | Callable[[Exception], V],
    *,
    fallback_on: ExcTypes = RejectedError,
    name: str = "fallback",
) -> Fallback[V]:
    """Return a guard that answers *fallback_on* errors with *value*.

    Args:
        value: the value returned instead of raising, or a synchronous function
            ``(exc) -> value`` (to return a callable itself, wrap it:
            ``lambda exc: fn``).
        fallback_on: the exception types answered (default:
            :class:`~tipkit.errors.RejectedError`, tipkit's own refusals).
        name: names the fallback in metrics and events.

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
    """
    return Fallback(value, fallback_on, name)
