"""The four scenarios of ``tipkit demo``: a simulated service on a virtual clock.

Each scenario builds its own :class:`~tipkit.testing.FakeClock`, store and flags,
drives tipkit's public API with simulated traffic drawn from a seeded
:class:`random.Random`, and returns a frozen result with the numbers and the
series the chart draws. Nothing here sleeps or reads real time: the clock moves
only when the simulation says a request took time. One module per scenario;
this one gathers their names.
"""

from __future__ import annotations

from tipkit._demo._common import BAD_ERROR, BASE_ERROR, STAGES, Params, Reporter
from tipkit._demo._outage import OutageBin, OutageResult, run_outage
from tipkit._demo._rollouts import (
    CanaryResult,
    PromotionResult,
    RolloutPoint,
    StageChange,
    run_bad_canary,
    run_good_rollout,
)
from tipkit._demo._shadow import (
    Order,
    ShadowMismatch,
    ShadowResult,
    price_v1,
    price_v2,
    run_shadow,
)

__all__ = [
    "BAD_ERROR",
    "BASE_ERROR",
    "STAGES",
    "CanaryResult",
    "Order",
    "OutageBin",
    "OutageResult",
    "Params",
    "PromotionResult",
    "Reporter",
    "RolloutPoint",
    "ShadowMismatch",
    "ShadowResult",
    "StageChange",
    "price_v1",
    "price_v2",
    "run_bad_canary",
    "run_good_rollout",
    "run_outage",
    "run_shadow",
]
