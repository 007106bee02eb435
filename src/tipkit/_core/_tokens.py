"""The token-bucket arithmetic, written once.

Used by :class:`tipkit.stores.MemoryStore` (and mirrored line for line by the
Redis script), so every backend refills and reserves the same way.
"""

from __future__ import annotations

from tipkit.stores._protocol import TokenTake

__all__ = ["check_bucket_args", "take"]


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


def take(  # noqa: PLR0917  # positional on purpose: a hot-path helper mirrored by a Lua script
    level: float,
    last: float,
    now: float,
    tokens: float,
    rate: float,
    capacity: float,
    max_wait: float,
) -> tuple[float, TokenTake]:
    """Refill a bucket holding *level* tokens at *last* to *now*, then take *tokens*.

    Elapsed time is clamped at 0 (a clock stepping backwards refills nothing) and
    the level at *capacity* (a long idle period or a clock stepping forwards
    cannot overfill). Returns the new level and the outcome.
    """
    elapsed = now - last
    if elapsed > 0:
        level = min(capacity, level + elapsed * rate)
    if tokens <= 0:
        level = min(capacity, level - tokens)
        return level, TokenTake(admitted=True, wait=0.0, tokens=level, retry_after=0.0)
    missing = tokens - level
    if missing <= 0:
        level -= tokens
        return level, TokenTake(admitted=True, wait=0.0, tokens=level, retry_after=0.0)
    wait = missing / rate
    if wait <= max_wait:
        level -= tokens
        return level, TokenTake(admitted=True, wait=wait, tokens=level, retry_after=0.0)
    return level, TokenTake(admitted=False, wait=0.0, tokens=level, retry_after=wait)
