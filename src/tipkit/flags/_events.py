"""Events published by the flags engine and its providers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tipkit.errors import ConfigError
from tipkit.flags._model import ErrorCode, EvaluationContext, Reason
from tipkit.telemetry import _names
from tipkit.telemetry._events import AttributeValue, Event

__all__ = ["FlagEvaluated", "FlagsReloadFailed"]

PROVIDER_NAME = "tipkit"


@dataclass(frozen=True, slots=True)
class FlagEvaluated(Event):
    """A flag was evaluated (built only while someone listens for it).

    ``context`` is kept for in-process listeners only: :meth:`otel_attributes`
    never exports it, nor the value (it may be personal or high-cardinality).

    Attributes:
        name: the flag key (same as ``flag_key``).
        flag_key: the flag key.
        value: what the caller got.
        variant: the variant served, or ``None``.
        reason: why (a :class:`Reason`).
        error_code: what went wrong when ``reason`` is ``ERROR``.
        error_message: a description of the error, written by tipkit.
        flag_version: the content version of the flag definition, if known.
        rule_id: the id of the rule that matched, if any.
        context: the evaluation context (never exported).
    """

    flag_key: str
    value: Any
    variant: str | None
    reason: Reason
    error_code: ErrorCode | None
    error_message: str | None
    flag_version: str | None
    rule_id: str | None
    context: EvaluationContext

    otel_name: ClassVar[str] = "feature_flag.evaluation"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the OpenTelemetry feature-flag semantic-convention attributes."""
        attrs: dict[str, AttributeValue] = {
            _names.FEATURE_FLAG_KEY: self.flag_key,
            _names.FEATURE_FLAG_PROVIDER: PROVIDER_NAME,
            _names.FEATURE_FLAG_REASON: self.reason.value.lower(),
        }
        if self.variant is not None:
            attrs[_names.FEATURE_FLAG_VARIANT] = self.variant
        if self.flag_version is not None:
            attrs[_names.FEATURE_FLAG_VERSION] = self.flag_version
        if self.error_code is not None:
            attrs[_names.ERROR_TYPE] = self.error_code.value.lower()
            if self.error_message:
                attrs[_names.FEATURE_FLAG_ERROR_MESSAGE] = self.error_message
        return attrs


@dataclass(frozen=True, slots=True)
class FlagsReloadFailed(Event):
    """A provider could not reload its flags and keeps serving the last good ones.

    Attributes:
        name: the provider's source (a file path).
        error: the :class:`~tipkit.errors.ConfigError` listing every problem.
    """

    error: ConfigError

    otel_name: ClassVar[str] = "tipkit.flags.reload_failed"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the source and the error type (never the message: it quotes the file)."""
        return {
            "tipkit.name": self.name,
            _names.FEATURE_FLAG_PROVIDER: PROVIDER_NAME,
            _names.ERROR_TYPE: type(self.error).__name__,
        }
