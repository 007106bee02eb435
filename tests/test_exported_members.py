"""The public surface is exactly what we mean to export (httpx's guard)."""

from __future__ import annotations

import importlib

import tipkit

EXPECTED = {
    "AdaptiveLimit",
    "RetryBudget",
    "hedge",
    "inject",
    "ErrorRateCheck",
    "LatencyCheck",
    "MetricCheck",
    "RateCheck",
    "MeanCheck",
    "QuantileCheck",
    "RateDecision",
    "Experiment",
    "KeyedRateLimiter",
    "TokenBucket",
    "irreversible",
    "retry",
    "retry_context",
    "ErrorRate",
    "LatencyGuard",
    "Rollout",
    "Tripwire",
    "BreakerState",
    "Bulkhead",
    "CircuitBreaker",
    "CountWindow",
    "TimeWindow",
    "Timeout",
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
}

PUBLIC_MODULES = [
    "clock",
    "errors",
    "testing",
    "telemetry",
    "stores",
    "flags",
    "breaker",
    "bulkhead",
    "timeout",
    "deadline",
    "rollout",
    "tripwire",
    "hedge",
    "faults",
    "adaptive",
    "fallback",
    "web",
    "http",
    "audit",
    "ops",
    "alerts",
    "registry",
    "console",
    "doctor",
    "ratelimit",
    "retry",
    "experiment",
]


def test_all_is_exactly_the_public_api() -> None:
    """tipkit.__all__ lists exactly the flagship names, sorted as ruff sorts them."""
    assert set(tipkit.__all__) == EXPECTED

    # ruff's RUF022 order: CONSTANTS, then Classes, then functions and dunders.
    def key(name: str) -> tuple[int, str]:
        group = 0 if name.isupper() else 1 if name[0].isupper() else 2
        return (group, name)

    assert list(tipkit.__all__) == sorted(tipkit.__all__, key=key)


def test_every_exported_name_exists() -> None:
    """Every name in __all__ (of tipkit and its public modules) resolves."""
    for module_name in ["", *PUBLIC_MODULES]:
        module = importlib.import_module(
            f"tipkit.{module_name}" if module_name else "tipkit"
        )
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_public_modules_exist() -> None:
    """The public modules import, and private ones start with an underscore."""
    for name in PUBLIC_MODULES:
        assert importlib.import_module(f"tipkit.{name}").__all__


def test_version_is_from_metadata() -> None:
    """__version__ comes from the installed distribution's metadata."""
    from importlib.metadata import version

    assert tipkit.__version__ == version("tipkit")
