"""What this process knows and counts of a rollout, under one lock.

The mirror of the stored state, the judge, the stage's summary and the fleet
counts not yet sent. No I/O and no clock reads (times are passed in): the
:class:`~tipkit.rollout.Rollout` reads the store outside the lock and applies
what it read here.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from tipkit._core import _fork
from tipkit._judge import Judge, MetricCheck, Verdict
from tipkit.rollout import _state
from tipkit.rollout._arm import StageSummary
from tipkit.rollout._fleet import Batch, FleetCounts
from tipkit.rollout._state import OnInconclusive, Transition

__all__ = ["Judgement", "Local"]

logger = logging.getLogger("tipkit")


class Judgement:
    """One judge checkpoint: the verdict, the one before, and what it does."""

    __slots__ = ("percent", "previous", "saved", "step", "verdict")

    def __init__(
        self,
        verdict: Verdict,
        previous: Verdict | None,
        step: Transition | None,
        saved: dict[str, Any] | None,
        percent: float,
    ) -> None:
        self.verdict = verdict
        self.previous = previous
        self.step = step
        self.saved = saved
        self.percent = percent


class Local:
    """The in-memory side of one rollout; every method takes the lock itself.

    Args:
        name: the rollout's name (the fleet counts' key, log messages).
        stages: its stages.
        checks: its metric checks.
        new_judge: builds a fresh judge (a new attempt starts afresh).
        fleet_counts: judge on the fleet's totals (see :class:`Rollout`).
        flush_every, interval: batching of the fleet counts.

    Thread-safe: one lock, held for in-memory work only. Fork-safe.
    """

    __slots__ = (
        "__weakref__",
        "_checks",
        "_fleet_counts",
        "_flush_every",
        "_interval",
        "_name",
        "_new_judge",
        "_stages",
        "cut",
        "doc",
        "fleet",
        "gen",
        "held",
        "judge",
        "judging",
        "lock",
        "next_save",
        "rolled_back",
        "summary",
        "verdict",
        "version",
        "view",
    )

    def __init__(
        self,
        name: str,
        stages: tuple[float, ...],
        checks: Sequence[MetricCheck],
        new_judge: Callable[[], Judge],
        *,
        fleet_counts: bool,
        flush_every: int,
        interval: float,
    ) -> None:
        self._name = name
        self._stages = stages
        self._checks = tuple(checks)
        self._new_judge = new_judge
        self._fleet_counts = fleet_counts
        self._flush_every = flush_every
        self._interval = interval
        self.lock = threading.Lock()
        _fork.register(self)
        self.judge = new_judge()
        self.doc: Mapping[str, Any] = {}
        self.view: _state.View | None = None
        self.version = -1
        self.gen = 0
        """Counts applied states: a read taken at an older count may be stale."""
        self.cut = 0  # canary buckets: [0, cut) of 100000
        self.judging = False
        self.rolled_back = False
        """Rolled back: the arm is control, whatever the flags serve here."""
        self.summary = StageSummary()
        self.verdict: Verdict | None = None
        self.held = False
        self.fleet: FleetCounts | None = None
        self.next_save = -math.inf

    def _after_fork_in_child(self) -> None:
        self.lock = threading.Lock()
        if self.fleet is not None:
            self.fleet.forked()

    @property
    def percent(self) -> float:
        """The canary share now, in percent."""
        return self.cut / 1000

    def apply(
        self,
        doc: Mapping[str, Any],
        version: int,
        gen: int,
        *,
        now: float,
        split_percent: float | None,
    ) -> float | None:
        """Mirror a state read when :attr:`gen` was *gen*; return the share to set.

        A state already known, or older than one applied since it was read, is
        ignored. A new attempt starts a new judge; a new stage a new stratum,
        summary and fleet batch (*now*: monotonic). Returns the stage's share
        when it differs from *split_percent* (the share the split was last set
        to), else ``None``.
        """
        with self.lock:
            if version == self.version or (gen != self.gen and version < self.version):
                return None
            self.version = version
            return self._mirror(doc, now, split_percent)

    def force(
        self, doc: Mapping[str, Any], *, now: float, split_percent: float | None
    ) -> float | None:
        """Mirror *doc* decided here before the store has it (a local-first action).

        The version stays the one last read, so a later read of the same entry
        is not taken over it; returns the share to set (as :meth:`apply`).
        """
        with self.lock:
            return self._mirror(doc, now, split_percent)

    def _mirror(
        self, doc: Mapping[str, Any], now: float, split_percent: float | None
    ) -> float | None:
        """Mirror *doc* (the lock held by the caller)."""
        v = _state.view(doc, self._stages)
        old = self.view
        self.doc = copy.deepcopy(dict(doc))
        self.view = v
        self.gen += 1
        self.cut = v.cut
        self.judging = v.judging
        self.rolled_back = v.status == "rolled_back"
        if old is None or old.attempt != v.attempt:
            self.judge = self._new_judge()
            self.verdict = None
        if old is None or (old.attempt, old.stage) != (v.attempt, v.stage):
            self._new_stage(v, now)
        return v.percent if v.percent != split_percent else None

    def _new_stage(self, v: _state.View, now: float) -> None:
        self.summary = StageSummary()
        self.held = False
        if v.judging:
            self.judge.start_stage(v.percent / 100.0, v.stage_started)
        self.fleet = (
            FleetCounts(
                f"{self._name}/counts/{v.attempt}/{v.stage}",
                self._checks,
                every=self._flush_every,
                interval=self._interval,
                now=now,
            )
            if self._fleet_counts and v.judging
            else None
        )

    def record(
        self, is_canary: bool, failed: bool, latency: float, now: float
    ) -> FleetCounts | Literal[True] | None:
        """Count a judged outcome; say what is due: a batch to flush, a checkpoint or nothing."""
        i = 1 if is_canary else 0
        with self.lock:
            if not self.judging:
                return None
            s = self.summary
            s.n[i] += 1
            s.errors[i] += failed
            s.lat_sum[i] += latency
            s.lat_max[i] = max(s.lat_max[i], latency)
            fleet = self.fleet
            if fleet is None:
                return True if self.judge.record(is_canary, failed, latency) else None
            return fleet if fleet.add(i, failed, latency, now) else None

    def record_value(
        self, is_canary: bool, metric: str, value: float, now: float
    ) -> FleetCounts | Literal[True] | None:
        """Count a judged KPI value; say what is due (as :meth:`record`)."""
        with self.lock:
            if not self.judging:
                return None
            fleet = self.fleet
            if fleet is None:
                due = self.judge.record_value(is_canary, metric, value)
                return True if due else None
            return (
                fleet if fleet.add_value(int(is_canary), metric, value, now) else None
            )

    def record_sums(
        self, is_canary: bool, sums: Mapping[int, tuple[int, float, float]]
    ) -> FleetCounts | Literal[True] | None:
        """Count aggregated KPI values per check; a flush or checkpoint is then due."""
        with self.lock:
            if not self.judging:
                return None
            fleet = self.fleet
            if fleet is not None:
                fleet.add_sums(int(is_canary), sums)
                return fleet
            for i, (cnt, total, squares) in sums.items():
                self.judge.add_sums(is_canary, i, cnt, total, squares)
            return True

    def take(self, fleet: FleetCounts, now: float) -> Batch:
        """Return *fleet*'s batch to send: the unacknowledged one, else the pending counts."""
        with self.lock:
            return fleet.take(now)

    def totals(
        self, fleet: FleetCounts, seq: int, totals: Mapping[str, float] | None
    ) -> bool:
        """Take the fleet's *totals* after batch *seq* (``None``: it failed, sent again later).

        Returns whether the judge got them (not if the stage moved on meanwhile).
        """
        with self.lock:
            if totals is None:
                return False
            fleet.acked(seq)
            if fleet is not self.fleet or not self.judging:
                return False
            counts, sums, cnts, sqs = fleet.parse(totals)
            self.judge.set_stage_counts(counts, sums, cnt=cnts, sq=sqs)
            return True

    def evaluate(
        self,
        now: float,
        mono: float,
        *,
        max_stage_duration: float | None,
        on_inconclusive: OnInconclusive,
        save_every: float,
    ) -> Judgement | None:
        """Judge at *now* (wall clock); decide the transition; due a save at *mono*?

        ``None`` when not judging. A held or paused stage is handed to
        *on_inconclusive* only once.
        """
        with self.lock:
            if not self.judging:
                return None
            verdict = self.judge.evaluate(now)
            previous, self.verdict = self.verdict, verdict
            step = _state.decide(
                self.doc,
                verdict,
                now,
                max_stage_duration=max_stage_duration,
                on_inconclusive=on_inconclusive,
                held=self.held,
                before=self.percent,
            )
            if step is not None and step.action in ("pause", "hold"):
                self.held = True
            saved = None
            if mono >= self.next_save:
                self.next_save = mono + save_every
                saved = self._saved_locked()
            return Judgement(verdict, previous, step, saved, self.percent)

    def unhold(self) -> None:
        """Hand an inconclusive stage to the policy again (its write failed)."""
        with self.lock:
            self.held = False

    def saved(self) -> dict[str, Any]:
        """Return the judge's counts to save, with the attempt and stage they belong to."""
        with self.lock:
            return self._saved_locked()

    def _saved_locked(self) -> dict[str, Any]:
        return {
            "attempt": self.doc.get("attempt"),
            "stage": self.doc.get("stage"),
            "judge": self.judge.to_state(),
        }

    def load(self, saved: Mapping[str, Any]) -> None:
        """Restore saved judge counts if they belong to the current attempt and stage."""
        with self.lock:
            if (saved.get("attempt"), saved.get("stage")) != (
                self.doc.get("attempt"),
                self.doc.get("stage"),
            ):
                return
            try:
                self.judge.load_state(saved["judge"])
            except (ValueError, KeyError, TypeError):
                logger.warning(
                    "tipkit: rollout %r: saved judge counts do not match its checks; "
                    "judging starts afresh",
                    self._name,
                )

    def step(
        self,
        action: _state.Action,
        reason: str,
        now: float,
        actor: str | None = None,
    ) -> Transition:
        """Return the manual transition *action* decided now by *actor*.

        Raises:
            RolloutStateError: the rollout's status does not allow it.
        """
        with self.lock:
            return _state.manual(
                action,
                self.doc,
                reason,
                now,
                verdict=self.verdict,
                before=self.percent,
                name=self._name,
                actor=actor,
            )
