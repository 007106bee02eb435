"""A rollout's safety actions: local-first, durable across an outage, audited.

A rollback or a pause acts in this process at once, even while the store fails:
the :class:`~tipkit.rollout._engine.Engine` mirrors the new state locally
(:meth:`~tipkit.rollout._local.Local.force`) and :class:`Safety` queues it in
the rollout's :class:`~tipkit.stores._durable.Durable`, whose flusher thread
writes it with compare-and-set on the version this process last read as soon
as the store answers (no request needed). A newer write by someone else wins
and is reported (``ActionConflict``), except over a state just *created* by a
process that never saw the rollout (a store restarted empty): the rollback is
written over it (:func:`safety_wins`), so a rolled-back rollout does not come
back. A state read absent after this process knew one is written back
(anti-entropy).

Every transition (a person's or the rollout's own) is announced once in force
here: a :class:`~tipkit.rollout.RolloutControlled` event and one audit record
(``tipkit.audit``; ``"tipkit:rollout"`` and the judge's numbers when the
rollout did it itself). Nothing here raises a store error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from tipkit import audit
from tipkit._judge import Verdict
from tipkit.clock import Clock
from tipkit.rollout import _state
from tipkit.rollout._events import RolloutControlled
from tipkit.rollout._persist import NAMESPACE, Flow, RolloutStore
from tipkit.rollout._state import Transition
from tipkit.stores import Entry
from tipkit.stores._action import Action
from tipkit.stores._audit import AuditStore
from tipkit.stores._durable import Durable
from tipkit.stores._protocol import JSON
from tipkit.telemetry._events import BUS

__all__ = ["AUTOMATIC", "Safety", "details", "label", "safety_wins"]

logger = logging.getLogger("tipkit")

AUTOMATIC: Final = "tipkit:rollout"
"""The actor of a transition the rollout made itself (the judge, a policy)."""

_LABELS: Final = {"advance": "promote"}


def label(action: str) -> str:
    """Return the audited name of a transition (``advance`` is ``promote``)."""
    return _LABELS.get(action, action)


def safety_wins(ours: JSON, theirs: JSON) -> bool:
    """Whether a pending state of ours is written over *theirs* found in the store.

    Only over a state just created (first attempt, first stage, no history):
    a store that restarted empty got it from a process that never saw the
    rollout; any other newer write wins over ours.
    """
    return _state.is_fresh(theirs) and not _state.is_fresh(ours)


def details(verdict: Verdict | None) -> dict[str, Any] | None:
    """Return the judge's numbers behind an automatic transition (for the audit log).

    ``bound`` is the upper end of the failed (or first) check's confidence
    interval of ``canary - control``, ``margin`` the increase it allows.
    """
    if verdict is None:
        return None
    checks = verdict.failed or verdict.checks
    out: dict[str, Any] = {"decision": verdict.decision}
    if checks:
        c = checks[0]
        numbers = c.as_dict()
        out.update(
            check=numbers["guard"],
            bound=numbers["upper"],
            lower=numbers["lower"],
            margin=c.check.max_increase,
            canary_count=c.canary_count,
            canary_bad=numbers["canary_bad"],
            control_count=c.control_count,
            control_bad=numbers["control_bad"],
            canary_rate=c.canary_rate,
            control_rate=c.control_rate,
        )
    out["stage_elapsed"] = verdict.stage_elapsed
    return out


class Safety:
    """The durable queue, anti-entropy and announcements of one rollout.

    Args:
        persist: the rollout's store I/O (its outage tracker is shared).
        stages: the rollout's stages (percent of a state).
        runbook: carried by the audit records and events.
        clock: the durable queue's clock (delays, expiry).
        on_change: called (any thread) when a queued state was written or lost
            to a newer one: the rollout re-reads its state at the next request.

    Thread-safe.
    """

    __slots__ = ("_persist", "_runbook", "_stages", "durable", "joined", "name")

    def __init__(
        self,
        persist: RolloutStore,
        *,
        stages: tuple[float, ...],
        runbook: str | None,
        clock: Clock,
        on_change: Callable[[], object] | None,
    ) -> None:
        self.name = persist.name
        self._persist = persist
        self._stages = stages
        self._runbook = runbook
        self.durable = Durable(
            persist.store,
            NAMESPACE,
            outage=persist.outage,
            clock=clock,
            on_change=on_change,
            epoch=False,
            resolve=safety_wins,
        )
        self.joined = False
        """Whether this process has read (or created) the state in the store."""

    def __repr__(self) -> str:
        return f"<Safety of rollout {self.name!r} joined={self.joined}>"

    def pending(self) -> list[Action]:
        """Return the states decided here and not yet in the store."""
        return self.durable.pending()

    def _is_pending(self) -> bool:
        return any(a.key == self.name for a in self.durable.pending())

    # -- reads -------------------------------------------------------------------------
    def join(self) -> None:
        """Say the state was read or created: this process is in the fleet now."""
        self.joined = True

    def adopts(self, entry: Entry, known: Mapping[str, Any]) -> bool:
        """Whether to mirror *entry* read from the store (*known*: the local state).

        Not while a state of ours waits to be written (it replays with
        compare-and-set). Not a state just created over one this process knows
        (the store restarted empty): ours is queued over it instead. No I/O.
        """
        if self._is_pending():
            return False
        if self.joined and known and safety_wins(dict(known), entry.value):
            logger.warning(
                "tipkit: rollout %r: the store holds a new state while this process "
                "knows %s (the store restarted empty?); writing it back",
                self.name,
                known.get("status"),
            )
            self.durable.enqueue(self.name, dict(known), base=entry.version)
            return False
        self.durable.learn(self.name, entry.value)
        return True

    def absent(self) -> None:
        """Say the state was read absent: write back what this process knows."""
        if self.joined:
            self.durable.absent(self.name)

    # -- writes ------------------------------------------------------------------------
    def wrote(self, doc: Mapping[str, Any]) -> None:
        """Remember a state written here (written back if the store loses it)."""
        self.durable.learn(self.name, dict(doc))

    def queue(self, doc: Mapping[str, Any], version: int) -> Action:
        """Queue *doc*, in force here, for the store (compare-and-set on *version*)."""
        action = self.durable.enqueue(
            self.name, dict(doc), base=version if version > 0 else None, failed=True
        )
        action.on_settled(self._settled)
        return action

    def _settled(self, action: Action) -> None:
        """Once the store answers again, append the audit records kept meanwhile."""
        store = self._persist.store
        if action.done and isinstance(store, AuditStore):
            audit.flush_pending(store)  # never raises; the flusher thread's I/O

    def announce(
        self,
        step: Transition,
        before: Mapping[str, Any],
        after: Mapping[str, Any],
        *,
        pending: bool,
    ) -> Flow[None]:
        """Publish :class:`RolloutControlled` and append the audit record (a flow).

        The audit append is a blocking call run off the event loop by the async
        driver; it never raises (a failing store keeps the record for later).
        """
        if step.action == "hold":
            return
        stages = self._stages
        was = _state.view(before, stages) if before else None
        now = _state.view(after, stages)
        actor = step.actor or AUTOMATIC
        action = label(step.action)
        if RolloutControlled.listened:
            BUS.publish(
                RolloutControlled(
                    self.name,
                    action,
                    actor,
                    step.reason,
                    was.percent if was is not None else 0.0,
                    now.percent,
                    now.status,
                    pending,
                    self._runbook,
                )
            )
        yield from self._persist.call(
            functools.partial(
                audit.record,
                self._persist.store,
                actor=actor,
                action=f"rollout.{action}",
                target=f"rollout:{self.name}",
                reason=step.reason,
                before={} if was is None else _summary(was),
                after=_summary(now),
                runbook=self._runbook,
                details=details(step.verdict) if step.actor is None else None,
            ),
            f"auditing its {action}",
            on_error="log",
        )


def _summary(v: _state.View) -> dict[str, Any]:
    return {"status": v.status, "stage": v.stage, "percent": v.percent}
