"""The circuit breaker the user holds: a thin strategy over the state machine.

:class:`CircuitBreaker` validates its options (:mod:`._config`), keeps the
decisions in a :class:`~tipkit.breaker._machine.Machine` under one lock, and
does what the pure machine may not: read the clock, count and publish
(:mod:`._telemetry`), and hand transitions to its fleet collaborator
(:mod:`._sync`) when it has a store. The faces (decorator, ``with``,
``async with``, ``call``, ``acall``) come from :class:`~tipkit._core._guard.Guard`;
the breaker supplies the core (``_step``/``_release``) and the hooks the faces
call: the lock-free closed-state fast path (``_fast_ticket``,
``_fast_release``) and, with a store, the async twins ``_astep``/``_arelease``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from tipkit._core import _fork
from tipkit._core._fallback import NO_FALLBACK, ExcTypes, make
from tipkit._core._guard import Guard
from tipkit._core._mode import Mode, check_mode
from tipkit.breaker._admin import controlled
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
    OPEN,
    REASON_DISABLED,
    REASON_FORCED_OPEN,
    REASON_RESET,
    REASON_SHARED,
    BreakerMetrics,
    BreakerState,
)
from tipkit.breaker._machine import (
    UNCOUNTED,
    Closed,
    HalfOpen,
    Machine,
    Move,
    Phase,
    Ticket,
)
from tipkit.breaker._sync import FleetSync, adoptable
from tipkit.breaker._telemetry import (
    Telemetry,
    describe,
    fast_success,
    state_gauge,
    timed_success,
)
from tipkit.breaker._window import Window, _CountRing
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.registry import register_breaker
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY

if TYPE_CHECKING:
    from tipkit.stores._protocol import KeyValueStore

__all__ = ["CircuitBreaker"]


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
            the shared state (sooner with a store that pushes, as ``RedisStore``).

    Raises:
        TypeError, ValueError: an argument is invalid; the message names it.

    Thread-safe and asyncio-safe; the lock is never held while a protected call
    runs, and closed-state admission does not take it. With a store, a call due
    a read of the shared state, or making a transition the fleet must hear of,
    makes one store call (sync faces block, async faces await; at most the
    store's timeout); a store failure leaves the breaker on its own state.
    """

    __slots__ = (
        "_arelease",
        "_astep",
        "_cfg",
        "_closed",
        "_entered",
        "_fast_count",
        "_fast_reads_ticket",
        "_fast_release",
        "_fast_ticket",
        "_fleet",
        "_holds",
        "_lock",
        "_m",
        "_registration",
        "_slow_after",
        "_t",
        "_timed_release",
        "name",
        "runbook",
    )
    _composition_role = "breaker"  # compose() checks the order of parts by role

    _fast_ticks = True  # the faces tick _fast_ticket's phase, counting on _fast_count

    def __init__(
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
        fallback: object = NO_FALLBACK,  # a value or (exc) -> value: tipkit.fallback
        fallback_on: ExcTypes | None = None,
        store: KeyValueStore | None = None,
        share: Literal["state"] | None = None,
        refresh_interval: float | timedelta = 1.0,
    ) -> None:
        super().__init__(
            clock=clock, fallback=make(fallback, fallback_on, name, "CircuitBreaker")
        )
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
        self._slow_after = cfg.slow_after
        self._m = Machine(cfg, check_mode(mode, f"CircuitBreaker {name!r}"))
        self._t = Telemetry(cfg.name, cfg.runbook, self._m.mode)
        self._lock = _fork.new_lock()
        _fork.register(self)
        REGISTRY.register_gauge(names.BREAKER_STATE, self, state_gauge)
        self._fleet: FleetSync | None = None
        self._astep: Callable[[float, object], Awaitable[Ticket]] | None = None
        self._arelease: (
            Callable[[Ticket, BaseException | None, float], Awaitable[None]] | None
        ) = None
        if store is not None:
            self._fleet = FleetSync(
                cfg.name, store, share, refresh_interval, adopt=self._adopt, clock=clock
            )
            # The async faces await these instead of _step/_release, so the
            # store I/O of an async call goes through the store's async methods.
            # (Bound methods: a shared breaker sits in a reference cycle, which
            # the collector frees; an unshared one is in none.)
            self._astep = self._astep_shared
            self._arelease = self._arelease_shared
        elif share is not None:
            raise ValueError(
                f"CircuitBreaker {name!r}: share={share!r} needs store= (where "
                "the shared state lives)"
            )
        # Clock readings matter to a closed breaker only for slow calls and time
        # windows: without either, the decorators read no clock at all.
        timed = cfg.slow_after is not None or not isinstance(self._m.window, _CountRing)
        self._fast_release = None if timed else fast_success(self._t)
        self._timed_release = timed_success(self._t, cfg.slow_after) if timed else None
        self._closed: Closed | None = None
        self._fast_ticket: Phase | None = None
        self._fast_count = self._t.success
        # Hooks read per call are slots: 3.11 specialises no class attribute read.
        self._fast_reads_ticket = True  # the faces read _fast_ticket (see _gate)
        self._holds = True
        self._entered = None
        self._gate()
        self._registration = None if store is None else register_breaker(self, store)

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
            self._t.bind(checked)
            self._fast_count = self._t.success

    @property
    def window(self) -> Window:
        """The window configuration."""
        return self._cfg.window

    @property
    def store(self) -> KeyValueStore | None:
        """The store the state is shared through, or ``None`` (not shared)."""
        fleet = self._fleet
        return None if fleet is None else fleet.store

    # -- admission ------------------------------------------------------------------
    def _step(self, now: float, pending: object) -> Ticket:  # noqa: ARG002  # the guard protocol; a breaker never waits
        """Admit a call at *now* or raise :class:`~tipkit.errors.CircuitOpenError`.

        Lock-free in the closed state; otherwise takes the lock for the
        decision only. With a store, first reads the fleet state when it is due
        and afterwards writes a transition the fleet must hear of, with the
        store's sync methods: each call blocks up to the store's timeout, and a
        failing one changes nothing.
        """
        phase = self._closed  # lock-free: the closed phase of an unshared breaker
        if phase is not None:
            return (phase, now)
        fleet = self._fleet
        if fleet is None:
            return self._admit(now)
        if now >= fleet.next:
            fleet.pull(now)
        phase = self._m.closed
        if phase is not None:
            return (phase, now)
        try:
            return self._admit(now)
        finally:
            if fleet.outbox is not None:
                fleet.push()

    async def _astep_shared(self, now: float, pending: object) -> Ticket:  # noqa: ARG002  # the guard protocol
        """Async :meth:`_step` of a shared breaker: the store through ``aget``/``aset``.

        Suspends the task, never blocking the loop, up to the store's timeout
        per store call; a failing store call changes nothing.
        """
        fleet = self._fleet
        assert fleet is not None  # set only for a breaker with a store
        if now >= fleet.next:
            await fleet.apull(now)
        phase = self._m.closed
        if phase is not None:
            return (phase, now)
        try:
            return self._admit(now)
        finally:
            if fleet.outbox is not None:
                await fleet.apush()

    def _admit(self, now: float) -> Ticket:
        phase = self._m.closed  # lock-free: set only while CLOSED
        if phase is not None:
            return (phase, now)
        moves: list[Move] = []
        with self._lock:
            decision = self._m.admit(now, moves)
            if moves:
                self._moved(moves)
        if moves:
            self._t.moved(moves)
        if isinstance(decision, Phase):
            return (decision, now)
        self._t.refused(decision)
        if decision.shadow:
            return (UNCOUNTED, now)
        raise self._cfg.rejection(decision.state, decision.retry_after)

    # -- outcomes ---------------------------------------------------------------------
    def _release(self, ticket: Ticket, error: BaseException | None, now: float) -> None:
        """Record the outcome of a call admitted with *ticket*, at *now*.

        A plain success in a warm closed phase takes no lock. An outcome that
        may change the state takes the lock for the decision only. With a store,
        a transition the fleet must hear of is then written with the store's
        sync method (blocking up to its timeout; a failure is reported as
        ``StoreUnavailable``, never raised).
        """
        if error is None:
            # A bare phase: the untimed fast ticket (see _gate), no start time.
            phase, start = ticket if isinstance(ticket, tuple) else (ticket, 0.0)
            tick = phase.tick
            if tick is not None:
                slow_after = self._slow_after
                if slow_after is None or now - start <= slow_after:
                    tick()
                    self._t.success.inc()
                    return
        if self._record(ticket, error, now):
            self._fleet.push()  # type: ignore[union-attr]  # pending only with a fleet

    async def _arelease_shared(
        self, ticket: Ticket, error: BaseException | None, now: float
    ) -> None:
        """Async :meth:`_release` of a shared breaker: writes with ``aset``."""
        if self._record(ticket, error, now):
            await self._fleet.apush()  # type: ignore[union-attr]  # pending only with a fleet

    def _record(self, ticket: Ticket, error: BaseException | None, now: float) -> bool:
        """Record an outcome; return whether a transition waits to be shared."""
        phase, start = ticket if isinstance(ticket, tuple) else (ticket, 0.0)
        if phase is UNCOUNTED:
            return False
        slow_after = self._slow_after
        slow = 1 if slow_after is not None and now - start > slow_after else 0
        t = self._t
        if error is None:
            outcome = SUCCESS
            (t.slow if slow else t.success).inc()
            if not slow:
                tick = phase.tick
                if tick is not None:
                    tick()
                    return False
                if phase is self._m.closed:
                    return self._succeed(phase, now)
        else:
            outcome = self._cfg.classify(error)
            if outcome == IGNORED:
                t.ignored.inc()
            elif outcome == FAILURE:
                t.failure.inc()
            else:
                (t.slow if slow else t.success).inc()
        return self._settle(phase, outcome, slow, now)

    def _succeed(self, phase: Phase, now: float) -> bool:
        """Record a plain success that could not be ticked (a cold closed phase)."""
        m = self._m
        moves: list[Move] = []
        with self._lock:
            if phase is not m.closed:
                return False  # the breaker left this phase while the call ran: stale
            reason = phase.succeed(self._cfg, now)
            if reason is None:
                return False
            m.enter(OPEN, reason, now, moves)
            self._moved(moves)
        self._t.moved(moves)
        return self._fleet is not None and self._fleet.outbox is not None

    def _settle(self, phase: Phase, outcome: int, slow: int, now: float) -> bool:
        """Record an outcome in the phase it was admitted in (the general path)."""
        moves: list[Move] = []
        with self._lock:
            self._m.settle(phase, outcome, slow, now, moves)
            if moves:
                self._moved(moves)
        if not moves:
            return False
        self._t.moved(moves)
        return self._fleet is not None and self._fleet.outbox is not None

    # -- transitions --------------------------------------------------------------------
    def _gate(self) -> None:
        """Open the lock-free paths exactly while the machine is CLOSED (lock held).

        A shared breaker keeps them shut: every call must first see whether the
        fleet state is due. Set right after the machine moves, under the lock:
        a call that read the old value a moment before arrived before the
        transition, and its outcome is stale (it decides nothing).
        """
        closed = self._m.closed if self._fleet is None else None
        self._closed = closed
        self._fast_ticket = closed  # the bare phase (_fast_ticks, _timed_release)

    def _moved(self, moves: list[Move]) -> None:
        """Follow the machine's *moves* (lock held): gate the fast paths, tell the fleet."""
        self._gate()
        fleet = self._fleet
        if fleet is not None:
            fleet.note(moves)

    # -- fleet ----------------------------------------------------------------------
    def _adopt(self, state: BreakerState, now: float) -> None:
        """Move to the fleet's *state* if this breaker's state allows it."""
        moves: list[Move] = []
        with self._lock:
            if adoptable(state, self._m.current.state):
                self._m.enter(state, REASON_SHARED, now, moves)
                self._moved(moves)
        self._t.moved(moves)

    def sync(self) -> None:
        """Read and adopt the shared state now (normally done when due).

        Blocks up to the store's timeout; a failure is reported, changes nothing.
        """
        fleet = self._fleet
        if fleet is not None:
            fleet.pull(self._clock.monotonic())

    # -- operator controls ------------------------------------------------------------
    def _operate(
        self, to: BreakerState, why: str, actor: str | None, reason: str | None
    ) -> None:
        moves: list[Move] = []
        with self._lock:
            was = self._m.current.state
            if was is not to or to is CLOSED:
                self._m.enter(to, why, self._clock.monotonic(), moves)
                self._moved(moves)
        self._t.moved(moves)
        fleet = self._fleet
        if fleet is not None and fleet.outbox is not None:
            fleet.push()
        controlled(self, was, to, actor, reason)

    def force_open(
        self, *, actor: str | None = None, reason: str | None = None
    ) -> None:
        """Reject every call (``FORCED_OPEN``) until :meth:`reset` or :meth:`disable`.

        Idempotent, thread-safe; in shadow mode calls run (would-be rejections).
        With a store, also writes the state for the fleet (up to its timeout; a
        failure is reported). *actor*, *reason*: who and why (:mod:`._admin`).
        """
        self._operate(FORCED_OPEN, REASON_FORCED_OPEN, actor, reason)

    def disable(self, *, actor: str | None = None, reason: str | None = None) -> None:
        """Let every call through and record nothing (``DISABLED``) until :meth:`reset`.

        Idempotent and thread-safe. Outcome counters keep counting.
        """
        self._operate(DISABLED, REASON_DISABLED, actor, reason)

    def reset(self, *, actor: str | None = None, reason: str | None = None) -> None:
        """Close the breaker with an empty window and forget past openings.

        Thread-safe. Calls admitted before the reset finish without deciding
        anything (their phase has ended). With a store, also writes the state
        for the fleet (as :meth:`force_open` does).
        """
        self._operate(CLOSED, REASON_RESET, actor, reason)

    # -- observation --------------------------------------------------------------------
    @property
    def metrics(self) -> BreakerMetrics:
        """Return a consistent snapshot of the window and counts (takes the lock)."""
        now = self._clock.monotonic()
        with self._lock:
            return self._m.metrics(now)

    def __repr__(self) -> str:
        phase = self._m.current
        permits = phase.permits if isinstance(phase, HalfOpen) else 0
        return describe(self._cfg, self.metrics, permits)
