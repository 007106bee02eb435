"""The :class:`Rollout`: a thin strategy over the judge, the state machine and the store.

The parts: :mod:`tipkit._judge` decides (pure); :mod:`._state` says what a
verdict or a control does to the stored state (pure); :mod:`._local` keeps this
process's mirror of that state and its counts under one lock, never held while
waiting on a store; :mod:`._persist` does every store round trip as a flow run
by a sync or an async driver, and owns every store failure; :mod:`._engine`
writes the flows (start, refresh, judge, transition); :mod:`._split` sets the
flag's weights. This class assigns requests to arms and exposes the controls.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from tipkit import registry
from tipkit._core._durations import to_seconds
from tipkit._judge import ErrorRateCheck, Judge, LatencyCheck, MetricCheck
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.flags import Assignment, Flags, Reason
from tipkit.rollout import _state
from tipkit.rollout._arm import Arm, finish_values, record_values, route
from tipkit.rollout._controls import Controls
from tipkit.rollout._engine import Engine
from tipkit.rollout._events import (
    RolloutRolledBack,
)
from tipkit.rollout._local import Local
from tipkit.rollout._persist import Flow, RolloutStore
from tipkit.rollout._safety import Safety
from tipkit.rollout._split import FlagSplit
from tipkit.rollout._state import OnInconclusive
from tipkit.stores import MemoryStore, Store
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY

__all__ = ["Rollout"]

P = ParamSpec("P")
R = TypeVar("R")

_CUT_SCALE = _state.CUT_SCALE


class Rollout(Controls):
    """A staged, guarded rollout of a flag's canary variant.

    Args:
        name: the rollout's name (its key in the store, its label in telemetry).
        flags: the :class:`~tipkit.flags.Flags` serving the flag.
        flag: the flag key (default: *name*). Its first variant is the canary,
            its second the control (or name them with *canary_variant* and
            *control_variant*). The rollout sets the weights of the flag's
            fallthrough and of every rule that serves a split to the stage's
            share (``flags.set_split``; a fallthrough serving one variant
            becomes a split); rules serving one variant keep pinning their
            users. If the flag does not exist and *flags* is served by an
            :class:`~tipkit.flags.InMemoryProvider`, the rollout creates it
            (``canary: true``, ``control: false``, a split).
        stages: canary shares in percent, increasing; 100 completes the rollout.
        min_stage_duration: seconds a stage runs at least before it may pass.
        min_samples: judged outcomes per arm a stage needs before it may pass.
        max_stage_duration: seconds after which an inconclusive stage is handed
            to *on_inconclusive* (``None``: never).
        checks: the :class:`MetricCheck` objects the judge compares the arms on
            (default: ``ErrorRateCheck()`` and ``LatencyCheck()``).
        guards: the old name of *checks* (give one or the other).
        confidence: coverage of the judge's confidence sequences (0.99: at most
            a 1 % chance of a false rollback over the whole rollout).
        on_inconclusive: ``"hold"`` (stay and keep judging), ``"pause"`` or
            ``"rollback"``, after *max_stage_duration*.
        store: where state lives (default: the store of *flags*).
        clock: the clock; ``monotonic()`` times requests and ``time()`` stamps
            stages and history (wall-clock, so a restart can resume).
        runbook: a URL carried by rollback events.
        on_rollback: callables receiving the :class:`RolloutRolledBack` event,
            called after the rollback is written, in the thread (or task) that
            wrote it; their errors are logged on the ``tipkit`` logger, never
            raised.
        refresh_interval: seconds between re-reads of the state in the store
            (changes made through this object apply at once).
        check_ratio: the judge's amortised checkpoint spacing (see
            :class:`tipkit._judge.Judge`).
        fleet_counts: judge on the outcome counts of every process sharing
            the store: each process adds its counts to the store in batches
            (every *flush_every* judged outcomes or *refresh_interval*
            seconds, one ``increment`` returning the fleet's totals) and the
            judge decides on those totals. Default: on when the store is not
            a :class:`~tipkit.stores.MemoryStore`.
        flush_every: judged outcomes per batch with *fleet_counts*.

    Thread-safe and asyncio-safe. Outcomes and transitions are serialised by one
    lock, never held while waiting on a store; the flag evaluation before it
    takes none. The constructor reads (or creates) the state in the store and
    registers the rollout (:mod:`tipkit.registry`); if the store fails it
    starts from local state (its first stage) and joins the fleet at the first
    refresh that reaches the store: it never raises a store error.

    What may block, and on what: see :meth:`observe` for requests and each
    control (:meth:`advance`, :meth:`pause`, :meth:`resume`, :meth:`rollback`,
    :meth:`evaluate`, :meth:`status`) for itself; the controls are synchronous,
    so from async code run them in a thread (``asyncio.to_thread``).

    Raises:
        ConfigError: the flag is missing (and cannot be created) or has fewer
            than two variants.
        ValueError, TypeError: an argument is out of range.
    """

    def __init__(  # every knob of a rollout, keyword-only
        self,
        name: str,
        *,
        flags: Flags,
        flag: str | None = None,
        stages: Sequence[float] = (1, 5, 25, 50, 100),
        min_stage_duration: float = 300.0,
        min_samples: int = 1_000,
        max_stage_duration: float | None = 3_600.0,
        checks: Sequence[MetricCheck] | None = None,
        guards: Sequence[MetricCheck] | None = None,
        confidence: float = 0.99,
        on_inconclusive: OnInconclusive = "hold",
        store: Store | None = None,
        clock: Clock = SYSTEM_CLOCK,
        runbook: str | None = None,
        on_rollback: Callable[[RolloutRolledBack], object]
        | Sequence[Callable[[RolloutRolledBack], object]] = (),
        canary_variant: str | None = None,
        control_variant: str | None = None,
        refresh_interval: float = 1.0,
        check_ratio: float = 0.01,
        fleet_counts: bool | None = None,
        flush_every: int = 100,
    ) -> None:
        if not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if not isinstance(flags, Flags):
            raise TypeError(f"flags must be a tipkit.flags.Flags, got {flags!r}")
        if on_inconclusive not in ("hold", "pause", "rollback"):
            raise ValueError(
                "on_inconclusive must be 'hold', 'pause' or 'rollback', "
                f"got {on_inconclusive!r}"
            )
        if checks is not None and guards is not None:
            raise TypeError("give checks= or its old name guards=, not both")
        chosen = checks if checks is not None else guards
        self.name = name
        self.flag = flag if flag is not None else name
        self.stages = _state.check_stages(stages)
        self.min_stage_duration = to_seconds(min_stage_duration, "min_stage_duration")
        self.max_stage_duration = (
            None
            if max_stage_duration is None
            else to_seconds(max_stage_duration, "max_stage_duration")
        )
        self.checks: tuple[MetricCheck, ...] = (
            tuple(chosen) if chosen is not None else (ErrorRateCheck(), LatencyCheck())
        )
        self.confidence = confidence
        self.min_samples = min_samples
        self.on_inconclusive: OnInconclusive = on_inconclusive
        self.runbook = runbook
        self._check_ratio = check_ratio
        store = store if store is not None else flags.store
        fleet_counts_on = (
            not isinstance(store, MemoryStore)
            if fleet_counts is None
            else bool(fleet_counts)
        )
        # Built once to validate checks/confidence/min_samples before touching the store.
        self._new_judge()
        self._flags = flags
        self._clock = clock
        self._persist = RolloutStore(store, name, clock=clock)
        self._safety = Safety(
            self._persist,
            stages=self.stages,
            runbook=runbook,
            clock=clock,
            on_change=self._expire,
        )
        self._hooks: tuple[Callable[[RolloutRolledBack], object], ...] = (
            (on_rollback,) if callable(on_rollback) else tuple(on_rollback)
        )
        self._refresh_interval = to_seconds(refresh_interval, "refresh_interval")
        self._split = FlagSplit(
            flags,
            self.flag,
            name,
            canary=canary_variant,
            control=control_variant,
            percent=self.stages[0],
            persist=self._persist,
        )
        self._canary_variant = self._split.canary
        self._control_variant = self._split.control
        self._local = Local(
            name,
            self.stages,
            self.checks,
            self._new_judge,
            fleet_counts=fleet_counts_on,
            flush_every=flush_every,
            interval=self._refresh_interval,
        )
        self._engine = Engine(
            name,
            self.flag,
            self.stages,
            local=self._local,
            persist=self._persist,
            split=self._split,
            clock=clock,
            max_stage_duration=self.max_stage_duration,
            on_inconclusive=on_inconclusive,
            save_every=max(self._refresh_interval, 1.0),
            runbook=runbook,
            hooks=self._hooks,
            safety=self._safety,
        )
        self._next_refresh = -math.inf
        self._counters = {
            (arm, outcome): REGISTRY.counter(
                names.ROLLOUT_REQUESTS,
                {names.ROLLOUT_NAME: name, names.ARM: arm, names.OUTCOME: outcome},
            )
            for arm in ("canary", "control")
            for outcome in ("success", "failure")
        }
        REGISTRY.register_gauge(names.ROLLOUT_STAGE, self, _stage_gauge)
        self._persist.guarded(self._engine.start())
        self._registration = registry.register_rollout(self, store)

    def _expire(self) -> None:
        """Re-read the state at the next request (a queued state settled)."""
        self._next_refresh = -math.inf

    def _new_judge(self) -> Judge:
        return Judge(
            self.checks,
            confidence=self.confidence,
            min_samples=self.min_samples,
            min_stage_duration=self.min_stage_duration,
            check_ratio=self._check_ratio,
        )

    def __repr__(self) -> str:
        return (
            f"<Rollout {self.name!r} flag={self.flag!r}"
            f" status={self._local.doc.get('status')}"
            f" stage={self._local.doc.get('stage')} percent={self.percent:g}"
            f" checks={list(self.checks)!r}>"
        )

    @property
    def guards(self) -> tuple[MetricCheck, ...]:
        """The metric checks (the old name of :attr:`checks`)."""
        return self.checks

    @property
    def _lock(self) -> threading.Lock:
        """The lock of this process's counts and mirror (re-created after a fork)."""
        return self._local.lock

    # -- the request path -------------------------------------------------------------
    def observe(self, context: Any = None, **metrics: float) -> Arm:
        """Return the arm for a request for *context*; use it as a context manager.

        *context* is what the flag is evaluated for (a targeting key, a mapping
        or an :class:`~tipkit.flags.EvaluationContext`). Never raises for a bad
        context: the flag then serves its default and the request is not judged.

        With *metrics* (``rollout.observe(user_id, checkout=True)``, a business
        event that comes after the request), records each value at once for
        the arm *context* is on now, feeding the :class:`RateCheck` or
        :class:`MeanCheck` of that name, and returns the arm already finished
        (do not enter it). Blocks like leaving a block (see below); from async
        code use :meth:`aobserve`.

        The request is assigned when the block is entered. Blocking: once per
        *refresh_interval* (and when a judge checkpoint changes the stage)
        entering or leaving the block waits for the store's round trips: with
        ``with`` in the calling thread (the store's sync methods), with
        ``async with`` by awaiting the store's async methods (the flags' writes
        run in a worker thread), so the event loop never blocks; each round trip
        is bounded by the store's timeout. A store failure is never raised: the
        rollout keeps its last known state, publishes one ``StoreUnavailable``
        per outage and retries at the next refresh or checkpoint. Thread-safe;
        reads the monotonic clock once on entering and once on leaving.
        """
        arm = Arm(self, context)
        if not metrics:
            return arm
        values = _values(metrics)
        now = self._clock.monotonic()
        if now >= self._next_refresh:
            self._persist.guarded(self._refresh(now))
        self._assign(arm, self._flags.assign(self.flag, context), now)
        work = finish_values(self, arm, values)
        if work is not None:
            self._persist.guarded(work)
        return arm

    async def aobserve(self, context: Any = None, **metrics: float) -> Arm:
        """Record business *metrics* for *context*'s arm now (the async :meth:`observe`)."""
        arm = Arm(self, context)
        values = _values(metrics)
        now = self._clock.monotonic()
        if now >= self._next_refresh:
            await self._persist.aguarded(self._refresh(now))
        self._assign(arm, await self._flags.aassign(self.flag, context), now)
        work = finish_values(self, arm, values)
        if work is not None:
            await self._persist.aguarded(work)
        return arm

    def _assign(self, arm: Arm, out: Assignment | None, now: float) -> None:
        """Set the arm from the flag's evaluation *out* (``None``: control, unjudged)."""
        arm._start = now
        if out is None:
            arm.variant = None
            arm.is_canary = arm.judged = False
            return
        local = self._local
        if local.rolled_back:
            # Local-first: a rollback this process knows of holds even where
            # its flags have not read the store yet (their first read failed:
            # they would serve the document's split, canary and all).
            arm.variant = self._control_variant
            arm.is_canary = arm.judged = False
            return
        variant = out.variant
        split = out.split
        cut = local.cut
        arm.variant = variant
        # The flag's own evaluation assigns the arm: its split serves the
        # stage's share, so this is the cohort every other evaluation of the
        # flag in the app sees too.
        arm.is_canary = variant == self._canary_variant
        # Judged only when the split that served it gives exactly the stage's
        # share: not a rule's pin, an override or a kill, and not weights of
        # another stage that the flags have not re-read yet (another process
        # moved the stage), which would bias the arms' ratio.
        arm.judged = (
            local.judging
            and out.reason is Reason.SPLIT
            and split is not None
            and split.get(self._canary_variant) == cut
            and split.get(self._control_variant) == _CUT_SCALE - cut
        )

    def _finish(
        self, arm: Arm, exc_type: type[BaseException] | None
    ) -> Flow[Any] | None:
        """Record the outcome (no I/O); return the store work now due, if any."""
        if arm._done:
            return None
        arm._done = True
        if exc_type is not None and not issubclass(exc_type, Exception):
            return None  # cancelled or interrupted: not an outcome of the code
        failed = arm._failed or exc_type is not None
        is_canary = arm.is_canary
        self._counters[
            (
                "canary" if is_canary else "control",
                "failure" if failed else "success",
            )
        ].inc()
        if not arm.judged:
            return None
        end = self._clock.monotonic()
        due = self._local.record(is_canary, failed, end - arm._start, end)
        return record_values(self, is_canary, arm._values, due, end)

    def route(
        self,
        *,
        fallback: Callable[..., Any],
        context: Callable[..., Any] | Any = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate the new code: the canary cohort runs it, everyone else *fallback*.

        *context* is a context, or a callable taking the function's arguments and
        returning one (``context=lambda order, user: user.id``); a callable that
        raises sends the call to *fallback*, unjudged. Both arms are observed (an
        exception counts as an error, the call's duration as its latency). Works
        on ``def`` and ``async def`` (an async function's fallback may be sync or
        async; it is observed with ``async with``, see :meth:`observe`).

        Raises:
            TypeError: the decorated object is not callable or is a generator function.
        """
        return route(self, fallback, context)


def _values(metrics: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, v in metrics.items():
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
        out[name] = f
    return out


def _stage_gauge(rollout: Rollout) -> list[tuple[float, dict[str, str]]]:
    return [(rollout.percent, {names.ROLLOUT_NAME: rollout.name})]


def record_sums(
    rollout: Rollout, is_canary: bool, sums: Mapping[int, tuple[int, float, float]]
) -> None:
    """Count aggregated KPI values per check index (an OTel histogram's); judge now."""
    due = rollout._local.record_sums(is_canary, sums)  # its judging path
    if due is not None:
        end = rollout._clock.monotonic()
        engine = rollout._engine
        flow = engine.judge(end) if due is True else engine.flush(due, end)
        rollout._persist.run(flow)
