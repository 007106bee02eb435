"""tipkit as an OpenFeature provider (needs the optional ``openfeature-sdk``).

::

    from openfeature import api
    from tipkit.flags.openfeature import TipkitProvider

    api.set_provider_and_wait(TipkitProvider(flags))

Install the SDK with ``pip install 'tipkit[openfeature]'``.
"""

from __future__ import annotations

try:
    from tipkit.flags._of_telemetry import (
        FlagTracked,
        ProviderFlagEvaluated,
        TipkitTelemetryHook,
    )
    from tipkit.flags._openfeature import (
        ERROR_CODES,
        REASONS,
        TipkitProvider,
        TipkitTransactionContextPropagator,
    )
except ModuleNotFoundError as exc:  # pragma: no branch - re-raised either way
    if exc.name is None or exc.name.partition(".")[0] != "openfeature":
        raise
    raise ImportError(
        "tipkit.flags.openfeature needs the OpenFeature SDK (openfeature-sdk); "
        "install it with: pip install 'tipkit[openfeature]'",
        name=__name__,
    ) from exc

__all__ = [
    "ERROR_CODES",
    "REASONS",
    "FlagTracked",
    "ProviderFlagEvaluated",
    "TipkitProvider",
    "TipkitTelemetryHook",
    "TipkitTransactionContextPropagator",
]
