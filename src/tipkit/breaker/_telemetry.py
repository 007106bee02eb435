"""What a breaker reports: outcome and transition counters, events, the state gauge.

Counters are bound once per mode (``tipkit.mode`` is one of their attributes)
and kept as :class:`~tipkit.telemetry._counters.Counter` objects whose
``inc()`` is the hot-path call, so ``telemetry.synthetic()`` can route them.
Events are built only when someone listens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tipkit._core._mode import Mode
from tipkit.breaker._events import (
    HALF_OPEN,
    OPEN,
    BreakerMetrics,
    BreakerState,
    BreakerStateChanged,
    CallRejected,
)
from tipkit.breaker._machine import Move, Phase, Refusal, Ticket
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY, Counter
from tipkit.telemetry._events import BUS

if TYPE_CHECKING:
    from tipkit.breaker._breaker import CircuitBreaker
    from tipkit.breaker._config import Config

__all__ = ["Telemetry", "describe", "fast_success", "state_gauge"]


class Telemetry:
    """The counters and events of the breaker called *name*.

    Thread-safe: counters are atomic; :meth:`bind` is called under the
    breaker's lock.
    """

    __slots__ = (
        "_cache",
        "failure",
        "ignored",
        "name",
        "rejected",
        "runbook",
        "slow",
        "success",
    )

    def __init__(self, name: str, runbook: str | None, mode: Mode) -> None:
        self.name = name
        self.runbook = runbook
        self._cache: dict[tuple[str, str], Counter] = {}
        self.bind(mode)

    def _counter(
        self, metric: str, key: tuple[str, str], attrs: dict[str, str]
    ) -> Counter:
        counter = self._cache.get(key)
        if counter is None:
            counter = self._cache[key] = REGISTRY.counter(metric, attrs)
        return counter

    def bind(self, mode: Mode) -> None:
        """Point the outcome counters at those of *mode*."""

        def calls(outcome: str) -> Counter:
            attrs = {
                names.BREAKER_NAME: self.name,
                names.OUTCOME: outcome,
                names.MODE: mode,
            }
            return self._counter(names.BREAKER_CALLS, (outcome, mode), attrs)

        self.success = calls("success")
        self.failure = calls("failure")
        self.slow = calls("slow")
        self.ignored = calls("ignored")
        self.rejected = calls("rejected")

    def refused(self, refusal: Refusal) -> None:
        """Count a refused call (or, in shadow mode, one that would have been)."""
        self.rejected.inc()
        if CallRejected.listened:
            BUS.publish(
                CallRejected(
                    self.name,
                    refusal.retry_after,
                    refusal.state,
                    refusal.shadow,
                    self.runbook,
                )
            )

    def moved(self, moves: list[Move]) -> None:
        """Count *moves* and publish a :class:`BreakerStateChanged` for each one."""
        for move in moves:
            before, after = move.from_state.value, move.to_state.value
            attrs = {
                names.BREAKER_NAME: self.name,
                "tipkit.breaker.from_state": before,
                names.STATE: after,
                names.MODE: move.mode,
            }
            key = ("transition", f"{before}>{after}:{move.mode}")
            self._counter(names.BREAKER_TRANSITIONS, key, attrs).inc()
            if move.before is not None:
                BUS.publish(
                    BreakerStateChanged(
                        self.name,
                        move.from_state,
                        move.to_state,
                        move.reason,
                        move.before,
                        move.mode == "shadow",
                        self.runbook,
                    )
                )


def fast_success(telemetry: Telemetry) -> Callable[[Ticket], bool]:
    """Return the breaker's ``_fast_release`` hook: count a plain success lock-free.

    The hook ticks the lock-free success count of a warm closed phase and
    returns ``True``; it returns ``False`` (the face then calls ``_release``
    with the end time) whenever that is not enough: a phase that is not warm,
    half-open, stale or uncounted. Only for a breaker that needs no end time
    (no slow calls, a count window). A plain function, not a bound method, so
    the breaker holding it is in no reference cycle.
    """

    def fast_release(ticket: Ticket) -> bool:
        tick = (ticket[0] if isinstance(ticket, tuple) else ticket).tick
        if tick is None:
            return False
        tick()
        telemetry.success.inc()
        return True

    return fast_release


def timed_success(
    telemetry: Telemetry, slow_after: float | None
) -> Callable[[Phase, float, float], bool]:
    """Return a timed breaker's ``_timed_release`` hook (see :mod:`tipkit._core._guard`).

    The hook records a success of a call admitted with the fast ticket *phase*
    at *start* and ended at *end*: lock-free, returning ``True``, when the call
    was not slow and the phase is warm; otherwise ``False`` (the decorator then
    calls ``_release((phase, start), None, end)``). A plain function, as
    :func:`fast_success`.
    """

    def timed_release(phase: Phase, start: float, end: float) -> bool:
        if slow_after is None or end - start <= slow_after:
            tick = phase.tick
            if tick is not None:
                tick()
                telemetry.success.inc()
                return True
        return False

    return timed_release


def state_gauge(breaker: CircuitBreaker) -> list[tuple[float, dict[str, str]]]:
    """Read the ``tipkit.breaker.state`` gauge: 1 for the current state, 0 for the others."""
    current = breaker.state
    return [
        (
            1.0 if s is current else 0.0,
            {names.BREAKER_NAME: breaker.name, names.STATE: s.value},
        )
        for s in BreakerState
    ]


def describe(cfg: Config, m: BreakerMetrics, permits: int) -> str:
    """Return a breaker's ``repr``: its configuration and the live state *m*.

    *permits* is the trial permits left, shown while half-open.
    """
    rate = "-" if m.failure_rate is None else f"{m.failure_rate:.2f}"
    extra = ""
    if m.state is OPEN:
        extra = f" retry_after={m.retry_after:.3f}"
    elif m.state is HALF_OPEN:
        extra = f" trial_permits_left={permits}"
    slow = ""
    if cfg.slow_after is not None:
        srate = "-" if m.slow_call_rate is None else f"{m.slow_call_rate:.2f}"
        slow = (
            f" slow_call_rate={srate}/{cfg.slow_threshold}"
            f" slow_call_duration={cfg.slow_after}"
        )
    duration = (
        repr(cfg.open_duration_fn)
        if cfg.open_duration_fn is not None
        else f"{cfg.open_duration}"
    )
    return (
        f"<CircuitBreaker {cfg.name!r} state={m.state.value}{extra} mode={m.mode} "
        f"failure_rate={rate}/{cfg.failure_threshold}{slow} calls={m.calls} "
        f"window={cfg.window!r} minimum_calls={cfg.min_calls} "
        f"open_duration={duration} half_open_calls={cfg.half_open_calls}>"
    )
