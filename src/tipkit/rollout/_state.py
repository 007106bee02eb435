"""The rollout's state machine: pure functions of (stored state, verdict, now).

The state is the JSON document kept in the store under ``tipkit.rollouts/<name>``::

    {"flag": ..., "stages": [...], "stage": 0, "status": "running", "attempt": 1,
     "stage_started": <wall-clock time>, "history": [{"at", "action", "percent",
     "reason", "verdict"?}, ...], "rolled_back_from"?: <percent>}

Nothing here reads a clock, takes a lock or touches a store: :func:`decide`
says what a verdict does, and a :class:`Transition` turns one state into the
next. The caller applies a transition with compare-and-set, so it may be
applied to a newer state than the one it was decided on: each transition
checks that it still applies and returns ``None`` when it does not (someone
else moved the rollout first).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from tipkit._judge import FAIL, PASS, Verdict
from tipkit.errors import RolloutStateError
from tipkit.rollout._events import Status

__all__ = [
    "HISTORY_MAX",
    "SAFETY",
    "Action",
    "OnInconclusive",
    "Transition",
    "View",
    "check_stages",
    "decide",
    "is_fresh",
    "manual",
    "new_state",
    "view",
]

OnInconclusive = Literal["hold", "pause", "rollback"]
Action = Literal["advance", "rollback", "pause", "resume", "restart", "hold"]

HISTORY_MAX: Final = 200
"""History entries kept in the stored state (the oldest are dropped)."""

SAFETY: Final = frozenset({"rollback", "pause"})
"""Transitions that act locally at once and are queued while the store fails."""

CUT_SCALE: Final = 100_000
"""Buckets of the flag's split: a share of ``p`` percent is ``p * 1000`` buckets."""


def check_stages(stages: Iterable[float]) -> tuple[float, ...]:
    """Return *stages* as increasing percentages in (0, 100], or raise naming the bad one."""
    out: list[float] = []
    for s in stages:
        if isinstance(s, bool) or not isinstance(s, int | float):
            raise TypeError(f"stages must be percentages, got {s!r}")
        if not (0 < s <= 100) or round(s * 1000) != s * 1000:
            raise ValueError(
                f"stages must be percentages in (0, 100] with at most 3 decimals, got {s!r}"
            )
        if out and s <= out[-1]:
            raise ValueError(f"stages must increase, got {s!r} after {out[-1]!r}")
        out.append(float(s))
    if not out:
        raise ValueError("stages must name at least one percentage, got none")
    return tuple(out)


def _entry(
    doc: Mapping[str, Any],
    stages: tuple[float, ...],
    action: str,
    reason: str,
    now: float,
    *,
    verdict: Verdict | None,
) -> dict[str, Any]:
    percent = 0.0 if doc["status"] == "rolled_back" else stages[int(doc["stage"])]
    entry: dict[str, Any] = {
        "at": now,
        "action": action,
        "percent": percent,
        "reason": reason,
    }
    if verdict is not None:
        entry["verdict"] = verdict.as_dict()
    return entry


def is_fresh(doc: object) -> bool:
    """Whether *doc* is a state just created: first attempt, first stage, one entry.

    A store that restarted empty gets such a state from the first process to
    build the rollout; a process that knows more (a rollback) writes it back.
    """
    if not isinstance(doc, dict):
        return False
    history = doc.get("history")
    return (
        doc.get("status") == "running"
        and doc.get("stage") == 0
        and doc.get("attempt") == 1
        and isinstance(history, list)
        and len(history) <= 1
    )


def new_state(flag: str, stages: tuple[float, ...], now: float) -> dict[str, Any]:
    """Return the state of a rollout that starts now (complete at once at 100 %)."""
    doc: dict[str, Any] = {
        "flag": flag,
        "stages": list(stages),
        "stage": 0,
        "status": "completed" if stages[0] >= 100 else "running",
        "attempt": 1,
        "stage_started": now,
    }
    doc["history"] = [_entry(doc, stages, "started", "created", now, verdict=None)]
    return doc


@dataclass(frozen=True, slots=True)
class View:
    """What the request path needs to know of a state.

    Attributes:
        status, stage, attempt: as stored.
        stage_started: wall-clock start of the current stage.
        percent: the canary share in percent (0 once rolled back).
        cut: the canary's buckets, ``[0, cut)`` of 100,000.
        running: running or paused (the judge still decides).
        judging: running with a control to judge against (0 < cut < 100,000).
    """

    status: Status
    stage: int
    attempt: int
    stage_started: float
    percent: float
    cut: int
    running: bool
    judging: bool


def view(doc: Mapping[str, Any], stages: tuple[float, ...]) -> View:
    """Return the :class:`View` of a stored state."""
    status = doc["status"]
    stage = int(doc["stage"])
    percent = stages[stage] if status != "rolled_back" else 0.0
    cut = round(percent * 1000)
    running = status in ("running", "paused")
    return View(
        status,
        stage,
        int(doc["attempt"]),
        float(doc["stage_started"]),
        percent,
        cut,
        running,
        running and 0 < cut < CUT_SCALE,
    )


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of the rollout's state, decided at *now* for a *reason*.

    Attributes:
        action: ``"advance"`` (the last stage, or 100 %, completes),
            ``"rollback"``, ``"pause"``, ``"resume"`` (a paused rollout),
            ``"restart"`` (a rolled-back rollout, from its first stage, as a new
            attempt) or ``"hold"`` (log that an inconclusive stage is held).
        reason: why, in plain words (kept in the history).
        now: wall-clock time of the decision (stamps the history and stage).
        verdict: the verdict behind it, kept in the history entry.
        expected: ``(attempt, stage)`` an advance was decided in: it does not
            apply to any other stage.
        before: the canary share when it was decided (a rollback keeps it).
        actor: who decided it (``None``: the rollout itself, audited as
            ``"tipkit:rollout"``).
    """

    action: Action
    reason: str
    now: float
    verdict: Verdict | None = None
    expected: tuple[int, int] | None = None
    before: float = 0.0
    actor: str | None = None

    def apply(
        self, doc: Mapping[str, Any], stages: tuple[float, ...]
    ) -> dict[str, Any] | None:
        """Return the state after this transition, or ``None`` if it no longer applies.

        *doc* is not modified. The history keeps its last :data:`HISTORY_MAX`
        entries.
        """
        d = copy.deepcopy(dict(doc))
        logged = _CHANGES[self.action](self, d, stages)
        if logged is None:
            return None
        history = [
            *d.get("history", []),
            _entry(d, stages, logged, self.reason, self.now, verdict=self.verdict),
        ]
        d["history"] = history[-HISTORY_MAX:]
        return d


# Each change edits a copy of the state in place and returns the history action,
# or None when the transition no longer applies to that state.


def _advance(t: Transition, d: dict[str, Any], stages: tuple[float, ...]) -> str | None:
    if (int(d["attempt"]), int(d["stage"])) != t.expected or d["status"] in (
        "rolled_back",
        "completed",
    ):
        return None  # someone else moved it first
    nxt = int(d["stage"]) + 1
    if nxt >= len(stages):
        d["status"] = "completed"
        return "completed"
    d["stage"] = nxt
    d["stage_started"] = t.now
    if stages[nxt] >= 100:
        d["status"] = "completed"
        return "completed"
    return "advanced"


def _rollback(t: Transition, d: dict[str, Any], _: tuple[float, ...]) -> str | None:
    if d["status"] == "rolled_back":
        return None
    d["status"] = "rolled_back"
    d["rolled_back_from"] = t.before
    return "rolled_back"


def _pause(_t: Transition, d: dict[str, Any], _: tuple[float, ...]) -> str | None:
    if d["status"] != "running":
        return None
    d["status"] = "paused"
    return "paused"


def _resume(_t: Transition, d: dict[str, Any], _: tuple[float, ...]) -> str | None:
    if d["status"] != "paused":
        return None
    d["status"] = "running"
    return "resumed"


def _restart(t: Transition, d: dict[str, Any], _: tuple[float, ...]) -> str | None:
    if d["status"] != "rolled_back":
        return None
    d["status"] = "running"
    d["stage"] = 0
    d["attempt"] = int(d["attempt"]) + 1
    d["stage_started"] = t.now
    return "restarted"


def _hold(_t: Transition, _d: dict[str, Any], _: tuple[float, ...]) -> str | None:
    return "held"


_CHANGES: Final[
    dict[str, Callable[[Transition, dict[str, Any], tuple[float, ...]], str | None]]
] = {
    "advance": _advance,
    "rollback": _rollback,
    "pause": _pause,
    "resume": _resume,
    "restart": _restart,
    "hold": _hold,
}


def decide(
    doc: Mapping[str, Any],
    verdict: Verdict,
    now: float,
    *,
    max_stage_duration: float | None,
    on_inconclusive: OnInconclusive,
    held: bool,
    before: float,
) -> Transition | None:
    """Return what *verdict* does to a rollout in state *doc*, or ``None`` (nothing).

    ``FAIL`` rolls back (paused or not); ``PASS`` advances a running rollout;
    an ``INCONCLUSIVE`` stage that ran *max_stage_duration* is handed to
    *on_inconclusive* once (*held*: it was already).
    """
    if verdict.decision == FAIL:
        return Transition("rollback", verdict.reason, now, verdict, before=before)
    if doc["status"] != "running":
        return None
    if verdict.decision == PASS:
        expected = (int(doc["attempt"]), int(doc["stage"]))
        return Transition(
            "advance", f"passed: {verdict.reason}", now, verdict, expected, before
        )
    if held or max_stage_duration is None or verdict.stage_elapsed < max_stage_duration:
        return None
    reason = (
        f"inconclusive after {verdict.stage_elapsed:g}s"
        f" (max_stage_duration {max_stage_duration:g}s): {verdict.reason}"
    )
    return Transition(on_inconclusive, reason, now, verdict, before=before)


def manual(
    action: Action,
    doc: Mapping[str, Any],
    reason: str,
    now: float,
    *,
    verdict: Verdict | None,
    before: float,
    name: str,
    actor: str | None = None,
) -> Transition:
    """Return the transition of a manual control in state *doc*.

    ``"resume"`` of a rolled-back rollout restarts it. An advance carries the
    last *verdict* into the history.

    Raises:
        RolloutStateError: ``advance``/``pause`` of a rolled-back or completed
            rollout, ``resume`` of a completed one.
    """
    status = doc["status"]
    if action in ("advance", "pause") and status in ("rolled_back", "completed"):
        raise RolloutStateError(
            f"cannot {action} rollout {name!r}: it is {status.replace('_', ' ')}"
            + ("; resume() restarts it" if status == "rolled_back" else ""),
            rollout=name,
            status=status,
        )
    if action == "resume":
        if status == "completed":
            raise RolloutStateError(
                f"rollout {name!r} is completed; nothing to resume",
                rollout=name,
                status=status,
            )
        if status == "rolled_back":
            action = "restart"
    if action == "advance":
        expected = (int(doc["attempt"]), int(doc["stage"]))
        return Transition(action, reason, now, verdict, expected, before, actor)
    return Transition(action, reason, now, before=before, actor=actor)
