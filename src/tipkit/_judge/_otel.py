"""Feed a rollout's checks from an OpenTelemetry histogram the app already records.

Argo Rollouts and Flagger judge a canary on a query per metric template
(``successCondition: result[0] < 0.01``, ``{{ args.canary-hash }}`` in the
PromQL); the metric is whatever the app already exports, split by the
version that served it. :class:`HistogramSource` does the same in process,
without a Prometheus round trip: it reads the points of one histogram
instrument from an OpenTelemetry SDK metric reader (an ``InMemoryMetricReader``
added to the app's ``MeterProvider``), splits them by the attribute that names
the arm (by default ``feature_flag.result.variant``, as OTel's feature-flag
conventions name it), keeps only points whose attributes match ``where``, and
adds what was recorded since the last :meth:`HistogramSource.poll` to every
check fed under its metric name.

What a histogram can and cannot say, and what is done about it:

* the **count and the sum are exact**, so a :class:`~tipkit._judge.MeanCheck`
  gets the exact mean; the sum of squares is not recorded, so it gets an
  **upper bound** of the variance, from the bucket each value fell in
  (``(v - mean)**2 <= max((lo - mean)**2, (hi - mean)**2)``; the open-ended
  first and last buckets end at the point's ``min`` and ``max``). A larger
  variance only widens both bounds: the judge's guarantees hold, at the cost
  of samples (finer buckets cost fewer);
* a :class:`~tipkit._judge.RateCheck` gets the **exact** share of values
  above ``above``, which must be one of the histogram's bucket boundaries;
* explicit-bucket and exponential histograms, cumulative or delta temporality.

Points recorded between two polls are counted in the stage current at the
second poll: poll at least as often as stages change (every few seconds).
Record the arm attribute only on judged requests (``arm.variant if
arm.judged``), so that pinned users do not skew the arms.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tipkit.rollout import Rollout

__all__ = ["HistogramSource"]

logger = logging.getLogger("tipkit")

Buckets = list[tuple[float, float, int]]
"""``(low, high, count)`` per bucket; infinite ends are the point's min/max."""


def _explicit(point: Any) -> tuple[str, Any]:
    return "explicit", (tuple(point.explicit_bounds), tuple(point.bucket_counts))


def _exponential(point: Any) -> tuple[str, Any]:
    pos = {
        point.positive.offset + j: c for j, c in enumerate(point.positive.bucket_counts)
    }
    neg = {
        point.negative.offset + j: c for j, c in enumerate(point.negative.bucket_counts)
    }
    return "exponential", (point.scale, point.zero_count, pos, neg)


def _downscale(
    state: tuple[int, int, dict[int, int], dict[int, int]], scale: int
) -> Any:
    s, zero, pos, neg = state
    shift = s - scale
    out_p: dict[int, int] = {}
    out_n: dict[int, int] = {}
    for src, dst in ((pos, out_p), (neg, out_n)):
        for i, c in src.items():
            dst[i >> shift] = dst.get(i >> shift, 0) + c
    return scale, zero, out_p, out_n


def _minus(kind: str, now: Any, before: Any | None) -> Any:
    """Return the buckets of *now* minus *before* (both of one point, same kind)."""
    if kind == "explicit":
        bounds, counts = now
        if before is None or before[0] != bounds:
            return bounds, counts
        return bounds, tuple(a - b for a, b in zip(counts, before[1], strict=True))
    if before is None:
        return now
    scale = min(now[0], before[0])
    _, z1, p1, n1 = _downscale(now, scale)
    _, z0, p0, n0 = _downscale(before, scale)
    return (
        scale,
        z1 - z0,
        {i: c - p0.get(i, 0) for i, c in p1.items()},
        {i: c - n0.get(i, 0) for i, c in n1.items()},
    )


def _buckets(kind: str, state: Any, low: float, high: float) -> Buckets:
    """Return ``(low, high, count)`` buckets; open ends become *low* / *high*."""
    out: Buckets = []
    if kind == "explicit":
        bounds, counts = state
        edges = [low, *bounds, high]
        for i, c in enumerate(counts):
            if c:
                out.append((min(edges[i], edges[i + 1]), edges[i + 1], c))
        return out
    scale, zero, pos, neg = state
    base = 2.0 ** (2.0**-scale)
    out.extend((base**i, base ** (i + 1), c) for i, c in pos.items() if c)
    out.extend((-(base ** (i + 1)), -(base**i), c) for i, c in neg.items() if c)
    if zero:
        out.append((0.0, 0.0, zero))
    return out


class HistogramSource:
    """Feed the checks of *rollout* named *metric* from histogram *instrument*.

    Args:
        rollout: the rollout whose checks are fed (every check with
            ``metric=`` this source's metric).
        reader: an OpenTelemetry SDK metric reader registered on the app's
            ``MeterProvider`` whose ``get_metrics_data()`` collects now
            (``opentelemetry.sdk.metrics.export.InMemoryMetricReader``).
        instrument: the histogram's name as the app created it.
        metric: the checks' metric name (default: *instrument*).
        arm_attribute: the point attribute naming the arm.
        canary, control: its values for each arm (default: the rollout
            flag's canary and control variants).
        where: only points whose attributes include these pairs.
        above: for rate checks, the share of values above this bucket
            boundary is the rate (required if a rate check is fed).

    Thread-safe: :meth:`poll` holds a lock of its own, then the rollout's
    faces (it may block for the rollout store's round trip, like a request).

    Raises:
        ValueError: no check of *rollout* is fed under *metric*, a rate check
            is fed without *above*, or a mean check has caps (a histogram
            cannot cap values it never saw one by one).
    """

    __slots__ = (
        "_checks",
        "_last",
        "_lock",
        "_rollout",
        "above",
        "arm_attribute",
        "arms",
        "instrument",
        "metric",
        "reader",
        "where",
    )

    def __init__(  # the knobs of a metric template
        self,
        rollout: Rollout,
        reader: Any,
        instrument: str,
        *,
        metric: str | None = None,
        arm_attribute: str = "feature_flag.result.variant",
        canary: str | None = None,
        control: str | None = None,
        where: Mapping[str, Any] | None = None,
        above: float | None = None,
    ) -> None:
        self.metric = metric if metric is not None else instrument
        self._checks = tuple(
            (i, c)
            for i, c in enumerate(rollout.checks)
            if c.metric == self.metric and not c.per_request()
        )
        if not self._checks:
            raise ValueError(
                f"rollout {rollout.name!r} has no check fed by {self.metric!r}"
                " (RateCheck or MeanCheck with that metric name)"
            )
        for _, c in self._checks:
            if c.binary and above is None:
                raise ValueError(f"{c!r} is a rate: give above= (a bucket boundary)")
            if not c.binary and (c.lower is not None or c.upper is not None):
                raise ValueError(
                    f"{c!r}: a histogram cannot cap values; drop lower/upper"
                )
        split = rollout._split  # the flag's variants, read once
        self.arms = {
            canary if canary is not None else split.canary: True,
            control if control is not None else split.control: False,
        }
        self._rollout = rollout
        self.reader = reader
        self.instrument = instrument
        self.arm_attribute = arm_attribute
        self.where = dict(where or {})
        self.above = None if above is None else float(above)
        if self.above is not None and not math.isfinite(self.above):
            raise ValueError(f"above must be a finite bucket boundary, got {above!r}")
        self._last: dict[tuple[object, ...], tuple[int, Any, int, float]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"<HistogramSource {self.instrument!r} -> {self.metric!r}"
            f" arms={self.arms!r} where={self.where!r}>"
        )

    def poll(self) -> int:
        """Collect the reader now and feed what was recorded since the last poll.

        Returns how many values were fed (both arms). A point that cannot be
        used (no min/max for an open-ended bucket, ``above`` not a boundary) is
        skipped with a warning on the ``tipkit`` logger: its check then lacks
        evidence and cannot pass, which is the safe side.
        """
        from tipkit.rollout._rollout import record_sums  # noqa: PLC0415  # upper layer

        with self._lock:
            data = self.reader.get_metrics_data()
            fed: dict[bool, dict[int, list[float]]] = {True: {}, False: {}}
            values = 0
            for metric in _metrics(data, self.instrument):
                delta = (
                    getattr(metric.data.aggregation_temporality, "name", "") == "DELTA"
                )
                for point in metric.data.data_points:
                    values += self._point(point, delta=delta, fed=fed)
        for is_canary, sums in fed.items():
            if sums:
                record_sums(
                    self._rollout,
                    is_canary,
                    {i: (int(c), s, q) for i, (c, s, q) in sums.items()},
                )
        return values

    def _point(
        self, point: Any, *, delta: bool, fed: dict[bool, dict[int, list[float]]]
    ) -> int:
        attrs = dict(point.attributes or {})
        arm = self.arms.get(str(attrs.get(self.arm_attribute)))
        if arm is None or any(attrs.get(k) != v for k, v in self.where.items()):
            return 0
        kind, state = (
            _explicit(point)
            if hasattr(point, "explicit_bounds")
            else _exponential(point)
        )
        key = tuple(sorted((k, str(v)) for k, v in attrs.items()))
        count, total = int(point.count), float(point.sum)
        before = None if delta else self._last.get(key)
        if before is not None and before[0] == point.start_time_unix_nano:
            d_state = _minus(kind, state, before[1])
            d_count, d_sum = count - before[2], total - before[3]
        else:
            d_state, d_count, d_sum = state, count, total
        if not delta:
            self._last[key] = (point.start_time_unix_nano, state, count, total)
        if d_count <= 0:
            return 0
        low = point.min if point.min is not None else -math.inf
        high = point.max if point.max is not None else math.inf
        buckets = _buckets(kind, d_state, float(low), float(high))
        if not all(math.isfinite(lo) and math.isfinite(hi) for lo, hi, _ in buckets):
            logger.warning(
                "tipkit: histogram %r has values in an open-ended bucket and no"
                " min/max: skipped (record min/max to judge it)",
                self.instrument,
            )
            return 0
        bad = self._above(buckets) if self.above is not None else 0
        if bad is None:
            return 0
        out = fed[arm]
        for i, check in self._checks:
            if check.binary:
                row = [d_count, float(bad), float(bad)]
            else:
                mean = d_sum / d_count
                spread = sum(
                    c * max((lo - mean) ** 2, (hi - mean) ** 2) for lo, hi, c in buckets
                )
                row = [d_count, d_sum, d_count * mean * mean + spread]
            acc = out.setdefault(i, [0.0, 0.0, 0.0])
            for j in range(3):
                acc[j] += row[j]
        return d_count

    def _above(self, buckets: Buckets) -> int | None:
        above = self.above or 0.0
        bad = 0
        tol = 1e-9 * max(1.0, abs(above))
        for lo, hi, c in buckets:
            if lo >= above - tol:
                bad += c
            elif hi > above + tol:
                logger.warning(
                    "tipkit: histogram %r: above=%r is not a bucket boundary; skipped",
                    self.instrument,
                    above,
                )
                return None
        return bad


def _metrics(data: Any, name: str) -> list[Any]:
    if data is None:
        return []
    return [
        m
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
    ]
