"""The store side of a rollout: every flow that reads, judges, writes and announces.

Each method returns a flow (see :mod:`._persist`) that the
:class:`~tipkit.rollout.Rollout` runs with the sync driver (``with``, the
controls) or the async one (``async with``). The flows take this process's lock
(:class:`._local.Local`) only around in-memory work, never across a round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from tipkit._judge._export import VerdictExport
from tipkit.clock import Clock
from tipkit.rollout import _state
from tipkit.rollout._events import (
    RolloutJudged,
    RolloutRolledBack,
    RolloutStageChanged,
    rolled_back_event,
)
from tipkit.rollout._fleet import FleetCounts
from tipkit.rollout._local import Local
from tipkit.rollout._persist import Flow, RolloutStore
from tipkit.rollout._safety import AUTOMATIC, Safety
from tipkit.rollout._split import FlagSplit
from tipkit.rollout._state import OnInconclusive, Transition
from tipkit.stores import Entry
from tipkit.telemetry._events import BUS

__all__ = ["Engine"]

logger = logging.getLogger("tipkit")


class Engine:
    """What a rollout does through its store: start, refresh, judge, transition.

    Args:
        name, flag, stages: the rollout's.
        local: this process's mirror and counts.
        persist: the rollout's store I/O.
        split: the flag's weights.
        clock: ``time()`` stamps decisions, ``monotonic()`` new stages.
        max_stage_duration, on_inconclusive: the inconclusive-stage policy.
        save_every: seconds between saves of the judge's counts.
        runbook, hooks: carried by and called with the rollback event.
        safety: the durable queue and announcements of rollbacks and pauses.

    Thread-safe: any number of flows may run at once; compare-and-set orders
    their writes and :meth:`Local.apply` ignores a state older than one applied.
    """

    __slots__ = (
        "_clock",
        "_export",
        "_hooks",
        "_local",
        "_max_stage_duration",
        "_on_inconclusive",
        "_persist",
        "_runbook",
        "_safety",
        "_save_every",
        "_split",
        "flag",
        "name",
        "stages",
    )

    def __init__(
        self,
        name: str,
        flag: str,
        stages: tuple[float, ...],
        *,
        local: Local,
        persist: RolloutStore,
        split: FlagSplit,
        clock: Clock,
        max_stage_duration: float | None,
        on_inconclusive: OnInconclusive,
        save_every: float,
        runbook: str | None,
        hooks: tuple[Callable[[RolloutRolledBack], object], ...],
        safety: Safety,
    ) -> None:
        self.name = name
        self.flag = flag
        self.stages = stages
        self._local = local
        self._persist = persist
        self._split = split
        self._clock = clock
        self._max_stage_duration = max_stage_duration
        self._on_inconclusive = on_inconclusive
        self._save_every = save_every
        self._runbook = runbook
        self._hooks = hooks
        self._safety = safety
        self._export = VerdictExport(name)  # gauges, counter and events per check

    def __repr__(self) -> str:
        return f"<Engine of rollout {self.name!r}>"

    def start(self) -> Flow[None]:
        """Join the fleet: read the state or create it; never raises a store error.

        While the store fails, the rollout starts from local state (its first
        stage) and joins at the first refresh that reaches the store.
        """
        local = self._local
        gen = local.gen
        try:
            doc, version, created = yield from self._persist.open(
                lambda: _state.new_state(self.flag, self.stages, self._clock.time())
            )
        except Exception as exc:  # start alone; the next refresh joins
            self._persist.failed(exc, "reading its state failed")
            if local.view is None:
                new = _state.new_state(self.flag, self.stages, self._clock.time())
                percent = local.force(
                    new, now=self._clock.monotonic(), split_percent=self._split.percent
                )
                if percent is not None:
                    yield from self._split.sync(percent)
            return
        known = local.doc
        self._safety.join()
        if self._safety.adopts(Entry(doc, version), known):
            yield from self.apply(doc, version, gen)
        if not created:
            try:
                saved = yield from self._persist.load_judge()
            except Exception as exc:  # the counts start afresh
                self._persist.failed(exc, "reading its judge counts failed")
                return
            if saved is not None:
                local.load(saved)

    def apply(self, doc: Mapping[str, Any], version: int, gen: int) -> Flow[None]:
        """Mirror a stored state read at *gen*; then set the split if its share moved."""
        percent = self._local.apply(
            doc,
            version,
            gen,
            now=self._clock.monotonic(),
            split_percent=self._split.percent,
        )
        if percent is not None:
            yield from self._split.sync(percent)

    def refresh(self, mono: float) -> Flow[None]:
        """Re-read the state; report and read the fleet's counts; judge (time rules)."""
        local = self._local
        gen = local.gen
        ok, entry = yield from self._persist.poll()
        if not ok:
            return
        safety = self._safety
        if not safety.joined:
            yield from self.start()
            if local.judging:
                yield from self.judge(mono)
            return
        fleet = local.fleet
        if fleet is not None:
            # A quiet process still reports its counts, and reads the fleet's.
            yield from self.flush(fleet, mono, judge=False)
        if entry is None:
            safety.absent()  # the store lost it: what this process knows goes back
        if (
            entry is not None
            and entry.version != local.version
            and safety.adopts(entry, local.doc)
        ):
            yield from self.apply(entry.value, entry.version, gen)
        elif local.doc["status"] != "completed":
            # Also puts the stage's weights back if something else wrote the
            # split (a failed write, a hand edit): the rollout owns it.
            yield from self._split.sync(local.percent)
        if local.judging:
            yield from self.judge(mono)

    def flush(
        self, fleet: FleetCounts, mono: float, *, judge: bool = True
    ) -> Flow[None]:
        """Add this process's counts to the fleet's; judge on the fleet's totals."""
        seq, batch = self._local.take(fleet, mono)
        totals = yield from self._persist.add_batch(fleet.key, fleet.pid, seq, batch)
        if self._local.totals(fleet, seq, totals) and judge:
            yield from self.judge(mono)

    def judge(self, mono: float) -> Flow[None]:
        """Judge, and act on the verdict (advance, roll back, pause, hold)."""
        j = self._local.evaluate(
            self._clock.time(),
            mono,
            max_stage_duration=self._max_stage_duration,
            on_inconclusive=self._on_inconclusive,
            save_every=self._save_every,
        )
        if j is None:
            return
        verdict = j.verdict
        self._export.record(verdict, j.percent)
        if RolloutJudged.listened and (
            j.previous is None or j.previous.decision != verdict.decision
        ):
            BUS.publish(
                RolloutJudged(
                    self.name, verdict.decision, verdict.reason, j.percent, verdict
                )
            )
        if j.saved is not None:
            yield from self._persist.save_judge(j.saved)
        if j.step is not None:
            acted = yield from self.act(j.step, quiet=True)
            if not acted and j.step.action in ("pause", "hold"):
                self._local.unhold()  # the write failed: hand it over again

    def act(self, step: Transition, *, quiet: bool) -> Flow[bool]:
        """Write *step* (compare-and-set), mirror it, then its follow-ups and events.

        A rollback or a pause is local-first: if the store fails it is in force
        here at once and queued for the store (see :mod:`._safety`). Any other
        step, on a store failure, is reported and retried later if *quiet*
        (the judge's transitions), else raised (the manual controls). Returns
        whether the step is in force (written, queued, or found not to apply).
        """
        local = self._local
        gen = local.gen
        stages = self.stages
        before = local.doc
        first = step.action in _state.SAFETY
        result = yield from self._persist.transition(
            lambda doc: step.apply(doc, stages), before, quiet=quiet or first
        )
        queued = result is None
        doc: Mapping[str, Any]
        if result is None:
            new = step.apply(before, stages) if first else None
            if new is None:
                return False
            doc = new
            percent = local.force(
                doc, now=self._clock.monotonic(), split_percent=self._split.percent
            )
            self._safety.queue(doc, local.version)
            if percent is not None:
                yield from self._split.sync(percent)
        else:
            doc, version, written = result
            yield from self.apply(doc, version, gen)
            if not written:
                return True  # someone else moved it first
            self._safety.wrote(doc)
        yield from self._safety.announce(step, before, doc, pending=queued)
        if step.action == "rollback":
            yield from self._split.override_to_control()
            self._rolled_back(step)
            return True
        if step.action == "restart":
            yield from self._split.clear_override()
        if step.action in ("advance", "restart"):
            yield from self._persist.save_judge(self._local.saved())
        if step.action == "advance" and RolloutStageChanged.listened:
            after = _state.view(doc, stages)
            BUS.publish(
                RolloutStageChanged(
                    self.name, step.before, after.percent, after.status, step.reason
                )
            )
        return True

    def _rolled_back(self, step: Transition) -> None:
        event = rolled_back_event(
            self.name,
            step.reason,
            step.before,
            step.verdict,
            self._runbook,
            step.actor or AUTOMATIC,
        )
        if RolloutRolledBack.listened:
            BUS.publish(event)
        for hook in self._hooks:
            try:
                hook(event)
            except Exception:
                logger.exception(
                    "tipkit: an on_rollback hook of rollout %r raised", self.name
                )
