"""tipkit's telemetry for OpenFeature: tracking events and a hook for any provider.

Imported by :mod:`tipkit.flags._openfeature` (so only with the SDK installed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from openfeature.evaluation_context import EvaluationContext as OFContext
from openfeature.flag_evaluation import FlagEvaluationDetails
from openfeature.hook import Hook, HookContext, HookHints
from openfeature.provider import Metadata
from openfeature.track import TrackingEventDetails
from opentelemetry import trace

from tipkit.flags._events import FlagEvaluated
from tipkit.flags._model import ErrorCode, EvaluationContext, Reason
from tipkit.telemetry import _names
from tipkit.telemetry._events import BUS, AttributeValue, Event
from tipkit.telemetry._redact import hash_context_id

__all__ = ["FlagTracked", "ProviderFlagEvaluated", "TipkitTelemetryHook"]

logger = logging.getLogger("tipkit")

TRACKED = "tipkit.flags.tracked"
"""The OpenTelemetry event name of a tracking event (``client.track``)."""


class TipkitMetadata(Metadata):
    """TipkitProvider's metadata: lets :class:`TipkitTelemetryHook` recognise it."""


@dataclass(frozen=True, slots=True)
class FlagTracked(Event):
    """A tracking event was recorded through OpenFeature's ``client.track()``.

    The targeting key is never kept: only its hash (:func:`hash_context_id`).
    The tracking details' attributes are not kept either (they may be personal).

    Attributes:
        name: the tracking event's name (``"checkout-completed"``).
        context_id: the hashed targeting key, or ``None`` without one.
        value: the tracking details' ``value``, or ``None``.
    """

    context_id: str | None
    value: float | None

    otel_name: ClassVar[str] = TRACKED

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """The event's name, the hashed targeting key and the value (if any)."""
        attrs: dict[str, AttributeValue] = {"tipkit.name": self.name}
        if self.context_id is not None:
            attrs[_names.FEATURE_FLAG_CONTEXT_ID] = self.context_id
        if self.value is not None:
            attrs["tipkit.value"] = self.value
        return attrs


def track(
    name: str, context: OFContext | None, details: TrackingEventDetails | None
) -> None:
    """Record a tracking event: a span event on the current span and a tipkit event."""
    key = None if context is None else context.targeting_key
    context_id = None if not key else hash_context_id(str(key))
    value = None if details is None else details.value
    event = FlagTracked(name=name, context_id=context_id, value=value)
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(TRACKED, event.otel_attributes())
    if FlagTracked.listened:
        BUS.publish(event)


@dataclass(frozen=True, slots=True)
class ProviderFlagEvaluated(FlagEvaluated):
    """A :class:`FlagEvaluated` reported by :class:`TipkitTelemetryHook` for any provider.

    ``reason`` is a :class:`Reason`, or OpenFeature's reason string when tipkit
    has no such reason (``CACHED``, ``UNKNOWN``, ``STALE``); likewise
    ``error_code``.

    Attributes:
        provider: the provider's name (its OpenFeature metadata).
    """

    provider: str

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """As :class:`FlagEvaluated`, naming the provider that answered."""
        attrs: dict[str, AttributeValue] = {
            _names.FEATURE_FLAG_KEY: self.flag_key,
            _names.FEATURE_FLAG_PROVIDER: self.provider,
            _names.FEATURE_FLAG_REASON: str(self.reason).lower(),
        }
        if self.variant is not None:
            attrs[_names.FEATURE_FLAG_VARIANT] = self.variant
        if self.flag_version is not None:
            attrs[_names.FEATURE_FLAG_VERSION] = self.flag_version
        if self.error_code is not None:
            attrs[_names.ERROR_TYPE] = str(self.error_code).lower()
            if self.error_message:
                attrs[_names.FEATURE_FLAG_ERROR_MESSAGE] = self.error_message
        return attrs


def _enum(enum: Any, value: Any) -> Any:
    text = getattr(value, "value", value)
    try:
        return enum(text)
    except ValueError:
        return str(text)


class TipkitTelemetryHook(Hook):
    """Give any OpenFeature provider tipkit's flag telemetry.

    ::

        api.add_hooks([TipkitTelemetryHook()])

    After every evaluation it publishes a :class:`FlagEvaluated` (as
    :class:`ProviderFlagEvaluated`, naming the provider) when someone listens:
    tipkit's event listeners, the ``tipkit.events`` counter and the span or log
    event of :func:`tipkit.telemetry.instrument` then see flagd's, LaunchDarkly's
    or any provider's evaluations as they see tipkit's. The targeting key is
    exported only as instrument() says (hashed by default, off unless asked).
    Evaluations answered by a :class:`TipkitProvider` are skipped: tipkit
    already publishes them. Never raises into the evaluation.
    """

    def finally_after(
        self,
        hook_context: HookContext,
        details: FlagEvaluationDetails[Any],
        hints: HookHints,  # noqa: ARG002  # the SDK's signature
    ) -> None:
        """Publish one event per evaluation, however it ended."""
        meta = hook_context.provider_metadata
        if isinstance(meta, TipkitMetadata) or not FlagEvaluated.listened:
            return
        try:
            ctx = hook_context.evaluation_context
            version = details.flag_metadata.get("flag_version")
            event = ProviderFlagEvaluated(
                name=details.flag_key,
                flag_key=details.flag_key,
                value=details.value,
                variant=details.variant,
                reason=_enum(Reason, details.reason or "UNKNOWN"),
                error_code=None
                if details.error_code is None
                else _enum(ErrorCode, details.error_code),
                error_message=details.error_message,
                flag_version=None if version is None else str(version),
                rule_id=None,
                context=EvaluationContext(ctx.targeting_key, ctx.attributes),
                provider="unknown" if meta is None else meta.name,
            )
            BUS.publish(event)
        except Exception:  # telemetry must never break an evaluation
            logger.debug("tipkit: the telemetry hook failed once", exc_info=True)
