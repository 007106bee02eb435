"""Writes to the shared flag state: kill switches, overrides, run-time splits.

:class:`Admin` is what :class:`~tipkit.flags.Flags`' ``kill``, ``revive``,
``set_override``/``clear_override``/``override`` and
``set_split``/``clear_split``/``get_split`` do. Every write goes to the store
under the ``Flags``' namespace, then expires the snapshot of every ``Flags``
sharing the store object, so the change applies to their very next evaluation.
These are operator actions, not the request path: they use the store's sync
methods and raise :class:`~tipkit.errors.StoreError` when it fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Final

from tipkit.errors import ConfigError, StoreConflictError
from tipkit.flags._compiled import CompiledFlag, FlagSet
from tipkit.flags._document import check_split
from tipkit.flags._store_sync import KILL, OVERRIDE, SPLIT, notify_peers, read_splits
from tipkit.stores import Store

__all__ = ["Admin", "check_key", "check_rule_id"]

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

    *flag_set*, where asked for, is the snapshot being served: a split is
    validated against its flag. Thread-safe: each write is one store
    operation, a split's read-modify-write a compare-and-set.
    """

    __slots__ = ("namespace", "store")

    def __init__(self, store: Store, namespace: str) -> None:
        self.store = store
        self.namespace = namespace

    def _written(self) -> None:
        notify_peers(self.store)

    # -- kill switches ------------------------------------------------------------
    def kill(self, key: str, flag_set: FlagSet | None) -> None:
        """Write the kill switch of *key*."""
        check_key(key)
        fs = flag_set
        if fs is not None and key not in fs.flags:
            logger.warning(
                "tipkit: killing flag %r, which this process does not know", key
            )
        self.store.set(self.namespace, KILL + key, value=True)
        self._written()

    def revive(self, key: str) -> None:
        """Remove the kill switch of *key*."""
        check_key(key)
        self.store.delete(self.namespace, KILL + key)
        self._written()

    # -- overrides ----------------------------------------------------------------
    def set_override(self, key: str, value_or_variant: Any) -> None:
        """Write the override of *key*."""
        check_key(key)
        self.store.set(self.namespace, OVERRIDE + key, {"value": value_or_variant})
        self._written()

    def clear_override(self, key: str) -> None:
        """Remove the override of *key*."""
        check_key(key)
        self.store.delete(self.namespace, OVERRIDE + key)
        self._written()

    @contextmanager
    def override(self, key: str, value_or_variant: Any) -> Iterator[None]:
        """Override *key* inside the block, then restore what was there."""
        check_key(key)
        previous = self.store.get(self.namespace, OVERRIDE + key)
        self.set_override(key, value_or_variant)
        try:
            yield
        finally:
            if previous is None:
                self.clear_override(key)
            else:
                self.store.set(self.namespace, OVERRIDE + key, previous.value)
                self._written()

    # -- run-time splits ----------------------------------------------------------
    def set_split(
        self,
        key: str,
        weights: Mapping[str, float | Decimal],
        rule_id: str | None,
        flag_set: FlagSet | None,
    ) -> None:
        """Validate *weights* against the flag and write them for the target."""
        check_key(key)
        check_rule_id(rule_id)
        flag = _split_target(key, rule_id, flag_set)
        field = "fallthrough" if rule_id is None else f"rules[{rule_id}].serve"
        parsed = check_split(key, weights, flag.variants, field, "set_split")
        target = rule_id or ""

        def write(current: dict[str, Any]) -> dict[str, Any]:
            current[target] = parsed
            return current

        self._update_splits(key, write)

    def clear_split(self, key: str, rule_id: str | None) -> None:
        """Remove the run-time split of the target, if any."""
        check_key(key)
        check_rule_id(rule_id)
        target = rule_id or ""

        def remove(current: dict[str, Any]) -> dict[str, Any]:
            current.pop(target, None)
            return current

        self._update_splits(key, remove)

    def get_split(self, key: str, rule_id: str | None) -> dict[str, float] | None:
        """Read the run-time split of the target from the store now (percent)."""
        check_key(key)
        check_rule_id(rule_id)
        entry = self.store.get(self.namespace, SPLIT + key)
        weights = None if entry is None else read_splits(entry.value).get(rule_id)
        if weights is None:
            return None
        return {name: w / 1000 for name, w in weights.items()}

    def _update_splits(
        self, key: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        store, ns, name = self.store, self.namespace, SPLIT + key
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
                self._written()
                return
        raise StoreConflictError(
            f"the run-time split of flag {key!r} kept changing; not written",
            namespace=ns,
            key=name,
            tries=_CAS_TRIES,
        )


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
