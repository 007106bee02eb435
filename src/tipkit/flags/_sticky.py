"""Sticky bucketing: once a split serves a unit a variant, keep serving it.

Opt-in per flag with ``sticky: <epoch>`` (an int or a string; or
``sticky: {epoch: <epoch>}``), and per ``Flags`` with ``sticky=`` a
:class:`~tipkit.stores.StickyStore`. When a split of such a flag is reached,
the unit (``"<bucket attribute>||<value>"``) is looked up in the store: a
variant recorded in the slot ``"<flag>__<epoch>"`` that this split still lists
is served (reason ``SPLIT``, as first served); otherwise the split buckets as
usual and the answer is recorded. Rules still decide whether a split is
reached at all; kills, a disabled state, overrides and prerequisites still win.
Changing the epoch starts everyone afresh. See ``docs/bucketing.md``.

The store is never allowed to fail an evaluation: any exception from it
gives plain bucketing, counted in ``tipkit.flag.sticky.fallbacks``. Sync
evaluations use the store's sync methods; async ones (``aevaluate``...) read
the unit with its async method first (:meth:`Sticky.arun`) and write after,
so no sync store call happens on an event loop: a unit an async evaluation
did not read first (a sticky parent of another bucketing attribute reached as a
prerequisite) is served from this process's recent reads, else bucketed and
recorded.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from tipkit.flags._compiled import CompiledFlag, Run, Serve, bucket_key_of
from tipkit.flags._conditions import Problems
from tipkit.flags._model import Outcome
from tipkit.flags._outcomes import as_context
from tipkit.flags._yaml import line_of
from tipkit.stores._sticky import StickyStore
from tipkit.telemetry._counters import REGISTRY

__all__ = ["FALLBACKS", "Sticky", "parse"]

logger = logging.getLogger("tipkit")

FALLBACKS = "tipkit.flag.sticky.fallbacks"
"""Counter: evaluations that bucketed plainly because the sticky store failed."""

_RECENT = 10_000  # units remembered for async evaluations that did not read first


def parse(key: str, fdoc: Mapping[str, Any], problems: Problems) -> str | None:
    """Validate flag *key*'s ``sticky``; return its epoch as a string (``None``: off)."""
    if "sticky" not in fdoc:
        return None
    raw = fdoc["sticky"]
    epoch = (
        raw.get("epoch") if isinstance(raw, dict) and list(raw) == ["epoch"] else raw
    )
    if isinstance(epoch, bool) or not (
        (isinstance(epoch, int) and 0 <= epoch < 2**63)
        or (isinstance(epoch, str) and epoch and len(epoch) <= 64)
    ):
        problems.add(
            "'sticky' must be an epoch (an int >= 0 or a short string) or "
            f"{{epoch: <epoch>}}, got {raw!r}",
            flag=key,
            field="sticky",
            line=line_of(fdoc, "sticky"),
        )
        return None
    return str(epoch)


class _Visit:
    """One async evaluation's sticky I/O: the unit read first, the writes to make."""

    __slots__ = ("assigned", "unit", "writes")

    def __init__(self, unit: str | None, assigned: Mapping[str, str] | None) -> None:
        self.unit = unit
        self.assigned = assigned
        self.writes: list[tuple[str, str, str]] = []


_VISIT: ContextVar[_Visit | None] = ContextVar("tipkit.flags.sticky", default=None)


class Sticky:
    """The sticky bucketing of one ``Flags``: its store, recent units, the fallback count."""

    __slots__ = ("_lock", "_recent", "fallbacks", "store")

    def __init__(self, store: StickyStore) -> None:
        if not isinstance(store, StickyStore):
            raise TypeError(f"sticky must be a StickyStore, got {store!r}")
        self.store = store
        self.fallbacks = REGISTRY.counter(FALLBACKS)
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, dict[str, str]] = OrderedDict()

    def __repr__(self) -> str:
        return f"<Sticky store={self.store!r}>"

    # -- building: the serves of a sticky flag ---------------------------------------
    def serves(
        self, flag: CompiledFlag, runtime: Mapping[str | None, Serve]
    ) -> dict[str | None, Serve]:
        """Return every split target of *flag* (run-time splits included), made sticky."""
        out: dict[str | None, Serve] = {}
        for rule in (*flag.rules, None):
            serve = flag.serving(rule, runtime)
            if serve.is_split:
                out[None if rule is None else rule.id] = serve.with_run(
                    self._wrap(flag, serve)
                )
        return out

    def _wrap(self, flag: CompiledFlag, serve: Serve) -> Run:
        plain, by = serve.run, flag.bucket_by
        attr = f"{by or 'targeting_key'}||"
        slot = f"{flag.key}__{flag.sticky}"
        listed = {str(o.variant): o for o in serve.outcomes}
        decide = self.decide

        def sticky(a: Mapping[str, Any], k: Any) -> Outcome:
            fresh = plain(a, k)  # raises as a plain split would (no bucket key)
            unit = attr + bucket_key_of(a.get(by) if by else k)
            return decide(unit, slot, fresh, listed)

        return sticky

    # -- evaluating ------------------------------------------------------------------
    def decide(
        self, unit: str, slot: str, fresh: Outcome, listed: Mapping[str, Outcome]
    ) -> Outcome:
        """Serve *unit*'s recorded variant in *slot* if *listed*, else record *fresh*'s."""
        visit = _VISIT.get()
        if visit is None:
            try:
                assigned = self.store.get_assignments(unit)
            except Exception as exc:
                self._fell_back(exc)
                return fresh
            self._remember(unit, assigned)
        elif visit.unit == unit:
            if visit.assigned is None:  # its read failed (counted): no write either
                return fresh
            assigned = visit.assigned
        else:
            assigned = self._recent.get(unit, {})
        kept = listed.get(assigned.get(slot, ""))
        if kept is not None:
            return kept
        if visit is not None:
            visit.writes.append((unit, slot, str(fresh.variant)))
            return fresh
        try:
            self.store.save_assignment(unit, slot, str(fresh.variant))
        except Exception as exc:
            self._fell_back(exc)
            return fresh
        self._remember(unit, {slot: str(fresh.variant)})
        return fresh

    async def arun(
        self,
        complete: Callable[[str, Any, Any], Any],
        key: str,
        context: Any,
        default: Any,
        by: str | None,
    ) -> Any:
        """Run ``complete(key, context, default)`` with the unit read, and written, async."""
        unit: str | None = None
        assigned: Mapping[str, str] | None = None
        try:
            ctx = as_context(context)
            raw = ctx.attributes.get(by) if by else ctx.targeting_key
            unit = f"{by or 'targeting_key'}||{bucket_key_of(raw)}"
            assigned = await self.store.aget_assignments(unit)
        except (
            Exception
        ) as exc:  # no bucket key: the evaluation says so; else the store
            if unit is not None:
                self._fell_back(exc)
        else:
            self._remember(unit, assigned)
        visit = _Visit(unit, assigned)
        token = _VISIT.set(visit)
        try:
            result = complete(key, context, default)
        finally:
            _VISIT.reset(token)
        for w_unit, slot, variant in visit.writes:
            try:
                await self.store.asave_assignment(w_unit, slot, variant)
            except Exception as exc:
                self._fell_back(exc)
            else:
                self._remember(w_unit, {slot: variant})
        return result

    def _remember(self, unit: str, assigned: Mapping[str, str]) -> None:
        if not assigned:
            return
        with self._lock:
            self._recent.setdefault(unit, {}).update(assigned)
            self._recent.move_to_end(unit)
            while len(self._recent) > _RECENT:
                self._recent.popitem(last=False)

    def _fell_back(self, exc: Exception) -> None:
        self.fallbacks.inc()
        logger.debug("tipkit: the sticky store failed; plain bucketing", exc_info=exc)
