"""tipkit as an OpenFeature provider: the SDK's client in front, tipkit's engine behind.

Import it through :mod:`tipkit.flags.openfeature`, which says how to install the
SDK when it is missing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, TypeVar

from openfeature.evaluation_context import EvaluationContext as OFContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode as OFErrorCode
from openfeature.exception import ParseError as OFParseError
from openfeature.exception import ProviderNotReadyError as OFProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.flag_evaluation import Reason as OFReason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.track import TrackingEventDetails
from openfeature.transaction_context import TransactionContextPropagator

from tipkit.errors import ConfigError
from tipkit.flags._engine import Flags
from tipkit.flags._model import (
    ErrorCode,
    EvaluationContext,
    EvaluationDetail,
    Reason,
)
from tipkit.flags._of_telemetry import TipkitMetadata, track
from tipkit.flags._providers import FileProvider
from tipkit.flags._request import REQUEST, current_request_context

__all__ = ["TipkitProvider", "TipkitTransactionContextPropagator"]

logger = logging.getLogger("tipkit")

T = TypeVar("T")

REASONS: Final[Mapping[Reason, OFReason]] = {
    Reason.STATIC: OFReason.STATIC,
    Reason.DEFAULT: OFReason.DEFAULT,
    Reason.TARGETING_MATCH: OFReason.TARGETING_MATCH,
    Reason.SPLIT: OFReason.SPLIT,
    Reason.DISABLED: OFReason.DISABLED,
    Reason.PREREQUISITE_FAILED: OFReason.TARGETING_MATCH,  # decided per context
    Reason.ERROR: OFReason.ERROR,
}
"""tipkit's reasons to OpenFeature's: the same names and meanings."""

ERROR_CODES: Final[Mapping[ErrorCode, OFErrorCode]] = {
    ErrorCode.FLAG_NOT_FOUND: OFErrorCode.FLAG_NOT_FOUND,
    ErrorCode.TYPE_MISMATCH: OFErrorCode.TYPE_MISMATCH,
    ErrorCode.PARSE_ERROR: OFErrorCode.PARSE_ERROR,
    ErrorCode.TARGETING_KEY_MISSING: OFErrorCode.TARGETING_KEY_MISSING,
    ErrorCode.INVALID_CONTEXT: OFErrorCode.INVALID_CONTEXT,
    ErrorCode.PROVIDER_NOT_READY: OFErrorCode.PROVIDER_NOT_READY,
    ErrorCode.GENERAL: OFErrorCode.GENERAL,
}
"""tipkit's error codes to OpenFeature's: the same names and meanings."""

ObjectValue = Sequence[Any] | Mapping[str, Any]

_NO_METADATA: Final[Mapping[str, Any]] = MappingProxyType({})


class TipkitProvider(AbstractProvider):
    """Serve tipkit's :class:`~tipkit.flags.Flags` to OpenFeature clients.

    ::

        from openfeature import api
        from tipkit.flags.openfeature import TipkitProvider

        api.set_provider_and_wait(TipkitProvider(Flags.from_file("flags.yaml")))
        api.get_client().get_boolean_value("new-checkout", False, ctx)

    The OpenFeature context's ``targeting_key`` and ``attributes`` become a
    tipkit :class:`~tipkit.flags.EvaluationContext`; reasons, variants and error
    codes pass through unchanged (tipkit uses OpenFeature's vocabulary);
    ``flag_metadata`` (read-only) holds the document's and the flag's own
    ``metadata:`` entries, then ``rule_id`` and ``flag_version`` when there are some.
    Kill switches, overrides and hot reloads of *flags* are seen at once.

    Type rules are tipkit's: a boolean resolution of a string flag is
    ``TYPE_MISMATCH``; a float resolution of an integer flag returns a float;
    an integer resolution of ``10.0`` returns ``10`` and of ``0.5`` is
    ``TYPE_MISMATCH``; an object resolution with a mapping default needs a
    mapping, with a list default a list.

    Never raises from a resolution: any failure returns the caller's default
    with reason ``ERROR`` and an error code. :meth:`initialize` raises
    OpenFeature's ``ProviderNotReadyError`` when *flags* has nothing to serve
    yet (the SDK then marks the provider ``ERROR``); the provider emits
    ``PROVIDER_READY`` once flags arrive, and
    ``PROVIDER_CONFIGURATION_CHANGED`` when a provider that pushes changes
    (:class:`~tipkit.flags.InMemoryProvider`) changes. Thread-safe; reads time
    only through *flags*' clock.
    """

    def __init__(
        self, flags: Flags, *, name: str = "tipkit", watch: float | None = 1.0
    ) -> None:
        if not isinstance(flags, Flags):
            raise TypeError(f"flags must be a tipkit Flags, got {flags!r}")
        given: object = name  # callers are not always type-checked
        if not isinstance(given, str) or not given:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        super().__init__()
        self._flags = flags
        self._metadata: Metadata = TipkitMetadata(name=name)
        # Set while the SDK may hear from us: between initialize() and shutdown().
        self._live = False
        self._ready = flags.flag_set is not None
        self._lock = threading.Lock()
        if watch is not None and not watch > 0:
            raise ValueError(f"watch must be > 0 seconds or None, got {watch!r}")
        self._watch = watch
        self._watcher: FileProvider | None = None  # watching because of us
        self._broken = False  # the file is missing or invalid: STALE/ERROR was emitted
        self._versions = _versions(flags)
        flags.provider.subscribe(self._source_changed)

    def __repr__(self) -> str:
        status = "ready" if self._ready else "not ready"
        return (
            f"<TipkitProvider {self._metadata.name!r} flags={self._flags!r} {status}>"
        )

    @property
    def flags(self) -> Flags:
        """The :class:`~tipkit.flags.Flags` this provider serves."""
        return self._flags

    # -- lifecycle ----------------------------------------------------------------
    def get_metadata(self) -> Metadata:
        """Return the provider's metadata (its ``name``, ``"tipkit"`` by default)."""
        return self._metadata

    def initialize(self, evaluation_context: OFContext) -> None:  # noqa: ARG002  # tipkit needs no global context
        """Re-read the flags now; raise ``ProviderNotReadyError`` if there are none yet.

        With a :class:`~tipkit.flags.FileProvider` and ``watch`` seconds, sets
        the file provider's own watcher thread to look every ``watch`` seconds
        (starting it if it was not running; :meth:`shutdown` stops it then), so
        a rewrite is noticed, parsed off the request path and announced without
        an evaluation.
        """
        self._live = True
        self._flags.refresh()
        self._ready = self._flags.flag_set is not None
        self._versions = _versions(self._flags)
        provider = self._flags.provider
        if self._watch is not None and isinstance(provider, FileProvider):
            # The file provider's own watcher is the one mechanism: it parses
            # off the request path and calls us back on a swap or a failure.
            if not provider.watching:
                self._watcher = provider
            provider.subscribe_failed(self._file_failed)
            provider.watch(interval=self._watch)
        if not self._ready:
            not_ready = self._flags._source.not_ready  # why it has no flags
            if not_ready is not None and not_ready[0] is ErrorCode.PARSE_ERROR:
                raise OFParseError("tipkit: the flag document does not parse")
            raise OFProviderNotReadyError("tipkit: the flag provider has no flags yet")

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: OFContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """Record a tracking event (``client.track(...)``); never raises.

        Adds a ``tipkit.flags.tracked`` event to the current OpenTelemetry span
        and publishes a :class:`~tipkit.flags.openfeature.FlagTracked`, both with
        the targeting key hashed (never raw) and the details' ``value``.
        """
        try:
            track(tracking_event_name, evaluation_context, tracking_event_details)
        except Exception:  # tracking must never break the app
            logger.debug("tipkit: recording a tracking event failed", exc_info=True)

    def shutdown(self) -> None:
        """Stop emitting events (and the file watcher if ``initialize`` started it)."""
        self._live = False
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()

    def _file_failed(self, error: ConfigError) -> None:
        # Called by the file provider's watcher when the file starts failing.
        if self._broken:
            return
        self._broken = True
        missing = "not found" in str(error)
        details = ProviderEventDetails(
            message=f"tipkit: {error}",
            error_code=OFErrorCode.GENERAL if missing else OFErrorCode.PARSE_ERROR,
        )
        emit = self.emit_provider_error if missing else self.emit_provider_stale
        if self._live:
            self._emit_safely(emit, details)

    def _source_changed(self) -> None:
        # Called by the tipkit provider (any thread) after it swapped its flags.
        if self._live:
            was_ready = self._ready
            self._mark_ready()
            if self._broken:
                self._broken = False
                self._emit_safely(
                    self.emit_provider_ready,
                    ProviderEventDetails(message="tipkit: the flag file is good again"),
                )
            old, new = self._versions, _versions(self._flags)
            self._versions = new
            changed = sorted(
                key for key in old.keys() | new.keys() if old.get(key) != new.get(key)
            )
            if was_ready:
                self._emit_safely(
                    self.emit_provider_configuration_changed,
                    ProviderEventDetails(
                        message="tipkit: flags changed", flags_changed=changed
                    ),
                )

    def _mark_ready(self) -> None:
        with self._lock:
            if self._ready or self._flags.flag_set is None:
                return
            self._ready = True
        if self._live:
            self._emit_safely(
                self.emit_provider_ready,
                ProviderEventDetails(message="tipkit: flags are ready"),
            )

    @staticmethod
    def _emit_safely(emit: Any, details: ProviderEventDetails) -> None:
        try:
            emit(details)
        except Exception:  # an app's event handler must not break an evaluation
            logger.warning("tipkit: an OpenFeature event handler raised", exc_info=True)

    # -- resolution ---------------------------------------------------------------
    # Each resolve_*_details has an async twin that the SDK's async client calls:
    # both build the same request (_request) and read the same answer (_answer);
    # only the evaluation differs: evaluate(), or aevaluate(), which refreshes
    # the store through its async methods and never blocks the event loop.
    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: OFContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        """Resolve a boolean flag: only a bool is a match. Never raises."""
        return self._resolve(flag_key, default_value, default_value, evaluation_context)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: OFContext | None = None,
    ) -> FlagResolutionDetails[str]:
        """Resolve a string flag: only a str is a match. Never raises."""
        return self._resolve(flag_key, default_value, default_value, evaluation_context)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: OFContext | None = None,
    ) -> FlagResolutionDetails[int]:
        """Resolve an integer flag: ints, and integral floats as ints. Never raises."""
        typed = _as_int(default_value)
        return self._resolve(flag_key, default_value, typed, evaluation_context)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: OFContext | None = None,
    ) -> FlagResolutionDetails[float]:
        """Resolve a float flag: floats, and ints as floats. Never raises."""
        typed = _as_float(default_value)
        return self._resolve(flag_key, default_value, typed, evaluation_context)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: OFContext | None = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        """Resolve an object flag (a mapping or a list, as the default is). Never raises."""
        return self._resolve(flag_key, default_value, default_value, evaluation_context)

    async def resolve_boolean_details_async(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: OFContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        """:meth:`resolve_boolean_details` without blocking the loop on the store."""
        return await self._aresolve(
            flag_key, default_value, default_value, evaluation_context
        )

    async def resolve_string_details_async(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: OFContext | None = None,
    ) -> FlagResolutionDetails[str]:
        """:meth:`resolve_string_details` without blocking the loop on the store."""
        return await self._aresolve(
            flag_key, default_value, default_value, evaluation_context
        )

    async def resolve_integer_details_async(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: OFContext | None = None,
    ) -> FlagResolutionDetails[int]:
        """:meth:`resolve_integer_details` without blocking the loop on the store."""
        typed = _as_int(default_value)
        return await self._aresolve(flag_key, default_value, typed, evaluation_context)

    async def resolve_float_details_async(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: OFContext | None = None,
    ) -> FlagResolutionDetails[float]:
        """:meth:`resolve_float_details` without blocking the loop on the store."""
        typed = _as_float(default_value)
        return await self._aresolve(flag_key, default_value, typed, evaluation_context)

    async def resolve_object_details_async(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: OFContext | None = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        """:meth:`resolve_object_details` without blocking the loop on the store."""
        return await self._aresolve(
            flag_key, default_value, default_value, evaluation_context
        )

    def _resolve(
        self,
        flag_key: str,
        default_value: T,
        typed_default: Any,
        evaluation_context: OFContext | None,
    ) -> FlagResolutionDetails[T]:
        try:
            context = self._request(evaluation_context)
            detail = self._flags.evaluate(flag_key, context, typed_default)
        except (
            Exception
        ) as exc:  # never into the app: Flags cannot raise, but belt and braces
            return _failed(flag_key, default_value, exc)
        return _details(detail, default_value, self._user_metadata(flag_key))

    async def _aresolve(
        self,
        flag_key: str,
        default_value: T,
        typed_default: Any,
        evaluation_context: OFContext | None,
    ) -> FlagResolutionDetails[T]:
        try:
            context = self._request(evaluation_context)
            detail = await self._flags.aevaluate(flag_key, context, typed_default)
        except (
            Exception
        ) as exc:  # never into the app: Flags cannot raise, but belt and braces
            return _failed(flag_key, default_value, exc)
        return _details(detail, default_value, self._user_metadata(flag_key))

    def _user_metadata(self, flag_key: str) -> Mapping[str, Any]:
        """The flag's ``metadata:`` (the document's under it); empty if none."""
        # The snapshot the evaluation just refreshed: no second refresh check.
        flag_set = self._flags._source.flag_set
        flag = None if flag_set is None else flag_set.flags.get(flag_key)
        return _NO_METADATA if flag is None else flag.metadata

    def _request(
        self, evaluation_context: OFContext | None
    ) -> EvaluationContext | None:
        """Note readiness on first use; return the tipkit context to evaluate for."""
        if not self._ready:
            self._mark_ready()
        return _tipkit_context(evaluation_context)


def _versions(flags: Flags) -> dict[str, str]:
    """Each flag's content hash: what changed between two snapshots."""
    flag_set = flags.flag_set
    if flag_set is None:
        return {}
    return {key: flag.version for key, flag in flag_set.flags.items()}


class TipkitTransactionContextPropagator(TransactionContextPropagator):
    """OpenFeature's transaction context over :func:`tipkit.flags.request_context`.

    ::

        api.set_transaction_context_propagator(TipkitTransactionContextPropagator())

    ``api.set_transaction_context(ctx)`` then sets the context tipkit's own
    evaluations use when given none (and the tipkit middleware's per-request
    context is the transaction context OpenFeature clients see). Same
    ContextVar, so it follows asyncio tasks and stops at plain threads.
    """

    def get_transaction_context(self) -> OFContext:
        """Return the current request context as an OpenFeature context."""
        ctx = current_request_context()
        if ctx is None:
            return OFContext()
        if isinstance(ctx, EvaluationContext):
            key = ctx.targeting_key
            return OFContext(None if key is None else str(key), dict(ctx.attributes))
        if isinstance(ctx, Mapping):
            attrs = dict(ctx)
            key = attrs.pop("targeting_key", None)
            return OFContext(None if key is None else str(key), attrs)
        return OFContext(str(ctx))

    def set_transaction_context(self, transaction_context: OFContext) -> None:
        """Make *transaction_context* the request context of the current context."""
        REQUEST.set((_tipkit_context(transaction_context), REQUEST.get()))


def _as_int(default_value: Any) -> Any:
    """An integral float default means an int resolution: the engine checks for int."""
    if isinstance(default_value, float) and default_value.is_integer():
        return int(default_value)
    return default_value


def _as_float(default_value: Any) -> Any:
    """``get_float_value("x", 0)`` means a float: the SDK checks for one."""
    if isinstance(default_value, int) and not isinstance(default_value, bool):
        return float(default_value)
    return default_value


def _failed(
    flag_key: str, default_value: T, exc: Exception
) -> FlagResolutionDetails[T]:
    return FlagResolutionDetails(
        value=default_value,
        reason=OFReason.ERROR,
        error_code=OFErrorCode.GENERAL,
        error_message=f"tipkit: {type(exc).__name__} while resolving {flag_key!r}",
    )


def _tipkit_context(context: OFContext | None) -> EvaluationContext | None:
    """Return the tipkit context for an OpenFeature one (``None`` stays ``None``)."""
    if context is None:
        return None
    return EvaluationContext(context.targeting_key, context.attributes)


def _details(
    detail: EvaluationDetail,
    default_value: T,
    user_metadata: Mapping[str, Any] = _NO_METADATA,
) -> FlagResolutionDetails[T]:
    """Return OpenFeature's resolution details for tipkit's evaluation *detail*.

    ``flag_metadata`` is read-only (spec 1.4.15.1): the document's ``metadata:``
    entries, then ``rule_id`` and ``flag_version``.
    """
    metadata: dict[str, Any] = dict(user_metadata)
    if detail.rule_id is not None:
        metadata["rule_id"] = detail.rule_id
    if detail.flag_version is not None:
        metadata["flag_version"] = detail.flag_version
    # On errors, the caller's own default; otherwise the value as typed for this
    # resolution (a float resolution with the default 0 serves 0.0: the SDK checks).
    value = default_value if detail.error_code is not None else detail.value
    return FlagResolutionDetails(
        value=value,
        error_code=None
        if detail.error_code is None
        else ERROR_CODES.get(detail.error_code, OFErrorCode.GENERAL),
        error_message=detail.error_message,
        reason=REASONS.get(detail.reason, OFReason.UNKNOWN),
        variant=detail.variant,
        flag_metadata=MappingProxyType(metadata),
    )
