"""Metric checks: what the judge compares between canary and control.

A metric check turns an outcome into a number (``1``/``0`` for a rate: a failed
request, a slow one, a converted user; any value for a mean: an order's value)
and says two things about ``d``, how much *worse* the canary is than control
(``canary - control`` when lower is better, ``control - canary`` when higher is
better): ``max_increase``, the worsening that fails the canary once proven, and
``pass_below``, the margin the canary must be shown to be within before a stage
passes (non-inferiority). They are not guards (a
:class:`tipkit._core._guard.Guard` admits or refuses calls): they only classify
outcomes that a :class:`tipkit.rollout.Rollout` has already observed.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "CanaryGuard",
    "ErrorRate",
    "ErrorRateCheck",
    "LatencyCheck",
    "LatencyGuard",
    "MeanCheck",
    "MetricCheck",
    "RateCheck",
    "check_fraction",
    "check_positive",
]


def check_fraction(
    value: float, name: str, *, low_open: bool, high_open: bool
) -> float:
    """Return *value* as a float in [0, 1] (ends open as asked), else raise naming *name*."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    low_ok = v > 0.0 if low_open else v >= 0.0
    high_ok = v < 1.0 if high_open else v <= 1.0
    if not (low_ok and high_ok and math.isfinite(v)):
        lo = "(0" if low_open else "[0"
        hi = "1)" if high_open else "1]"
        raise ValueError(f"{name} must be in {lo}, {hi}, got {value!r}")
    return v


def check_positive(value: float, name: str) -> float:
    """Return *value* as a finite float > 0, else raise naming *name*."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not (v > 0.0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _check_amount(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not (v >= 0.0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


class MetricCheck:
    """Base of the rollout's metric checks: a per-outcome number and two thresholds.

    A check fails the canary when the always-valid *lower* bound of ``d`` (how
    much worse the canary is) exceeds ``max_increase``; it lets a stage pass
    only when the *upper* bound is below its margin: ``pass_below`` if given,
    else ``max_increase`` plus 0.05 control standard deviations (0.5 pp at a
    1 % rate; see :data:`tipkit._judge._bounds.REFERENCE_MARGIN_SD`). A
    ``dry_run`` check is judged and reported but never rolls back nor holds a
    stage. Immutable and thread-safe. This is the type of ``Rollout(checks=...)``.

    Attributes:
        metric: the name fed by ``rollout.observe(ctx, name=value)`` or
            ``arm.observe(name=value)``; ``None`` for per-request checks (every
            judged request gives one value).
        binary: a rate (values 0 or 1) rather than a mean.
        higher_is_better: ``d`` is ``control - canary`` (conversion, success).
        lower, upper: values are clipped to this range (a mean of heavy-tailed
            values compares capped means; ``None``: no cap).
    """

    __slots__ = (
        "binary",
        "dry_run",
        "higher_is_better",
        "lower",
        "max_increase",
        "metric",
        "pass_below",
        "tau",
        "upper",
    )

    kind: str = "check"
    max_increase: float
    tau: float | None
    pass_below: float | None
    dry_run: bool
    higher_is_better: bool
    metric: str | None
    binary: bool
    lower: float | None
    upper: float | None

    def __init__(
        self,
        max_increase: float,
        tau: float | None,
        pass_below: float | None = None,
        *,
        dry_run: bool = False,
        higher_is_better: bool = False,
        metric: str | None = None,
        binary: bool = True,
        lower: float | None = None,
        upper: float | None = None,
    ) -> None:
        st = object.__setattr__
        if binary:
            st(
                self,
                "max_increase",
                check_fraction(
                    max_increase, "max_increase", low_open=False, high_open=True
                ),
            )
            if pass_below is not None:
                pass_below = check_fraction(
                    pass_below, "pass_below", low_open=True, high_open=True
                )
        else:
            st(self, "max_increase", _check_amount(max_increase, "max_increase"))
            if pass_below is not None:
                pass_below = check_positive(pass_below, "pass_below")
        if pass_below is not None and pass_below <= self.max_increase:
            raise ValueError(
                f"pass_below must be above max_increase ({self.max_increase!r}),"
                f" got {pass_below!r}"
            )
        st(self, "tau", None if tau is None else check_positive(tau, "tau"))
        st(self, "pass_below", pass_below)
        st(self, "dry_run", bool(dry_run))
        st(self, "higher_is_better", bool(higher_is_better))
        if metric is not None and not metric:
            raise ValueError(f"metric must be a non-empty name, got {metric!r}")
        st(self, "metric", metric)
        st(self, "binary", bool(binary))
        if lower is not None and upper is not None and not lower < upper:
            raise ValueError(f"lower must be below upper, got {lower!r}, {upper!r}")
        st(self, "lower", None if lower is None else float(lower))
        st(self, "upper", None if upper is None else float(upper))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __setstate__(self, state: Any) -> None:
        """Restore a pickled or copied check past the immutability guard."""
        attrs, slots = state if isinstance(state, tuple) else (state, None)
        for part in (attrs, slots):
            for name, value in (part or {}).items():
                object.__setattr__(self, name, value)

    def is_bad(
        self, error: bool, latency: float
    ) -> bool:  # pragma: no cover - abstract
        """Return whether one request counts against its arm (rates over requests)."""
        raise NotImplementedError

    def per_request(self) -> bool:
        """Return whether every judged request gives this check a value."""
        return self.metric is None

    def value(self, error: bool, latency: float) -> float | None:
        """Return one request's number for this check (``None``: a KPI check, fed apart)."""
        if self.metric is not None:
            return None
        return 1.0 if self.is_bad(error, latency) else 0.0

    def clip(self, value: float) -> float:
        """Return a fed *value* as this check counts it (a rate: 0 or 1; a mean: capped).

        Raises:
            ValueError: the value is not a finite number.
        """
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(
                f"{self.describe()}: a value must be finite, got {value!r}"
            )
        if self.binary:
            return 1.0 if v else 0.0
        if self.lower is not None and v < self.lower:
            return self.lower
        if self.upper is not None and v > self.upper:
            return self.upper
        return v

    def describe(self) -> str:
        """Return a short label for events and metrics (low cardinality)."""
        return self.kind if self.metric is None else self.metric

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self), self._key()))

    def _key(self) -> tuple[object, ...]:
        return (
            self.max_increase,
            self.tau,
            self.pass_below,
            self.dry_run,
            self.higher_is_better,
            self.metric,
            self.lower,
            self.upper,
        )

    def _repr_tail(self) -> str:
        tail = "" if self.pass_below is None else f", pass_below={self.pass_below}"
        return tail + (", dry_run=True" if self.dry_run else "")


class ErrorRateCheck(MetricCheck):
    """Judge the canary's error rate against control's.

    Args:
        max_increase: the tolerated increase of the error rate, as a fraction
            (``0.0``: any proven increase fails; ``0.005``: half a point).
        tau: standard deviation of the FAIL side's mixture over effects; the
            default is the one-sided optimum for an increase of 1 percentage
            point (``one_sided_optimal_tau(0.01, 0.01)``).
        pass_below: a stage passes only once the upper confidence bound of the
            increase is below this (``None``, the default: ``max_increase`` +
            0.5 pp at a 1 % control error rate, scaled as the control's standard
            deviation ``sqrt(p (1 - p))``: 0.16 pp at 0.1 %, 1.5 pp at 10 %).
        dry_run: judge and report only; never roll back nor hold a stage.

    Raises:
        ValueError, TypeError: an argument is out of range or not a number.
    """

    __slots__ = ()
    kind = "error_rate"

    def __init__(
        self,
        max_increase: float = 0.0,
        *,
        tau: float = 0.0095,
        pass_below: float | None = None,
        dry_run: bool = False,
    ) -> None:
        super().__init__(max_increase, tau, pass_below, dry_run=dry_run)

    def is_bad(self, error: bool, latency: float) -> bool:  # noqa: ARG002  # shared signature
        """Return *error*: a failed request counts against its arm."""
        return error

    def __repr__(self) -> str:
        return (
            f"ErrorRateCheck(max_increase={self.max_increase}, tau={self.tau}"
            f"{self._repr_tail()})"
        )


class LatencyCheck(MetricCheck):
    """Judge the share of requests slower than *threshold* seconds.

    Compares the share of requests (failed ones included: a slow failure is
    still slow) that took longer than *threshold*; a proportion is stable on
    small samples, unlike a p99.

    Args:
        threshold: seconds; a request slower than this counts as slow.
        max_increase: the tolerated increase of the slow share, as a fraction.
        tau: standard deviation of the FAIL side's mixture over effects.
        pass_below: as for :class:`ErrorRateCheck` (default: ``max_increase``
            + 0.05 control standard deviations: 3.1 points at a 5 % slow share).
        dry_run: judge and report only.

    Raises:
        ValueError, TypeError: an argument is out of range or not a number.
    """

    __slots__ = ("threshold",)
    kind = "latency"
    threshold: float

    def __init__(
        self,
        threshold: float = 0.250,
        max_increase: float = 0.02,
        *,
        tau: float = 0.03,
        pass_below: float | None = None,
        dry_run: bool = False,
    ) -> None:
        super().__init__(max_increase, tau, pass_below, dry_run=dry_run)
        object.__setattr__(self, "threshold", check_positive(threshold, "threshold"))

    def is_bad(self, error: bool, latency: float) -> bool:  # noqa: ARG002  # shared signature
        """Return whether *latency* exceeds the threshold."""
        return latency > self.threshold

    def describe(self) -> str:
        """Return ``latency>THRESHOLDs``."""
        return f"latency>{self.threshold:g}s"

    def _key(self) -> tuple[object, ...]:
        return (self.threshold, *super()._key())

    def __repr__(self) -> str:
        return (
            f"LatencyCheck(threshold={self.threshold}, max_increase={self.max_increase},"
            f" tau={self.tau}{self._repr_tail()})"
        )


class _FedCheck(MetricCheck):
    """A check of a metric fed by name (a rate or a mean): no request is "bad"."""

    __slots__ = ()

    def __init__(  # noqa: PLR0917  # private: the public constructors pass their options in order
        self,
        metric: str,
        higher_is_better: bool,
        max_increase: float,
        pass_below: float | None,
        tau: float | None,
        dry_run: bool,
        *,
        binary: bool = True,
        lower: float | None = None,
        upper: float | None = None,
    ) -> None:
        super().__init__(
            max_increase,
            tau,
            pass_below,
            dry_run=dry_run,
            higher_is_better=higher_is_better,
            metric=metric,
            binary=binary,
            lower=lower,
            upper=upper,
        )

    def is_bad(self, error: bool, latency: float) -> bool:  # noqa: ARG002  # never per request
        """Return ``False``: the check is fed by name, not by requests."""
        return False


class RateCheck(_FedCheck):
    """Judge any rate fed by name: checkout success, conversion, a retry, a refund.

    Feed it ``rollout.observe(user, checkout=True)`` (a business event that
    comes after the request) or ``arm.observe(checkout=ok)`` inside the block.

    Args:
        metric: the name the values are fed under.
        higher_is_better: a drop is the harm (conversion); else a rise (refunds).
        max_increase: the tolerated worsening, as a fraction (0: any proven
            worsening fails).
        pass_below: the non-inferiority margin (default: ``max_increase`` + 0.05
            control standard deviations, as for :class:`ErrorRateCheck`).
        tau: the FAIL side's mixture scale (default: 0.075 control standard
            deviations, tuned for worsenings of about 0.08 SD).
        dry_run: judge and report only.

    Raises:
        ValueError, TypeError: an argument is out of range or not a number.
    """

    __slots__ = ()
    kind = "rate"

    def __init__(
        self,
        metric: str,
        *,
        higher_is_better: bool = False,
        max_increase: float = 0.0,
        pass_below: float | None = None,
        tau: float | None = None,
        dry_run: bool = False,
    ) -> None:
        super().__init__(
            metric, higher_is_better, max_increase, pass_below, tau, dry_run
        )

    def __repr__(self) -> str:
        return (
            f"RateCheck({self.metric!r}, higher_is_better={self.higher_is_better},"
            f" max_increase={self.max_increase}, tau={self.tau}{self._repr_tail()})"
        )


class MeanCheck(_FedCheck):
    """Judge the mean of any value: order value, items per cart, request latency.

    ``MeanCheck("latency")`` reads every judged request's duration; any other
    name is fed like a :class:`RateCheck`. Heavy-tailed values are capped at
    *upper* (and *lower*): the check then compares the capped means, a
    quantity whose variance is bounded, so the bounds stay honest on a few
    hundred samples (choose the cap before the rollout, e.g. the control's
    p99.9 of last week: a cap chosen from the rollout's own data would not be).

    Args:
        metric: the name fed, or ``"latency"`` (seconds, per request).
        higher_is_better: a drop is the harm (order value); else a rise.
        max_increase: the tolerated worsening, in the metric's units.
        pass_below: the margin in the metric's units (default: ``max_increase``
            + 0.05 control standard deviations).
        tau: the FAIL side's mixture scale in the metric's units (default:
            0.075 control standard deviations).
        lower, upper: clip values to this range.
        dry_run: judge and report only.

    Raises:
        ValueError, TypeError: an argument is out of range or not a number.
    """

    __slots__ = ()
    kind = "mean"

    def __init__(
        self,
        metric: str,
        *,
        higher_is_better: bool = False,
        max_increase: float = 0.0,
        pass_below: float | None = None,
        tau: float | None = None,
        lower: float | None = None,
        upper: float | None = None,
        dry_run: bool = False,
    ) -> None:
        super().__init__(
            metric,
            higher_is_better,
            max_increase,
            pass_below,
            tau,
            dry_run,
            binary=False,
            lower=lower,
            upper=upper,
        )

    def per_request(self) -> bool:
        """Return whether this is the mean of request latency."""
        return self.metric == "latency"

    def value(self, error: bool, latency: float) -> float | None:  # noqa: ARG002
        """Return the request's latency (capped) for ``"latency"``, else ``None``."""
        return self.clip(latency) if self.metric == "latency" else None

    def describe(self) -> str:
        """Return ``mean:<metric>``."""
        return f"mean:{self.metric}"

    def __repr__(self) -> str:
        cap = "" if self.upper is None else f", upper={self.upper}"
        cap += "" if self.lower is None else f", lower={self.lower}"
        return (
            f"MeanCheck({self.metric!r}, higher_is_better={self.higher_is_better},"
            f" max_increase={self.max_increase}, tau={self.tau}{cap}{self._repr_tail()})"
        )


# The names these had before "guard" came to mean only the per-call Guard base.
CanaryGuard = MetricCheck
ErrorRate = ErrorRateCheck
LatencyGuard = LatencyCheck
