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

__all__ = [
    "LatencyQuantile",
    "QuantileSketch",
    "parse_quantile",
    "uniform_cdf_radius",
]

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


# -- a sketch for always-valid quantile bounds (the rollout's QuantileCheck) -----

_SK_LOW = 1e-5  # seconds: 10 us
_SK_FACTOR = 1.02
_SK_LOG = math.log(_SK_FACTOR)
_SK_COUNT = int(math.log(1e3 / _SK_LOW) / _SK_LOG) + 2  # to 1,000 s: 932 buckets


class QuantileSketch:
    """Every value counted in log-spaced buckets 2 % apart (10 us to 1,000 s); no decay.

    Unlike :class:`LatencyQuantile` it forgets nothing, so its counts are a
    sample's empirical distribution up to bucket resolution, and it reads a
    quantile as an interval that *contains* the sample's quantile: the lower
    edge and the upper edge of the bucket it falls in. Values below 10 us
    share the first bucket ``[0, 10 us]``, above 1,000 s the last one
    ``(1000 s, inf)``. Mergeable (counts add). Not thread-safe: the judge's
    caller serialises access.
    """

    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts = [0] * _SK_COUNT
        self.n = 0

    def __repr__(self) -> str:
        return f"<QuantileSketch n={self.n}>"

    def add(self, value: float) -> None:
        """Count one value (NaN is ignored; negative values count as 0)."""
        if value != value:  # NaN  # noqa: PLR0124
            return
        self.counts[
            0
            if value <= _SK_LOW
            else min(_SK_COUNT - 1, int(math.log(value / _SK_LOW) / _SK_LOG) + 1)
        ] += 1
        self.n += 1

    def merge(self, other: QuantileSketch) -> None:
        """Add *other*'s counts to these."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.n += other.n

    def bounds(self, p: float) -> tuple[float, float]:
        """Return ``(low, high)`` around the sample's *p*-quantile (``p`` in [0, 1]).

        The sample quantile is the smallest value with at least ``ceil(p n)``
        values at or below it; ``p <= 0`` gives ``(0, 0)``, ``p > 1`` or an
        empty sketch ``(0, inf)``.
        """
        if self.n == 0 or p > 1.0:
            return 0.0, math.inf
        if p <= 0.0:
            return 0.0, 0.0
        rank = max(1, math.ceil(p * self.n - 1e-9))
        running = 0
        for index, count in enumerate(self.counts):
            running += count
            if running >= rank:
                return _sk_edges(index)
        return _sk_edges(_SK_COUNT - 1)  # pragma: no cover - rank <= n always reached


def _sk_edges(index: int) -> tuple[float, float]:
    if index == 0:
        return 0.0, _SK_LOW
    high = math.inf if index == _SK_COUNT - 1 else _SK_LOW * _SK_FACTOR**index
    return _SK_LOW * _SK_FACTOR ** (index - 1), high


def uniform_cdf_radius(n: int, alpha: float) -> float:
    """Return ``eps``: ``sup |F_n - F| <= eps`` at every ``n`` at once, w.p. ``1 - alpha``.

    The time-uniform Dvoretzky-Kiefer-Wolfowitz inequality of Howard & Ramdas
    ("Sequential estimation of quantiles with applications to A/B-testing and
    best-arm identification", Bernoulli 2022, Theorem 2 with ``m = 1``):
    ``0.85 sqrt((log log(e n) + 0.8 log(1612 / alpha)) / n)``. It holds for
    any distribution, so quantile bounds read from it need no assumption on
    the latencies' shape; ``inf`` before the first value.
    """
    if n < 1:
        return math.inf
    return 0.85 * math.sqrt(
        (math.log(math.log(math.e * n)) + 0.8 * math.log(1612.0 / alpha)) / n
    )
