"""A streaming latency quantile in bounded memory (hedging's live delay).

Latencies go into a fixed histogram of log-spaced buckets (10% apart, 100 us
to 100 s: 146 counters, whatever the traffic); every ``half_life`` observations
all counts are halved, so the estimate follows the recent past. The quantile is
read from the counts and cached for ``refresh`` observations. Its error is one
bucket: within 10% of the true quantile of the (decayed) sample.
"""

from __future__ import annotations

import math
import threading

__all__ = ["LatencyQuantile", "parse_quantile"]

_LOW = 1e-4
_FACTOR = 1.1
_LOG = math.log(_FACTOR)
_COUNT = int(math.log(100.0 / _LOW) / _LOG) + 2


class LatencyQuantile:
    """The live *q*-quantile of observed latencies, seconds.

    Args:
        q: the quantile, in (0, 1) (0.95 for p95).
        initial: the value until *min_samples* latencies were seen.
        min_samples: observations needed before the estimate is used.
        half_life: observations after which old counts weigh half.

    Thread-safe (one short lock per observation); memory is constant.
    """

    __slots__ = (
        "_cached",
        "_counts",
        "_lock",
        "_seen",
        "_since",
        "_total",
        "half_life",
        "initial",
        "min_samples",
        "q",
        "refresh",
    )

    def __init__(
        self,
        q: float = 0.95,
        *,
        initial: float = 0.1,
        min_samples: int = 20,
        half_life: int = 2000,
        refresh: int = 16,
    ) -> None:
        if not _number_in(q, 0, 1):
            raise ValueError(f"LatencyQuantile: q must be in (0, 1), got {q!r}")
        if not _number_in(initial, -1e-300, math.inf):
            raise ValueError(
                f"LatencyQuantile: initial must be >= 0 seconds, got {initial!r}"
            )
        for arg, value in (
            ("min_samples", min_samples),
            ("half_life", half_life),
            ("refresh", refresh),
        ):
            if not _number_in(value, 0, math.inf) or value != int(value):
                raise ValueError(
                    f"LatencyQuantile: {arg} must be an int >= 1, got {value!r}"
                )
        self.q = float(q)
        self.initial = float(initial)
        self.min_samples = min_samples
        self.half_life = half_life
        self.refresh = refresh
        self._counts = [0.0] * _COUNT
        self._total = 0.0
        self._seen = 0
        self._since = 0
        self._cached = self.initial
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"<LatencyQuantile p{self.q * 100:g}={self.value():.4g}s seen={self._seen}>"
        )

    def observe(self, seconds: float) -> None:
        """Add one latency (negative or NaN values are ignored)."""
        if not seconds >= 0:
            return
        index = (
            0
            if seconds <= _LOW
            else min(_COUNT - 1, int(math.log(seconds / _LOW) / _LOG) + 1)
        )
        with self._lock:
            self._counts[index] += 1.0
            self._total += 1.0
            self._seen += 1
            self._since += 1
            if self._seen % self.half_life == 0:
                self._counts = [c / 2 for c in self._counts]
                self._total /= 2
            if self._seen >= self.min_samples and self._since >= self.refresh:
                self._since = 0
                self._cached = self._compute()

    def _compute(self) -> float:
        rank = self.q * self._total
        running = 0.0
        for index, count in enumerate(self._counts):
            running += count
            if running >= rank:
                # The bucket's upper edge: a conservative (late) estimate.
                return _LOW * _FACTOR**index
        return _LOW * _FACTOR ** (_COUNT - 1)

    def value(self) -> float:
        """Return the current estimate (``initial`` until enough samples)."""
        return self._cached

    @property
    def seen(self) -> int:
        """Latencies observed so far."""
        return self._seen


def _number_in(value: object, low: float, high: float) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and low < value < high
    )


def parse_quantile(text: str) -> float:
    """Return the quantile named by ``"p95"``/``"p99.9"``.

    Raises:
        ValueError: *text* is not ``p`` followed by a percentage in (0, 100).
    """
    given: object = text  # untyped callers pass anything
    if isinstance(given, str) and text.startswith("p"):
        try:
            value = float(text[1:]) / 100
        except ValueError:
            value = math.nan
        if 0 < value < 1:
            return value
    raise ValueError(f"a quantile is written 'p95' or 'p99.9', got {text!r}")
