"""A rollout's public controls: evaluate, status and the audited transitions.

:class:`Controls` is a base of :class:`~tipkit.rollout.Rollout` (kept apart so
the strategy stays small): each control decides a transition on this
process's mirror (:class:`._local.Local`) and has the
:class:`._engine.Engine` write it, announce it and audit it.
"""

from __future__ import annotations

import copy

from tipkit import audit
from tipkit._judge import Verdict
from tipkit.clock import Clock
from tipkit.rollout import _state
from tipkit.rollout._engine import Engine
from tipkit.rollout._events import RolloutStatus
from tipkit.rollout._local import Local
from tipkit.rollout._persist import Flow, RolloutStore
from tipkit.rollout._safety import Safety
from tipkit.stores._action import Action

__all__ = ["Controls"]


class Controls:
    """The controls of a rollout; see :class:`~tipkit.rollout.Rollout`."""

    name: str
    flag: str
    stages: tuple[float, ...]
    _clock: Clock
    _local: Local
    _persist: RolloutStore
    _engine: Engine
    _safety: Safety
    _refresh_interval: float
    _next_refresh: float

    @property
    def percent(self) -> float:
        """The canary share now, in percent (0 once rolled back)."""
        return self._local.cut / 1000

    def _refresh(self, mono: float) -> Flow[None]:
        """Return the refresh flow, due at *mono*; the next one is due an interval later."""
        self._next_refresh = mono + self._refresh_interval
        return self._engine.refresh(mono)

    def evaluate(self) -> Verdict | None:
        """Re-read the store, judge now and act on the verdict; return it.

        Requests call this by themselves at amortised checkpoints; call it to
        apply time-based rules when traffic is low. ``None`` when the rollout
        is not judging (rolled back, completed, or at 100 %). Blocks the
        calling thread for the store's round trips; a store failure keeps the
        last known state (reported, not raised).
        """
        self._refresh_now()
        local = self._local
        with local.lock:
            return local.verdict if local.judging else None

    def _refresh_now(self) -> None:
        self._persist.run(self._refresh(self._clock.monotonic()))

    def _control(self, action: _state.Action, reason: str, actor: str | None) -> None:
        # A person (or their code): the OS user when not named, never "tipkit:".
        who = audit.actor_or_default(actor)
        if self._safety.pending():
            # An earlier queued state goes first, so this one applies after it
            # (bounded round trips; still pending if the store fails).
            self._safety.durable.flush()
            self._persist.guarded(self._refresh(self._clock.monotonic()))
        step = self._local.step(action, reason, self._clock.time(), who)
        self._persist.run(self._engine.act(step, quiet=False))

    def advance(self, reason: str = "manual", *, actor: str | None = None) -> None:
        """Move to the next stage now, whatever the judge says (the last one completes).

        *actor* (who) and *reason* (why) go to the history, the
        :class:`RolloutControlled` event and the audit log. Blocks the calling
        thread for the store's round trips.

        Raises:
            RolloutStateError: the rollout is rolled back or completed (a
                ``RuntimeError``).
            StoreError: the store could not be read or written; nothing changed.
        """
        self._control("advance", reason, actor)

    def promote(self, reason: str = "manual", *, actor: str | None = None) -> None:
        """Move to the next stage now: :meth:`advance` under the operators' name."""
        self._control("advance", reason, actor)

    def pause(self, reason: str = "manual", *, actor: str | None = None) -> None:
        """Stop advancing; keep serving the current share and keep judging (FAIL still rolls back).

        Local-first: in force here at once; if the store fails it is queued and
        written (compare-and-set) when the store answers (:meth:`pending`).
        Never raises a store error. Audited as *actor* with *reason*.

        Raises:
            RolloutStateError: the rollout is rolled back or completed.
        """
        self._control("pause", reason, actor)

    def resume(self, reason: str = "manual", *, actor: str | None = None) -> None:
        """Resume a paused rollout; restart a rolled-back one from its first stage.

        Restarting clears the flag override set by the rollback and starts
        judging afresh (a new attempt). Blocks the calling thread for the
        store's round trips. Audited as *actor* with *reason*.

        Raises:
            RolloutStateError: the rollout is completed.
            StoreError: the store could not be read or written.
        """
        self._control("resume", reason, actor)

    def rollback(self, reason: str = "manual", *, actor: str | None = None) -> None:
        """Roll back now: canary share 0, the flag overridden to control, hooks called.

        Idempotent. Local-first: in force here at once (hooks and events
        included); if the store fails it is queued and written with
        compare-and-set when the store answers, within about a second, with
        no call needed (:meth:`pending`). Never raises a store error. Audited
        as *actor* with *reason*.
        """
        self._control("rollback", reason, actor)

    def pending(self) -> list[Action]:
        """Return the states decided here (rollback, pause) not yet in the store."""
        return self._safety.pending()

    def status(self) -> RolloutStatus:
        """Return the stage, percent, per-arm numbers, last verdict and history.

        Re-reads the store first, so it reflects other processes, and judges
        now, so a transition that is due (a stage that ran long enough) happens
        before the answer. Blocks the calling thread for the store's round
        trips; a store failure answers with the last known state.
        """
        self._refresh_now()
        local = self._local
        with local.lock:
            d = local.doc
            return RolloutStatus(
                self.name,
                self.flag,
                d["status"],
                int(d["stage"]),
                self.percent,
                self.stages,
                local.summary.summary(1),
                local.summary.summary(0),
                local.verdict,
                tuple(copy.deepcopy(d.get("history", []))),
            )
