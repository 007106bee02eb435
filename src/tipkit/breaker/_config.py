"""A breaker's configuration, validated once, and the pure rules that read it.

:class:`Config` checks every constructor argument of
:class:`~tipkit.breaker.CircuitBreaker` (raising ``TypeError``/``ValueError``
that names the argument) and answers the three questions the state machine
asks of it: what an exception counts as (:meth:`Config.classify`), whether
some counts trip the breaker (:meth:`Config.verdict`) and how long to stay open
(:meth:`Config.open_duration_for`); and it words the breaker's refusal
(:meth:`Config.rejection`). Immutable after construction, so it is read
without a lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from tipkit._core._check import check_int, check_name, check_number, check_seconds
from tipkit._core._durations import to_seconds
from tipkit.breaker._events import (
    HALF_OPEN,
    OPEN,
    REASON_FAILURE_RATE,
    REASON_SLOW_CALL_RATE,
    BreakerState,
)
from tipkit.breaker._window import CountWindow, TimeWindow, Window
from tipkit.errors import CircuitOpenError, RejectedError

__all__ = ["FAILURE", "IGNORED", "SUCCESS", "Config", "OpenDuration", "Record"]

logger = logging.getLogger("tipkit")

# What an outcome counts as; FAILURE is 1 so it adds to a failure count as is.
SUCCESS = 0
FAILURE = 1
IGNORED = 2

OpenDuration = float | timedelta | Callable[[int], float | timedelta]
Record = (
    type[BaseException]
    | tuple[type[BaseException], ...]
    | Callable[[BaseException], bool]
)


def _exception_types(value: object, argument: str) -> tuple[type[BaseException], ...]:
    if isinstance(value, type) and issubclass(value, BaseException):
        return (value,)
    if isinstance(value, tuple) and all(
        isinstance(t, type) and issubclass(t, BaseException) for t in value
    ):
        return value
    raise TypeError(
        f"CircuitBreaker: {argument} must be an exception type or a tuple of exception "
        f"types{' or a callable(exc) -> bool' if argument == 'record' else ''}, got {value!r}"
    )


def _fraction(value: object, argument: str) -> float:
    label = f"CircuitBreaker: {argument}"
    number = check_number(value, label)
    if not 0 < number <= 1:
        raise ValueError(
            f"{label} must be a fraction in (0, 1] (0.5 means 50%), got {value!r}"
        )
    return number


class Config:
    """The validated options of one breaker (see :class:`~tipkit.breaker.CircuitBreaker`).

    Raises:
        TypeError, ValueError: an argument is invalid; the message names it.
    """

    __slots__ = (
        "failure_threshold",
        "half_open_calls",
        "ignore",
        "max_half_open_wait",
        "min_calls",
        "name",
        "open_duration",
        "open_duration_fn",
        "record",
        "record_fn",
        "runbook",
        "slow_after",
        "slow_threshold",
        "window",
    )

    def __init__(  # one keyword per breaker option
        self,
        name: str,
        *,
        failure_rate_threshold: float,
        slow_call_rate_threshold: float,
        slow_call_duration: float | timedelta | None,
        window: Window | None,
        minimum_calls: int,
        open_duration: OpenDuration,
        half_open_calls: int,
        max_half_open_wait: float | timedelta | None,
        record: Record,
        ignore: type[BaseException] | tuple[type[BaseException], ...],
        runbook: str | None,
    ) -> None:
        self.name = check_name(name, "CircuitBreaker: name")
        self.failure_threshold = _fraction(
            failure_rate_threshold, "failure_rate_threshold"
        )
        self.slow_threshold = _fraction(
            slow_call_rate_threshold, "slow_call_rate_threshold"
        )
        self.slow_after = (
            None
            if slow_call_duration is None
            else check_seconds(
                slow_call_duration, "CircuitBreaker: slow_call_duration", above=0
            )
        )
        if window is None:
            window = CountWindow(100)
        if not isinstance(window, CountWindow | TimeWindow):
            raise TypeError(
                f"CircuitBreaker: window must be a CountWindow or a TimeWindow, got {window!r}"
            )
        self.window = window
        minimum = check_int(minimum_calls, "CircuitBreaker: minimum_calls", minimum=1)
        # A count window never holds more than its size: a larger minimum could
        # never be met, so it is capped (as resilience4j does).
        self.min_calls = (
            min(minimum, window.size) if isinstance(window, CountWindow) else minimum
        )
        self.open_duration_fn: Callable[[int], float | timedelta] | None = None
        if callable(open_duration) and not isinstance(open_duration, timedelta):
            self.open_duration_fn = open_duration
            self.open_duration = self._duration_from(open_duration, 1, 0.0, strict=True)
        else:
            self.open_duration = check_seconds(
                open_duration, "CircuitBreaker: open_duration", minimum=0
            )
        self.half_open_calls = check_int(
            half_open_calls, "CircuitBreaker: half_open_calls", minimum=1
        )
        self.max_half_open_wait = (
            None
            if max_half_open_wait is None
            else check_seconds(
                max_half_open_wait, "CircuitBreaker: max_half_open_wait", above=0
            )
        )
        self.record_fn: Callable[[BaseException], bool] | None = None
        self.record: tuple[type[BaseException], ...] = ()
        if isinstance(record, type | tuple):
            self.record = _exception_types(record, "record")
        elif callable(record):
            self.record_fn = record
        else:
            _exception_types(record, "record")  # type: ignore[unreachable]  # untyped callers
        # An inner guard's rejection says nothing about the dependency's health.
        self.ignore = (*_exception_types(ignore, "ignore"), RejectedError)
        self.runbook = check_name(runbook, "CircuitBreaker: runbook", optional=True)

    def classify(self, error: BaseException) -> int:
        """Return ``SUCCESS``, ``FAILURE`` or ``IGNORED`` for a call that raised *error*.

        A record callable that raises is logged on the ``tipkit`` logger and the
        call counts as a failure.
        """
        if not isinstance(error, Exception) or isinstance(error, self.ignore):
            return IGNORED
        fn = self.record_fn
        if fn is None:
            return FAILURE if isinstance(error, self.record) else SUCCESS
        try:
            return FAILURE if fn(error) else SUCCESS
        except Exception:
            logger.exception(
                "circuit breaker %r: record callable %r raised; counting the call "
                "as a failure",
                self.name,
                fn,
            )
            return FAILURE

    def verdict(self, calls: int, failures: int, slows: int) -> str | None:
        """Return why these counts open the breaker, or ``None`` if they do not."""
        if failures and failures / calls >= self.failure_threshold:
            return REASON_FAILURE_RATE
        if slows and slows / calls >= self.slow_threshold:
            return REASON_SLOW_CALL_RATE
        return None

    def open_duration_for(self, times_opened: int) -> float:
        """Return the seconds to stay open on the *times_opened*-th opening in a row.

        A callable ``open_duration`` that fails here is logged on the ``tipkit``
        logger and the first duration is used.
        """
        fn = self.open_duration_fn
        if fn is None:
            return self.open_duration
        return self._duration_from(fn, times_opened, self.open_duration, strict=False)

    def rejection(
        self, state: BreakerState, retry_after: float | None
    ) -> CircuitOpenError:
        """Return the error refusing a call in *state* (the caller raises it)."""
        if state is OPEN:
            why = f"open; retry after {retry_after:.3f}s"
        elif state is HALF_OPEN:
            why = f"half-open and all {self.half_open_calls} trial calls are running"
        else:
            why = "forced open by an operator"
        see = f" (runbook: {self.runbook})" if self.runbook else ""
        return CircuitOpenError(
            f"circuit breaker {self.name!r} is {why}{see}",
            name=self.name,
            retry_after=retry_after,
            runbook=self.runbook,
        )

    def _duration_from(
        self,
        fn: Callable[[int], float | timedelta],
        times_opened: int,
        fallback: float,
        *,
        strict: bool,
    ) -> float:
        try:
            secs = to_seconds(
                fn(times_opened), "CircuitBreaker: open_duration(...) result"
            )
            if secs < 0:
                raise ValueError(
                    f"CircuitBreaker: open_duration({times_opened}) returned a negative "
                    f"duration: {secs!r}"
                )
        except Exception:
            if strict:
                raise
            logger.exception(
                "circuit breaker %r: open_duration(%d) failed; staying open for %ss",
                self.name,
                times_opened,
                fallback,
            )
            return fallback
        return secs
