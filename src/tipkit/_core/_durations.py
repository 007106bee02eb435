"""Durations: seconds as float, timedelta accepted, bad values named."""

from __future__ import annotations

import math
from datetime import timedelta

__all__ = ["to_seconds", "to_seconds_or_none"]


def to_seconds(
    value: float | timedelta, name: str, *, allow_zero: bool = True
) -> float:
    """Return *value* in seconds as a float.

    Raises:
        TypeError: *value* is not a number or a timedelta (``bool`` is refused).
        ValueError: *value* is NaN or infinite, or zero when *allow_zero* is false.
            Negative values are returned for the caller to judge.
    """
    if isinstance(value, timedelta):
        secs = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be seconds (a number) or a timedelta, got {value!r}"
        )
    else:
        secs = float(value)
    if math.isnan(secs) or math.isinf(secs):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if not allow_zero and secs == 0:
        raise ValueError(f"{name} must not be zero")
    return secs


def to_seconds_or_none(value: float | timedelta | None, name: str) -> float | None:
    """Like :func:`to_seconds`, passing ``None`` through."""
    return None if value is None else to_seconds(value, name)
