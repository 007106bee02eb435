"""tipkit: in-process safety primitives for testing in production deliberately.

Feature flags, circuit breakers, rate limiters, retries, timeouts and bulkheads,
OpenTelemetry signals, guarded rollouts and shadow experiments, as composable
decorators and context managers for sync and async code.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from tipkit._core._compose import compose
from tipkit.adaptive import AdaptiveLimit
from tipkit.breaker import BreakerState, CircuitBreaker, CountWindow, TimeWindow
from tipkit.bulkhead import Bulkhead
from tipkit.clock import SYSTEM_CLOCK, Clock, SystemClock
from tipkit.errors import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigError,
    DeadlineExceededError,
    RateLimitedError,
    RejectedError,
    StoreError,
    TipkitError,
)
from tipkit.experiment import Experiment, irreversible
from tipkit.faults import inject
from tipkit.flags import (
    EvaluationContext,
    EvaluationDetail,
    FileProvider,
    Flags,
    InMemoryProvider,
)
from tipkit.hedge import hedge
from tipkit.ratelimit import KeyedRateLimiter, RateDecision, TokenBucket
from tipkit.retry import RetryBudget, retry, retry_context
from tipkit.rollout import (
    ErrorRate,
    ErrorRateCheck,
    LatencyCheck,
    LatencyGuard,
    MeanCheck,
    MetricCheck,
    QuantileCheck,
    RateCheck,
    Rollout,
    Tripwire,
)
from tipkit.stores import MemoryStore, Store
from tipkit.telemetry import instrument, synthetic, traced, uninstrument
from tipkit.timeout import Timeout

try:
    __version__ = version("tipkit")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

__all__ = [
    "SYSTEM_CLOCK",
    "AdaptiveLimit",
    "BreakerState",
    "Bulkhead",
    "BulkheadFullError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ConfigError",
    "CountWindow",
    "DeadlineExceededError",
    "ErrorRate",
    "ErrorRateCheck",
    "EvaluationContext",
    "EvaluationDetail",
    "Experiment",
    "FileProvider",
    "Flags",
    "InMemoryProvider",
    "KeyedRateLimiter",
    "LatencyCheck",
    "LatencyGuard",
    "MeanCheck",
    "MemoryStore",
    "MetricCheck",
    "QuantileCheck",
    "RateCheck",
    "RateDecision",
    "RateLimitedError",
    "RejectedError",
    "RetryBudget",
    "Rollout",
    "Store",
    "StoreError",
    "SystemClock",
    "TimeWindow",
    "Timeout",
    "TipkitError",
    "TokenBucket",
    "Tripwire",
    "__version__",
    "compose",
    "hedge",
    "inject",
    "instrument",
    "irreversible",
    "retry",
    "retry_context",
    "synthetic",
    "traced",
    "uninstrument",
]
