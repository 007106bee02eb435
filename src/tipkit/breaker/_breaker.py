"""The circuit breaker the user holds: a thin strategy over the state machine.

:class:`CircuitBreaker` validates its options (:mod:`._config`), keeps the
decisions in a :class:`~tipkit.breaker._machine.Machine` under one lock, and
does what the pure machine may not: read the clock, count outcomes and
transitions, publish events, and hand transitions to its fleet collaborator
(:mod:`._sync`) when it has a store. The faces (decorator, ``with``,
``async with``, ``call``, ``acall``) come from :class:`~tipkit._core._guard.Guard`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from tipkit._core import _deadline, _fork
from tipkit._core._guard import Guard, _expired_deadline
from tipkit._core._mode import Mode, check_mode
from tipkit.breaker._config import (
    FAILURE,
    IGNORED,
    SUCCESS,
    Config,
    OpenDuration,
    Record,
)
from tipkit.breaker._events import (
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    REASON_DISABLED,
    REASON_FORCED_OPEN,
    REASON_RESET,
    REASON_SHARED,
    BreakerMetrics,
    BreakerState,
    BreakerStateChanged,
    CallRejected,
)
from tipkit.breaker._machine import (
    UNCOUNTED,
    HalfOpen,
    Machine,
    Move,
    Phase,
    Refusal,
    Ticket,
)
from tipkit.breaker._sync import FleetSync, adoptable
from tipkit.breaker._window import Window, _CountRing
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import CircuitOpenError
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY, Counter
from tipkit.telemetry._events import BUS

if TYPE_CHECKING:
    from tipkit.stores._protocol import KeyValueStore

__all__ = ["CircuitBreaker"]

P = ParamSpec("P")
R = TypeVar("R")


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
        store: with ``share="state"``, a :class:`~tipkit.stores.KeyValueStore`
            through which breakers of the same *name* in every process share
            their OPEN, FORCED_OPEN and CLOSED transitions, so the fleet opens
            (and closes) together; each process still counts its own window.
            Without it (the default) nothing is shared and the hot path is
            untouched. See docs/fleet.md.
        share: ``"state"`` (the only sharing mode); required with *store*.
        refresh_interval: with *store*, the most seconds between two reads of
            the shared state (a store that pushes changes, such as
            ``RedisStore``, makes it sooner).

    Raises:
        TypeError, ValueError: an argument is invalid; the message names it.

    Thread-safe and asyncio-safe. The lock is never held while a protected call
    runs; closed-state admission reads the state without taking it. Without a
    store nothing blocks but that lock. With a store, a call that finds the
    shared state due for a read, or that makes a transition the fleet must
    hear of, also makes one store call: sync faces block on it, async faces
    await the store's async method; either lasts at most the store's timeout,
    and a store failure leaves the breaker deciding on its own state (see
    :mod:`tipkit.breaker._sync`).
    """

    __slots__ = (
        "_cfg",
        "_counter_cache",
        "_fleet",
        "_inc_failure",
        "_inc_ignored",
        "_inc_rejected",
        "_inc_slow",
        "_inc_success",
        "_lock",
        "_m",
        "_timed",
        "name",
        "runbook",
    )

    def __init__(  # one keyword per option, as documented
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
        store: KeyValueStore | None = None,
        share: Literal["state"] | None = None,
        refresh_interval: float | timedelta = 1.0,
    ) -> None:
        super().__init__(clock=clock)
        cfg = Config(
            name,
            failure_rate_threshold=failure_rate_threshold,
            slow_call_rate_threshold=slow_call_rate_threshold,
            slow_call_duration=slow_call_duration,
            window=window,
            minimum_calls=minimum_calls,
            open_duration=open_duration,
            half_open_calls=half_open_calls,
            max_half_open_wait=max_half_open_wait,
            record=record,
            ignore=ignore,
            runbook=runbook,
        )
        self._cfg = cfg
        self.name = cfg.name
        self.runbook = cfg.runbook
        self._m = Machine(cfg, check_mode(mode, f"CircuitBreaker {name!r}"))
        # Clock readings matter to a closed breaker only for slow calls and time
        # windows; without either the fast faces skip reading the clock.
        self._timed = cfg.slow_after is not None or not isinstance(
            self._m.window, _CountRing
        )
        self._lock = _fork.new_lock()
        _fork.register(self)
        self._counter_cache: dict[tuple[str, str], Counter] = {}
        self._bind_counters()
        REGISTRY.register_gauge(names.BREAKER_STATE, self, _state_gauge)
        self._fleet: FleetSync | None = None
        if store is not None:
            self._fleet = FleetSync(
                cfg.name, store, share, refresh_interval, adopt=self._adopt, clock=clock
            )
        elif share is not None:
            raise ValueError(
                f"CircuitBreaker {name!r}: share={share!r} needs store= (where "
                "the shared state lives)"
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
        return self._m.current.state

    @property
    def mode(self) -> Mode:
        """``"enforce"`` or ``"shadow"``; assign to switch a live breaker."""
        return self._m.mode

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
            self._m.mode = checked
            self._bind_counters()

    @property
    def window(self) -> Window:
        """The window configuration."""
        return self._cfg.window

    @property
    def store(self) -> KeyValueStore | None:
        """The store the state is shared through, or ``None`` (not shared)."""
        fleet = self._fleet
        return None if fleet is None else fleet.store

    def _bind_counters(self) -> None:
        mode = self._m.mode

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
        fleet = self._fleet
        if fleet is not None and now >= fleet.next:
            fleet.pull(now)
        phase = self._m.closed  # lock-free: set only while CLOSED
        if phase is not None:
            return (phase, now)
        return self._admit_slow(now)

    def _admit_slow(self, now: float) -> Ticket:
        moves: list[Move] = []
        with self._lock:
            decision = self._m.admit(now, moves)
            if moves:
                self._note(moves)
        if moves:
            self._after(moves)
        if not isinstance(decision, Refusal):
            return (decision, now)
        refusal = decision
        self._inc_rejected.inc()
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
        if refusal.shadow:
            return (UNCOUNTED, now)
        raise self._rejection(refusal.state, refusal.retry_after)

    def _rejection(
        self, state: BreakerState, retry_after: float | None
    ) -> CircuitOpenError:
        if state is OPEN:
            why = f"open; retry after {retry_after:.3f}s"
        elif state is HALF_OPEN:
            why = (
                f"half-open and all {self._cfg.half_open_calls} trial calls are running"
            )
        else:
            why = "forced open by an operator"
        see = f" (runbook: {self.runbook})" if self.runbook else ""
        return CircuitOpenError(
            f"circuit breaker {self.name!r} is {why}{see}",
            name=self.name,
            retry_after=retry_after,
            runbook=self.runbook,
        )

    def _release(self, ticket: Ticket, error: BaseException | None, now: float) -> None:
        phase, start = ticket
        if error is None:
            self._record_ok(phase, start, now)
            return
        if phase is UNCOUNTED:
            return
        outcome = self._cfg.classify(error)
        slow_after = self._cfg.slow_after
        slow = 1 if slow_after is not None and now - start > slow_after else 0
        if outcome == IGNORED:
            self._inc_ignored.inc()
        elif outcome == FAILURE:
            self._inc_failure.inc()
        elif slow:
            self._inc_slow.inc()
        else:
            self._inc_success.inc()
        self._settle(phase, outcome, slow, now)

    def _record_ok(self, phase: Phase, start: float, end: float) -> None:
        """Record a call admitted in *phase* that returned: the closed-state hot path.

        *start* and *end* are clock readings, or both 0.0 when neither the window
        nor slow-call detection needs time (a count window without
        ``slow_call_duration``): the fast faces then skip reading the clock.
        """
        slow_after = self._cfg.slow_after
        slow = 1 if slow_after is not None and end - start > slow_after else 0
        if not slow:
            tick = phase.tick
            if tick is not None:
                tick()
                self._inc_success.inc()
                return
        m = self._m
        if slow or phase is not m.closed:
            if phase is not UNCOUNTED:
                (self._inc_slow if slow else self._inc_success).inc()
                # Without `_timed` the fast faces pass end=0.0: read the clock here.
                self._settle(
                    phase,
                    SUCCESS,
                    slow,
                    end if self._timed else self._clock.monotonic(),
                )
            return
        self._inc_success.inc()
        moves: list[Move] = []
        with self._lock:
            if phase is not m.closed:
                return  # the breaker left this phase while the call ran: stale
            reason = phase.succeed(self._cfg, end)
            if reason is None:
                return
            # A count window's fast faces may pass end=0.0: read the clock then.
            at = end if phase.ring is None else self._clock.monotonic()
            m.enter(OPEN, reason, at, moves)
            self._note(moves)
        self._after(moves)

    def _settle(self, phase: Phase, outcome: int, slow: int, now: float) -> None:
        """Record an outcome in the phase it was admitted in (the general path)."""
        moves: list[Move] = []
        with self._lock:
            self._m.settle(phase, outcome, slow, now, moves)
            if moves:
                self._note(moves)
        if moves:
            self._after(moves)

    # -- transitions: count, publish, share -------------------------------------------
    def _note(self, moves: list[Move]) -> None:
        """Hand *moves* to the fleet (lock held), so the last one is what it hears."""
        fleet = self._fleet
        if fleet is not None:
            fleet.note(moves)

    def _after(self, moves: list[Move]) -> None:
        """Count and publish *moves* (lock released); write the shared state if due."""
        self._publish(moves)
        fleet = self._fleet
        if fleet is not None and fleet.pending:
            fleet.push()

    def _publish(self, moves: list[Move]) -> None:
        cache = self._counter_cache
        for move in moves:
            key = (
                "transition",
                f"{move.from_state.value}>{move.to_state.value}:{move.mode}",
            )
            counter = cache.get(key)
            if counter is None:
                counter = cache[key] = REGISTRY.counter(
                    names.BREAKER_TRANSITIONS,
                    {
                        names.BREAKER_NAME: self.name,
                        "tipkit.breaker.from_state": move.from_state.value,
                        names.STATE: move.to_state.value,
                        names.MODE: move.mode,
                    },
                )
            counter.inc()
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

    def _adopt(self, state: BreakerState, now: float) -> None:
        """Move to the fleet's *state* if this breaker's state allows it."""
        moves: list[Move] = []
        with self._lock:
            if adoptable(state, self._m.current.state):
                self._m.enter(state, REASON_SHARED, now, moves)
        self._publish(moves)

    # -- fleet ----------------------------------------------------------------------
    def sync(self) -> None:
        """Read the shared state now and adopt it (normally done when due).

        Blocks up to the store's timeout; does nothing without a store. A store
        failure is reported as ``StoreUnavailable`` and changes nothing.
        """
        fleet = self._fleet
        if fleet is not None:
            fleet.pull(self._clock.monotonic())

    # -- operator controls ------------------------------------------------------------
    def _operate(self, to: BreakerState, reason: str) -> None:
        moves: list[Move] = []
        with self._lock:
            if self._m.current.state is not to or to is CLOSED:
                self._m.enter(to, reason, self._clock.monotonic(), moves)
                self._note(moves)
        self._after(moves)

    def force_open(self) -> None:
        """Reject every call (``FORCED_OPEN``) until :meth:`reset` or :meth:`disable`.

        Idempotent and thread-safe; in shadow mode calls still run and are counted
        as would-be rejections. With a store, also writes the state for the fleet
        (blocking up to the store's timeout; a failure is reported, not raised).
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
        anything (their phase has ended). With a store, also writes the state
        for the fleet (as :meth:`force_open` does).
        """
        self._operate(CLOSED, REASON_RESET)

    # -- observation --------------------------------------------------------------------
    @property
    def metrics(self) -> BreakerMetrics:
        """Return a consistent snapshot of the window and counts (takes the lock)."""
        now = self._clock.monotonic()
        with self._lock:
            return self._m.metrics(now)

    def __repr__(self) -> str:
        m = self.metrics
        cfg = self._cfg
        rate = "-" if m.failure_rate is None else f"{m.failure_rate:.2f}"
        extra = ""
        if m.state is OPEN:
            extra = f" retry_after={m.retry_after:.3f}"
        elif m.state is HALF_OPEN:
            phase = self._m.current
            permits = phase.permits if isinstance(phase, HalfOpen) else 0
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
            f"<CircuitBreaker {self.name!r} state={m.state.value}{extra} mode={m.mode} "
            f"failure_rate={rate}/{cfg.failure_threshold}{slow} calls={m.calls} "
            f"window={cfg.window!r} minimum_calls={cfg.min_calls} "
            f"open_duration={duration} half_open_calls={cfg.half_open_calls}>"
        )

    # -- fast faces: the decorators inline the closed-state path -------------------------
    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        breaker = self
        machine = self._m
        now = self._clock.monotonic
        current_deadline = _deadline.CURRENT.get
        admit = self._admit_slow
        release = self._release
        record_ok = self._record_ok
        timed = self._timed
        fleet = self._fleet

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            dl = current_deadline()
            if dl is not None and dl.expired():
                raise _expired_deadline(dl, breaker)
            if fleet is not None:
                t = now()
                if t >= fleet.next:
                    fleet.pull(t)
            phase: Phase | None = machine.closed
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
        machine = self._m
        now = self._clock.monotonic
        current_deadline = _deadline.CURRENT.get
        admit = self._admit_slow
        release = self._release
        record_ok = self._record_ok
        timed = self._timed
        fleet = self._fleet

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            dl = current_deadline()
            if dl is not None and dl.expired():
                raise _expired_deadline(dl, breaker)
            if fleet is not None:
                t = now()
                if t >= fleet.next:
                    fleet.pull(t)
            phase: Phase | None = machine.closed
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
