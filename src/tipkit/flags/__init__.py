"""Feature flags: local evaluation, targeting, deterministic bucketing, hot reload.

::

    flags = Flags(FileProvider("flags.yaml"))
    flags.is_enabled("new-checkout", "user-42")
    flags.get("checkout-algo", {"targeting_key": "user-42", "country": "NZ"}, default="v1")

Evaluation never raises into app code: any failure returns the caller's default
with reason ``ERROR`` and an error code. Documents are validated completely when
loaded (:class:`~tipkit.errors.ConfigError` lists every problem with its place).
Bucketing is a written specification: see ``docs/bucketing.md``.
"""

from __future__ import annotations

from tipkit.flags._bucketing import BUCKETS, bucket
from tipkit.flags._document import FlagSet, compile_document, load_file
from tipkit.flags._engine import ContextLike, Flags
from tipkit.flags._events import FlagEvaluated, FlagsReloadFailed
from tipkit.flags._explain import Explanation
from tipkit.flags._limits import Limits
from tipkit.flags._model import (
    Assignment,
    ErrorCode,
    EvaluationContext,
    EvaluationDetail,
    Reason,
)
from tipkit.flags._providers import (
    FileProvider,
    FlagProvider,
    InMemoryProvider,
    ProviderNotReadyError,
)
from tipkit.flags._request import request_context

__all__ = [
    "BUCKETS",
    "Assignment",
    "ContextLike",
    "ErrorCode",
    "EvaluationContext",
    "EvaluationDetail",
    "Explanation",
    "FileProvider",
    "FlagEvaluated",
    "FlagProvider",
    "FlagSet",
    "Flags",
    "FlagsReloadFailed",
    "InMemoryProvider",
    "Limits",
    "ProviderNotReadyError",
    "Reason",
    "bucket",
    "compile_document",
    "load_file",
    "request_context",
]
