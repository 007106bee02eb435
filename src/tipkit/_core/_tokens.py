"""The token-bucket arithmetic, written once.

:class:`Level` refills a bucket lazily and takes or reserves tokens from it. Every
token bucket in tipkit runs on it: :class:`~tipkit.ratelimit.TokenBucket` and
:class:`~tipkit.ratelimit.KeyedRateLimiter` in process, and
:class:`~tipkit.stores.MemoryStore` through :func:`take`. The Redis script
(``tipkit/stores/_redis_lua.py``) mirrors :func:`take` line for line: keep the two in
step.

This module imports nothing from stores, primitives or telemetry: it is the
bottom layer, and the stores re-export :class:`TokenTake` from here.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Level", "TokenTake", "check_bucket_args", "take"]


class TokenTake(NamedTuple):
    """The outcome of taking tokens from a bucket (``Store.take_tokens``).

    Attributes:
        admitted: the tokens were taken (now, or reserved for ``wait`` seconds from now).
        wait: seconds the caller must wait before using reserved tokens (0 when
            they were there).
        tokens: tokens left in the bucket after the operation (negative while
            reservations are outstanding).
        retry_after: when not admitted, seconds until the request could be served;
            0 when admitted.
    """

    admitted: bool
    wait: float
    tokens: float
    retry_after: float


class Level:
    """The level of one token bucket, refilled lazily at ``rate`` up to ``capacity``.

    ``level`` is the tokens held at time ``last`` (negative while waiters hold
    reservations). Not thread-safe: the owner holds its lock around every call,
    and around whatever it must change together with the level (a queue of
    waiters). Never reads a clock: every method takes *now*.
    """

    __slots__ = ("capacity", "last", "level", "rate")

    def __init__(self, rate: float, capacity: float, level: float, last: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = level
        self.last = last

    def __repr__(self) -> str:
        return f"<Level {self.level:g} at {self.last:g} rate={self.rate:g} cap={self.capacity:g}>"

    def take(self, now: float, tokens: float, max_wait: float = 0.0) -> float:
        """Refill to *now*, then take *tokens* if they are there within *max_wait* s.

        Returns the seconds until the tokens are there: ``0.0`` when they are
        now (taken); up to *max_wait* they are taken as a reservation (the level
        goes negative and the caller waits that long); beyond *max_wait* nothing
        is taken and the value is when to retry. A clock that steps back refills
        nothing; a long idle period refills no further than *capacity*.
        """
        level = self.level
        last = self.last
        if now > last:
            level += (now - last) * self.rate
            if level > self.capacity:  # noqa: PLR1730  # min() costs a call on the hot path
                level = self.capacity
            self.last = now
        if level >= tokens:
            self.level = level - tokens
            return 0.0
        wait = (tokens - level) / self.rate
        self.level = level - tokens if wait <= max_wait else level
        return wait

    def at(self, now: float) -> float:
        """Refill to *now* and return the level."""
        self.take(now, 0.0)
        return self.level

    def give_back(self, now: float, tokens: float) -> float:
        """Refill to *now*, return up to *tokens* (never beyond capacity); return how many."""
        level = self.at(now)
        returned = min(tokens, self.capacity - level)
        self.level = level + returned
        return returned

    def full_at(self) -> float:
        """Return when the bucket will be full if nobody takes from it."""
        return self.last + (self.capacity - self.level) / self.rate


def check_bucket_args(
    tokens: float, rate: float, capacity: float, max_wait: float
) -> None:
    """Raise a clear ``ValueError``/``TypeError`` for bad token-bucket arguments."""
    for name, value in (("rate", rate), ("capacity", capacity)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if not value > 0 or value == float("inf"):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if isinstance(tokens, bool) or not isinstance(tokens, int | float):
        raise TypeError(f"tokens must be a number, got {tokens!r}")
    if tokens > capacity:
        raise ValueError(
            f"tokens={tokens!r} can never be served: capacity is {capacity!r}"
        )
    if not max_wait >= 0:
        raise ValueError(f"max_wait must be >= 0, got {max_wait!r}")


def take(  # noqa: PLR0917  # positional on purpose: mirrored by a Lua script
    level: float,
    last: float,
    now: float,
    tokens: float,
    rate: float,
    capacity: float,
    max_wait: float,
) -> tuple[float, TokenTake]:
    """Refill a bucket holding *level* tokens at *last* to *now*, then take *tokens*.

    A negative *tokens* gives tokens back (a cancelled reservation), never beyond
    *capacity*. Returns the new level and the outcome (see :meth:`Level.take`).
    """
    bucket = Level(rate, capacity, level, last)
    if tokens <= 0:
        bucket.give_back(now, -tokens)
        return bucket.level, TokenTake(
            admitted=True, wait=0.0, tokens=bucket.level, retry_after=0.0
        )
    wait = bucket.take(now, tokens, max_wait)
    if wait <= max_wait:
        return bucket.level, TokenTake(
            admitted=True, wait=wait, tokens=bucket.level, retry_after=0.0
        )
    return bucket.level, TokenTake(
        admitted=False, wait=0.0, tokens=bucket.level, retry_after=wait
    )
