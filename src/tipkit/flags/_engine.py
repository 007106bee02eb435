"""The flag engine: :class:`Flags`, evaluation, overrides and kill switches."""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar, cast, overload

from tipkit._core import _fork
from tipkit._core._durations import to_seconds
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import ConfigError
from tipkit.flags._bucketing import bucket as _bucket
from tipkit.flags._document import CompiledFlag, FlagSet, Serve, check_split
from tipkit.flags._events import FlagEvaluated
from tipkit.flags._model import (
    _EMPTY,
    USE_DEFAULT,
    ErrorCode,
    EvalError,
    EvaluationContext,
    EvaluationDetail,
    Outcome,
    Reason,
)
from tipkit.flags._providers import (
    FileProvider,
    FlagProvider,
    InMemoryProvider,
    ProviderNotReadyError,
)
from tipkit.stores import MemoryStore, Store
from tipkit.stores._events import Outage
from tipkit.telemetry._events import BUS

__all__ = ["ContextLike", "Explanation", "Flags"]

logger = logging.getLogger("tipkit")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

ContextLike = EvaluationContext | Mapping[str, Any] | str | int | None
"""What a context may be: a targeting-key string, a mapping, or an EvaluationContext."""

Run = Callable[[Mapping[str, Any], Any], Outcome]

_KILL = "kill/"
_OVERRIDE = "override/"
_SPLIT = "split/"
_CAS_TRIES = 16
_INF = float("inf")

# Flags instances sharing one store object, so a kill or override written through
# one of them is seen by every one of them on its next evaluation (in process).
_PEERS: dict[int, weakref.WeakSet[Flags]] = {}
_PEERS_LOCK = threading.Lock()


def _new_peers_lock() -> None:  # pragma: no cover - runs in forked children only
    global _PEERS_LOCK  # noqa: PLW0603  # a lock held by another thread at fork is dead
    _PEERS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_new_peers_lock)


def _number_type(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Run-time splits as stored: {flag: {rule id or None: {variant: thousandths}}}.
Splits = dict[str, dict[str | None, dict[str, int]]]


class _StoreState:
    __slots__ = ("kills", "overrides", "splits", "version")

    def __init__(
        self,
        version: int,
        kills: frozenset[str],
        overrides: dict[str, Any],
        splits: Splits | None = None,
    ) -> None:
        self.version = version
        self.kills = kills
        self.overrides = overrides
        self.splits: Splits = {} if splits is None else splits


def _read_splits(value: object) -> dict[str | None, dict[str, int]]:
    """Return a stored ``split/<flag>`` entry as ``{rule id or None: weights}``.

    Another process (or a hand edit) may have written anything: what is not a
    mapping of variant to non-negative int thousandths is left out here, and the
    rest is checked against the flag when applied.
    """
    out: dict[str | None, dict[str, int]] = {}
    if not isinstance(value, dict):
        return out
    for target, weights in value.items():
        if not isinstance(target, str) or not isinstance(weights, dict):
            continue
        if all(
            isinstance(n, str) and w.__class__ is int and w >= 0
            for n, w in weights.items()
        ):
            out[target or None] = dict(weights)
    return out


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a flag evaluated as it did, step by step (``tipkit flags explain``)."""

    detail: EvaluationDetail
    bucket: int | None
    bucket_key: str | None
    steps: tuple[str, ...] = field(default=())


class Flags:
    """Evaluate feature flags locally, fast, and never raise into app code.

    *provider* serves compiled flag snapshots (:class:`FileProvider`,
    :class:`InMemoryProvider`). Kill switches, overrides and run-time split
    weights written with :meth:`kill`, :meth:`revive`, :meth:`override` and
    :meth:`set_split` live in *store* under *namespace*; this object holds them
    as one snapshot, re-read at most every *refresh_interval* seconds (a change
    written through any ``Flags`` sharing the store object takes effect on the
    very next evaluation in this process).
    *overrides* are local to this object: ``{flag: variant name or value}``.

    Precedence: kill > disabled > override (store, then local) > rules; a
    run-time split replaces the weights of the split it targets, not the rules.

    Thread-safe: evaluations read one immutable table; refreshes swap it
    atomically. Reads time from *clock* (default: the provider's clock if it has
    one, else the system clock) once per evaluation.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_deadline",
        "_flag_set",
        "_local_overrides",
        "_lock",
        "_logged",
        "_namespace",
        "_now",
        "_outage",
        "_provider",
        "_provider_error",
        "_provider_next",
        "_refresh_interval",
        "_split_serves",
        "_store",
        "_store_next",
        "_store_state",
        "_table",
        "_watch",
    )

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def __init__(
        self,
        provider: FlagProvider,
        *,
        overrides: Mapping[str, Any] | None = None,
        store: Store | None = None,
        namespace: str = "flags",
        refresh_interval: float | timedelta = 1.0,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(provider, FlagProvider):
            raise TypeError(f"provider must be a FlagProvider, got {provider!r}")
        if not namespace:
            raise ValueError(f"namespace must be a non-empty string, got {namespace!r}")
        self._refresh_interval = to_seconds(refresh_interval, "refresh_interval")
        if self._refresh_interval < 0:
            raise ValueError(f"refresh_interval must be >= 0, got {refresh_interval!r}")
        self._provider = provider
        self._clock: Clock = (
            clock if clock is not None else getattr(provider, "clock", SYSTEM_CLOCK)
        )
        self._now = self._clock.monotonic
        self._store: Store = (
            store if store is not None else MemoryStore(clock=self._clock)
        )
        self._namespace = namespace
        self._local_overrides: dict[str, Any] = copy.deepcopy(dict(overrides or {}))
        self._lock = threading.Lock()
        _fork.register(self)
        self._logged: set[str] = set()
        self._table: dict[str, Run] = {}
        self._split_serves: dict[str, dict[str | None, Serve]] = {}
        self._flag_set: FlagSet | None = None
        self._provider_error: tuple[ErrorCode, str] | None = (
            ErrorCode.PROVIDER_NOT_READY,
            "the provider has not served flags yet",
        )
        self._store_state = _StoreState(-1, frozenset(), {})
        self._deadline = -_INF
        self._provider_next = -_INF
        self._store_next = -_INF
        provider.subscribe(self._provider_changed)
        with _PEERS_LOCK:
            _PEERS.setdefault(id(self._store), weakref.WeakSet()).add(self)
        self._outage = Outage(namespace, "flags", "keep_last", clock=self._clock)
        # A store that pushes change notifications (RedisStore.watch) expires the
        # snapshot as soon as any process writes the namespace; held weakly.
        watch = getattr(self._store, "watch", None)
        self._watch = watch(namespace, self._store_changed) if watch else None
        self._maintain()

    # -- construction shortcuts ---------------------------------------------------------
    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        reload_interval: float | timedelta = 1.0,
        clock: Clock = SYSTEM_CLOCK,
        **kwargs: Any,
    ) -> Flags:
        """Return ``Flags(FileProvider(path, ...))``; raises ``ConfigError`` if invalid."""
        return cls(
            FileProvider(path, reload_interval=reload_interval, clock=clock),
            clock=clock,
            **kwargs,
        )

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], **kwargs: Any) -> Flags:
        """Return ``Flags(InMemoryProvider(document))``; raises ``ConfigError`` if invalid."""
        return cls(InMemoryProvider(document), **kwargs)

    def _fresh(self) -> None:
        if self._now() >= self._deadline:
            self._maintain()

    def __repr__(self) -> str:
        self._fresh()
        fs = self._flag_set
        state = self._store_state
        status = (
            "ready"
            if self._provider_error is None
            else self._provider_error[0].value.lower()
        )
        return (
            f"<Flags provider={self._provider!r} flags={0 if fs is None else len(fs.flags)} "
            f"killed={len(state.kills)} "
            f"overrides={len(state.overrides) + len(self._local_overrides)} "
            f"{status}>"
        )

    # -- introspection ----------------------------------------------------------------
    @property
    def provider(self) -> FlagProvider:
        """The provider serving the flags."""
        return self._provider

    @property
    def store(self) -> Store:
        """The store holding kill switches and overrides."""
        return self._store

    @property
    def flag_set(self) -> FlagSet | None:
        """The compiled snapshot being served (``None`` until the provider is ready)."""
        self._fresh()
        return self._flag_set

    def keys(self) -> list[str]:
        """Return the keys of the flags being served, sorted."""
        self._fresh()
        fs = self._flag_set
        return [] if fs is None else sorted(fs.flags)

    def killed(self) -> frozenset[str]:
        """Return the keys of the killed flags (as of the last refresh)."""
        self._fresh()
        return self._store_state.kills

    # -- evaluation ------------------------------------------------------------------
    def is_enabled(
        self, key: str, context: ContextLike = None, default: bool = False
    ) -> bool:
        """Return whether the boolean flag *key* is on for *context*.

        Never raises: on any error it returns *default* (see :meth:`evaluate`).
        Thread-safe; reads the clock once.
        """
        # Same body as get(): inlined because a call costs ~10% of an evaluation.
        try:
            if self._now() >= self._deadline:
                self._maintain()
            cls = context.__class__
            if cls is EvaluationContext:
                out = self._table[key](context.attributes, context.targeting_key)  # type: ignore[union-attr]  # class checked
            elif cls is dict:
                out = self._table[key](context, context.get("targeting_key"))  # type: ignore[union-attr, arg-type]  # class checked
            elif cls is str:
                out = self._table[key](_EMPTY, context)
            else:
                out = self._run_other(key, context)
        except Exception as exc:
            out = self._failed(key, exc)
        if out.vclass is default.__class__:
            out.counter.inc()
            if FlagEvaluated.listened:
                self._publish(out.value, out, context)
            return out.value  # type: ignore[no-any-return]  # its class is bool
        return self._finish(key, out, default, context)  # type: ignore[no-any-return]  # coerced to bool

    @overload
    def get(self, key: str, context: ContextLike = None) -> Any: ...
    @overload
    def get(self, key: str, context: ContextLike = None, *, default: T) -> T: ...
    def get(self, key: str, context: ContextLike = None, default: Any = None) -> Any:
        """Return the value of flag *key* for *context*, or *default* on any error.

        The value has the type of *default* (an int flag read with a float
        default comes back as a float; an integral float read with an int
        default as an int); a value of another type gives *default*
        (``TYPE_MISMATCH``). With ``default=None`` the value is returned as is.
        Object values are fresh copies. Never raises; thread-safe.
        """
        try:
            if self._now() >= self._deadline:
                self._maintain()
            cls = context.__class__
            if cls is EvaluationContext:
                out = self._table[key](context.attributes, context.targeting_key)  # type: ignore[union-attr]  # class checked
            elif cls is dict:
                out = self._table[key](context, context.get("targeting_key"))  # type: ignore[union-attr, arg-type]  # class checked
            elif cls is str:
                out = self._table[key](_EMPTY, context)
            else:
                out = self._run_other(key, context)
        except Exception as exc:
            out = self._failed(key, exc)
        if out.vclass is default.__class__:
            out.counter.inc()
            if FlagEvaluated.listened:
                self._publish(out.value, out, context)
            return out.value
        return self._finish(key, out, default, context)

    def evaluate(
        self, key: str, context: ContextLike = None, default: Any = None
    ) -> EvaluationDetail:
        """Return the :class:`EvaluationDetail` of flag *key* for *context*. Never raises."""
        value, out = self._run(key, context, default)
        return EvaluationDetail(
            out.flag_key,
            value,
            out.variant,
            out.reason,
            out.rule_id,
            out.error_code,
            out.error_message,
            out.flag_version,
        )

    def _run(self, key: str, context: Any, default: Any) -> tuple[Any, Outcome]:
        """Evaluate and return ``(value, outcome)``: the shared slow-but-complete path."""
        try:
            if self._now() >= self._deadline:
                self._maintain()
            out = self._run_other(key, context)
        except Exception as exc:
            out = self._failed(key, exc)
        value, out = self._settle(key, out, default)
        out.counter.inc()
        if FlagEvaluated.listened:
            self._publish(value, out, context)
        return value, out

    def _finish(self, key: str, out: Outcome, default: Any, context: Any) -> Any:
        value, out = self._settle(key, out, default)
        out.counter.inc()
        if FlagEvaluated.listened:
            self._publish(value, out, context)
        return value

    def _settle(self, key: str, out: Outcome, default: Any) -> tuple[Any, Outcome]:
        """Apply the caller's default: absent values, type coercion, copies."""
        value = out.value
        if value is USE_DEFAULT:
            return default, out
        if default is None or value.__class__ is default.__class__:
            return (copy.deepcopy(value) if out.mutable else value), out
        return self._coerce(key, value, default, out)

    def _failed(self, key: Any, exc: Exception) -> Outcome:
        if key.__class__ is not str:
            # A key's own hash or repr may raise: never let it reach app code.
            if not isinstance(key, str):
                return self._error(
                    key,
                    ErrorCode.GENERAL,
                    f"a flag key must be a string, got {type(key).__name__}",
                )
            key = str.__str__(key)
        if isinstance(exc, EvalError):
            return self._error(key, exc.code, exc.message)
        try:
            if isinstance(exc, KeyError) and key not in self._table:
                return self._missing(key)
        except TypeError:
            return self._error(
                key,
                ErrorCode.GENERAL,
                f"a flag key must be a string, got {type(key).__name__}",
            )
        self._log_once(
            f"eval:{key!r}:{type(exc).__name__}",
            "tipkit: evaluating flag %r raised",
            key,
            exc,
        )
        return self._error(
            key, ErrorCode.GENERAL, f"{type(exc).__name__} while evaluating"
        )

    def _run_other(self, key: str, context: Any) -> Outcome:
        """Evaluate for any context (the fast paths handle the common classes inline)."""
        run = self._table[key]
        if context is None:
            return run(_EMPTY, None)
        if context.__class__ is EvaluationContext:
            return run(context.attributes, context.targeting_key)
        try:
            tkey: Any
            if isinstance(context, EvaluationContext):
                attrs: Mapping[str, Any] = dict(context.attributes)
                tkey = context.targeting_key
            elif isinstance(context, Mapping):
                attrs = dict(context)
                tkey = attrs.get("targeting_key")
            elif isinstance(context, str):
                attrs, tkey = _EMPTY, str.__str__(context)
            elif isinstance(context, int) and not isinstance(context, bool):
                attrs, tkey = _EMPTY, context
            else:
                raise EvalError(
                    ErrorCode.INVALID_CONTEXT,
                    f"a context must be a targeting key, a mapping or an EvaluationContext, "
                    f"got {type(context).__name__}",
                )
        except EvalError:
            raise
        except Exception as exc:
            raise EvalError(
                ErrorCode.INVALID_CONTEXT,
                f"the context could not be read ({type(exc).__name__})",
            ) from exc
        return run(attrs, tkey)

    def _missing(self, key: str) -> Outcome:
        if self._provider_error is not None:
            code, message = self._provider_error
            return self._error(key, code, message)
        if not isinstance(key, str):
            return self._error(  # type: ignore[unreachable]  # callers pass anything
                key,
                ErrorCode.GENERAL,
                f"a flag key must be a string, got {type(key).__name__}",
            )
        return self._error(key, ErrorCode.FLAG_NOT_FOUND, f"flag {key!r} not found")

    def _error(
        self, key: Any, code: ErrorCode, message: str, version: str | None = None
    ) -> Outcome:
        if isinstance(key, str):
            flag_key = str.__str__(key)
        else:
            try:
                flag_key = repr(key)
            except Exception:  # a hostile repr must not escape evaluation
                flag_key = f"<{type(key).__name__}>"
        return Outcome(
            flag_key,
            USE_DEFAULT,
            None,
            Reason.ERROR,
            error_code=code,
            error_message=message,
            flag_version=version,
        )

    def _coerce(
        self, key: str, value: Any, default: Any, out: Outcome
    ) -> tuple[Any, Outcome]:
        """Convert *value* to the type of *default*, or answer TYPE_MISMATCH."""
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            if isinstance(value, float) and value.is_integer():
                return int(value), out
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            if _number_type(value):
                return float(value), out
            ok = False
        elif isinstance(default, str):
            ok = isinstance(value, str)
        elif isinstance(default, Mapping):
            ok = isinstance(value, Mapping)
        elif isinstance(default, list | tuple):
            ok = isinstance(value, list)
        else:
            ok = isinstance(value, type(default))
        if ok:
            return (copy.deepcopy(value) if out.mutable else value), out
        expected = type(default).__name__
        return default, self._error(
            key,
            ErrorCode.TYPE_MISMATCH,
            f"flag {key!r} served a {type(value).__name__}, the default is a {expected}",
            out.flag_version,
        )

    def _publish(self, value: Any, out: Outcome, context: Any) -> None:
        try:
            ctx = _as_context(context)
            BUS.publish(
                FlagEvaluated(
                    name=out.flag_key,
                    flag_key=out.flag_key,
                    value=value,
                    variant=out.variant,
                    reason=out.reason,
                    error_code=out.error_code,
                    error_message=out.error_message,
                    flag_version=out.flag_version,
                    rule_id=out.rule_id,
                    context=ctx,
                )
            )
        except (
            Exception
        ) as exc:  # pragma: no cover - the bus never raises; belt and braces
            self._log_once(
                "publish",
                "tipkit: publishing a flag evaluation failed for %r",
                out.flag_key,
                exc,
            )

    def _log_once(self, tag: str, message: str, key: Any, exc: BaseException) -> None:
        if tag not in self._logged and len(self._logged) < 1000:
            self._logged.add(tag)
            logger.warning(message, key, exc_info=exc)

    # -- refreshing the provider snapshot and the store state -----------------------
    def _provider_changed(self) -> None:
        self._provider_next = -_INF
        self._deadline = -_INF

    def _store_changed(self) -> None:
        self._store_next = -_INF
        self._deadline = -_INF

    def _maintain(self) -> None:
        """Refresh whatever is due; one thread at a time, others keep evaluating."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            now = self._now()
            changed = False
            if now >= self._provider_next:
                changed |= self._refresh_provider(now)
            if now >= self._store_next:
                changed |= self._refresh_store(now)
            if changed:
                self._rebuild()
            self._deadline = min(self._provider_next, self._store_next)
        finally:
            self._lock.release()

    def _refresh_provider(self, now: float) -> bool:
        try:
            flag_set, next_check = self._provider.current(now)
        except ProviderNotReadyError as exc:
            self._provider_next = now + min(self._refresh_interval, 1.0)
            if self._flag_set is None:
                self._provider_error = (
                    ErrorCode.PROVIDER_NOT_READY,
                    str(exc) or "the provider is not ready",
                )
                return True
            return False
        except Exception as exc:
            self._provider_next = now + min(self._refresh_interval, 1.0)
            self._log_once(
                f"provider:{type(exc).__name__}",
                "tipkit: the flag provider %r raised",
                self._provider,
                exc,
            )
            if self._flag_set is None:
                self._provider_error = (
                    ErrorCode.GENERAL,
                    f"the provider raised {type(exc).__name__}",
                )
                return True
            return False
        self._provider_next = next_check
        if flag_set is self._flag_set:
            return False
        self._flag_set = flag_set
        self._provider_error = None
        return True

    def _refresh_store(self, now: float) -> bool:
        self._store_next = now + self._refresh_interval
        try:
            store, ns = self._store, self._namespace
            unchanged = store.version(ns) == self._store_state.version
            snap = None if unchanged else store.snapshot(ns)
        except Exception as exc:
            # Keep the last known kills and overrides: a store outage must not
            # revive a killed flag. Logged and published once per outage.
            self._outage.failed(exc)
            return False
        self._outage.ok()
        if snap is None:
            return False
        kills = frozenset(
            k[len(_KILL) :]
            for k, e in snap.entries.items()
            if k.startswith(_KILL) and e.value
        )
        overrides = {
            k[len(_OVERRIDE) :]: e.value.get("value")
            for k, e in snap.entries.items()
            if k.startswith(_OVERRIDE) and isinstance(e.value, dict)
        }
        splits = {
            k[len(_SPLIT) :]: _read_splits(e.value)
            for k, e in snap.entries.items()
            if k.startswith(_SPLIT)
        }
        self._store_state = _StoreState(snap.version, kills, overrides, splits)
        return True

    def _rebuild(self) -> None:  # noqa: C901  # one branch per precedence level, in order
        fs = self._flag_set
        state = self._store_state
        table: dict[str, Run] = {}
        split_serves: dict[str, dict[str | None, Serve]] = {}
        flags = {} if fs is None else fs.flags
        for key, flag in flags.items():
            if key in state.kills:
                table[key] = _const(flag.disabled_outcome)
            elif not flag.enabled:
                table[key] = flag.run
            elif key in state.overrides:
                table[key] = _const(_override_outcome(key, state.overrides[key], flag))
            elif key in self._local_overrides:
                table[key] = _const(
                    _override_outcome(key, self._local_overrides[key], flag)
                )
            elif state.splits.get(key):
                table[key] = self._split_run(flag, state.splits[key], split_serves)
            else:
                table[key] = flag.run
        for source in (self._local_overrides, state.overrides):
            for key, value in source.items():
                if key not in flags and key not in state.kills:
                    table[key] = _const(_override_outcome(key, value, None))
        self._split_serves = split_serves
        self._table = table
        if fs is not None and self._provider_error is not None:
            self._provider_error = None

    def _split_run(
        self,
        flag: CompiledFlag,
        splits: Mapping[str | None, Mapping[str, int]],
        out: dict[str, dict[str | None, Serve]],
    ) -> Run:
        """Return *flag*'s evaluator with its run-time splits applied.

        A split that no longer fits the flag (a reload removed the rule or a
        variant) is logged once and left out: the document's weights serve.
        """
        serves: dict[str | None, Serve] = {}
        for rule_id, weights in splits.items():
            try:
                serves[rule_id] = flag.split_serve(rule_id, weights)
            except ValueError as exc:
                self._log_once(
                    f"split:{flag.key}:{rule_id}:{sorted(weights.items())}",
                    "tipkit: the run-time split of flag %r does not fit it; "
                    "serving the document's weights",
                    flag.key,
                    exc,
                )
        if not serves:
            return flag.run
        out[flag.key] = serves
        return flag.runner_with(serves)

    def refresh(self) -> None:
        """Re-read the provider and the store now (normally they are read when due)."""
        self._provider_next = -_INF
        self._store_next = -_INF
        self._deadline = -_INF
        self._maintain()

    # -- kill switches and overrides ----------------------------------------------
    def _notify_peers(self) -> None:
        with _PEERS_LOCK:
            peers = list(_PEERS.get(id(self._store), ()))
        for peer in peers:
            if peer._store is self._store:
                peer._store_changed()

    def kill(self, key: str) -> None:
        """Kill flag *key* everywhere sharing the store: it serves its off variant.

        Takes effect on the next evaluation in this process, and within
        ``refresh_interval`` in every other process sharing the store. A killed
        flag without an ``off_variant`` answers the caller's default (reason
        ``DISABLED``).

        Raises:
            StoreError: the store could not be written.
        """
        self._check_key(key)
        if self._flag_set is not None and key not in self._flag_set.flags:
            logger.warning(
                "tipkit: killing flag %r, which this process does not know", key
            )
        self._store.set(self._namespace, _KILL + key, value=True)
        self._notify_peers()

    def revive(self, key: str) -> None:
        """Undo :meth:`kill` for *key* everywhere sharing the store.

        Raises:
            StoreError: the store could not be written.
        """
        self._check_key(key)
        self._store.delete(self._namespace, _KILL + key)
        self._notify_peers()

    def set_override(self, key: str, value_or_variant: Any) -> None:
        """Serve *value_or_variant* for *key* (reason ``STATIC``) until cleared.

        A string naming one of the flag's variants serves that variant; a value
        equal to a variant's value serves that variant; anything else is served
        as it is, with no variant. Written to the store: everything sharing it
        sees the override.

        Raises:
            TypeError: the value cannot be stored (not JSON-compatible).
            StoreError: the store could not be written.
        """
        self._check_key(key)
        self._store.set(self._namespace, _OVERRIDE + key, {"value": value_or_variant})
        self._notify_peers()

    def clear_override(self, key: str) -> None:
        """Remove the override of *key* set by :meth:`set_override`."""
        self._check_key(key)
        self._store.delete(self._namespace, _OVERRIDE + key)
        self._notify_peers()

    @contextmanager
    def override(self, key: str, value_or_variant: Any) -> Iterator[None]:
        """Override *key* inside the ``with`` block, then restore what was there.

        See :meth:`set_override`. Nested overrides of the same flag restore in order.
        """
        self._check_key(key)
        previous = self._store.get(self._namespace, _OVERRIDE + key)
        self.set_override(key, value_or_variant)
        try:
            yield
        finally:
            if previous is None:
                self.clear_override(key)
            else:
                self._store.set(self._namespace, _OVERRIDE + key, previous.value)
                self._notify_peers()

    # -- run-time splits ----------------------------------------------------------
    def set_split(
        self,
        key: str,
        weights: Mapping[str, float | Decimal],
        *,
        rule_id: str | None = None,
    ) -> None:
        """Serve flag *key*'s split with *weights* (percent per variant) from now on.

        The target is the fallthrough (*rule_id* ``None``) or the rule with id
        *rule_id*; only its weights change: which rule matches does not, and the
        salt, ``bucket_by`` and variant order stay the split's own (variants it
        did not list follow in the flag's order), so raising the first-listed
        variant's weight only adds users to it. A target serving one variant
        becomes a split. Such answers have reason ``SPLIT``. Kills, a disabled
        state and overrides still win.

        Validated as a document's split is: weights are parsed as
        ``Decimal(str(w))``, have at most 3 decimals, are not negative or
        booleans, name the flag's variants and sum to exactly 100 (a variant
        left out gets 0). Written to the store: every ``Flags`` sharing the store
        object sees it on its next evaluation, other processes within their
        ``refresh_interval``. If a later reload no longer fits the split (the
        rule or a variant is gone), the document's weights serve and the
        ``tipkit`` logger says so once. Thread-safe (compare-and-set).

        Raises:
            ConfigError: the flag or rule is unknown, or a weight is bad (every
                problem listed, naming the flag and the weight).
            ValueError: *key* or *rule_id* is not a non-empty string.
            StoreError: the store could not be written.
        """
        self._check_key(key)
        flag = self._split_target(key, rule_id)
        field = "fallthrough" if rule_id is None else f"rules[{rule_id}].serve"
        parsed = check_split(key, weights, flag.variants, field, "set_split")
        target = rule_id or ""

        def write(current: dict[str, Any]) -> dict[str, Any]:
            current[target] = parsed
            return current

        self._update_splits(key, write)

    def clear_split(self, key: str, *, rule_id: str | None = None) -> None:
        """Remove the run-time split of *key*'s fallthrough (or of rule *rule_id*).

        The document's weights serve again (a target that served one variant
        serves it again). Clearing what is not there does nothing.

        Raises:
            ValueError: *key* or *rule_id* is not a non-empty string.
            StoreError: the store could not be written.
        """
        self._check_key(key)
        _check_rule_id(rule_id)
        target = rule_id or ""

        def remove(current: dict[str, Any]) -> dict[str, Any]:
            current.pop(target, None)
            return current

        self._update_splits(key, remove)

    def get_split(
        self, key: str, *, rule_id: str | None = None
    ) -> dict[str, float] | None:
        """Return the run-time split weights (percent) set for *key*, or ``None``.

        Read from the store now (not from this object's snapshot), in the order
        they were given; ``None`` when no run-time split targets the fallthrough
        (or rule *rule_id*).

        Raises:
            StoreError: the store could not be read.
        """
        self._check_key(key)
        _check_rule_id(rule_id)
        entry = self._store.get(self._namespace, _SPLIT + key)
        weights = None if entry is None else _read_splits(entry.value).get(rule_id)
        if weights is None:
            return None
        return {name: w / 1000 for name, w in weights.items()}

    def _split_target(self, key: str, rule_id: str | None) -> CompiledFlag:
        _check_rule_id(rule_id)
        self._fresh()
        fs = self._flag_set
        if fs is None:
            raise ConfigError(
                f"cannot set a split of flag {key!r}: the provider is not ready",
                flag=key,
            )
        flag = fs.flags.get(key)
        if flag is None:
            raise ConfigError(f"flag {key!r} is not defined", flag=key)
        if rule_id is not None and all(r.id != rule_id for r in flag.rules):
            raise ConfigError(
                f"flag {key!r} has no rule {rule_id!r}; its rules: "
                f"{[r.id for r in flag.rules]}",
                flag=key,
                field="rules",
            )
        return flag

    def _update_splits(
        self, key: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        store, ns, name = self._store, self._namespace, _SPLIT + key
        for _ in range(_CAS_TRIES):
            entry = store.get(ns, name)
            current = (
                dict(entry.value)
                if entry is not None and isinstance(entry.value, dict)
                else {}
            )
            new = change(current)
            if entry is None and not new:
                return
            # An emptied entry stays (as {}): deleting it could drop a target
            # another process wrote between our read and the delete.
            version = 0 if entry is None else entry.version
            if store.compare_and_set(ns, name, new, version=version) is not None:
                self._notify_peers()
                return
        raise RuntimeError(
            f"the run-time split of flag {key!r} kept changing; not written"
        )

    @staticmethod
    def _check_key(key: object) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError(f"a flag key must be a non-empty string, got {key!r}")

    # -- gate --------------------------------------------------------------------------
    def gate(  # noqa: C901  # the sync and async wrappers live together on purpose
        self,
        key: str,
        *,
        fallback: Callable[P, Any] | None = None,
        context: Callable[P, ContextLike] | ContextLike = None,
        default: bool = False,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a function so it runs only when flag *key* is on, else *fallback*.

        *context* is a context, or a callable taking the function's arguments
        and returning one (``context=lambda order, user: user.id``). When the
        flag is off (or on any evaluation error, *default* is used) *fallback*
        runs with the same arguments; without one the call returns ``None``.
        Works on ``def`` and ``async def`` functions (an async function's
        fallback may be sync or async). A *context* callable that raises counts
        as an invalid context: the flag is treated as *default*.
        """
        self._check_key(key)
        ctx_fn = context if callable(context) else None
        static = None if callable(context) else context

        def decide(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
            if ctx_fn is None:
                return self.is_enabled(key, static, default)
            try:
                ctx = ctx_fn(*args, **kwargs)
            except Exception as exc:
                self._log_once(
                    f"gate:{key}",
                    "tipkit: the context function of gate %r raised",
                    key,
                    exc,
                )
                out = self._error(
                    key,
                    ErrorCode.INVALID_CONTEXT,
                    f"the context function raised {type(exc).__name__}",
                )
                out.counter.inc()
                if FlagEvaluated.listened:
                    self._publish(default, out, None)
                return default
            return self.is_enabled(key, ctx, default)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(fn):
                async_fn = cast("Callable[P, Awaitable[Any]]", fn)

                @functools.wraps(fn)
                async def agated(*args: P.args, **kwargs: P.kwargs) -> Any:
                    if decide(args, kwargs):
                        return await async_fn(*args, **kwargs)
                    if fallback is None:
                        return None
                    result = fallback(*args, **kwargs)
                    if inspect.isawaitable(result):
                        return await result
                    return result

                return cast("Callable[P, R]", agated)

            @functools.wraps(fn)
            def gated(*args: P.args, **kwargs: P.kwargs) -> R:
                if decide(args, kwargs):
                    return fn(*args, **kwargs)
                if fallback is None:
                    return None  # type: ignore[return-value]  # documented: no fallback returns None
                return cast("R", fallback(*args, **kwargs))

            return gated

        return decorate

    # -- explain ---------------------------------------------------------------------
    def explain(  # noqa: C901, PLR0912  # a narrative of every branch
        self, key: str, context: ContextLike = None, default: Any = None
    ) -> Explanation:
        """Evaluate *key* and say why: each rule tried, the bucket, what was served.

        For humans (the ``tipkit flags explain`` command); never raises.
        """
        detail = self.evaluate(key, context, default)
        steps: list[str] = []
        bucket: int | None = None
        bucket_key: str | None = None
        fs = self._flag_set
        flag = None if fs is None else fs.flags.get(key)
        state = self._store_state
        if flag is None:
            steps.append(
                f"flag {key!r} is not defined"
                if fs is not None
                else "the provider is not ready"
            )
            return Explanation(detail, None, None, tuple(steps))
        ctx = _as_context(context)
        attrs = ctx.attributes
        if key in state.kills:
            steps.append("the flag is killed (kill switch in the store)")
        elif not flag.enabled:
            steps.append("the flag's state is 'disabled'")
        elif key in state.overrides or key in self._local_overrides:
            steps.append("an override is in place")
        else:
            live = self._split_serves.get(key, {})
            serve: Serve | None = None
            for rule in flag.rules:
                try:
                    matched = rule.cond(attrs, ctx.targeting_key)
                except Exception as exc:  # pragma: no cover - conditions do not raise
                    steps.append(f"rule {rule.id!r}: raised {type(exc).__name__}")
                    break
                steps.append(
                    f"rule {rule.id!r}: {'matched' if matched else 'did not match'}"
                )
                if matched:
                    serve = live.get(rule.id, rule.serve)
                    break
            if serve is None:
                serve = live.get(None, flag.fallthrough)
                steps.append(
                    f"no rule matched: fallthrough {serve.describe()}"
                    if flag.rules
                    else f"no rules: {serve.describe()}"
                )
            else:
                steps.append(f"serves {serve.describe()}")
            if serve in live.values():
                steps.append("run-time split weights from the store (set_split)")
            if serve.is_split:
                try:
                    bucket_key = serve.bucket_key(attrs, ctx.targeting_key)
                except EvalError as exc:
                    steps.append(f"cannot bucket: {exc.message}")
                else:
                    bucket = _bucket(flag.salt, bucket_key)
                    steps.append(
                        f"bucket = murmur3('{flag.salt}.{bucket_key}') -> {bucket} of 100000"
                    )
        steps.append(
            f"result: variant {detail.variant!r}, value {detail.value!r}, "
            f"reason {detail.reason.value}"
            + (
                f", error {detail.error_code.value}: {detail.error_message}"
                if detail.error_code
                else ""
            )
        )
        return Explanation(detail, bucket, bucket_key, tuple(steps))


def _check_rule_id(rule_id: object) -> None:
    if rule_id is not None and (not isinstance(rule_id, str) or not rule_id):
        raise ValueError(f"rule_id must be a non-empty string or None, got {rule_id!r}")


def _as_context(context: Any) -> EvaluationContext:
    """Return *context* as an EvaluationContext (for listeners and explain); never raises."""
    try:
        if isinstance(context, EvaluationContext):
            return context
        if isinstance(context, Mapping):
            attrs = dict(context)
            return EvaluationContext(attrs.get("targeting_key"), attrs)
        if isinstance(context, str | int) and not isinstance(context, bool):
            return EvaluationContext(context)
    except Exception:
        logger.debug("tipkit: a context could not be read", exc_info=True)
    return EvaluationContext()


def _const(outcome: Outcome) -> Run:
    return lambda _a, _k: outcome


def _override_outcome(key: str, spec: Any, flag: CompiledFlag | None) -> Outcome:
    if flag is not None:
        if isinstance(spec, str) and spec in flag.variants:
            return flag.outcome(spec, Reason.STATIC)
        for name, value in flag.variants.items():
            if type(value) is type(spec) and value == spec:
                return flag.outcome(name, Reason.STATIC)
    return Outcome(
        key,
        spec,
        None,
        Reason.STATIC,
        flag_version=None if flag is None else flag.version,
    )
