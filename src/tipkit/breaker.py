"""Circuit breaker: stop calling a dependency that is failing, and probe it back.

::

    breaker = CircuitBreaker("payments", failure_rate_threshold=0.5)

    @breaker
    def charge(order): ...

    with breaker:
        ...

The breaker counts the outcomes of calls in a sliding window
(:class:`CountWindow` or :class:`TimeWindow`, O(1) per call). Once at least
``minimum_calls`` outcomes are in the window and the failure rate or the
slow-call rate reaches its threshold, it opens: calls are rejected at once with
:class:`~tipkit.errors.CircuitOpenError` for ``open_duration``. The first call
after that moves it to half-open, where exactly ``half_open_calls`` trial calls
run; their outcomes alone decide between closing and opening again.

In ``mode="shadow"`` the breaker runs the same state machine, publishes the same
events and counters (marked ``shadow``) but lets every call through; calls it
would have rejected stay out of its window, so its states are exactly those
enforcement would have produced.

Thread-safe and asyncio-safe: one lock guards the decisions, never held while
the protected call runs; in the closed state admission takes no lock at all.
Time is read from the injected ``clock`` (monotonic), once per decision.
"""

from __future__ import annotations

import enum
import functools
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, ParamSpec, TypeVar

from tipkit._core import _deadline, _fork
from tipkit._core._durations import to_seconds
from tipkit._core._guard import Guard, _expired_deadline
from tipkit._core._mode import Mode, check_mode
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import CircuitOpenError, RejectedError
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY, Counter
from tipkit.telemetry._events import BUS, AttributeValue, Event

if TYPE_CHECKING:
    from tipkit.stores._protocol import Store

__all__ = [
    "BreakerMetrics",
    "BreakerState",
    "BreakerStateChanged",
    "CallRejected",
    "CircuitBreaker",
    "CountWindow",
    "TimeWindow",
]

logger = logging.getLogger("tipkit")

P = ParamSpec("P")
R = TypeVar("R")


class BreakerState(enum.Enum):
    """The states of a :class:`CircuitBreaker`.

    ``CLOSED``, ``OPEN`` and ``HALF_OPEN`` are driven by outcomes; ``FORCED_OPEN``
    and ``DISABLED`` are set by an operator (:meth:`CircuitBreaker.force_open`,
    :meth:`CircuitBreaker.disable`) and left only by another operator call.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN
FORCED_OPEN = BreakerState.FORCED_OPEN
DISABLED = BreakerState.DISABLED

# Why a breaker changed state (BreakerStateChanged.reason).
REASON_FAILURE_RATE = "failure_rate"
REASON_SLOW_CALL_RATE = "slow_call_rate"
REASON_OPEN_DURATION_ELAPSED = "open_duration_elapsed"
REASON_TRIALS_PASSED = "trials_passed"
REASON_TRIAL_FAILURE_RATE = "trial_failure_rate"
REASON_TRIAL_SLOW_CALL_RATE = "trial_slow_call_rate"
REASON_HALF_OPEN_TIMEOUT = "half_open_timeout"
REASON_FORCED_OPEN = "forced_open"
REASON_DISABLED = "disabled"
REASON_RESET = "reset"

# Outcome codes.
_SUCCESS = 0
_FAILURE = 1
_IGNORED = 2


# -- windows ----------------------------------------------------------------------
class CountWindow:
    """A sliding window over the last *size* call outcomes.

    A ring buffer with running totals: recording an outcome is O(1) and memory is
    *size* bytes. This object is only a description; each breaker builds its own
    window from it, so one ``CountWindow`` may configure many breakers.

    Raises:
        TypeError: *size* is not an int.
        ValueError: *size* is less than 1.
    """

    __slots__ = ("size",)

    def __init__(self, size: int = 100) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"CountWindow: size must be an int, got {size!r}")
        if size < 1:
            raise ValueError(f"CountWindow: size must be >= 1, got {size!r}")
        self.size = size

    def __repr__(self) -> str:
        return f"CountWindow({self.size})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CountWindow) and other.size == self.size

    def __hash__(self) -> int:
        return hash((CountWindow, self.size))

    def _new(self) -> _CountRing:
        return _CountRing(self.size)


class TimeWindow:
    """A sliding window over the outcomes of the last *seconds* seconds.

    Outcomes are aggregated in one-second buckets (resilience4j's partial
    aggregation): recording is O(1) amortised, memory is *seconds* buckets, and
    the window covers the current partial second plus the ``seconds - 1`` whole
    seconds before it. A description only; each breaker builds its own window.

    Raises:
        TypeError: *seconds* is not a whole number of seconds (int or timedelta).
        ValueError: *seconds* is less than 1.
    """

    __slots__ = ("seconds",)

    def __init__(self, seconds: int | timedelta = 60) -> None:
        value: float
        if isinstance(seconds, timedelta):
            value = seconds.total_seconds()
        elif isinstance(seconds, bool) or not isinstance(seconds, int):
            raise TypeError(
                "TimeWindow: seconds must be a whole number of seconds (int or "
                f"timedelta), got {seconds!r}"
            )
        else:
            value = seconds
        if value != int(value):
            raise TypeError(
                "TimeWindow: seconds must be a whole number of seconds (buckets are "
                f"one second wide), got {seconds!r}"
            )
        if value < 1:
            raise ValueError(f"TimeWindow: seconds must be >= 1, got {seconds!r}")
        self.seconds = int(value)

    def __repr__(self) -> str:
        return f"TimeWindow(seconds={self.seconds})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimeWindow) and other.seconds == self.seconds

    def __hash__(self) -> int:
        return hash((TimeWindow, self.seconds))

    def _new(self) -> _TimeBuckets:
        return _TimeBuckets(self.seconds)


class _CountRing:
    """Outcome codes in a ring (bit 0 failure, bit 1 slow, bit 2 present)."""

    __slots__ = ("_buf", "_i", "_size", "calls", "failures", "slows")

    def __init__(self, size: int) -> None:
        self._size = size
        self._buf = bytearray(size)
        self._i = 0
        self.calls = 0
        self.failures = 0
        self.slows = 0

    def add(self, now: float, failed: int, slow: int) -> None:  # noqa: ARG002  # the window protocol: time windows need now
        i = self._i
        old = self._buf[i]
        if old:
            self.failures += failed - (old & 1)
            self.slows += slow - ((old >> 1) & 1)
        else:
            self.calls += 1
            self.failures += failed
            self.slows += slow
        self._buf[i] = 4 | failed | (slow << 1)
        i += 1
        self._i = 0 if i == self._size else i

    def add_successes(self, n: int) -> None:
        if n >= self._size:
            self._buf = bytearray(b"\x04") * self._size
            self.calls = self._size
            self.failures = self.slows = 0
            return
        buf, i, size = self._buf, self._i, self._size
        for _ in range(n):
            old = buf[i]
            if old != 4:
                if old:
                    self.failures -= old & 1
                    self.slows -= (old >> 1) & 1
                else:
                    self.calls += 1
                buf[i] = 4
            i += 1
            if i == size:
                i = 0
        self._i = i

    def expire(self, now: float) -> None:
        """Nothing expires by time in a count window."""

    def clear(self) -> None:
        self._buf = bytearray(self._size)
        self._i = 0
        self.calls = self.failures = self.slows = 0


class _TimeBuckets:
    """Per-second (calls, failures, slows) buckets with running totals."""

    __slots__ = (
        "_calls",
        "_fails",
        "_head",
        "_n",
        "_secs",
        "_slows",
        "calls",
        "failures",
        "slows",
    )

    def __init__(self, seconds: int) -> None:
        self._n = seconds
        self._secs = [-1] * seconds
        self._calls = [0] * seconds
        self._fails = [0] * seconds
        self._slows = [0] * seconds
        self._head = -1  # the latest second seen
        self.calls = self.failures = self.slows = 0

    def expire(self, now: float) -> None:
        sec = math.floor(now)
        head = self._head
        if sec <= head:
            return
        n = self._n
        # Clear every bucket that falls out of the window between head and sec;
        # at most n of them, so the cost per call is O(1) amortised and O(n) worst.
        for s in range(max(head + 1, sec - n + 1), sec + 1):
            j = s % n
            if self._secs[j] != -1:
                self.calls -= self._calls[j]
                self.failures -= self._fails[j]
                self.slows -= self._slows[j]
                self._calls[j] = self._fails[j] = self._slows[j] = 0
            self._secs[j] = s
        self._head = sec

    def add(self, now: float, failed: int, slow: int) -> None:
        self.expire(now)
        j = self._head % self._n
        self._calls[j] += 1
        self._fails[j] += failed
        self._slows[j] += slow
        self.calls += 1
        self.failures += failed
        self.slows += slow

    def clear(self) -> None:
        n = self._n
        self._secs = [-1] * n
        self._calls = [0] * n
        self._fails = [0] * n
        self._slows = [0] * n
        self.calls = self.failures = self.slows = 0
        self._head = -1


Window = CountWindow | TimeWindow


# -- metrics and events -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """A snapshot of a breaker's window and lifetime counts.

    Attributes:
        state: the state when the snapshot was taken.
        mode: ``"enforce"`` or ``"shadow"``.
        failure_rate: failures / calls in the window, or ``None`` while fewer
            than ``minimum_calls`` outcomes are in it (in half-open: over the
            trial calls completed so far).
        slow_call_rate: slow calls / calls, likewise (``None`` also when slowness
            is not recorded).
        calls: outcomes in the window (in half-open: trial outcomes).
        successes: successful calls in the window (slow or not).
        failures: failed calls in the window (slow or not).
        slow_calls: slow calls in the window (successful or failed).
        ignored: calls whose outcome was ignored, since the breaker was built.
        rejected: calls rejected, since the breaker was built (enforce mode).
        would_reject: calls let through in shadow mode that enforcement would
            have rejected, since the breaker was built.
        times_opened: consecutive openings since the breaker last closed.
        retry_after: seconds until an open breaker lets a trial through, ``0.0``
            when it would now, ``None`` when not open (or forced open).
    """

    state: BreakerState
    mode: Mode
    failure_rate: float | None
    slow_call_rate: float | None
    calls: int
    successes: int
    failures: int
    slow_calls: int
    ignored: int
    rejected: int
    would_reject: int
    times_opened: int
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class BreakerStateChanged(Event):
    """A breaker moved from one state to another.

    Attributes:
        from_state: the state left.
        to_state: the state entered.
        reason: why (``"failure_rate"``, ``"slow_call_rate"``,
            ``"open_duration_elapsed"``, ``"trials_passed"``,
            ``"trial_failure_rate"``, ``"trial_slow_call_rate"``,
            ``"half_open_timeout"``, ``"forced_open"``, ``"disabled"``,
            ``"reset"``).
        metrics: the metrics that led to the change, taken just before it
            (``metrics.state`` is *from_state*; for a half-open verdict they
            cover the trial calls).
        shadow: the breaker was in shadow mode (it decided, but enforced nothing).
        runbook: the breaker's runbook URL, if any.
    """

    from_state: BreakerState
    to_state: BreakerState
    reason: str
    metrics: BreakerMetrics
    shadow: bool = False
    runbook: str | None = None

    otel_name: ClassVar[str] = "tipkit.breaker.state_changed"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the breaker name, both states, the reason, mode and runbook."""
        attrs: dict[str, AttributeValue] = {
            names.BREAKER_NAME: self.name,
            "tipkit.breaker.from_state": self.from_state.value,
            names.STATE: self.to_state.value,
            "tipkit.breaker.reason": self.reason,
            names.MODE: "shadow" if self.shadow else "enforce",
        }
        if self.runbook is not None:
            attrs[names.RUNBOOK] = self.runbook
        return attrs


@dataclass(frozen=True, slots=True)
class CallRejected(Event):
    """A breaker rejected a call (or, in shadow mode, would have).

    Attributes:
        retry_after: seconds until a call may be let through, or ``None`` when
            unknown (forced open, or half-open with every trial permit taken).
        state: the breaker state that rejected the call.
        shadow: the call was let through anyway (shadow mode).
        runbook: the breaker's runbook URL, if any.
    """

    retry_after: float | None
    state: BreakerState = OPEN
    shadow: bool = False
    runbook: str | None = None

    otel_name: ClassVar[str] = "tipkit.breaker.call_rejected"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the breaker name, state, mode, retry_after and runbook."""
        attrs: dict[str, AttributeValue] = {
            names.BREAKER_NAME: self.name,
            names.STATE: self.state.value,
            names.MODE: "shadow" if self.shadow else "enforce",
        }
        if self.retry_after is not None:
            attrs["tipkit.retry_after"] = self.retry_after
        if self.runbook is not None:
            attrs[names.RUNBOOK] = self.runbook
        return attrs


# -- the breaker ------------------------------------------------------------------
class _Phase:
    """One generation of the state machine.

    Every ticket points at the phase it was admitted in, so an outcome from an
    earlier phase never decides a later one. A closed phase over a count window
    that holds ``minimum_calls`` outcomes counts plain successes lock-free on
    ``tick`` (an ``itertools.count``, atomic under the GIL): such a success can
    only lower the window's rates, so it is folded into the window later, under
    the lock, before anything reads it.
    """

    __slots__ = ("applied", "count", "generation", "state", "tick")

    def __init__(self, generation: int, state: BreakerState) -> None:
        self.generation = generation
        self.state = state
        self.count: itertools.count[int] | None = None
        self.tick: Callable[[], int] | None = None
        self.applied = 0

    def warm(self) -> None:
        """Start counting successes lock-free (lock held)."""
        self.count = itertools.count()
        self.applied = 0
        self.tick = self.count.__next__

    def pending(self) -> int:
        """Return and consume the successes ticked since the last call (lock held)."""
        count = self.count
        if count is None:
            return 0
        # next() returns how many values were drawn before it: the ticks plus
        # this method's own earlier draws, which `applied` includes. (Reading
        # the count through pickling would warn from 3.12 and fail from 3.14.)
        total = next(count)
        n = total - self.applied
        self.applied = total + 1
        return n

    def __repr__(self) -> str:
        return f"<phase {self.generation} {self.state.value}>"


# The ticket of a call let through in shadow mode that enforcement would have
# rejected: its outcome stays out of the window.
_UNCOUNTED = _Phase(-1, FORCED_OPEN)

Ticket = tuple[_Phase, float]
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
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"CircuitBreaker: {argument} must be a number, got {value!r}")
    if not 0 < value <= 1:
        raise ValueError(
            f"CircuitBreaker: {argument} must be a fraction in (0, 1] (0.5 means "
            f"50%), got {value!r}"
        )
    return float(value)


class CircuitBreaker(Guard[Ticket]):
    """Reject calls to a failing dependency; let a few trials probe it back.

    Args:
        name: names the breaker in errors, events, counters and ``repr``.
        failure_rate_threshold: open when failures / calls in the window is
            ``>=`` this fraction (default 0.5).
        slow_call_rate_threshold: open when slow calls / calls is ``>=`` this
            fraction (default 1.0: only when every call is slow).
        slow_call_duration: a call taking longer than this many seconds is slow;
            ``None`` (default) records no slowness.
        window: :class:`CountWindow` (default ``CountWindow(100)``) or
            :class:`TimeWindow`.
        minimum_calls: no verdict before this many outcomes are in the window
            (default 20; capped at a count window's size).
        open_duration: seconds to stay open before half-open (default 30.0), or a
            ``callable(times_opened) -> seconds`` for backoff; ``times_opened`` is
            1 on the first opening and grows until the breaker closes again.
        half_open_calls: trial calls let through in half-open, concurrently,
            exactly (default 5).
        max_half_open_wait: if half-open trials have not all finished after this
            many seconds, the next call re-opens the breaker (default ``None``:
            wait forever).
        record: exception types counted as failures (default ``(Exception,)``),
            or ``callable(exc) -> bool``. Other exceptions count as successes:
            the dependency answered.
        ignore: exception types counted as neither (default ``()``); checked
            before *record*. A :class:`~tipkit.errors.RejectedError` from an
            inner guard, and a ``BaseException`` that is not an ``Exception``
            (cancellation, ``KeyboardInterrupt``), are always ignored.
        mode: ``"enforce"`` (default) or ``"shadow"``; switchable live.
        runbook: URL carried by every event and error of this breaker.
        clock: the clock read for every decision (default: the system clock).
        store: with ``share="state"``, a :class:`~tipkit.stores.Store` through
            which breakers of the same *name* in every process share their
            OPEN, FORCED_OPEN and CLOSED transitions, so the fleet opens (and
            closes) together; each process still counts its own window.
            Without it (the default) nothing is shared and the hot path is
            untouched. See ``tipkit._shared_breaker`` and docs/fleet.md.
        share: ``"state"`` (the only sharing mode); required with *store*.
        refresh_interval: with *store*, the most seconds between two reads of
            the shared state (a store that pushes changes, such as
            ``RedisStore``, makes it sooner).

    Raises:
        TypeError, ValueError: an argument is invalid; the message names it.

    Thread-safe and asyncio-safe. The lock is never held while a protected call
    runs; closed-state admission reads the state without taking it.
    """

    __slots__ = (
        "_closed_phase",
        "_counter_cache",
        "_failure_threshold",
        "_half_open_calls",
        "_half_open_since",
        "_ignore",
        "_ignored",
        "_inc_failure",
        "_inc_ignored",
        "_inc_rejected",
        "_inc_slow",
        "_inc_success",
        "_lock",
        "_max_half_open_wait",
        "_min_calls",
        "_minimum_calls",
        "_mode",
        "_open_duration",
        "_open_duration_fn",
        "_open_until",
        "_permits",
        "_phase",
        "_record",
        "_record_fn",
        "_rejected",
        "_ring",
        "_slow_after",
        "_slow_threshold",
        "_state",
        "_timed",
        "_times_opened",
        "_trial_calls",
        "_trial_failures",
        "_trial_slows",
        "_window",
        "_window_spec",
        "_would_reject",
        "name",
        "runbook",
    )

    def __new__(  # noqa: PYI034  # returns a subclass when store= is given
        cls,
        *args: Any,  # noqa: ARG004  # __init__ takes them
        store: Store | None = None,
        **kwargs: Any,  # noqa: ARG004  # __init__ takes them
    ) -> CircuitBreaker:
        """Return a breaker sharing its state through *store* when one is given."""
        if store is not None and cls is CircuitBreaker:
            from tipkit._shared_breaker import SharedBreaker  # noqa: PLC0415  # loaded only for fleets

            return object.__new__(SharedBreaker)
        return object.__new__(cls)

    def __init__(  # noqa: C901, PLR0912, PLR0915  # one flat validation per argument reads best
        self,
        name: str,
        *,
        failure_rate_threshold: float = 0.5,
        slow_call_rate_threshold: float = 1.0,
        slow_call_duration: float | timedelta | None = None,
        window: Window | None = None,
        minimum_calls: int = 20,
        open_duration: OpenDuration = 30.0,
        half_open_calls: int = 5,
        max_half_open_wait: float | timedelta | None = None,
        record: Record = (Exception,),
        ignore: type[BaseException] | tuple[type[BaseException], ...] = (),
        mode: Mode = "enforce",
        runbook: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        store: Store | None = None,
        share: Literal["state"] | None = None,
        refresh_interval: float | timedelta = 1.0,
    ) -> None:
        super().__init__(clock=clock)
        if not isinstance(name, str) or not name:  # type: ignore[redundant-expr]  # callers without type checking pass anything
            raise TypeError(
                f"CircuitBreaker: name must be a non-empty str, got {name!r}"
            )
        self.name = name
        self._failure_threshold = _fraction(
            failure_rate_threshold, "failure_rate_threshold"
        )
        self._slow_threshold = _fraction(
            slow_call_rate_threshold, "slow_call_rate_threshold"
        )
        if slow_call_duration is None:
            self._slow_after: float | None = None
        else:
            secs = to_seconds(slow_call_duration, "CircuitBreaker: slow_call_duration")
            if secs <= 0:
                raise ValueError(
                    f"CircuitBreaker: slow_call_duration must be > 0 seconds or None, "
                    f"got {slow_call_duration!r}"
                )
            self._slow_after = secs
        if window is None:
            window = CountWindow(100)
        if not isinstance(window, CountWindow | TimeWindow):
            raise TypeError(
                f"CircuitBreaker: window must be a CountWindow or a TimeWindow, got {window!r}"
            )
        self._window_spec = window
        self._window = window._new()
        self._ring = self._window if isinstance(self._window, _CountRing) else None
        if isinstance(minimum_calls, bool) or not isinstance(minimum_calls, int):
            raise TypeError(
                f"CircuitBreaker: minimum_calls must be an int, got {minimum_calls!r}"
            )
        if minimum_calls < 1:
            raise ValueError(
                f"CircuitBreaker: minimum_calls must be >= 1, got {minimum_calls!r}"
            )
        self._minimum_calls = minimum_calls
        # A count window never holds more than its size: a larger minimum could
        # never be met, so it is capped (as resilience4j does).
        self._min_calls = (
            min(minimum_calls, window.size)
            if isinstance(window, CountWindow)
            else minimum_calls
        )
        self._open_duration_fn: Callable[[int], float | timedelta] | None
        if callable(open_duration) and not isinstance(open_duration, timedelta):
            self._open_duration_fn = open_duration
            self._open_duration = self._duration_from(open_duration, 1, strict=True)
        else:
            self._open_duration_fn = None
            secs = to_seconds(open_duration, "CircuitBreaker: open_duration")
            if secs < 0:
                raise ValueError(
                    f"CircuitBreaker: open_duration must be >= 0 seconds, got {open_duration!r}"
                )
            self._open_duration = secs
        if isinstance(half_open_calls, bool) or not isinstance(half_open_calls, int):
            raise TypeError(
                f"CircuitBreaker: half_open_calls must be an int, got {half_open_calls!r}"
            )
        if half_open_calls < 1:
            raise ValueError(
                f"CircuitBreaker: half_open_calls must be >= 1, got {half_open_calls!r}"
            )
        self._half_open_calls = half_open_calls
        if max_half_open_wait is None:
            self._max_half_open_wait: float | None = None
        else:
            secs = to_seconds(max_half_open_wait, "CircuitBreaker: max_half_open_wait")
            if secs <= 0:
                raise ValueError(
                    "CircuitBreaker: max_half_open_wait must be > 0 seconds or None, "
                    f"got {max_half_open_wait!r}"
                )
            self._max_half_open_wait = secs
        self._record_fn: Callable[[BaseException], bool] | None = None
        self._record: tuple[type[BaseException], ...] = ()
        if isinstance(record, type | tuple):
            self._record = _exception_types(record, "record")
        elif callable(record):
            self._record_fn = record
        else:
            _exception_types(record, "record")  # type: ignore[unreachable]  # untyped callers
        # An inner guard's rejection says nothing about the dependency's health.
        self._ignore = (*_exception_types(ignore, "ignore"), RejectedError)
        self._mode: Mode = check_mode(mode, f"CircuitBreaker {name!r}")
        if runbook is not None and (not isinstance(runbook, str) or not runbook):  # type: ignore[redundant-expr]  # callers without type checking pass anything
            raise TypeError(
                f"CircuitBreaker: runbook must be a non-empty str or None, got {runbook!r}"
            )
        self.runbook = runbook

        # Clock readings matter to a closed breaker only for slow calls and time
        # windows; without either the fast faces skip reading the clock.
        self._timed = self._slow_after is not None or self._ring is None
        self._lock = _fork.new_lock()
        _fork.register(self)
        self._state = CLOSED
        self._phase = _Phase(0, CLOSED)
        self._closed_phase: _Phase | None = self._phase
        self._times_opened = 0
        self._open_until = 0.0
        self._half_open_since = 0.0
        self._permits = 0
        self._trial_calls = self._trial_failures = self._trial_slows = 0
        self._ignored = self._rejected = self._would_reject = 0

        self._counter_cache: dict[tuple[str, str], Any] = {}
        self._bind_counters()
        REGISTRY.register_gauge(names.BREAKER_STATE, self, _state_gauge)
        if store is not None or share is not None:
            self._init_shared(store, share, refresh_interval)

    def _init_shared(
        self,
        store: Store | None,
        share: str | None,
        refresh_interval: float | timedelta,  # noqa: ARG002  # the shared subclass uses it
    ) -> None:
        """Refuse sharing options without a store (the shared subclass overrides this)."""
        if store is None:
            raise ValueError(
                f"CircuitBreaker {self.name!r}: share={share!r} needs store= (where "
                "the shared state lives)"
            )
        raise TypeError(
            f"CircuitBreaker {self.name!r}: store= works with CircuitBreaker itself, "
            f"not with the subclass {type(self).__name__}"
        )

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()

    # -- configuration readers -----------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """The current state, read without the lock.

        An open breaker whose ``open_duration`` has passed still reads ``OPEN``
        until a call arrives: the transition is lazy.
        """
        return self._state

    @property
    def mode(self) -> Mode:
        """``"enforce"`` or ``"shadow"``; assign to switch a live breaker."""
        return self._mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        self.set_mode(value)

    def set_mode(self, mode: Mode) -> None:
        """Switch between ``"enforce"`` and ``"shadow"`` without touching the state.

        Raises:
            ValueError: *mode* is neither. Thread-safe.
        """
        checked = check_mode(mode, f"CircuitBreaker {self.name!r}")
        with self._lock:
            self._mode = checked
            self._bind_counters()

    @property
    def window(self) -> Window:
        """The window configuration."""
        return self._window_spec

    def _bind_counters(self) -> None:
        mode = self._mode

        def inc(outcome: str) -> Counter:
            key = (outcome, mode)
            counter = self._counter_cache.get(key)
            if counter is None:
                counter = self._counter_cache[key] = REGISTRY.counter(
                    names.BREAKER_CALLS,
                    {
                        names.BREAKER_NAME: self.name,
                        names.OUTCOME: outcome,
                        names.MODE: mode,
                    },
                )
            # Keep the Counter, call counter.inc(): telemetry.synthetic() routes it.
            return counter

        self._inc_success = inc("success")
        self._inc_failure = inc("failure")
        self._inc_slow = inc("slow")
        self._inc_ignored = inc("ignored")
        self._inc_rejected = inc("rejected")

    # -- the core ---------------------------------------------------------------------
    def _step(self, now: float, pending: object) -> Ticket:  # noqa: ARG002  # the guard protocol; a breaker never waits
        phase = self._closed_phase  # lock-free: set only while CLOSED
        if phase is not None:
            return (phase, now)
        return self._admit_slow(now)

    def _admit_slow(self, now: float) -> Ticket:
        events: list[Event] = []
        rejection: CircuitOpenError | None = None
        with self._lock:
            state = self._state
            if state is OPEN and now >= self._open_until:
                self._transition(HALF_OPEN, REASON_OPEN_DURATION_ELAPSED, now, events)
                state = HALF_OPEN
            if (
                state is HALF_OPEN
                and self._max_half_open_wait is not None
                and now - self._half_open_since >= self._max_half_open_wait
            ):
                self._transition(OPEN, REASON_HALF_OPEN_TIMEOUT, now, events)
                state = OPEN
            if state is CLOSED or state is DISABLED:
                ticket: Ticket = (self._phase, now)
            elif state is HALF_OPEN and self._permits > 0:
                self._permits -= 1
                ticket = (self._phase, now)
            else:
                retry_after = (
                    max(0.0, self._open_until - now) if state is OPEN else None
                )
                shadow = self._mode == "shadow"
                if shadow:
                    self._would_reject += 1
                    ticket = (_UNCOUNTED, now)
                else:
                    self._rejected += 1
                    rejection = self._rejection(state, retry_after)
                self._inc_rejected.inc()
                if CallRejected.listened:
                    events.append(
                        CallRejected(
                            self.name, retry_after, state, shadow, self.runbook
                        )
                    )
        for event in events:
            BUS.publish(event)
        if rejection is not None:
            raise rejection
        return ticket

    def _rejection(
        self, state: BreakerState, retry_after: float | None
    ) -> CircuitOpenError:
        if state is OPEN:
            why = f"open; retry after {retry_after:.3f}s"
        elif state is HALF_OPEN:
            why = f"half-open and all {self._half_open_calls} trial calls are running"
        else:
            why = "forced open by an operator"
        see = f" (runbook: {self.runbook})" if self.runbook else ""
        return CircuitOpenError(
            f"circuit breaker {self.name!r} is {why}{see}",
            name=self.name,
            retry_after=retry_after,
            runbook=self.runbook,
        )

    def _classify(self, error: BaseException) -> int:
        if not isinstance(error, Exception) or isinstance(error, self._ignore):
            return _IGNORED
        fn = self._record_fn
        if fn is None:
            return _FAILURE if isinstance(error, self._record) else _SUCCESS
        try:
            return _FAILURE if fn(error) else _SUCCESS
        except Exception:
            logger.exception(
                "circuit breaker %r: record callable %r raised; counting the call "
                "as a failure",
                self.name,
                fn,
            )
            return _FAILURE

    def _release(self, ticket: Ticket, error: BaseException | None, now: float) -> None:
        phase, start = ticket
        if error is None:
            self._record_ok(phase, start, now)
            return
        if phase is _UNCOUNTED:
            return
        outcome = self._classify(error)
        slow_after = self._slow_after
        slow = 1 if slow_after is not None and now - start > slow_after else 0
        if outcome == _IGNORED:
            self._inc_ignored.inc()
        elif outcome == _FAILURE:
            self._inc_failure.inc()
        elif slow:
            self._inc_slow.inc()
        else:
            self._inc_success.inc()
        self._settle(phase, outcome, slow, now)

    def _record_ok(self, phase: _Phase, start: float, end: float) -> None:  # noqa: C901, PLR0911, PLR0912  # the hot path, inlined on purpose
        """Record a call admitted in *phase* that returned: the closed-state hot path.

        *start* and *end* are clock readings, or both 0.0 when neither the window
        nor slow-call detection needs time (a count window without
        ``slow_call_duration``): the fast faces then skip reading the clock.
        """
        slow_after = self._slow_after
        if slow_after is None or end - start <= slow_after:
            tick = phase.tick
            if tick is not None:
                tick()
                self._inc_success.inc()
                return
        if (
            slow_after is not None and end - start > slow_after
        ) or phase is not self._closed_phase:
            if phase is not _UNCOUNTED:
                slow = 1 if slow_after is not None and end - start > slow_after else 0
                (self._inc_slow if slow else self._inc_success).inc()
                # Without `_timed` the fast faces pass end=0.0: read the clock here.
                self._settle(
                    phase,
                    _SUCCESS,
                    slow,
                    end if self._timed else self._clock.monotonic(),
                )
            return
        self._inc_success.inc()
        lock = self._lock
        lock.acquire()
        try:
            if phase is not self._closed_phase:
                return  # the breaker left this phase while the call ran: stale
            ring = self._ring
            if ring is not None:
                # A success only lowers a count window's rates, so the verdict can
                # change only when this success brings the window to minimum_calls.
                i = ring._i
                old = ring._buf[i]
                if old != 4:
                    if old:
                        ring.failures -= old & 1
                        ring.slows -= (old >> 1) & 1
                    else:
                        ring.calls += 1
                    ring._buf[i] = 4
                i += 1
                ring._i = 0 if i == ring._size else i
                if ring.calls < self._min_calls:
                    return
                if not old and ring.calls == self._min_calls:
                    phase.warm()
                if (
                    old
                    or ring.calls != self._min_calls
                    or not (ring.failures or ring.slows)
                ):
                    return
                calls, failures, slows = ring.calls, ring.failures, ring.slows
            else:
                # In a time window, expiring old buckets can raise the rates.
                window = self._window
                window.add(end, 0, 0)
                calls, failures, slows = window.calls, window.failures, window.slows
                if calls < self._min_calls or not (failures or slows):
                    return
            reason = self._verdict(calls, failures, slows)
            if reason is None:
                return
            events: list[Event] = []
            self._transition(
                OPEN, reason, end if ring is None else self._clock.monotonic(), events
            )
        finally:
            lock.release()
        for event in events:
            BUS.publish(event)

    def _settle(self, phase: _Phase, outcome: int, slow: int, now: float) -> None:  # noqa: C901, PLR0912  # one state machine step
        """Record an outcome in the phase it was admitted in (the general path)."""
        events: list[Event] | None = None
        with self._lock:
            if outcome == _IGNORED:
                self._ignored += 1
            if phase is not self._phase:
                return  # stale: admitted in an earlier phase
            if phase is self._closed_phase:
                if outcome == _IGNORED:
                    return
                window = self._window
                ring = self._ring
                if ring is not None:
                    ring.add_successes(phase.pending())
                window.add(now, outcome, slow)
                if (
                    ring is not None
                    and phase.tick is None
                    and ring.calls >= self._min_calls
                ):
                    phase.warm()
                if (
                    window.failures or window.slows
                ) and window.calls >= self._min_calls:
                    reason = self._verdict(window.calls, window.failures, window.slows)
                    if reason is not None:
                        events = []
                        self._transition(OPEN, reason, now, events)
            elif phase.state is HALF_OPEN:
                if outcome == _IGNORED:
                    self._permits += 1
                    return
                self._trial_calls += 1
                self._trial_failures += outcome
                self._trial_slows += slow
                if self._trial_calls >= self._half_open_calls:
                    events = []
                    reason = self._verdict(
                        self._trial_calls, self._trial_failures, self._trial_slows
                    )
                    if reason is None:
                        self._transition(CLOSED, REASON_TRIALS_PASSED, now, events)
                    else:
                        self._transition(OPEN, "trial_" + reason, now, events)
        if events:
            for event in events:
                BUS.publish(event)

    def _verdict(self, calls: int, failures: int, slows: int) -> str | None:
        if failures and failures / calls >= self._failure_threshold:
            return REASON_FAILURE_RATE
        if slows and slows / calls >= self._slow_threshold:
            return REASON_SLOW_CALL_RATE
        return None

    def _duration_from(
        self, fn: Callable[[int], float | timedelta], times_opened: int, *, strict: bool
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
                self._open_duration,
            )
            return self._open_duration
        return secs

    def _transition(
        self, to: BreakerState, reason: str, now: float, events: list[Event]
    ) -> None:
        """Move to *to* (lock held); queue the event for publication after unlocking."""
        from_state = self._state
        self._closed_phase = None  # first: lock-free admission must stop at once
        if self._ring is not None and from_state is CLOSED:
            self._ring.add_successes(self._phase.pending())
        # The snapshot that led to the change, taken before it.
        before = self._metrics_locked(now) if BreakerStateChanged.listened else None
        self._phase = phase = _Phase(self._phase.generation + 1, to)
        self._state = to
        if to is CLOSED:
            self._window.clear()
            self._times_opened = 0
            self._closed_phase = phase
        elif to is OPEN:
            self._times_opened += 1
            fn = self._open_duration_fn
            duration = (
                self._open_duration
                if fn is None
                else self._duration_from(fn, self._times_opened, strict=False)
            )
            self._open_until = now + duration
        elif to is HALF_OPEN:
            # The trials alone decide from here: the old window is done with.
            self._window.clear()
            self._permits = self._half_open_calls
            self._trial_calls = self._trial_failures = self._trial_slows = 0
            self._half_open_since = now
        elif to is DISABLED:
            self._window.clear()
        key = ("transition", f"{from_state.value}>{to.value}:{self._mode}")
        counter = self._counter_cache.get(key)
        if counter is None:
            counter = self._counter_cache[key] = REGISTRY.counter(
                names.BREAKER_TRANSITIONS,
                {
                    names.BREAKER_NAME: self.name,
                    "tipkit.breaker.from_state": from_state.value,
                    names.STATE: to.value,
                    names.MODE: self._mode,
                },
            )
        counter.inc()
        if before is not None:
            events.append(
                BreakerStateChanged(
                    self.name,
                    from_state,
                    to,
                    reason,
                    before,
                    self._mode == "shadow",
                    self.runbook,
                )
            )

    # -- operator controls ------------------------------------------------------------
    def _operate(self, to: BreakerState, reason: str) -> None:
        events: list[Event] = []
        with self._lock:
            if self._state is not to or to is CLOSED:
                self._transition(to, reason, self._clock.monotonic(), events)
        for event in events:
            BUS.publish(event)

    def force_open(self) -> None:
        """Reject every call (``FORCED_OPEN``) until :meth:`reset` or :meth:`disable`.

        Idempotent and thread-safe; in shadow mode calls still run and are counted
        as would-be rejections.
        """
        self._operate(FORCED_OPEN, REASON_FORCED_OPEN)

    def disable(self) -> None:
        """Let every call through and record nothing (``DISABLED``) until :meth:`reset`.

        Idempotent and thread-safe. Outcome counters keep counting.
        """
        self._operate(DISABLED, REASON_DISABLED)

    def reset(self) -> None:
        """Close the breaker with an empty window and forget past openings.

        Thread-safe. Calls admitted before the reset finish without deciding
        anything (their phase has ended).
        """
        self._operate(CLOSED, REASON_RESET)

    # -- observation --------------------------------------------------------------------
    @property
    def metrics(self) -> BreakerMetrics:
        """Return a consistent snapshot of the window and counts (takes the lock)."""
        now = self._clock.monotonic()
        with self._lock:
            return self._metrics_locked(now)

    def _metrics_locked(self, now: float) -> BreakerMetrics:
        state = self._state
        if self._ring is not None and state is CLOSED:
            self._ring.add_successes(self._phase.pending())
        if state is HALF_OPEN:
            calls, failures, slows = (
                self._trial_calls,
                self._trial_failures,
                self._trial_slows,
            )
            enough = calls > 0
        else:
            window = self._window
            window.expire(now)
            calls, failures, slows = window.calls, window.failures, window.slows
            enough = calls >= self._min_calls
        return BreakerMetrics(
            state=state,
            mode=self._mode,
            failure_rate=failures / calls if enough else None,
            slow_call_rate=slows / calls
            if enough and self._slow_after is not None
            else None,
            calls=calls,
            successes=calls - failures,
            failures=failures,
            slow_calls=slows,
            ignored=self._ignored,
            rejected=self._rejected,
            would_reject=self._would_reject,
            times_opened=self._times_opened,
            retry_after=max(0.0, self._open_until - now) if state is OPEN else None,
        )

    def __repr__(self) -> str:
        m = self.metrics
        rate = "-" if m.failure_rate is None else f"{m.failure_rate:.2f}"
        extra = ""
        if m.state is OPEN:
            extra = f" retry_after={m.retry_after:.3f}"
        elif m.state is HALF_OPEN:
            extra = f" trial_permits_left={self._permits}"
        slow = ""
        if self._slow_after is not None:
            srate = "-" if m.slow_call_rate is None else f"{m.slow_call_rate:.2f}"
            slow = (
                f" slow_call_rate={srate}/{self._slow_threshold}"
                f" slow_call_duration={self._slow_after}"
            )
        duration = (
            repr(self._open_duration_fn)
            if self._open_duration_fn is not None
            else f"{self._open_duration}"
        )
        return (
            f"<CircuitBreaker {self.name!r} state={m.state.value}{extra} mode={m.mode} "
            f"failure_rate={rate}/{self._failure_threshold}{slow} calls={m.calls} "
            f"window={self._window_spec!r} minimum_calls={self._min_calls} "
            f"open_duration={duration} half_open_calls={self._half_open_calls}>"
        )

    # -- fast faces: the decorators inline the closed-state path -------------------------
    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        breaker = self
        now = self._clock.monotonic
        current_deadline = _deadline.CURRENT.get
        admit = self._admit_slow
        release = self._release
        record_ok = self._record_ok
        timed = self._timed

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            dl = current_deadline()
            if dl is not None and dl.expired():
                raise _expired_deadline(dl, breaker)
            phase = breaker._closed_phase
            if phase is None:
                phase, start = admit(now())
            else:
                start = now() if timed else 0.0
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                release((phase, start), exc, now())
                raise
            if not timed:
                tick = phase.tick
                if tick is not None:
                    tick()
                    breaker._inc_success.inc()
                    return result
            record_ok(phase, start, now() if timed else 0.0)
            return result

        return guarded

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        breaker = self
        now = self._clock.monotonic
        current_deadline = _deadline.CURRENT.get
        admit = self._admit_slow
        release = self._release
        record_ok = self._record_ok
        timed = self._timed

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            dl = current_deadline()
            if dl is not None and dl.expired():
                raise _expired_deadline(dl, breaker)
            phase = breaker._closed_phase
            if phase is None:
                phase, start = admit(now())
            else:
                start = now() if timed else 0.0
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                release((phase, start), exc, now())
                raise
            if not timed:
                tick = phase.tick
                if tick is not None:
                    tick()
                    breaker._inc_success.inc()
                    return result
            record_ok(phase, start, now() if timed else 0.0)
            return result

        return guarded


def _state_gauge(breaker: CircuitBreaker) -> list[tuple[float, dict[str, str]]]:
    current = breaker.state
    return [
        (
            1.0 if s is current else 0.0,
            {names.BREAKER_NAME: breaker.name, names.STATE: s.value},
        )
        for s in BreakerState
    ]
