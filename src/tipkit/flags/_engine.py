"""The flag engine: :class:`Flags`, local evaluation over one immutable table.

``Flags`` holds a table ``{flag key: run}`` built from the provider's snapshot
and the store's state by the one precedence (``_precedence``), and evaluates
by calling ``run(attributes, targeting_key)``. Its collaborators: where the
table comes from (``_source``: the provider, and the store's state through
``_store_sync``), writes to the store (``_admin``), the slow half of an
evaluation (``_outcomes``), ``explain`` (``_explain``) and ``gate`` (``_gate``).
The hot paths (``is_enabled``, ``get``) stay inline here: a call is ~5% of an
evaluation.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import timedelta
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar, Unpack, overload

from tipkit._core import _fork
from tipkit._core._check import check_clock, check_name, check_seconds
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.flags import _outcomes
from tipkit.flags._admin import Admin, Who, check_key
from tipkit.flags._compiled import FlagSet, Run
from tipkit.flags._events import FlagEvaluated
from tipkit.flags._explain import Explanation, explain
from tipkit.flags._gate import Gate
from tipkit.flags._model import (
    _EMPTY,
    Assignment,
    EvaluationContext,
    EvaluationDetail,
    Outcome,
    assignment,
)
from tipkit.flags._outcomes import OnceLog
from tipkit.flags._precedence import Plan
from tipkit.flags._providers import (
    FileProvider,
    FlagProvider,
    document_provider,
)
from tipkit.flags._source import Source
from tipkit.flags._sticky import Sticky
from tipkit.flags._store_sync import StoreSync
from tipkit.stores import MemoryStore, Store
from tipkit.stores._durable import Action
from tipkit.stores._sticky import StickyStore

__all__ = ["ContextLike", "Explanation", "Flags"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

ContextLike = EvaluationContext | Mapping[str, Any] | str | int | None
"""What a context may be: a targeting-key string, a mapping, or an EvaluationContext."""

_INF = float("inf")


def _checked(
    provider: object,
    namespace: object,
    refresh_interval: float | timedelta,
    clock: object,
) -> float:
    """Check ``Flags``' arguments (shared validators); return the interval in seconds."""
    if not isinstance(provider, FlagProvider):
        raise TypeError(f"Flags: provider must be a FlagProvider, got {provider!r}")
    if namespace == "":  # a ValueError before the shared validators existed: kept
        raise ValueError("Flags: namespace must be a non-empty str, got ''")
    check_name(namespace, "Flags: namespace")
    if clock is not None:
        check_clock(clock, "Flags: clock")
    return check_seconds(refresh_interval, "Flags: refresh_interval", minimum=0)


class Flags:
    """Evaluate feature flags locally, fast, and never raise into app code.

    *provider* serves compiled flag snapshots (:class:`FileProvider`,
    :class:`InMemoryProvider`). Kill switches, overrides and run-time split
    weights written with :meth:`kill`, :meth:`revive`, :meth:`override` and
    :meth:`set_split` live in *store* under *namespace*; this object holds them
    as one snapshot, re-read at most every *refresh_interval* seconds (a change
    written through any ``Flags`` sharing the store object, or announced by the
    store's ``watch``, takes effect on the very next evaluation in this process).
    *overrides* are local to this object: ``{flag: variant name or value}``.
    *sticky*: a :class:`~tipkit.stores.StickyStore` for ``sticky`` flags' variants.

    Precedence: kill > disabled > override (store, then local) > rules; a
    run-time split replaces the weights of the split it targets, not the rules.

    What may block: a due store refresh (one or two round trips, bounded by the
    store's timeout; async methods from the ``a``-prefixed calls, safe on a
    loop) and building with *store* (registers the flags: :mod:`tipkit.registry`,
    one best-effort write). A store failure keeps the last state (a kill stays),
    publishes ``StoreUnavailable`` once per outage, is retried, never raises.

    Thread-safe: evaluations read one immutable table, swapped atomically; one
    clock read per evaluation (default: the provider's clock, else the system's).
    """

    __slots__ = (
        "__weakref__",
        "_admin",
        "_clock",
        "_deadline",
        "_local_overrides",
        "_lock",
        "_log",
        "_now",
        "_plans",
        "_provider",
        "_source",
        "_table",
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
        sticky: StickyStore | None = None,
    ) -> None:
        interval = _checked(provider, namespace, refresh_interval, clock)
        self._provider = provider
        self._clock: Clock = (
            clock if clock is not None else getattr(provider, "clock", SYSTEM_CLOCK)
        )
        self._now = self._clock.monotonic
        self._local_overrides: dict[str, Any] = copy.deepcopy(dict(overrides or {}))
        self._lock = threading.Lock()
        _fork.register(self)
        self._log = OnceLog()
        self._table: dict[str, Run] = {}
        self._plans: dict[str, Plan] = {}
        self._deadline = -_INF
        given = store is not None  # only a given store is worth registering in
        store = store if store is not None else MemoryStore(clock=self._clock)
        sync = StoreSync(store, namespace, interval, self._clock, self._expired)
        local, log = self._local_overrides, self._log
        keeper = None if sticky is None else Sticky(sticky)
        self._source = Source(provider, sync, local, self._expired, log, sticky=keeper)
        self._admin = Admin(sync)
        self._maintain(store=False)
        if given:
            self._admin.register(self)

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
        limits = kwargs.pop("limits", None)  # a Limits, or the defaults
        file = FileProvider(
            path, reload_interval=reload_interval, clock=clock, limits=limits
        )
        return cls(file, clock=clock, **kwargs)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], **kwargs: Any) -> Flags:
        """Return ``Flags(InMemoryProvider(document))``; raises ``ConfigError`` if invalid."""
        return cls(document_provider(document, kwargs.pop("limits", None)), **kwargs)

    def _fresh(self, *, store: bool = True) -> None:
        if self._now() >= self._deadline:
            self._maintain(store=store)

    def __repr__(self) -> str:
        self._fresh()
        return f"<Flags provider={self._provider!r} {self._source.summary()}>"

    # -- introspection ----------------------------------------------------------------
    @property
    def provider(self) -> FlagProvider:
        """The provider serving the flags."""
        return self._provider

    @property
    def store(self) -> Store:
        """The store holding kill switches and overrides."""
        return self._source.sync.store

    @property
    def flag_set(self) -> FlagSet | None:
        """The compiled snapshot served (``None`` until ready); never reads the store."""
        self._fresh(store=False)
        return self._source.flag_set

    def keys(self) -> list[str]:
        """Return the keys of the flags being served, sorted (never reads the store)."""
        fs = self.flag_set
        return [] if fs is None else sorted(fs.flags)

    def killed(self) -> frozenset[str]:
        """Return the keys of the killed flags (as of the last refresh)."""
        self._fresh()
        return self._source.sync.state.kills

    # -- evaluation ------------------------------------------------------------------
    def is_enabled(
        self, key: str, context: ContextLike = None, default: bool = False
    ) -> bool:
        """Return whether the boolean flag *key* is on for *context*.

        Never raises: on any error it returns *default* (see :meth:`evaluate`).
        Thread-safe; reads the clock once. May block on a due store refresh
        (see the class docstring); in async code use :meth:`ais_enabled`.
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
                out = _outcomes.read_context(self._table[key], context)
        except Exception as exc:
            out = self._failed(key, exc)
        if out.vclass is default.__class__:
            out.counter.inc()
            if FlagEvaluated.probe and FlagEvaluated.probe():
                _outcomes.publish(out.value, out, context, self._log)
            return out.value  # type: ignore[no-any-return]  # its class is bool
        return _outcomes.finish(key, out, default, context, self._log)[0]  # type: ignore[no-any-return]  # coerced to bool

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
        Object values are fresh copies. Never raises; thread-safe. May block on
        a due store refresh; in async code use :meth:`aget`.
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
                out = _outcomes.read_context(self._table[key], context)
        except Exception as exc:
            out = self._failed(key, exc)
        if out.vclass is default.__class__:
            out.counter.inc()
            if FlagEvaluated.probe and FlagEvaluated.probe():
                _outcomes.publish(out.value, out, context, self._log)
            return out.value
        return _outcomes.finish(key, out, default, context, self._log)[0]

    def evaluate(
        self, key: str, context: ContextLike = None, default: Any = None
    ) -> EvaluationDetail:
        """Return the :class:`EvaluationDetail` of flag *key* for *context*. Never raises."""
        value, out = self._run(key, context, default)
        return _outcomes.detail(value, out)

    def assign(self, key: str, context: ContextLike = None) -> Assignment:
        """Return which variant flag *key* serves *context*, why, and from which split.

        Counts and publishes ``FlagEvaluated`` exactly as ``evaluate(key,
        context)`` does, without building the detail: the :class:`Assignment`
        of a precomputed outcome is built once and shared. Never raises (an
        error comes back with reason ``ERROR``); thread-safe. May block on a due
        store refresh; in async code use :meth:`aassign`.
        """
        value, out = self._run(key, context, None)
        shared = out.assigned  # inlined assignment(): this is the rollout's hot path
        return assignment(value, out) if shared is None or out.mutable else shared

    async def aevaluate(
        self, key: str, context: ContextLike = None, default: Any = None
    ) -> EvaluationDetail:
        """:meth:`evaluate` for async code: a due refresh awaits the store's async methods."""
        return _outcomes.detail(*await self._arun(key, context, default))

    async def ais_enabled(
        self, key: str, context: ContextLike = None, default: bool = False
    ) -> bool:
        """:meth:`is_enabled` for async code: a due refresh awaits the store's async methods."""
        value, _ = await self._arun(key, context, default)
        return value  # type: ignore[no-any-return]  # a bool, or coerced to the default's type

    async def aget(
        self, key: str, context: ContextLike = None, default: Any = None
    ) -> Any:
        """:meth:`get` for async code: a due refresh awaits the store's async methods."""
        value, _ = await self._arun(key, context, default)
        return value

    async def aassign(self, key: str, context: ContextLike = None) -> Assignment:
        """:meth:`assign` for async code: a due refresh awaits the store's async methods."""
        return assignment(*await self._arun(key, context, None))

    def _run(self, key: str, context: Any, default: Any) -> tuple[Any, Outcome]:
        if self._now() >= self._deadline:
            self._maintain()
        return self._complete(key, context, default)

    async def _arun(self, key: str, context: Any, default: Any) -> tuple[Any, Outcome]:
        if self._now() >= self._deadline:
            await self._amaintain()
        if (p := self._plans.get(key)) is not None and p.sticky is not None:
            return await p.sticky(self._complete, key, context, default)  # type: ignore[no-any-return]  # _complete's answer
        return self._complete(key, context, default)

    def _complete(self, key: str, context: Any, default: Any) -> tuple[Any, Outcome]:
        """Evaluate on the current table, count and publish: the complete slow path."""
        try:
            run = self._table[key]
            if context.__class__ is EvaluationContext:
                out = run(context.attributes, context.targeting_key)
            else:
                out = _outcomes.read_context(run, context)
        except Exception as exc:
            out = self._failed(key, exc)
        value, out = _outcomes.settle(key, out, default)  # finish(), inlined
        out.counter.inc()
        if FlagEvaluated.probe and FlagEvaluated.probe():
            _outcomes.publish(value, out, context, self._log)
        return value, out

    def _failed(self, key: Any, exc: Exception) -> Outcome:
        return _outcomes.failed(
            key, exc, self._table.__contains__, self._source.not_ready, self._log
        )

    # -- refreshing the provider snapshot and the store state -----------------------
    def _expired(self) -> None:
        self._deadline = -_INF

    def _maintain(self, *, store: bool = True) -> None:
        """Refresh what is due with sync I/O; one thread at a time, others go on."""
        if self._lock.acquire(blocking=False):
            try:
                self._install(self._source.refresh(self._now(), store=store))
            finally:
                self._lock.release()

    async def _amaintain(self) -> None:
        """:meth:`_maintain` with the store's async methods: never blocks the loop."""
        if self._lock.acquire(blocking=False):
            try:
                self._install(await self._source.arefresh(self._now()))
            finally:
                self._lock.release()

    def _install(self, plans: dict[str, Plan] | None) -> None:
        if plans is not None:
            self._plans = plans
            self._table = {key: p.run for key, p in plans.items()}
        self._deadline = self._source.next

    def refresh(self) -> None:
        """Re-read the provider and the store now (blocks for a store round trip)."""
        self._source.expire()
        self._maintain()

    # -- kill switches and overrides (operator actions: sync store writes) -------------
    def kill(self, key: str, **who: Unpack[Who]) -> Action:
        """Kill flag *key* everywhere sharing the store: it serves its off variant.

        At once here, within ``refresh_interval`` elsewhere (at once where the store
        pushes); no ``off_variant``: the caller's default (``DISABLED``). Local-first:
        if the store fails, in force here and pending (:meth:`pending`), replayed with
        compare-and-set; never raises a store error (one bounded round trip). Returns
        the ``Action`` (``done``: stored). ``actor=``, ``reason=``: audited if given.
        """
        return self._admin.kill(key, self._source.flag_set, who)

    def revive(self, key: str, **who: Unpack[Who]) -> Action:
        """Undo :meth:`kill` for *key* everywhere sharing the store (local-first)."""
        return self._admin.revive(key, who)

    def pending(self) -> list[Action]:
        """Return the kills, revives, overrides and splits not yet in the store.

        In force here; replayed (``ActionFlushed``) or dropped (``ActionConflict``).
        """
        return self._source.sync.durable.pending()

    def set_override(
        self, key: str, value_or_variant: Any, **who: Unpack[Who]
    ) -> Action:
        """Serve *value_or_variant* for *key* (reason ``STATIC``) until cleared.

        A variant's name, or a value equal to a variant's value, serves that
        variant; anything else is served as is, with no variant. Written to the
        store (everything sharing it sees it), local-first as :meth:`kill`.

        Raises:
            TypeError: the value cannot be stored (not JSON-compatible).
        """
        return self._admin.set_override(key, value_or_variant, who)

    def clear_override(self, key: str, **who: Unpack[Who]) -> Action:
        """Remove the override of *key* set by :meth:`set_override` (local-first)."""
        return self._admin.clear_override(key, who)

    def override(self, key: str, value_or_variant: Any) -> AbstractContextManager[None]:
        """Override *key* inside the ``with`` block, then restore what was there.

        See :meth:`set_override`. Nested overrides of the same flag restore in order.
        """
        return self._admin.override(key, value_or_variant)

    # -- run-time splits ----------------------------------------------------------
    def set_split(
        self,
        key: str,
        weights: Mapping[str, float | Decimal],
        *,
        rule_id: str | None = None,
        **who: Unpack[Who],
    ) -> None:
        """Serve flag *key*'s split with *weights* (percent per variant) from now on.

        The target is the fallthrough (*rule_id* ``None``) or the rule *rule_id*;
        only its weights change (salt, ``bucket_by`` and variant order stay, so
        raising the first-listed variant's weight only adds users to it; see
        ``docs/flags.md``). Answers have reason ``SPLIT``; kills, a disabled
        state and overrides still win. Weights are validated as a document's
        split is and written to the store: every ``Flags`` sharing the store
        object sees them on its next evaluation, other processes within their
        ``refresh_interval``. A later reload that no longer fits the split serves
        the document's weights (logged once). Thread-safe (compare-and-set).

        Raises:
            ConfigError: the flag or rule is unknown, or a weight is bad (every
                problem listed, naming the flag and the weight).
            ValueError: *key* or *rule_id* is not a non-empty string.
            StoreConflictError: other writers changed the entry on every try.

        Local-first: while the store fails, the split is in force here and
        pending (see :meth:`kill`); never raises a store failure.
        """
        self._admin.set_split(key, weights, rule_id, self.flag_set, who)

    def clear_split(
        self, key: str, *, rule_id: str | None = None, **who: Unpack[Who]
    ) -> None:
        """Remove the run-time split of *key*'s fallthrough (or rule *rule_id*), if any.

        The document's weights (or single variant) serve again; as :meth:`set_split`.

        Raises:
            ValueError: *key* or *rule_id* is not a non-empty string.
        """
        self._admin.clear_split(key, rule_id, who)

    def get_split(
        self, key: str, *, rule_id: str | None = None
    ) -> dict[str, float] | None:
        """Return the run-time split weights (percent) of *key*'s target, or ``None``.

        Read from the store now (not from this object's snapshot), in the order
        they were given; while the store fails, what this process serves. The
        target is the fallthrough, or rule *rule_id*.
        """
        return self._admin.get_split(key, rule_id)

    # -- gate and explain ----------------------------------------------------------
    def gate(
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
        fallback may be sync or async; it evaluates with :meth:`ais_enabled`,
        so it never blocks the loop on the store). A *context* callable that
        raises counts as an invalid context: the flag is treated as *default*.
        """
        check_key(key)
        return Gate(
            self, self._log, key, fallback=fallback, context=context, default=default
        )

    def explain(
        self, key: str, context: ContextLike = None, default: Any = None
    ) -> Explanation:
        """Evaluate *key* and say why: each rule tried, the bucket, what was served.

        For humans (the ``tipkit flags explain`` command); never raises. The
        layer (kill, disabled, override, rules) is the one the evaluation used.
        """
        detail = self.evaluate(key, context, default)
        context = _outcomes.as_context(context)
        return explain(detail, self._source.flag_set, self._plans, context)
