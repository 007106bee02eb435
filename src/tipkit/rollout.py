"""Guarded rollouts: move a change from 1 % to 100 % and back, automatically.

::

    rollout = Rollout("new-pricing", flags=flags, stages=[1, 5, 25, 50, 100],
                      min_stage_duration=300.0, min_samples=1_000,
                      guards=[ErrorRate(max_increase=0.0),
                              LatencyGuard(threshold=0.250, max_increase=0.02)])

    with rollout.observe(user_id) as arm:
        price = new_price() if arm.is_canary else old_price()

Cohorts come from the flag's consistent-hash split: the first variant of the flag
is the canary, the second the control, and the rollout sets the split's weights
to the stage's share through the store (:meth:`tipkit.flags.Flags.set_split`),
so every evaluation of the flag anywhere in the app (``flags.get``,
``flags.is_enabled``) serves the stage, and raising a stage only ever adds users
to the canary (same hash, salt and key; only the boundary moves). A request's arm
is the variant the flag's own evaluation served. Only requests the stage's split
assigned feed the judge; users pinned by a rule, an override or a kill are
served their variant and not judged.

The judge (:mod:`tipkit._judge`) compares the arms with confidence sequences
that stay valid however often they are looked at: a ``FAIL`` rolls back at once
(the split's canary share set to 0 in the store and the flag overridden to its
control variant, for every :class:`~tipkit.flags.Flags` sharing the store, a
:class:`RolloutRolledBack` event and the ``on_rollback`` hooks); a ``PASS``
advances to the next stage. Stage, status and history live in the store, so a
restarted process resumes where the rollout was.

:class:`Tripwire` is the canary-less variant: it kills a flag when the flagged
code path's error rate over a window exceeds a threshold.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import math
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Final, Literal, ParamSpec, Self, TypeVar, cast

from tipkit._core import _fork
from tipkit._core._durations import to_seconds
from tipkit._core._guard import Guard, check_decoratable
from tipkit._judge import (
    FAIL,
    PASS,
    CanaryGuard,
    ErrorRate,
    GuardResult,
    Judge,
    LatencyGuard,
    SampleRatio,
    Verdict,
)
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import ConfigError
from tipkit.flags import Flags, InMemoryProvider, Reason
from tipkit.stores import MemoryStore, Store
from tipkit.stores._batch import CountBatcher
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY
from tipkit.telemetry._events import BUS, AttributeValue, Event

__all__ = [
    "Arm",
    "ArmSummary",
    "ErrorRate",
    "FlagKilled",
    "GuardResult",
    "LatencyGuard",
    "Rollout",
    "RolloutJudged",
    "RolloutRolledBack",
    "RolloutStageChanged",
    "RolloutStatus",
    "SampleRatio",
    "Tripwire",
    "Verdict",
]

logger = logging.getLogger("tipkit")

P = ParamSpec("P")
R = TypeVar("R")

Status = Literal["running", "paused", "rolled_back", "completed"]
OnInconclusive = Literal["hold", "pause", "rollback"]

NAMESPACE: Final = "tipkit.rollouts"
_HISTORY_MAX: Final = 200
_CAS_TRIES: Final = 8
_COUNTS_TTL: Final = 7 * 24 * 3600.0  # fleet counts of a stage outlive any stage


# ------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class RolloutStageChanged(Event):
    """A rollout moved to another stage (advanced, completed, restarted).

    Attributes:
        name: the rollout.
        from_percent, to_percent: canary share before and after, in percent.
        status: the rollout's status afterwards.
        reason: why, in plain words ("passed: ...", "manual").
    """

    from_percent: float
    to_percent: float
    status: str
    reason: str

    otel_name: ClassVar[str] = "tipkit.rollout.stage_changed"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the rollout name, percents and status."""
        return {
            names.ROLLOUT_NAME: self.name,
            names.ROLLOUT_FROM_PERCENT: self.from_percent,
            names.ROLLOUT_PERCENT: self.to_percent,
            names.STATE: self.status,
        }


@dataclass(frozen=True, slots=True)
class RolloutRolledBack(Event):
    """A rollout was rolled back: canary share 0, everyone on control.

    Attributes:
        name: the rollout.
        reason: why, in plain words.
        automatic: the judge (or ``on_inconclusive``) did it, not a person.
        percent: the canary share when it happened, in percent.
        guard: the label of the failed guard (``"error_rate"``,
            ``"latency>0.25s"``), or ``None`` for a manual rollback.
        canary_count, canary_bad, control_count, control_bad: the failed
            guard's counts (0 for a manual rollback).
        canary_rate, control_rate: their rates.
        lower, upper: the confidence interval of ``canary - control`` (``None``
            when there was none).
        runbook: the rollout's runbook URL, if any.
        verdict: the full verdict, if a verdict led to it.
    """

    reason: str
    automatic: bool
    percent: float
    guard: str | None = None
    canary_count: int = 0
    canary_bad: int = 0
    control_count: int = 0
    control_bad: int = 0
    canary_rate: float = 0.0
    control_rate: float = 0.0
    lower: float | None = None
    upper: float | None = None
    runbook: str | None = None
    verdict: Verdict | None = field(default=None, compare=False)

    otel_name: ClassVar[str] = "tipkit.rollout.rolled_back"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the rollout name, guard, numbers and runbook (no user data)."""
        attrs: dict[str, AttributeValue] = {
            names.ROLLOUT_NAME: self.name,
            names.ROLLOUT_AUTOMATIC: self.automatic,
            names.ROLLOUT_PERCENT: self.percent,
            names.ROLLOUT_CANARY_COUNT: self.canary_count,
            names.ROLLOUT_CANARY_BAD: self.canary_bad,
            names.ROLLOUT_CONTROL_COUNT: self.control_count,
            names.ROLLOUT_CONTROL_BAD: self.control_bad,
        }
        if self.guard is not None:
            attrs[names.ROLLOUT_GUARD] = self.guard
        if self.lower is not None:
            attrs[names.ROLLOUT_LOWER] = self.lower
        if self.upper is not None:
            attrs[names.ROLLOUT_UPPER] = self.upper
        if self.runbook is not None:
            attrs[names.RUNBOOK] = self.runbook
        return attrs


@dataclass(frozen=True, slots=True)
class RolloutJudged(Event):
    """The judge's decision changed (published on changes only, with its numbers).

    Attributes:
        name: the rollout.
        decision: ``"PASS"``, ``"FAIL"`` or ``"INCONCLUSIVE"``.
        reason: the verdict's reason.
        percent: the stage's canary share in percent.
        verdict: the verdict with every guard's numbers.
    """

    decision: str
    reason: str
    percent: float
    verdict: Verdict = field(compare=False)

    otel_name: ClassVar[str] = "tipkit.rollout.judged"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the rollout name, decision and percent."""
        return {
            names.ROLLOUT_NAME: self.name,
            names.ROLLOUT_DECISION: self.decision,
            names.ROLLOUT_PERCENT: self.percent,
        }


@dataclass(frozen=True, slots=True)
class FlagKilled(Event):
    """A tripwire killed a flag: the flagged path failed too often.

    Attributes:
        name: the flag key.
        reason: why, in plain words.
        error_rate: failures / calls over the window when it tripped.
        calls, failures: the window's counts.
        max_error_rate: the threshold.
        window: the window's length in seconds.
        runbook: the runbook URL, if any.
    """

    reason: str
    error_rate: float
    calls: int
    failures: int
    max_error_rate: float
    window: float
    runbook: str | None = None

    otel_name: ClassVar[str] = "feature_flag.killed"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the flag key, rate, counts and runbook."""
        attrs: dict[str, AttributeValue] = {
            names.FEATURE_FLAG_KEY: self.name,
            names.TRIPWIRE_ERROR_RATE: self.error_rate,
            names.TRIPWIRE_CALLS: self.calls,
            names.TRIPWIRE_FAILURES: self.failures,
        }
        if self.runbook is not None:
            attrs[names.RUNBOOK] = self.runbook
        return attrs


# ------------------------------------------------------------------ status


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """One arm's outcomes in the current stage (judged requests only).

    Attributes:
        count: outcomes.
        errors: failed outcomes.
        error_rate: ``errors / count`` (0 when empty).
        latency_mean: mean duration in seconds (0 when empty).
        latency_max: longest duration in seconds (0 when empty).
    """

    count: int
    errors: int
    error_rate: float
    latency_mean: float
    latency_max: float


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """A rollout at one moment: what :meth:`Rollout.status` returns.

    Attributes:
        name, flag: the rollout and its flag key.
        status: ``"running"``, ``"paused"``, ``"rolled_back"`` or ``"completed"``.
        stage: index into ``stages`` of the current stage.
        percent: the canary share now, in percent (0 once rolled back).
        stages: the configured stages.
        canary, control: this process's judged outcomes in the current stage.
        verdict: the last verdict, or ``None`` before the first one.
        history: the transitions, oldest first, each with its wall-clock ``at``.
    """

    name: str
    flag: str
    status: Status
    stage: int
    percent: float
    stages: tuple[float, ...]
    canary: ArmSummary
    control: ArmSummary
    verdict: Verdict | None
    history: tuple[Mapping[str, Any], ...]


# ------------------------------------------------------------------ arms


class Arm:
    """One observed request: which arm it is on, and the context manager timing it.

    ``is_canary`` says which code to run. Leaving the ``with`` block records
    the outcome: an exception (an :class:`Exception`; cancellation and
    ``KeyboardInterrupt`` are not outcomes) counts as an error, as does
    :meth:`fail`; the block's duration is the latency.

    Attributes:
        is_canary: run the new code.
        variant: the flag variant served (``None`` when the flag served none).
        judged: the split assigned this request, so it feeds the judge.
    """

    __slots__ = (
        "_done",
        "_failed",
        "_rollout",
        "_start",
        "is_canary",
        "judged",
        "variant",
    )

    def __init__(
        self,
        rollout: Rollout,
        variant: str | None,
        start: float,
        *,
        is_canary: bool,
        judged: bool,
    ) -> None:
        self._rollout = rollout
        self.is_canary = is_canary
        self.variant = variant
        self.judged = judged
        self._start = start
        self._failed = False
        self._done = False

    def __repr__(self) -> str:
        arm = "canary" if self.is_canary else "control"
        return f"<Arm {arm} variant={self.variant!r} judged={self.judged}>"

    def fail(self) -> None:
        """Count this request as an error without raising (a 5xx response, say)."""
        self._failed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._rollout._finish(self, exc_type)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._rollout._finish(self, exc_type)


class _Stage:
    """This process's per-stage latency/error summary (the judge has the counts)."""

    __slots__ = ("errors", "lat_max", "lat_sum", "n")

    def __init__(self) -> None:
        self.n = [0, 0]
        self.errors = [0, 0]
        self.lat_sum = [0.0, 0.0]
        self.lat_max = [0.0, 0.0]

    def summary(self, arm: int) -> ArmSummary:
        n = self.n[arm]
        return ArmSummary(
            n,
            self.errors[arm],
            self.errors[arm] / n if n else 0.0,
            self.lat_sum[arm] / n if n else 0.0,
            self.lat_max[arm],
        )


def _check_stages(stages: Iterable[float]) -> tuple[float, ...]:
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


# ------------------------------------------------------------------ the rollout


class Rollout:
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
        guards: what the judge checks (default: ``ErrorRate()`` and
            ``LatencyGuard()``).
        confidence: coverage of the judge's confidence sequences (0.99: at most
            a 1 % chance of a false rollback over the whole rollout).
        on_inconclusive: ``"hold"`` (stay and keep judging), ``"pause"`` or
            ``"rollback"``, after *max_stage_duration*.
        store: where state lives (default: the store of *flags*).
        clock: the clock; ``monotonic()`` times requests and ``time()`` stamps
            stages and history (wall-clock, so a restart can resume).
        runbook: a URL carried by rollback events.
        on_rollback: callables receiving the :class:`RolloutRolledBack` event,
            called synchronously after the rollback is written; their errors
            are logged on the ``tipkit`` logger, never raised.
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

    Thread-safe: outcomes and transitions are serialised by one lock; the flag
    evaluation and bucketing before it take none.

    Raises:
        ConfigError: the flag is missing (and cannot be created) or has fewer
            than two variants.
        ValueError, TypeError: an argument is out of range.
    """

    def _after_fork_in_child(self) -> None:
        """Re-create the lock in a forked worker (another thread may have held it)."""
        self._lock = threading.RLock()

    def __init__(
        self,
        name: str,
        *,
        flags: Flags,
        flag: str | None = None,
        stages: Sequence[float] = (1, 5, 25, 50, 100),
        min_stage_duration: float = 300.0,
        min_samples: int = 1_000,
        max_stage_duration: float | None = 3_600.0,
        guards: Sequence[CanaryGuard] | None = None,
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
        self.name = name
        self.flag = flag if flag is not None else name
        self.stages = _check_stages(stages)
        self.min_stage_duration = to_seconds(min_stage_duration, "min_stage_duration")
        self.max_stage_duration = (
            None
            if max_stage_duration is None
            else to_seconds(max_stage_duration, "max_stage_duration")
        )
        self.guards = (
            tuple(guards) if guards is not None else (ErrorRate(), LatencyGuard())
        )
        self.confidence = confidence
        self.min_samples = min_samples
        self.on_inconclusive: OnInconclusive = on_inconclusive
        self.runbook = runbook
        self._check_ratio = check_ratio
        self._fleet = (
            not isinstance(store if store is not None else flags.store, MemoryStore)
            if fleet_counts is None
            else bool(fleet_counts)
        )
        self._flush_every = flush_every
        self._batcher: CountBatcher | None = None
        # Built once to validate guards/confidence/min_samples before touching the store.
        self._judge = self._new_judge()
        self._flags = flags
        self._store: Store = store if store is not None else flags.store
        self._clock = clock
        self._hooks: tuple[Callable[[RolloutRolledBack], object], ...] = (
            (on_rollback,) if callable(on_rollback) else tuple(on_rollback)
        )
        self._refresh_interval = to_seconds(refresh_interval, "refresh_interval")
        self._lock = threading.RLock()
        _fork.register(self)  # the lock is re-created in forked workers
        self._created_flag = False
        self._canary_variant, self._control_variant = self._resolve_flag(
            canary_variant, control_variant
        )
        self._split_percent: float | None = None  # last share written with set_split
        self._synced_percent = self.stages[0]
        # Local mirror of the stored state.
        self._doc: dict[str, Any] = {}
        self._version = -1
        self._cut = 0  # canary buckets: [0, cut) of 100000
        self._running = False
        self._judging = False
        self._summary = _Stage()
        self._verdict: Verdict | None = None
        self._held = False
        self._next_refresh = -math.inf
        self._next_persist = -math.inf
        self._counters = {
            (arm, outcome): REGISTRY.counter(
                names.ROLLOUT_REQUESTS,
                {names.ROLLOUT_NAME: name, names.ARM: arm, names.OUTCOME: outcome},
            )
            for arm in ("canary", "control")
            for outcome in ("success", "failure")
        }
        REGISTRY.register_gauge(names.ROLLOUT_STAGE, self, _stage_gauge)
        self._start_or_resume()

    # -- setup ----------------------------------------------------------------------
    def _new_judge(self) -> Judge:
        return Judge(
            self.guards,
            confidence=self.confidence,
            min_samples=self.min_samples,
            min_stage_duration=self.min_stage_duration,
            check_ratio=self._check_ratio,
        )

    def _resolve_flag(self, canary: str | None, control: str | None) -> tuple[str, str]:
        fs = self._flags.flag_set
        compiled = None if fs is None else fs.flags.get(self.flag)
        if compiled is None:
            provider = self._flags.provider
            if not isinstance(provider, InMemoryProvider):
                raise ConfigError(
                    f"rollout {self.name!r}: flag {self.flag!r} does not exist; define it "
                    "with two variants (canary first, control second) and a split",
                    flag=self.flag,
                )
            provider.set_flag(self.flag, self._definition(self.stages[0]))
            self._flags.refresh()
            self._created_flag = True
            return ("canary", "control")
        variants = list(compiled.variants)
        if len(variants) < 2:
            raise ConfigError(
                f"rollout {self.name!r}: flag {self.flag!r} needs two variants "
                f"(canary, control), it has {variants!r}",
                flag=self.flag,
                field="variants",
            )
        canary = canary if canary is not None else variants[0]
        control = control if control is not None else variants[1]
        if canary == control:
            raise ConfigError(
                f"rollout {self.name!r}: the canary and control variants of flag "
                f"{self.flag!r} must differ, both are {canary!r}",
                flag=self.flag,
                field="variants",
            )
        for which, v in (("canary_variant", canary), ("control_variant", control)):
            if v not in compiled.variants:
                raise ConfigError(
                    f"rollout {self.name!r}: {which} {v!r} is not a variant of flag "
                    f"{self.flag!r} ({variants!r})",
                    flag=self.flag,
                    field="variants",
                )
        return canary, control

    @staticmethod
    def _definition(percent: float) -> dict[str, Any]:
        rest = round(100_000 - percent * 1000) / 1000
        split: dict[str, Any] = {"canary": percent, "control": rest}
        return {
            "variants": {"canary": True, "control": False},
            "off_variant": "control",
            "fallthrough": {"split": split},
        }

    def _start_or_resume(self) -> None:
        entry = self._store.get(NAMESPACE, self.name)
        now = self._clock.time()
        if entry is None:
            doc = {
                "flag": self.flag,
                "stages": list(self.stages),
                "stage": 0,
                "status": "completed" if self.stages[0] >= 100 else "running",
                "attempt": 1,
                "stage_started": now,
                "history": [self._event("started", self.stages[0], "created", now)],
            }
            version = self._store.compare_and_set(NAMESPACE, self.name, doc, version=0)
            if version is None:  # another process created it meanwhile
                self._start_or_resume()
                return
            self._apply(doc, version)
        else:
            self._apply(entry.value, entry.version)
            saved = self._store.get(NAMESPACE, self._judge_key())
            if saved is not None and isinstance(saved.value, dict):
                self._load_judge(saved.value)

    def _judge_key(self) -> str:
        return f"{self.name}/judge"

    def _load_judge(self, saved: Mapping[str, Any]) -> None:
        if (saved.get("attempt"), saved.get("stage")) != (
            self._doc.get("attempt"),
            self._doc.get("stage"),
        ):
            return
        try:
            self._judge.load_state(saved["judge"])
        except (ValueError, KeyError):
            logger.warning(
                "tipkit: rollout %r: saved judge counts do not match its guards; "
                "judging starts afresh",
                self.name,
            )

    @staticmethod
    def _event(
        action: str, percent: float, reason: str, at: float, **extra: Any
    ) -> dict[str, Any]:
        return {
            "at": at,
            "action": action,
            "percent": percent,
            "reason": reason,
            **extra,
        }

    def _apply(self, doc: Mapping[str, Any], version: int) -> None:
        """Mirror the stored state locally; restart judging when the stage changed."""
        old = self._doc
        self._doc = copy.deepcopy(dict(doc))
        self._version = version
        status = self._doc["status"]
        stage = int(self._doc["stage"])
        percent = self.stages[stage] if status != "rolled_back" else 0.0
        self._cut = round(percent * 1000)
        self._running = status in ("running", "paused")
        self._judging = self._running and 0 < self._cut < 100_000
        if old.get("attempt") != self._doc.get("attempt"):
            self._judge = self._new_judge()
            self._verdict = None
        if (old.get("attempt"), old.get("stage")) != (self._doc["attempt"], stage):
            self._summary = _Stage()
            self._held = False
            if self._judging:
                self._judge.start_stage(
                    percent / 100.0, float(self._doc["stage_started"])
                )
            self._batcher = (
                CountBatcher(
                    self._store,
                    f"rollout:{self.name}:{self._doc['attempt']}:{stage}",
                    every=self._flush_every,
                    interval=self._refresh_interval,
                    ttl=_COUNTS_TTL,
                    name=self.name,
                    clock=self._clock,
                )
                if self._fleet and self._judging
                else None
            )
        if self._created_flag and percent != self._synced_percent:
            self._synced_percent = percent
            self._sync_created_flag(percent)
        if percent != self._split_percent:
            self._sync_split(percent)

    def _split_targets(self) -> tuple[str | None, ...]:
        fs = self._flags.flag_set
        compiled = None if fs is None else fs.flags.get(self.flag)
        rules = () if compiled is None else compiled.rules
        return (None, *(r.id for r in rules if r.serve.is_split))

    def _sync_split(self, percent: float) -> None:
        """Make the flag's splits give the canary *percent*, through the flags store.

        Writes only the targets whose stored weights differ, so the processes
        that all notice a stage change do not all write it. A failure is logged
        (once until a write succeeds) and retried at the next refresh; meanwhile
        requests served by other weights are not judged.
        """
        cut = round(percent * 1000)
        weights = {
            self._canary_variant: cut / 1000,
            self._control_variant: (100_000 - cut) / 1000,
        }
        try:
            for rule_id in self._split_targets():
                if self._flags.get_split(self.flag, rule_id=rule_id) != weights:
                    self._flags.set_split(self.flag, weights, rule_id=rule_id)
        except Exception:
            if self._split_percent is not None:
                logger.exception(
                    "tipkit: rollout %r: setting the split of flag %r to %g%% failed",
                    self.name,
                    self.flag,
                    percent,
                )
            self._split_percent = None
        else:
            self._split_percent = percent

    def _sync_created_flag(self, percent: float) -> None:
        provider = self._flags.provider
        if isinstance(provider, InMemoryProvider):
            provider.set_flag(self.flag, self._definition(percent))

    # -- the request path -------------------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"<Rollout {self.name!r} flag={self.flag!r} status={self._doc.get('status')}"
            f" stage={self._doc.get('stage')} percent={self.percent:g}"
            f" guards={list(self.guards)!r}>"
        )

    @property
    def percent(self) -> float:
        """The canary share now, in percent (0 once rolled back)."""
        return self._cut / 1000

    def observe(self, context: Any = None) -> Arm:
        """Assign the request for *context* to an arm; use the result as a context manager.

        *context* is what the flag is evaluated for (a targeting key, a mapping
        or an :class:`~tipkit.flags.EvaluationContext`). Never raises for a bad
        context: the flag then serves its default and the request is not judged.
        Thread-safe; reads the monotonic clock once here and once on exit.
        """
        now = self._clock.monotonic()
        if now >= self._next_refresh:
            self._refresh(now)
        # The flag's own evaluation assigns the arm: its split serves the stage's
        # share (set_split), so this is the cohort every other evaluation of the
        # flag in the app sees too. _run is evaluate() without the detail object.
        _, out = self._flags._run(self.flag, context, None)
        variant = out.variant
        split = out.split
        cut = self._cut
        # Judged only when the split that served it gives exactly the stage's
        # share: not a rule's pin, an override or a kill, and not weights of
        # another stage that this Flags has not re-read yet (another process
        # moved the stage), which would bias the arms' ratio.
        judged = (
            self._judging
            and out.reason is Reason.SPLIT
            and split is not None
            and split.get(self._canary_variant) == cut
            and split.get(self._control_variant) == 100_000 - cut
        )
        return Arm(
            self, variant, now, is_canary=variant == self._canary_variant, judged=judged
        )

    def _finish(self, arm: Arm, exc_type: type[BaseException] | None) -> None:
        if arm._done:
            return
        arm._done = True
        if exc_type is not None and not issubclass(exc_type, Exception):
            return  # cancelled or interrupted: not an outcome of the code
        failed = arm._failed or exc_type is not None
        self._counters[
            (
                "canary" if arm.is_canary else "control",
                "failure" if failed else "success",
            )
        ].inc()
        if not arm.judged:
            return
        end = self._clock.monotonic()
        latency = end - arm._start
        i = 1 if arm.is_canary else 0
        with self._lock:
            if not self._judging:
                return
            s = self._summary
            s.n[i] += 1
            s.errors[i] += failed
            s.lat_sum[i] += latency
            s.lat_max[i] = max(s.lat_max[i], latency)
            batcher = self._batcher
            if batcher is None and not self._judge.record(
                arm.is_canary, failed, latency
            ):
                return
        if batcher is not None and not self._add_to_fleet(batcher, i, failed, latency):
            return
        self._judge_and_act(end)

    def _add_to_fleet(
        self, batcher: CountBatcher, arm: int, failed: bool, latency: float
    ) -> bool:
        """Count an outcome for the fleet; return whether the judge got new totals.

        This process's outcomes go to the store in batches, and the judge
        decides on the fleet's totals after each batch.
        """
        amounts = {f"n{arm}": 1}
        for g, guard in enumerate(self.guards):
            if guard.is_bad(failed, latency):
                amounts[f"b{arm}.{g}"] = 1
        totals = batcher.add(amounts)
        return totals is not None and self._load_fleet(batcher, totals)

    def _load_fleet(self, batcher: CountBatcher, totals: Mapping[str, float]) -> bool:
        """Put the fleet's totals into the judge's current stratum; False if stale."""
        with self._lock:
            if batcher is not self._batcher or not self._judging:
                return False
            state = self._judge.to_state()
            strata = cast("list[dict[str, Any]]", state["strata"])
            if not strata:
                return False
            guards = range(len(self.guards))
            current = strata[-1]
            current["n"] = [int(totals.get(f"n{arm}", 0)) for arm in (0, 1)]
            current["bad"] = [
                [int(totals.get(f"b{arm}.{g}", 0)) for g in guards] for arm in (0, 1)
            ]
            self._judge.load_state(state)
            return True

    # -- judging and transitions --------------------------------------------------
    def _judge_and_act(self, mono: float) -> Verdict | None:
        actions: list[Callable[[], None]] = []
        with self._lock:
            if not self._judging:
                return self._verdict
            now = self._clock.time()
            verdict = self._judge.evaluate(now)
            previous = self._verdict
            self._verdict = verdict
            if previous is None or previous.decision != verdict.decision:
                self._doc["last_verdict"] = verdict.as_dict()
                if RolloutJudged.listened:
                    event = RolloutJudged(
                        self.name,
                        verdict.decision,
                        verdict.reason,
                        self.percent,
                        verdict,
                    )
                    actions.append(lambda: BUS.publish(event))
            if verdict.decision == FAIL:
                actions.extend(self._rollback_locked(verdict.reason, verdict, now))
            elif self._doc["status"] == "running":
                if verdict.decision == PASS:
                    actions.extend(
                        self._advance_locked(f"passed: {verdict.reason}", verdict, now)
                    )
                elif (
                    self.max_stage_duration is not None
                    and verdict.stage_elapsed >= self.max_stage_duration
                    and not self._held
                ):
                    actions.extend(self._inconclusive_locked(verdict, now))
            if mono >= self._next_persist:
                self._persist_judge()
                self._next_persist = mono + max(self._refresh_interval, 1.0)
        for act in actions:
            act()
        return verdict

    def _inconclusive_locked(
        self, verdict: Verdict, now: float
    ) -> list[Callable[[], None]]:
        reason = (
            f"inconclusive after {verdict.stage_elapsed:g}s"
            f" (max_stage_duration {self.max_stage_duration:g}s): {verdict.reason}"
        )
        if self.on_inconclusive == "rollback":
            return self._rollback_locked(reason, verdict, now)
        self._held = True
        if self.on_inconclusive == "pause":
            self._transition(
                lambda d: (
                    self._set_status(
                        d, "paused", "paused", reason, now, verdict=verdict
                    )
                    if d["status"] == "running"
                    else None
                )
            )
            return []
        self._transition(lambda d: self._log(d, "held", reason, now, verdict))
        return []

    def _persist_judge(self) -> None:
        try:
            self._store.set(
                NAMESPACE,
                self._judge_key(),
                {
                    "attempt": self._doc.get("attempt"),
                    "stage": self._doc.get("stage"),
                    "judge": self._judge.to_state(),
                },
            )
        except Exception:
            logger.warning(
                "tipkit: rollout %r: saving judge counts failed",
                self.name,
                exc_info=True,
            )

    def _transition(
        self, mutate: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Apply *mutate* to the stored state with compare-and-set; ``None``: no-op."""
        for _ in range(_CAS_TRIES):
            entry = self._store.get(NAMESPACE, self.name)
            if entry is None:
                doc, version = copy.deepcopy(self._doc), 0
            else:
                doc, version = copy.deepcopy(entry.value), entry.version
            new = mutate(doc)
            if new is None:
                if entry is not None and entry.version != self._version:
                    self._apply(entry.value, entry.version)
                return None
            new["history"] = new.get("history", [])[-_HISTORY_MAX:]
            written = self._store.compare_and_set(
                NAMESPACE, self.name, new, version=version
            )
            if written is not None:
                self._apply(new, written)
                return new
        raise RuntimeError(
            f"rollout {self.name!r}: the stored state kept changing; transition not applied"
        )

    def _log(
        self,
        doc: dict[str, Any],
        action: str,
        reason: str,
        now: float,
        verdict: Verdict | None = None,
    ) -> dict[str, Any]:
        extra = {} if verdict is None else {"verdict": verdict.as_dict()}
        percent = (
            0.0 if doc["status"] == "rolled_back" else self.stages[int(doc["stage"])]
        )
        doc.setdefault("history", []).append(
            self._event(action, percent, reason, now, **extra)
        )
        return doc

    def _set_status(
        self,
        doc: dict[str, Any],
        status: Status,
        action: str,
        reason: str,
        now: float,
        *,
        verdict: Verdict | None = None,
    ) -> dict[str, Any]:
        doc["status"] = status
        return self._log(doc, action, reason, now, verdict)

    def _advance_locked(
        self, reason: str, verdict: Verdict | None, now: float
    ) -> list[Callable[[], None]]:
        expected = (self._doc["attempt"], self._doc["stage"])
        before = self.percent

        def mutate(d: dict[str, Any]) -> dict[str, Any] | None:
            if (d["attempt"], d["stage"]) != expected or d["status"] in (
                "rolled_back",
                "completed",
            ):
                return None  # someone else moved it first
            nxt = int(d["stage"]) + 1
            if nxt >= len(self.stages):
                return self._set_status(
                    d, "completed", "completed", reason, now, verdict=verdict
                )
            d["stage"] = nxt
            d["stage_started"] = now
            if self.stages[nxt] >= 100:
                d["status"] = "completed"
                return self._log(d, "completed", reason, now, verdict)
            return self._log(d, "advanced", reason, now, verdict)

        new = self._transition(mutate)
        if new is None:
            return []
        self._persist_judge()
        event = RolloutStageChanged(
            self.name, before, self.percent, new["status"], reason
        )
        return [lambda: BUS.publish(event)] if RolloutStageChanged.listened else []

    def _rollback_locked(
        self, reason: str, verdict: Verdict | None, now: float
    ) -> list[Callable[[], None]]:
        before = self.percent
        automatic = verdict is not None

        def mutate(d: dict[str, Any]) -> dict[str, Any] | None:
            if d["status"] == "rolled_back":
                return None
            d["status"] = "rolled_back"
            d["rolled_back_from"] = before
            return self._log(d, "rolled_back", reason, now, verdict)

        if self._transition(mutate) is None:
            return []
        try:
            self._flags.set_override(self.flag, self._control_variant)
        except Exception:
            logger.exception(
                "tipkit: rollout %r: overriding flag %r to its control variant failed; "
                "the rollout's own share is 0",
                self.name,
                self.flag,
            )
        failed: GuardResult | None = (
            verdict.failed[0] if verdict and verdict.failed else None
        )
        event = RolloutRolledBack(
            self.name,
            reason,
            automatic,
            before,
            guard=None if failed is None else failed.guard.describe(),
            canary_count=0 if failed is None else failed.canary_count,
            canary_bad=0 if failed is None else failed.canary_bad,
            control_count=0 if failed is None else failed.control_count,
            control_bad=0 if failed is None else failed.control_bad,
            canary_rate=0.0 if failed is None else failed.canary_rate,
            control_rate=0.0 if failed is None else failed.control_rate,
            lower=None
            if failed is None or not math.isfinite(failed.lower)
            else failed.lower,
            upper=None
            if failed is None or not math.isfinite(failed.upper)
            else failed.upper,
            runbook=self.runbook,
            verdict=verdict,
        )

        def after() -> None:
            if RolloutRolledBack.listened:
                BUS.publish(event)
            for hook in self._hooks:
                try:
                    hook(event)
                except Exception:
                    logger.exception(
                        "tipkit: an on_rollback hook of rollout %r raised", self.name
                    )

        return [after]

    def _refresh(self, mono: float) -> None:
        self._next_refresh = mono + self._refresh_interval
        try:
            entry = self._store.get(NAMESPACE, self.name)
        except Exception:
            logger.warning(
                "tipkit: rollout %r: reading its state failed; keeping the last known",
                self.name,
                exc_info=True,
            )
            return
        batcher = self._batcher
        if batcher is not None:
            # A quiet process still reports its counts, and reads the fleet's.
            totals = batcher.flush()
            if totals is not None:
                self._load_fleet(batcher, totals)
        with self._lock:
            if entry is not None and entry.version != self._version:
                self._apply(entry.value, entry.version)
            elif self._doc.get("status") != "completed":
                # Also puts the stage's weights back if something else wrote
                # the split (a failed write, a hand edit): the rollout owns it.
                self._sync_split(self.percent)
        # Time-based rules (min/max stage duration) also apply at low traffic.
        if self._judging:
            self._judge_and_act(mono)

    # -- public controls -----------------------------------------------------------
    def evaluate(self) -> Verdict | None:
        """Judge now and act on the verdict (advance, roll back, pause); return it.

        Requests call this by themselves at amortised checkpoints; call it to
        apply time-based rules when traffic is low. ``None`` when the rollout
        is not judging (rolled back, completed, or at 100 %).
        """
        mono = self._clock.monotonic()
        self._refresh(mono)
        with self._lock:
            return self._verdict if self._judging else None

    def advance(self, reason: str = "manual") -> None:
        """Move to the next stage now, whatever the judge says (the last one completes).

        Raises:
            RuntimeError: the rollout is rolled back or completed.
        """
        with self._lock:
            self._require_active("advance")
            actions = self._advance_locked(reason, self._verdict, self._clock.time())
        for act in actions:
            act()

    def pause(self, reason: str = "manual") -> None:
        """Stop advancing; keep serving the current share and keep judging (FAIL still rolls back).

        Raises:
            RuntimeError: the rollout is rolled back or completed.
        """
        with self._lock:
            self._require_active("pause")
            now = self._clock.time()
            self._transition(
                lambda d: (
                    self._set_status(d, "paused", "paused", reason, now)
                    if d["status"] == "running"
                    else None
                )
            )

    def resume(self, reason: str = "manual") -> None:
        """Resume a paused rollout; restart a rolled-back one from its first stage.

        Restarting clears the flag override set by the rollback and starts
        judging afresh (a new attempt).

        Raises:
            RuntimeError: the rollout is completed.
        """
        with self._lock:
            now = self._clock.time()
            status = self._doc["status"]
            if status == "completed":
                raise RuntimeError(
                    f"rollout {self.name!r} is completed; nothing to resume"
                )
            if status == "rolled_back":

                def restart(d: dict[str, Any]) -> dict[str, Any] | None:
                    if d["status"] != "rolled_back":
                        return None
                    d["status"] = "running"
                    d["stage"] = 0
                    d["attempt"] = int(d["attempt"]) + 1
                    d["stage_started"] = now
                    return self._log(d, "restarted", reason, now)

                if self._transition(restart) is not None:
                    self._flags.clear_override(self.flag)
                    self._persist_judge()
                return
            self._transition(
                lambda d: (
                    self._set_status(d, "running", "resumed", reason, now)
                    if d["status"] == "paused"
                    else None
                )
            )

    def rollback(self, reason: str = "manual") -> None:
        """Roll back now: canary share 0, the flag overridden to control, hooks called.

        Idempotent: rolling back a rolled-back rollout does nothing.
        """
        with self._lock:
            actions = self._rollback_locked(reason, None, self._clock.time())
        for act in actions:
            act()

    def _require_active(self, what: str) -> None:
        status = self._doc["status"]
        if status in ("rolled_back", "completed"):
            raise RuntimeError(
                f"cannot {what} rollout {self.name!r}: it is {status.replace('_', ' ')}"
                + ("; resume() restarts it" if status == "rolled_back" else "")
            )

    def status(self) -> RolloutStatus:
        """Return the stage, percent, per-arm numbers, last verdict and history.

        Re-reads the store first, so it reflects other processes, and judges
        now, so a transition that is due (a stage that ran long enough) happens
        before the answer.
        """
        self._refresh(self._clock.monotonic())
        with self._lock:
            d = self._doc
            return RolloutStatus(
                self.name,
                self.flag,
                d["status"],
                int(d["stage"]),
                self.percent,
                self.stages,
                self._summary.summary(1),
                self._summary.summary(0),
                self._verdict,
                tuple(copy.deepcopy(d.get("history", []))),
            )

    # -- the decorator face ----------------------------------------------------------
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
        async).

        Raises:
            TypeError: the decorated object is not callable or is a generator function.
        """
        ctx_fn = context if callable(context) else None

        def arm_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Arm:
            return self._arm_for(ctx_fn, context, args, kwargs)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            check_decoratable(fn, self)
            if inspect.iscoroutinefunction(fn):
                async_fn = cast("Callable[P, Awaitable[Any]]", fn)

                @functools.wraps(fn)
                async def routed_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                    with arm_for(args, kwargs) as arm:
                        if arm.is_canary:
                            return await async_fn(*args, **kwargs)
                        result = fallback(*args, **kwargs)
                        if inspect.isawaitable(result):
                            return await result
                        return result

                return cast("Callable[P, R]", routed_async)

            @functools.wraps(fn)
            def routed(*args: P.args, **kwargs: P.kwargs) -> R:
                with arm_for(args, kwargs) as arm:
                    if arm.is_canary:
                        return fn(*args, **kwargs)
                    return cast("R", fallback(*args, **kwargs))

            return routed

        return decorate

    def _arm_for(
        self,
        ctx_fn: Callable[..., Any] | None,
        context: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Arm:
        if ctx_fn is None:
            return self.observe(context)
        try:
            ctx = ctx_fn(*args, **kwargs)
        except Exception:
            logger.warning(
                "tipkit: the context function of rollout %r raised",
                self.name,
                exc_info=True,
            )
            return Arm(
                self, None, self._clock.monotonic(), is_canary=False, judged=False
            )
        return self.observe(ctx)


def _stage_gauge(rollout: Rollout) -> list[tuple[float, dict[str, str]]]:
    return [(rollout.percent, {names.ROLLOUT_NAME: rollout.name})]


# ------------------------------------------------------------------ tripwire


class Tripwire(Guard[float]):
    """Kill a flag when the code path it guards fails too often.

    Wrap the flagged (new) code path: as a decorator, ``with``, ``async with``
    or ``call``. Outcomes (an :class:`Exception` is a failure) are counted in
    *window*; once it holds at least *minimum_calls* and the error rate exceeds
    *max_error_rate*, ``flags.kill(key)`` is written to the store (every
    :class:`~tipkit.flags.Flags` sharing it serves the flag as disabled) and a
    :class:`FlagKilled` event says why. Humans re-enable the flag
    (``flags.revive(key)``); the tripwire then re-arms with an empty window.

    Args:
        flags: the :class:`~tipkit.flags.Flags` owning the flag.
        key: the flag key.
        max_error_rate: the tolerated failure share (0 < rate < 1).
        window: a :class:`tipkit.breaker.TimeWindow` or ``CountWindow``
            (default ``TimeWindow(60)``).
        minimum_calls: outcomes the window needs before it may trip.
        runbook: a URL carried by the event.
        clock: the clock (monotonic time drives the window).

    Thread-safe. Never raises into the guarded call: a failed kill is logged.
    """

    __slots__ = (
        "_armed",
        "_flags",
        "_lock",
        "_window",
        "key",
        "max_error_rate",
        "minimum_calls",
        "runbook",
        "window",
    )

    def _after_fork_in_child(self) -> None:
        """Re-create the lock in a forked worker (another thread may have held it)."""
        self._lock = threading.Lock()

    def __init__(
        self,
        flags: Flags,
        key: str,
        *,
        max_error_rate: float = 0.05,
        window: Any = None,
        minimum_calls: int = 100,
        runbook: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(clock=clock)
        from tipkit.breaker import CountWindow, TimeWindow  # noqa: PLC0415  # breaker is heavy

        if not isinstance(flags, Flags):
            raise TypeError(f"flags must be a tipkit.flags.Flags, got {flags!r}")
        if not key:
            raise ValueError(f"key must be a non-empty string, got {key!r}")
        if isinstance(max_error_rate, bool) or not (0.0 < float(max_error_rate) < 1.0):
            raise ValueError(
                f"max_error_rate must be in (0, 1), got {max_error_rate!r}"
            )
        if type(minimum_calls) is not int or minimum_calls < 1:
            raise ValueError(
                f"minimum_calls must be an int >= 1, got {minimum_calls!r}"
            )
        window = TimeWindow(60) if window is None else window
        if not isinstance(window, TimeWindow | CountWindow):
            raise TypeError(
                f"window must be a TimeWindow or CountWindow, got {window!r}"
            )
        self._flags = flags
        self.key = key
        self.max_error_rate = float(max_error_rate)
        self.window = window
        self.minimum_calls = minimum_calls
        self.runbook = runbook
        self._window = window._new()
        self._lock = threading.Lock()
        _fork.register(self)
        self._armed = True

    def __repr__(self) -> str:
        w = self._window
        return (
            f"<Tripwire {self.key!r} max_error_rate={self.max_error_rate} window={self.window!r}"
            f" minimum_calls={self.minimum_calls} calls={w.calls} failures={w.failures}"
            f" {'armed' if self._armed else 'tripped'}>"
        )

    @property
    def tripped(self) -> bool:
        """Whether this tripwire killed the flag and the flag is still killed."""
        self._rearm_if_revived()
        return not self._armed

    def _rearm_if_revived(self) -> None:
        if not self._armed and self.key not in self._flags.killed():
            with self._lock:
                self._window.clear()
                self._armed = True

    def _step(self, now: float, pending: object) -> float:  # noqa: ARG002  # Guard protocol
        return now

    def _release(
        self,
        ticket: float,  # noqa: ARG002  # Guard protocol
        error: BaseException | None,
        now: float,
    ) -> None:
        if error is not None and not isinstance(error, Exception):
            return
        if not self._armed:
            self._rearm_if_revived()
        event: FlagKilled | None = None
        with self._lock:
            w = self._window
            w.add(now, 1 if error is not None else 0, 0)
            if not self._armed or w.calls < self.minimum_calls:
                return
            rate = w.failures / w.calls
            if rate <= self.max_error_rate:
                return
            self._armed = False
            event = FlagKilled(
                self.key,
                f"error rate {rate:.4f} over the last {w.calls} calls exceeds "
                f"{self.max_error_rate:g}",
                rate,
                w.calls,
                w.failures,
                self.max_error_rate,
                float(getattr(self.window, "seconds", getattr(self.window, "size", 0))),
                self.runbook,
            )
        try:
            self._flags.kill(self.key)
        except Exception:
            logger.exception("tipkit: tripwire could not kill flag %r", self.key)
        if FlagKilled.listened:
            BUS.publish(event)
