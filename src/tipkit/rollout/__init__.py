"""Guarded rollouts: move a change from 1 % to 100 % and back, automatically.

::

    rollout = Rollout("new-pricing", flags=flags, stages=[1, 5, 25, 50, 100],
                      min_stage_duration=300.0, min_samples=1_000,
                      checks=[ErrorRateCheck(max_increase=0.0),
                              LatencyCheck(threshold=0.250, max_increase=0.02)])

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

The judge (:mod:`tipkit._judge`) compares the arms on *metric checks*
(:class:`MetricCheck`: :class:`ErrorRateCheck`, :class:`LatencyCheck`; their old
names ``ErrorRate`` and ``LatencyGuard`` remain as aliases) with confidence
sequences that stay valid however often they are looked at: a ``FAIL`` rolls
back at once (the split's canary share set to 0 in the store and the flag
overridden to its control variant, for every :class:`~tipkit.flags.Flags`
sharing the store, a :class:`RolloutRolledBack` event and the ``on_rollback``
hooks); a ``PASS`` advances to the next stage. Stage, status and history live in
the store, so a restarted process resumes where the rollout was.

:class:`Tripwire` (:mod:`tipkit.tripwire`, re-exported here) is the canary-less
variant: it kills a flag when the flagged code path's error rate over a window
exceeds a threshold.
"""

from tipkit._judge import (
    CheckResult,
    ErrorRate,
    ErrorRateCheck,
    GuardResult,
    LatencyCheck,
    LatencyGuard,
    MeanCheck,
    MetricCheck,
    QuantileCheck,
    RateCheck,
    SampleRatio,
    Verdict,
)
from tipkit._judge._export import JudgeVerdict
from tipkit._judge._otel import HistogramSource
from tipkit.rollout._arm import Arm
from tipkit.rollout._events import (
    ArmSummary,
    RolloutControlled,
    RolloutJudged,
    RolloutRolledBack,
    RolloutStageChanged,
    RolloutStatus,
)
from tipkit.rollout._rollout import Rollout
from tipkit.tripwire import FlagKilled, Tripwire

__all__ = [
    "Arm",
    "ArmSummary",
    "CheckResult",
    "ErrorRate",
    "ErrorRateCheck",
    "FlagKilled",
    "GuardResult",
    "HistogramSource",
    "JudgeVerdict",
    "LatencyCheck",
    "LatencyGuard",
    "MeanCheck",
    "MetricCheck",
    "QuantileCheck",
    "RateCheck",
    "Rollout",
    "RolloutControlled",
    "RolloutJudged",
    "RolloutRolledBack",
    "RolloutStageChanged",
    "RolloutStatus",
    "SampleRatio",
    "Tripwire",
    "Verdict",
]
