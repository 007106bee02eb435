"""tipkit: in-process safety primitives for testing in production deliberately.

Feature flags, circuit breakers, rate limiters, retries, timeouts and bulkheads,
OpenTelemetry signals, guarded rollouts and shadow experiments, as composable
decorators and context managers for sync and async code.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from tipkit._core._compose import compose
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
from tipkit.flags import (
    EvaluationContext,
    EvaluationDetail,
    FileProvider,
    Flags,
    InMemoryProvider,
)
from tipkit.stores import MemoryStore, Store
from tipkit.telemetry import instrument, synthetic, traced, uninstrument

try:
    __version__ = version("tipkit")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

__all__ = [
    "SYSTEM_CLOCK",
    "BulkheadFullError",
    "CircuitOpenError",
    "Clock",
    "ConfigError",
    "DeadlineExceededError",
    "EvaluationContext",
    "EvaluationDetail",
    "FileProvider",
    "Flags",
    "InMemoryProvider",
    "MemoryStore",
    "RateLimitedError",
    "RejectedError",
    "Store",
    "StoreError",
    "SystemClock",
    "TipkitError",
    "__version__",
    "compose",
    "instrument",
    "synthetic",
    "traced",
    "uninstrument",
]
