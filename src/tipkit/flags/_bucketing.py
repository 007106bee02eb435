r"""Deterministic bucketing: the written specification in code.

``bucket(salt, key)`` is ``(murmur3_x86_32(utf8(f"{salt}.{key}"), seed=0) * 100_000) >> 32``
with the hash taken as an unsigned 32-bit integer: an integer in ``[0, 100000)``,
one bucket per thousandth of a percent. The text is hashed as UTF-8; a lone
surrogate (``"\ud800"``, which ``json.loads`` returns for the JSON ``"\ud800"``)
is encoded with ``surrogatepass`` (three bytes, ``ED A0 80``), so every string has
a bucket, and valid text keeps the bytes, and buckets, it always had.

A split's weights are percentages with at most three decimals, converted
exactly (``Decimal``) to thousandths of a percent summing to 100000; variant *i*
owns ``[cum(i-1), cum(i))`` in the order written.
See ``docs/bucketing.md`` for the specification and its test vectors.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

import mmh3

__all__ = [
    "BUCKETS",
    "WeightError",
    "bucket",
    "bucket_of",
    "split_bounds",
    "thousandths",
    "variant_index",
]

BUCKETS = 100_000
"""Buckets per split: one per thousandth of a percent."""

_hash = mmh3.hash


def bucket_of(prefix: str, key: str) -> int:
    """Return the bucket of *key* given the precomputed ``f"{salt}."`` *prefix*.

    This is the bucketing formula, written once: every split, gate, rollout,
    experiment sample and :func:`bucket` goes through it. Never fails and never
    crashes: mmh3 segfaults on a ``str`` it cannot encode as UTF-8 (a lone
    surrogate), so only ASCII text, which always encodes, is handed to it as a
    ``str``; anything else is encoded here first, with ``surrogatepass``
    (``isascii()`` is a flag read: the common case pays ~15 ns). One function
    with no call inside: a Python call is ~5% of a flag evaluation.
    """
    text = prefix + key
    data = text if text.isascii() else text.encode("utf-8", "surrogatepass")
    return (_hash(data, 0, signed=False) * BUCKETS) >> 32


def bucket(salt: str, key: str) -> int:
    """Return the bucket of *key* under *salt*, an integer in ``[0, 100000)``.

    Pure and thread-safe; the same inputs give the same bucket on every platform.
    """
    return bucket_of(f"{salt}.", key)


class WeightError(ValueError):
    """A split weight is not a percentage with at most three decimals."""


def thousandths(weight: object) -> int:
    """Convert a percentage *weight* to thousandths of a percent, exactly.

    The weight is parsed as ``Decimal(str(weight))``, never as a float sum, so
    ``33.333`` is exactly 33333.

    Raises:
        WeightError: *weight* is a bool, not a number, negative, not finite, or
            has more than three decimals.
    """
    if isinstance(weight, bool) or not isinstance(weight, int | float | Decimal):
        raise WeightError(f"a weight must be a number, got {weight!r}")
    try:
        # An int converts exactly without str(), which refuses over 4300 digits.
        dec = Decimal(weight) if isinstance(weight, int) else Decimal(str(weight))
    except InvalidOperation as exc:  # pragma: no cover - str() of a number parses
        raise WeightError(f"a weight must be a number, got {weight!r}") from exc
    if not dec.is_finite():
        raise WeightError(f"a weight must be finite, got {weight!r}")
    if dec < 0:
        raise WeightError(f"a weight must not be negative, got {weight!r}")
    scaled = dec * 1000
    if scaled != scaled.to_integral_value():
        raise WeightError(f"a weight has at most 3 decimals, got {weight!r}")
    return int(scaled)


def split_bounds(weights: Iterable[int]) -> tuple[int, ...]:
    """Return the exclusive upper bound of each variant's bucket range.

    *weights* are thousandths of a percent that sum to :data:`BUCKETS`.
    """
    bounds = []
    total = 0
    for w in weights:
        total += w
        bounds.append(total)
    if total != BUCKETS:
        raise WeightError(f"weights must sum to 100, got {Decimal(total) / 1000}")
    return tuple(bounds)


def variant_index(bounds: tuple[int, ...], bucket_: int) -> int:
    """Return the index of the variant whose range ``[cum(i-1), cum(i))`` holds *bucket_*."""
    return bisect_right(bounds, bucket_)
