"""Writes to the shared flag state: kill switches, overrides, run-time splits.

:class:`Admin` is what :class:`~tipkit.flags.Flags`' ``kill``, ``revive``,
``set_override``/``clear_override``/``override`` and
``set_split``/``clear_split``/``get_split`` do. Every write goes to the store
under the ``Flags``' namespace, then expires the snapshot of every ``Flags``
sharing the store object, so the change applies to their very next evaluation.
These are operator actions, not the request path: they use the store's sync
methods (bounded by its timeout) and never raise a store error: while the
store fails, an action is in force here and pending (``Flags.pending()``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Final, TypedDict

from tipkit import audit, registry
from tipkit.errors import ConfigError, StoreConflictError, StoreError
from tipkit.flags._compiled import CompiledFlag, FlagSet
from tipkit.flags._document import check_split
from tipkit.flags._store_sync import (
    KILL,
    OVERRIDE,
    SPLIT,
    StoreSync,
    notify_peers,
    read_splits,
)
from tipkit.stores import Store
from tipkit.stores._durable import Action
from tipkit.stores._memory import _encode

__all__ = ["NOBODY", "Admin", "Who", "check_key", "check_rule_id"]


class Who(TypedDict, total=False):
    """Who acted and why: the keyword-only ``actor=``/``reason=`` of every action."""

    actor: str | None
    reason: str | None


NOBODY: Final[Who] = {}

logger = logging.getLogger("tipkit")

_CAS_TRIES: Final = 16


def check_key(key: object) -> None:
    """Raise ``ValueError`` unless *key* is a non-empty string."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"a flag key must be a non-empty string, got {key!r}")


def check_rule_id(rule_id: object) -> None:
    """Raise ``ValueError`` unless *rule_id* is ``None`` or a non-empty string."""
    if rule_id is not None and (not isinstance(rule_id, str) or not rule_id):
        raise ValueError(f"rule_id must be a non-empty string or None, got {rule_id!r}")


class Admin:
    """Write kills, overrides and splits of one namespace; see the ``Flags`` methods.

    Local-first: every write is in force in this process at once (served on top
    of the store's state) and goes through the namespace's
    :class:`~tipkit.stores._durable.Durable`, which writes it now or, while the
    store fails, keeps it pending and replays it with compare-and-set when the
    store answers. Nothing here raises a store error. *flag_set*, where asked
    for, is the snapshot being served: a split is validated against its flag.
    Thread-safe.
    """

    __slots__ = ("registration", "sync")

    def __init__(self, sync: StoreSync) -> None:
        self.sync = sync
        self.registration: registry.Registration | None = None

    def register(self, flags: object) -> None:
        """Register *flags* in the store now, for ``tipkit ops`` (best effort, never raises)."""
        self.registration = registry.register_flags(flags, self.namespace)

    @property
    def store(self) -> Store:
        """The store written to."""
        return self.sync.store

    @property
    def namespace(self) -> str:
        """The namespace written to."""
        return self.sync.namespace

    def _write(self, name: str, *, value: Any) -> Action:
        _encode(value, f"{self.namespace}/{name}")  # a TypeError now, not pending
        action = self.sync.durable.submit(name, value, base=self.sync.base(name))
        notify_peers(self.store)
        return action

    def _audited(
        self, key: str, name: str, *, value: Any, action: str, part: str, who: Who
    ) -> Action:
        """Write *value* at *name* and append the action to the audit log (never raises)."""
        if not _attributed(who):  # no audit: no read of the state before
            return self._write(name, value=value)
        before = _part(part, self._current(name))
        done = self._write(name, value=value)
        self._record(key, action, {part: before}, {part: _part(part, value)}, who)
        return done

    def _record(self, key: str, action: str, before: Any, after: Any, who: Who) -> None:
        if not _attributed(who):
            return  # unattributed: a component's own writes (a rollout's split)
        actor, reason = who.get("actor"), who.get("reason")
        ns = self.namespace
        target = f"flag:{key}" if ns == "flags" else f"flag:{ns}/{key}"
        audit.record(
            self.store, actor=actor, action=action, target=target, reason=reason,
            before=before, after=after,
        )  # fmt: skip

    # -- kill switches ------------------------------------------------------------
    def kill(self, key: str, flag_set: FlagSet | None, who: Who = NOBODY) -> Action:
        """Write the kill switch of *key*; audit it as *who* (actor, reason)."""
        _attribution(who)
        check_key(key)
        fs = flag_set
        if fs is not None and key not in fs.flags:
            logger.warning(
                "tipkit: killing flag %r, which this process does not know", key
            )
        return self._audited(
            key, KILL + key, value=True, action="flag.kill", part="killed", who=who
        )

    def revive(self, key: str, who: Who = NOBODY) -> Action:
        """Clear the kill switch of *key* (a ``False`` tombstone: replayable)."""
        _attribution(who)
        check_key(key)
        return self._audited(
            key, KILL + key, value=False, action="flag.revive", part="killed", who=who
        )

    # -- overrides ----------------------------------------------------------------
    def set_override(
        self, key: str, value_or_variant: Any, who: Who = NOBODY
    ) -> Action:
        """Write the override of *key*."""
        _attribution(who)
        check_key(key)
        value = {"value": value_or_variant}
        return self._audited(
            key, OVERRIDE + key, value=value, action="flag.override", part="override",
            who=who,
        )  # fmt: skip

    def clear_override(self, key: str, who: Who = NOBODY) -> Action:
        """Clear the override of *key* (a ``None`` tombstone)."""
        _attribution(who)
        check_key(key)
        return self._audited(
            key, OVERRIDE + key, value=None, action="flag.clear_override",
            part="override", who=who,
        )  # fmt: skip

    @contextmanager
    def override(self, key: str, value_or_variant: Any) -> Iterator[None]:
        """Override *key* inside the block, then restore what was there."""
        check_key(key)
        previous = self._current(OVERRIDE + key)
        self.set_override(key, value_or_variant)
        try:
            yield
        finally:
            if isinstance(previous, dict):
                self._write(OVERRIDE + key, value=previous)
            else:
                self.clear_override(key)

    def _current(self, name: str) -> Any:
        """The value at *name* as this process serves it (the store when it answers)."""
        try:
            entry = self.store.get(self.namespace, name)
        except StoreError:
            overlay = self.sync.durable.overlay()
            if name in overlay:
                return overlay[name]
            read = self.sync.read.entries.get(name)
            return None if read is None else read.value
        return None if entry is None else entry.value

    # -- run-time splits ----------------------------------------------------------
    def set_split(
        self,
        key: str,
        weights: Mapping[str, float | Decimal],
        rule_id: str | None,
        flag_set: FlagSet | None,
        who: Who = NOBODY,
    ) -> Action | None:
        """Validate *weights* against the flag and write them for the target."""
        _attribution(who)
        check_key(key)
        check_rule_id(rule_id)
        flag = _split_target(key, rule_id, flag_set)
        field = "fallthrough" if rule_id is None else f"rules[{rule_id}].serve"
        parsed = check_split(key, weights, flag.variants, field, "set_split")
        target = rule_id or ""

        def write(current: dict[str, Any]) -> dict[str, Any]:
            current[target] = parsed
            return current

        before = self.get_split(key, rule_id) if _attributed(who) else None
        done = self._update_splits(key, write)
        after = {v: w / 1000 for v, w in parsed.items()}
        self._split_audit(key, "flag.split", before, after, who)
        return done

    def _split_audit(
        self, key: str, action: str, before: Any, after: Any, who: Who
    ) -> None:
        if before != after:
            self._record(key, action, {"split": before}, {"split": after}, who)

    def clear_split(
        self, key: str, rule_id: str | None, who: Who = NOBODY
    ) -> Action | None:
        """Remove the run-time split of the target, if any."""
        _attribution(who)
        check_key(key)
        check_rule_id(rule_id)
        target = rule_id or ""

        def remove(current: dict[str, Any]) -> dict[str, Any]:
            current.pop(target, None)
            return current

        before = self.get_split(key, rule_id) if _attributed(who) else None
        done = self._update_splits(key, remove)
        self._split_audit(key, "flag.clear_split", before, None, who)
        return done

    def get_split(self, key: str, rule_id: str | None) -> dict[str, float] | None:
        """Read the run-time split of the target (the store now; if down, as served)."""
        check_key(key)
        check_rule_id(rule_id)
        value = self._current(SPLIT + key)
        weights = None if value is None else read_splits(value).get(rule_id)
        if weights is None:
            return None
        return {name: w / 1000 for name, w in weights.items()}

    def _update_splits(
        self, key: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Action | None:
        store, ns, name = self.store, self.namespace, SPLIT + key
        try:
            for _ in range(_CAS_TRIES):
                entry = store.get(ns, name)
                current = (
                    dict(entry.value)
                    if entry is not None and isinstance(entry.value, dict)
                    else {}
                )
                new = change(current)
                if entry is None and not new:
                    return None
                # An emptied entry stays (as {}): deleting it could drop a target
                # another process wrote between our read and the delete.
                version = 0 if entry is None else entry.version
                if store.compare_and_set(ns, name, new, version=version) is not None:
                    return self._wrote(name, new)
        except StoreError:
            # Local-first: change what this process serves; replay when back.
            local = self._current(name)
            new = change(dict(local) if isinstance(local, dict) else {})
            action = self.sync.durable.submit(name, new, base=self.sync.base(name))
            notify_peers(store)
            return action
        raise StoreConflictError(
            f"the run-time split of flag {key!r} kept changing; not written",
            namespace=ns,
            key=name,
            tries=_CAS_TRIES,
        )

    def _wrote(self, name: str, value: Any) -> Action:
        # Written by the compare-and-set above: record it as a fact, and serve it.
        self.sync.durable.learn(name, value)
        notify_peers(self.store)
        action = Action(name, value, None, None, 0.0)
        action.state = "written"
        return action


def _split_target(key: str, rule_id: str | None, fs: FlagSet | None) -> CompiledFlag:
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


def _part(part: str, value: Any) -> Any:
    """The audited part of a stored value: ``killed`` as a bool, ``override`` unwrapped."""
    if part == "killed":
        return bool(value)
    return value.get("value") if isinstance(value, dict) else None


def _attribution(who: Who) -> None:
    """Raise ``TypeError`` for a keyword other than ``actor``/``reason`` (a typo)."""
    unknown = sorted(set(who) - {"actor", "reason"})
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {unknown}: use actor=, reason="
        )


def _attributed(who: Who) -> bool:
    """Whether an action names its actor or reason (then it is audited)."""
    return who.get("actor") is not None or who.get("reason") is not None
