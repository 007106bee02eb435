"""The breaker's state machine: one class per state, swapped through one reference.

As in resilience4j's ``CircuitBreakerStateMachine``, each state is an object
(:class:`Closed`, :class:`Open`, :class:`HalfOpen`, :class:`ForcedOpen`,
:class:`Disabled`) holding the data only that state needs, and the
:class:`Machine` holds the current one in ``machine.current``. A state object
is also a *phase*: every ticket carries the phase it was admitted in, and an
outcome whose phase is no longer current was admitted before a transition and
decides nothing.

Pure: no clock, no I/O, no locks, no publishing. Every method takes ``now`` (a
clock reading) and is called with the owner's lock held, except where a
docstring says it is lock-free. A transition is recorded as a :class:`Move` in
the list the caller passes, for the caller to count, publish and share once its
lock is released; the machine only checks whether anyone listens for
``BreakerStateChanged``, to skip a metrics snapshot nobody would read.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import ClassVar, NamedTuple

from tipkit._core._mode import Mode
from tipkit.breaker._config import IGNORED, Config
from tipkit.breaker._events import (
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    REASON_HALF_OPEN_TIMEOUT,
    REASON_OPEN_DURATION_ELAPSED,
    REASON_TRIALS_PASSED,
    BreakerMetrics,
    BreakerState,
    BreakerStateChanged,
)
from tipkit.breaker._window import _CountRing, _TimeBuckets

__all__ = [
    "UNCOUNTED",
    "Closed",
    "Disabled",
    "ForcedOpen",
    "HalfOpen",
    "Machine",
    "Move",
    "Open",
    "Phase",
    "Refusal",
    "Ticket",
]


class Move(NamedTuple):
    """One transition, for the caller to count, publish and share after unlocking.

    ``before`` is the metrics snapshot that led to it (``None`` when nobody
    listens for :class:`~tipkit.breaker.BreakerStateChanged`), ``mode`` the
    breaker's mode when it moved, ``open_for`` the seconds an ``OPEN`` phase
    lasts (``None`` for other states).
    """

    from_state: BreakerState
    to_state: BreakerState
    reason: str
    mode: Mode
    before: BreakerMetrics | None
    open_for: float | None


class Refusal:
    """Admission refused: the state that refused and when to try again."""

    __slots__ = ("retry_after", "shadow", "state")

    def __init__(self, state: BreakerState, retry_after: float | None) -> None:
        self.state = state
        self.retry_after = retry_after
        self.shadow = False


# -- the states ---------------------------------------------------------------------
class Phase:
    """One generation of the state machine: a state and the data only it needs."""

    __slots__ = ("generation",)

    state: ClassVar[BreakerState]
    tick: Callable[[], int] | None = None
    """Counts a plain success lock-free (set on a warm :class:`Closed` phase only)."""

    def __init__(self, generation: int) -> None:
        self.generation = generation

    def admit(
        self, cfg: Config, now: float
    ) -> Phase | Refusal | tuple[BreakerState, str]:
        """Let a call in (return this phase), refuse it, or end this phase first.

        A phase that ends returns the transition, ``(state, reason)``; the
        machine makes it and asks the next phase.
        """
        raise NotImplementedError

    def record(  # the phase protocol: most states record nothing
        self,
        cfg: Config,  # noqa: ARG002  # as above
        outcome: int,  # noqa: ARG002  # as above
        slow: int,  # noqa: ARG002  # as above
        now: float,  # noqa: ARG002  # as above
    ) -> tuple[BreakerState, str] | None:
        """Record the outcome of a call admitted in this phase (the current one) at *now*.

        Return the transition it causes, as ``(state, reason)``, or ``None``.
        """
        return None

    def __repr__(self) -> str:
        return f"<phase {self.generation} {self.state.value}>"


class Closed(Phase):
    """Calls run and their outcomes fill the window.

    Once the window holds ``min_calls`` outcomes of a count window, the phase
    counts plain successes lock-free on ``tick`` (an ``itertools.count``,
    atomic under the GIL): such a success can only lower the window's rates, so
    it is folded into the window later, under the lock, before anything reads
    it (:meth:`fold`).
    """

    __slots__ = ("applied", "count", "ring", "tick", "window")

    state = CLOSED

    def __init__(self, generation: int, window: _CountRing | _TimeBuckets) -> None:
        super().__init__(generation)
        self.window = window
        self.ring = window if isinstance(window, _CountRing) else None
        self.count: itertools.count[int] | None = None
        self.tick: Callable[[], int] | None = None
        self.applied = 0

    def admit(self, cfg: Config, now: float) -> Phase:  # noqa: ARG002  # the phase protocol
        return self

    def warm(self) -> None:
        """Start counting successes lock-free."""
        self.count = itertools.count()
        self.applied = 0
        self.tick = self.count.__next__

    def fold(self) -> None:
        """Fold the successes ticked lock-free since the last fold into the window."""
        count, ring = self.count, self.ring
        if count is None or ring is None:
            return
        # next() returns how many values were drawn before it: the ticks plus
        # this method's own earlier draws, which `applied` includes. (Reading
        # the count through pickling would warn from 3.12 and fail from 3.14.)
        total = next(count)
        n = total - self.applied
        self.applied = total + 1
        ring.add_successes(n)

    def record(
        self, cfg: Config, outcome: int, slow: int, now: float
    ) -> tuple[BreakerState, str] | None:
        if outcome == IGNORED:
            return None
        window = self.window
        self.fold()
        window.add(now, outcome, slow)
        if (
            self.ring is not None
            and self.tick is None
            and window.calls >= cfg.min_calls
        ):
            self.warm()
        if (window.failures or window.slows) and window.calls >= cfg.min_calls:
            reason = cfg.verdict(window.calls, window.failures, window.slows)
            if reason is not None:
                return (OPEN, reason)
        return None

    def succeed(self, cfg: Config, end: float) -> str | None:
        """Record a plain success that could not be ticked; return why it opens, if it does."""
        ring = self.ring
        if ring is not None:
            # A success only lowers a count window's rates, so the verdict can
            # change only when this success brings the window to min_calls.
            old = ring.add_success()
            calls = ring.calls
            if calls < cfg.min_calls:
                return None
            if not old and calls == cfg.min_calls:
                self.warm()
            if old or calls != cfg.min_calls or not (ring.failures or ring.slows):
                return None
            return cfg.verdict(calls, ring.failures, ring.slows)
        # In a time window, expiring old buckets can raise the rates.
        window = self.window
        window.add(end, 0, 0)
        if window.calls < cfg.min_calls or not (window.failures or window.slows):
            return None
        return cfg.verdict(window.calls, window.failures, window.slows)


class Open(Phase):
    """Calls are refused until ``until``; the first call after it moves to half-open."""

    __slots__ = ("until",)

    state = OPEN

    def __init__(self, generation: int, until: float) -> None:
        super().__init__(generation)
        self.until = until

    def admit(  # documented on Phase
        self,
        cfg: Config,  # noqa: ARG002  # the phase protocol
        now: float,
    ) -> Refusal | tuple[BreakerState, str]:
        if now >= self.until:
            return (HALF_OPEN, REASON_OPEN_DURATION_ELAPSED)
        return Refusal(OPEN, max(0.0, self.until - now))


class HalfOpen(Phase):
    """Exactly ``half_open_calls`` trials run; their outcomes alone decide."""

    __slots__ = ("calls", "failures", "permits", "since", "slows")

    state = HALF_OPEN

    def __init__(self, generation: int, permits: int, since: float) -> None:
        super().__init__(generation)
        self.permits = permits
        self.since = since
        self.calls = self.failures = self.slows = 0

    def admit(  # documented on Phase
        self, cfg: Config, now: float
    ) -> Phase | Refusal | tuple[BreakerState, str]:
        wait = cfg.max_half_open_wait
        if wait is not None and now - self.since >= wait:
            return (OPEN, REASON_HALF_OPEN_TIMEOUT)
        if self.permits > 0:
            self.permits -= 1
            return self
        return Refusal(HALF_OPEN, None)

    def record(
        self,
        cfg: Config,
        outcome: int,
        slow: int,
        now: float,  # noqa: ARG002  # the phase protocol
    ) -> tuple[BreakerState, str] | None:
        if outcome == IGNORED:
            self.permits += 1  # an ignored outcome never holds a trial permit
            return None
        self.calls += 1
        self.failures += outcome
        self.slows += slow
        if self.calls < cfg.half_open_calls:
            return None
        reason = cfg.verdict(self.calls, self.failures, self.slows)
        if reason is None:
            return (CLOSED, REASON_TRIALS_PASSED)
        return (OPEN, "trial_" + reason)


class ForcedOpen(Phase):
    """Every call is refused until an operator says otherwise."""

    __slots__ = ()

    state = FORCED_OPEN

    def admit(self, cfg: Config, now: float) -> Refusal:  # noqa: ARG002  # the phase protocol
        return Refusal(FORCED_OPEN, None)


class Disabled(Phase):
    """Every call runs and nothing is recorded until an operator says otherwise."""

    __slots__ = ()

    state = DISABLED

    def admit(self, cfg: Config, now: float) -> Phase:  # noqa: ARG002  # the phase protocol
        return self


UNCOUNTED = ForcedOpen(-1)
"""The phase of a call let through in shadow mode that enforcement would have
rejected: its outcome stays out of the window."""

Ticket = tuple[Phase, float] | Phase
"""What admission hands out: ``(phase, start)``, or the bare phase when no end
time is needed (the closed breaker's lock-free ticket, ``_fast_ticket``)."""


# -- the machine --------------------------------------------------------------------
class Machine:
    """The current phase, the window and the lifetime counts of one breaker.

    Not thread-safe by itself: the owner calls every method with its lock held,
    except that ``closed`` (the current phase while it is CLOSED, else ``None``)
    may be read without it: it is set to ``None`` first on every transition.
    """

    __slots__ = (
        "cfg",
        "closed",
        "current",
        "ignored",
        "mode",
        "rejected",
        "times_opened",
        "window",
        "would_reject",
    )

    def __init__(self, cfg: Config, mode: Mode) -> None:
        self.cfg = cfg
        self.mode: Mode = mode
        self.window = cfg.window._new()
        self.closed: Closed | None = Closed(0, self.window)
        self.current: Phase = self.closed
        self.times_opened = 0
        self.ignored = self.rejected = self.would_reject = 0

    def admit(self, now: float, moves: list[Move]) -> Phase | Refusal:
        """Return the phase a call is admitted in, or why it is refused.

        Moves OPEN to HALF_OPEN once ``open_duration`` has passed, and a
        half-open breaker whose trials outlived ``max_half_open_wait`` back to
        OPEN, before deciding. A refusal in shadow mode is marked ``shadow``
        (the caller lets the call run as :data:`UNCOUNTED`).
        """
        decision = self.current.admit(self.cfg, now)
        if type(decision) is tuple:
            # The phase is over: move on, then decide in the next phase, once.
            self.enter(decision[0], decision[1], now, moves)
            decision = self.current.admit(self.cfg, now)
            if type(decision) is tuple:  # open for no time at all: the next call probes
                decision = Refusal(self.current.state, 0.0)
        if type(decision) is Refusal:
            if self.mode == "shadow":
                self.would_reject += 1
                decision.shadow = True
            else:
                self.rejected += 1
        return decision  # type: ignore[return-value]  # a tuple was replaced above

    def settle(
        self, phase: Phase, outcome: int, slow: int, now: float, moves: list[Move]
    ) -> None:
        """Record an outcome in the phase it was admitted in (the general path)."""
        if outcome == IGNORED:
            self.ignored += 1
        if phase is not self.current:
            return  # stale: admitted in an earlier phase
        move = phase.record(self.cfg, outcome, slow, now)
        if move is not None:
            self.enter(move[0], move[1], now, moves)

    def enter(
        self, to: BreakerState, reason: str, now: float, moves: list[Move]
    ) -> None:
        """Move to state *to* at *now*; append the :class:`Move` to *moves*."""
        left = self.current
        self.closed = None  # first: lock-free admission must stop at once
        if type(left) is Closed:
            left.fold()
        # The snapshot that led to the change, taken before it.
        before = self.metrics(now) if BreakerStateChanged.listened else None
        generation = left.generation + 1
        open_for: float | None = None
        phase: Phase
        if to is CLOSED:
            self.window.clear()
            self.times_opened = 0
            phase = self.closed = Closed(generation, self.window)
        elif to is OPEN:
            self.times_opened += 1
            open_for = self.cfg.open_duration_for(self.times_opened)
            phase = Open(generation, now + open_for)
        elif to is HALF_OPEN:
            # The trials alone decide from here: the old window is done with.
            self.window.clear()
            phase = HalfOpen(generation, self.cfg.half_open_calls, now)
        elif to is DISABLED:
            self.window.clear()
            phase = Disabled(generation)
        else:
            phase = ForcedOpen(generation)
        self.current = phase
        moves.append(Move(left.state, to, reason, self.mode, before, open_for))

    def metrics(self, now: float) -> BreakerMetrics:
        """Return a snapshot of the window and the lifetime counts at *now*."""
        phase = self.current
        if type(phase) is Closed:
            phase.fold()
        if type(phase) is HalfOpen:
            calls, failures, slows = phase.calls, phase.failures, phase.slows
            enough = calls > 0
        else:
            window = self.window
            window.expire(now)
            calls, failures, slows = window.calls, window.failures, window.slows
            enough = calls >= self.cfg.min_calls
        return BreakerMetrics(
            state=phase.state,
            mode=self.mode,
            failure_rate=failures / calls if enough else None,
            slow_call_rate=slows / calls
            if enough and self.cfg.slow_after is not None
            else None,
            calls=calls,
            successes=calls - failures,
            failures=failures,
            slow_calls=slows,
            ignored=self.ignored,
            rejected=self.rejected,
            would_reject=self.would_reject,
            times_opened=self.times_opened,
            retry_after=max(0.0, phase.until - now) if type(phase) is Open else None,
        )
