"""Metric checks: what the judge compares between canary and control.

A metric check turns one outcome into "bad" or "not bad" and says how much worse
the canary's share of bad outcomes may be than control's. They are not guards
(a :class:`tipkit._core._guard.Guard` admits or refuses calls): they only
classify outcomes that a :class:`tipkit.rollout.Rollout` has already observed.
"""

from __future__ import annotations

import math

__all__ = [
    "CanaryGuard",
    "ErrorRate",
    "ErrorRateCheck",
    "LatencyCheck",
    "LatencyGuard",
    "MetricCheck",
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


class MetricCheck:
    """Base of the rollout's metric checks: a per-request "bad" outcome and an allowance.

    A check fails the canary when the lower confidence bound of
    ``rate(canary) - rate(control)`` of bad outcomes exceeds ``max_increase``.
    Immutable and thread-safe. This is the type of ``Rollout(checks=...)``.
    """

    __slots__ = ("max_increase", "pass_below", "tau")

    kind: str = "check"
    max_increase: float
    tau: float
    pass_below: float | None

    def __init__(
        self, max_increase: float, tau: float, pass_below: float | None = None
    ) -> None:
        object.__setattr__(
            self,
            "max_increase",
            check_fraction(
                max_increase, "max_increase", low_open=False, high_open=True
            ),
        )
        object.__setattr__(self, "tau", check_positive(tau, "tau"))
        if pass_below is not None:
            pass_below = check_fraction(
                pass_below, "pass_below", low_open=True, high_open=True
            )
        object.__setattr__(self, "pass_below", pass_below)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def is_bad(
        self, error: bool, latency: float
    ) -> bool:  # pragma: no cover - abstract
        """Return whether one outcome counts against the arm."""
        raise NotImplementedError

    def describe(self) -> str:
        """Return a short label for events and metrics (low cardinality)."""
        return self.kind

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self), self._key()))

    def _key(self) -> tuple[float | None, ...]:
        return (self.max_increase, self.tau, self.pass_below)

    def _repr_tail(self) -> str:
        return "" if self.pass_below is None else f", pass_below={self.pass_below}"


class ErrorRateCheck(MetricCheck):
    """Fail the canary when its error rate is worse than control's by more than allowed.

    Args:
        max_increase: the tolerated increase of the error rate, as a fraction
            (``0.0``: any proven increase fails; ``0.005``: half a point).
        tau: standard deviation of the mixture over effects; the default suits
            increases of 0.5 to 1 percentage point (see :mod:`tipkit._judge`).
        pass_below: if set, a stage passes only once the *upper* confidence
            bound of the increase is below this: evidence that the canary is
            not worse by that much, not merely no evidence that it is worse
            (``None``, the default: the absence of a FAIL is enough).

    Raises:
        ValueError, TypeError: an argument is out of range or not a number.
    """

    __slots__ = ()
    kind = "error_rate"

    def __init__(
        self,
        max_increase: float = 0.0,
        *,
        tau: float = 0.0075,
        pass_below: float | None = None,
    ) -> None:
        super().__init__(max_increase, tau, pass_below)

    def is_bad(self, error: bool, latency: float) -> bool:  # noqa: ARG002  # shared signature
        """Return *error*: a failed request counts against its arm."""
        return error

    def __repr__(self) -> str:
        return (
            f"ErrorRateCheck(max_increase={self.max_increase}, tau={self.tau}"
            f"{self._repr_tail()})"
        )


class LatencyCheck(MetricCheck):
    """Fail the canary when more of its requests are slower than *threshold* seconds.

    Compares the share of requests (failed ones included: a slow failure is
    still slow) that took longer than *threshold*; a proportion is stable on
    small samples, unlike a p99.

    Args:
        threshold: seconds; a request slower than this counts as slow.
        max_increase: the tolerated increase of the slow share, as a fraction.
        tau: standard deviation of the mixture over effects.
        pass_below: as for :class:`ErrorRateCheck`.

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
    ) -> None:
        super().__init__(max_increase, tau, pass_below)
        object.__setattr__(self, "threshold", check_positive(threshold, "threshold"))

    def is_bad(self, error: bool, latency: float) -> bool:  # noqa: ARG002  # shared signature
        """Return whether *latency* exceeds the threshold."""
        return latency > self.threshold

    def describe(self) -> str:
        """Return ``latency>THRESHOLDs``."""
        return f"latency>{self.threshold:g}s"

    def _key(self) -> tuple[float | None, ...]:
        return (self.threshold, self.max_increase, self.tau, self.pass_below)

    def __repr__(self) -> str:
        return (
            f"LatencyCheck(threshold={self.threshold}, max_increase={self.max_increase},"
            f" tau={self.tau}{self._repr_tail()})"
        )


# The names these had before "guard" came to mean only the per-call Guard base.
CanaryGuard = MetricCheck
ErrorRate = ErrorRateCheck
LatencyGuard = LatencyCheck
