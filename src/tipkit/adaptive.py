"""Adaptive concurrency: an in-flight limit that follows measured latency.

::

    limit = AdaptiveLimit("db", algorithm="gradient2", min=4, max=200)

    @limit
    async def query(sql): ...

    with priority("critical"):
        await query("...")          # shed last

A fixed bulkhead needs its size guessed; too small wastes capacity, too large
lets a slow dependency queue work until every caller times out. An adaptive
limit measures each call's latency and moves the limit as Netflix's
concurrency-limits does:

* ``"gradient2"`` (default): compares a short-term average latency with a
  long-term one; while they agree the limit grows by a queue allowance
  (``sqrt(limit)``), when the short one rises the limit shrinks by their ratio
  (never below half per step); smoothed, and the long average drifts back down
  after a recovery so the limit grows again.
* ``"aimd"``: additive increase (+1 while the calls in flight use at least half
  the limit), multiplicative decrease (x ``backoff``) on a timeout
  (:class:`TimeoutError`, so :class:`~tipkit.errors.DeadlineExceededError`) or
  a call slower than ``timeout``.

**Priority load shedding**: each call has a priority, given by
:func:`priority` (a context manager; follows threads' and tasks' contexts) or
``synthetic`` inside :func:`tipkit.synthetic`. A call is admitted while the
calls in flight stay under its share of the limit: ``critical`` 100%,
``normal`` 90%, ``sheddable`` 75%, ``synthetic`` 50%; so synthetic traffic is
shed first and critical traffic last. A refused call raises
:class:`~tipkit.errors.BulkheadFullError` (a :class:`~tipkit.errors.RejectedError`,
never retried by default). In ``mode="shadow"`` every call runs, and those it
would have shed are counted (``would_reject``).

Thread-safe and asyncio-safe: one short lock around the counts. Time is read
from the injected ``clock``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from tipkit._core import _fork
from tipkit._core._fallback import NO_FALLBACK, ExcTypes, make
from tipkit._core._guard import Guard, Wait
from tipkit._core._mode import Mode, check_mode
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import BulkheadFullError
from tipkit.telemetry._counters import REGISTRY
from tipkit.telemetry._events import BUS, AttributeValue, Event
from tipkit.telemetry._synthetic import current_synthetic

__all__ = ["ADAPTIVE_CALLS", "AdaptiveLimit", "AdaptiveShed", "Priority", "priority"]

Priority = Literal["critical", "normal", "sheddable", "synthetic"]
SHARES: dict[str, float] = {
    "critical": 1.0,
    "normal": 0.9,
    "sheddable": 0.75,
    "synthetic": 0.5,
}
ADAPTIVE_CALLS = "tipkit.adaptive.calls"  # {call}, by result and priority
ADAPTIVE_NAME = "tipkit.adaptive.name"

_PRIORITY: ContextVar[str | None] = ContextVar("tipkit_priority", default=None)


@contextlib.contextmanager
def priority(level: Priority) -> Iterator[None]:
    """Give the calls in this block (thread or task context) a shedding priority.

    Raises:
        ValueError: *level* is not one of critical, normal, sheddable, synthetic.
    """
    if level not in SHARES:
        raise ValueError(f"priority must be one of {tuple(SHARES)}, got {level!r}")
    token = _PRIORITY.set(level)
    try:
        yield
    finally:
        _PRIORITY.reset(token)


def current_priority() -> str:
    """Return the priority of the current context (``synthetic`` inside synthetic())."""
    level = _PRIORITY.get()
    if level is not None:
        return level
    return "normal" if current_synthetic() is None else "synthetic"


@dataclass(frozen=True, slots=True)
class AdaptiveShed(Event):
    """A call was shed (or, in shadow mode, would have been).

    Attributes:
        priority: the call's priority.
        limit: the limit when it was shed.
        in_flight: calls running then.
        shadow: the call ran anyway.
    """

    priority: str
    limit: float
    in_flight: int
    shadow: bool = False

    otel_name: ClassVar[str] = "tipkit.adaptive.shed"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return name, priority, limit, calls in flight and mode."""
        return {
            ADAPTIVE_NAME: self.name,
            "tipkit.adaptive.priority": self.priority,
            "tipkit.adaptive.limit": self.limit,
            "tipkit.adaptive.in_flight": self.in_flight,
            "tipkit.mode": "shadow" if self.shadow else "enforce",
        }


class _Gradient2:
    """Netflix's Gradient2 over windows of samples, as its ``WindowedLimit`` runs it.

    Per window (at least *window* seconds and *min_samples* calls): the short
    RTT is the window's mean, the long RTT an exponential average over
    *long_window* windows (10 minutes of 0.1 s windows, Netflix's 600 windows
    of 1 s; a plain mean over the first ten); the limit moves towards
    ``limit * gradient + sqrt(limit)``, where ``gradient`` is
    ``tolerance * long / short`` clamped to [0.5, 1], by *smoothing* of the
    way. A long RTT over twice the short one (after an overload) decays by 10%
    a window, so the limit grows back once latency drops.

    Tuned on the simulated service of tests/adaptive_sim.py: updating per
    window, not per call, keeps the long average a baseline (per call it
    follows the queueing it should detect, and the limit crept to its
    maximum); ``tolerance`` is 1.0 as in Netflix's current code (1.5 let the
    limit settle at 5x the service's capacity); and one deviation, the long RTT
    falls by *fall* of the way towards a faster window, so a baseline learnt
    while already queueing is corrected as soon as the limit probes lower.
    """

    __slots__ = (
        "_busiest",
        "_count",
        "_start",
        "_sum",
        "_warm",
        "fall",
        "long",
        "long_alpha",
        "min_samples",
        "short",
        "smoothing",
        "tolerance",
        "window",
    )

    def __init__(
        self,
        *,
        smoothing: float = 0.2,
        tolerance: float = 1.0,
        long_window: int = 6000,
        window: float = 0.1,
        min_samples: int = 10,
        fall: float = 0.2,
    ) -> None:
        self.smoothing = smoothing
        self.fall = fall
        self.tolerance = tolerance
        self.long_alpha = 2 / (long_window + 1)
        self.window = window
        self.min_samples = min_samples
        self.long = 0.0
        self.short = 0.0
        self._warm = 0
        self._start: float | None = None
        self._sum = 0.0
        self._count = 0
        self._busiest = 0

    def update(
        self, limit: float, rtt: float, in_flight: int, timed_out: bool, now: float
    ) -> float:
        del timed_out  # gradient2 reads latency only
        if self._start is None:
            self._start = now
        self._sum += rtt
        self._count += 1
        self._busiest = max(self._busiest, in_flight)
        if now - self._start < self.window or self._count < self.min_samples:
            return limit
        # A zero-time call (a fake clock) is not infinitely fast.
        short = self.short = max(self._sum / self._count, 1e-6)
        busiest = self._busiest
        self._start, self._sum, self._count, self._busiest = now, 0.0, 0, 0
        if self._warm < 10:  # Netflix's warm-up: a plain mean first
            self._warm += 1
            self.long += (short - self.long) / self._warm
        else:
            self.long += self.long_alpha * (short - self.long)
        if short < self.long:  # faster than the baseline: it was learnt under load
            self.long += self.fall * (short - self.long)
        if self.long > 2 * short:  # recovering: bring the baseline down faster
            self.long *= 0.9
        if busiest < limit / 2:  # the limit is not what bounds the calls: no evidence
            return limit
        gradient = max(0.5, min(1.0, self.tolerance * self.long / short))
        target = limit * gradient + math.sqrt(limit)
        return limit * (1 - self.smoothing) + target * self.smoothing


class _Aimd:
    """Additive increase, multiplicative decrease on timeouts or slow calls."""

    __slots__ = ("backoff", "timeout")

    def __init__(self, *, backoff: float = 0.9, timeout: float = math.inf) -> None:
        self.backoff = backoff
        self.timeout = timeout

    def update(
        self, limit: float, rtt: float, in_flight: int, timed_out: bool, now: float
    ) -> float:
        del now  # aimd reacts to each call
        if timed_out or rtt > self.timeout:
            return limit * self.backoff
        if in_flight >= limit / 2:
            return limit + 1
        return limit


class AdaptiveLimit(Guard[float]):
    """Limit the calls in flight to a limit learnt from their latency.

    Args:
        name: names the limit in errors, events and counters.
        algorithm: ``"gradient2"`` (default) or ``"aimd"``.
        initial: the limit to start from (default 20).
        min, max: bounds of the limit (default 1 and 1000).
        timeout: for ``aimd``, a call slower than this counts as a drop.
        mode: ``"enforce"`` or ``"shadow"`` (run everything, count would-be sheds).
        fallback: a value, or a synchronous ``(exc) -> value``, returned instead
            of raising when the limit sheds a call (decorator and
            ``call``/``acall``; see :mod:`tipkit.fallback`).
        fallback_on: what the fallback answers (default: tipkit's refusals).
        clock: the clock latencies are measured on.

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
    """

    __slots__ = (
        "_algo",
        "_in_flight",
        "_inc",
        "_limit",
        "_lock",
        "_max",
        "_min",
        "_mode",
        "_shed",
        "_would",
        "algorithm",
        "name",
    )

    _composition_role: ClassVar[str] = "limit"

    def __init__(  # each documented above
        self,
        name: str = "adaptive",
        *,
        algorithm: Literal["gradient2", "aimd"] = "gradient2",
        initial: int = 20,
        min: int = 1,  # noqa: A002  # the issue's name for it
        max: int = 1000,  # noqa: A002  # same
        timeout: float = math.inf,
        mode: Mode = "enforce",
        fallback: Any = NO_FALLBACK,
        fallback_on: ExcTypes | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(
            clock=clock,
            fallback=make(fallback, fallback_on, f"adaptive:{name}", "AdaptiveLimit"),
        )
        given: object = name
        if not isinstance(given, str) or not name:
            raise TypeError(
                f"AdaptiveLimit: name must be a non-empty str, got {name!r}"
            )
        self.name = name
        bounds: tuple[tuple[str, object], ...] = (
            ("initial", initial),
            ("min", min),
            ("max", max),
        )
        for arg, value in bounds:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"AdaptiveLimit: {arg} must be an int >= 1, got {value!r}"
                )
        if not min <= initial <= max:
            raise ValueError(
                f"AdaptiveLimit: need min <= initial <= max, got {min}, {initial}, {max}"
            )
        if algorithm == "gradient2":
            self._algo: _Gradient2 | _Aimd = _Gradient2()
        elif algorithm == "aimd":
            self._algo = _Aimd(timeout=timeout)
        else:
            raise ValueError(
                f"AdaptiveLimit: algorithm must be 'gradient2' or 'aimd', got {algorithm!r}"
            )
        self.algorithm = algorithm
        self._min, self._max = float(min), float(max)
        self._limit = float(initial)
        self._in_flight = 0
        self._shed = 0
        self._would = 0
        self._mode: Mode = check_mode(mode, f"AdaptiveLimit {name!r}")
        self._lock = _fork.new_lock()
        _fork.register(self)
        self._inc = {
            (result, level): REGISTRY.counter(
                ADAPTIVE_CALLS,
                {
                    ADAPTIVE_NAME: name,
                    "tipkit.result": result,
                    "tipkit.adaptive.priority": level,
                },
            ).inc
            for result in ("acquired", "rejected")
            for level in SHARES
        }

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()

    @property
    def limit(self) -> int:
        """The current limit (rounded down)."""
        return int(self._limit)

    @property
    def in_flight(self) -> int:
        """Calls running now."""
        return self._in_flight

    @property
    def rejected(self) -> int:
        """Calls shed (enforce mode)."""
        return self._shed

    @property
    def would_reject(self) -> int:
        """Calls shadow mode let through that it would have shed."""
        return self._would

    @property
    def mode(self) -> Mode:
        """``"enforce"`` or ``"shadow"``; assign to switch a live limit."""
        return self._mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        self._mode = check_mode(value, f"AdaptiveLimit {self.name!r}")

    def __repr__(self) -> str:
        return (
            f"<AdaptiveLimit {self.name!r} {self.algorithm} limit={self.limit} "
            f"in_flight={self._in_flight} range={int(self._min)}..{int(self._max)} "
            f"mode={self._mode} rejected={self._shed}>"
        )

    # -- the core ---------------------------------------------------------------------
    def _step(self, now: float, pending: Wait | None) -> float:  # noqa: ARG002  # never waits
        level = current_priority()
        with self._lock:
            room = self._in_flight < max(1.0, self._limit * SHARES[level])
            shadow = not room and self._mode == "shadow"
            if room or shadow:
                self._in_flight += 1
            if not room:
                if shadow:
                    self._would += 1
                else:
                    self._shed += 1
            limit, in_flight = self._limit, self._in_flight
        if room:
            self._inc["acquired", level]()
            return now
        self._inc["rejected", level]()
        if AdaptiveShed.listened:
            BUS.publish(AdaptiveShed(self.name, level, limit, in_flight, shadow))
        if shadow:
            return now
        raise BulkheadFullError(
            f"adaptive limit {self.name!r} shed a {level} call: {in_flight} in flight, "
            f"limit {int(limit)} ({SHARES[level]:.0%} for {level})",
            name=self.name,
        )

    def _release(self, ticket: float, error: BaseException | None, now: float) -> None:
        timed_out = isinstance(error, TimeoutError)
        with self._lock:
            in_flight = self._in_flight
            self._in_flight -= 1
            if error is None or timed_out:
                new = self._algo.update(
                    self._limit, now - ticket, in_flight, timed_out, now
                )
                self._limit = min(self._max, max(self._min, new))
