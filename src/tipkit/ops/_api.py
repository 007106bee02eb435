"""The operator API over a store: what ``tipkit ops`` and ``tipkit console`` call.

:class:`Operator` reads and writes the same store entries the primitives read
(kill switches, overrides and splits of a ``Flags`` namespace, a rollout's
state document, a shared breaker's state) and finds what exists in the
registry (:mod:`tipkit.registry`). Every write is a compare-and-set appended
to the audit log in the same atomic step (``audited_compare_and_set``): a
concurrent writer that got there first makes the write refused (the loser is
told, nothing written); a store that goes away mid-write leaves both the state
and the log as they were.

Reads return plain JSON-compatible dicts (what ``--json`` prints).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from tipkit import audit, registry
from tipkit.audit import AuditRecord
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import ConfigError, RolloutStateError
from tipkit.flags._document import check_split
from tipkit.flags._store_sync import KILL, OVERRIDE, SPLIT, read_splits
from tipkit.rollout import _state
from tipkit.stores._audit import AuditStore

__all__ = ["BREAKERS", "ROLLOUTS", "Conflict", "Operator", "Refused"]

ROLLOUTS: Final = "tipkit.rollouts"
BREAKERS: Final = "breakers"
_FLAGS: Final = "flags"
_BREAKER_STATES: Final = {
    "open": "forced_open",
    "disable": "disabled",
    "reset": "closed",
}


class Refused(Exception):  # noqa: N818  # an outcome, not a bug: "refused: <why>"
    """The action was refused (exit code 1); the message says why. Nothing changed."""


class Conflict(Refused):
    """Another writer changed the target first (compare-and-set lost). Nothing changed."""


class _FlagOps:
    """The audited write and the flag actions of :class:`Operator`."""

    def __init__(
        self, store: Any, *, actor: str | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.store = store
        self.actor = audit.actor_or_default(actor)
        self.clock = clock

    def __repr__(self) -> str:
        return f"<Operator actor={self.actor!r} store={self.store!r}>"

    # -- the audited write ---------------------------------------------------------
    def _write(
        self,
        namespace: str,
        key: str,
        value: Any,
        version: int,
        *,
        action: str,
        target: str,
        reason: str,
        before: Mapping[str, Any],
        after: Mapping[str, Any],
        runbook: str | None = None,
        ttl: float | None = None,
    ) -> AuditRecord | None:
        doc = audit.stored(
            actor=self.actor,
            action=action,
            target=target,
            reason=reason,
            before=before,
            after=after,
            runbook=runbook,
        )
        store = self.store
        if isinstance(store, AuditStore):
            done = store.audited_compare_and_set(
                namespace, key, value, version=version, record=doc, ttl=ttl
            )
            if done is None:
                raise _conflict(target)
            return audit.published(done[1])
        if (
            store.compare_and_set(namespace, key, value, version=version, ttl=ttl)
            is None
        ):
            raise _conflict(target)
        return None

    # -- flags ---------------------------------------------------------------------
    def _flag_defs(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Return ``{key: (namespace, definition)}`` from the registry."""
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for comp in registry.components(self.store, "flags"):
            for key, definition in (comp.config.get("flags") or {}).items():
                out.setdefault(key, (comp.name, dict(definition)))
        return out

    def flags(self) -> list[dict[str, Any]]:
        """Return every known flag (registered, or with shared state) and its state."""
        defs = self._flag_defs()
        namespaces = {ns for ns, _ in defs.values()} | {_FLAGS}
        keys: dict[str, str] = {k: ns for k, (ns, _) in defs.items()}
        for ns in sorted(namespaces):
            for name in self.store.snapshot(ns).entries:
                for prefix in (KILL, OVERRIDE, SPLIT):
                    if name.startswith(prefix):
                        keys.setdefault(name[len(prefix) :], ns)
        return [self._flag_view(k, ns, defs.get(k)) for k, ns in sorted(keys.items())]

    def flag(self, key: str) -> dict[str, Any]:
        """Return one flag's definition summary and shared state.

        Raises:
            Refused: no registered flag and no shared state has this key.
        """
        ns, definition = self._find_flag(key, need_definition=False)
        return self._flag_view(
            key, ns, None if definition is None else (ns, definition)
        )

    def _find_flag(
        self, key: object, *, need_definition: bool
    ) -> tuple[str, dict[str, Any] | None]:
        if not isinstance(key, str) or not key:
            raise Refused(f"a flag key must be a non-empty string, got {key!r}")
        defs = self._flag_defs()
        if key in defs:
            return defs[key][0], defs[key][1]
        known = self._flag_state(_FLAGS, key)[1]
        if known and not need_definition:
            return _FLAGS, None
        hint = (
            f"; known flags: {', '.join(sorted(defs)[:20])}"
            if defs
            else (
                "; no application has registered flags in this store (check --store and --prefix)"
            )
        )
        raise Refused(f"unknown flag {key!r}{hint}")

    def _flag_state(self, ns: str, key: str) -> tuple[dict[str, Any], bool]:
        snap = self.store.snapshot(ns).entries
        kill, over, split = (snap.get(p + key) for p in (KILL, OVERRIDE, SPLIT))
        override = (
            over.value.get("value")
            if over is not None and isinstance(over.value, dict)
            else None
        )
        splits = read_splits(split.value).get(None) if split is not None else None
        state = {
            "killed": bool(kill is not None and kill.value),
            "override": override,
            "split": None if not splits else {v: w / 1000 for v, w in splits.items()},
        }
        return state, any(e is not None for e in (kill, over, split))

    def _flag_view(
        self, key: str, ns: str, found: tuple[str, dict[str, Any]] | None
    ) -> dict[str, Any]:
        state, _ = self._flag_state(ns, key)
        definition = {} if found is None else found[1]
        return {
            "key": key,
            "namespace": ns,
            "registered": found is not None,
            "variants": list(definition.get("variants", [])),
            "off_variant": definition.get("off_variant"),
            "runbook": definition.get("runbook"),
            **state,
        }

    def _flag_target(self, ns: str, key: str) -> str:
        return f"flag:{key}" if ns == _FLAGS else f"flag:{ns}/{key}"

    def _flag_write(
        self,
        key: str,
        prefix: str,
        value: Any,
        *,
        action: str,
        reason: str,
        part: str,
        new: Any,
        need_definition: bool = False,
    ) -> AuditRecord | None:
        reason = _reason(reason)
        ns, definition = self._find_flag(key, need_definition=need_definition)
        entry = self.store.get(ns, prefix + key)
        state, _ = self._flag_state(ns, key)
        if state[part] == new:
            return None  # nothing to change: nothing written, nothing audited
        return self._write(
            ns,
            prefix + key,
            value,
            0 if entry is None else entry.version,
            action=action,
            target=self._flag_target(ns, key),
            reason=reason,
            before={part: state[part]},
            after={part: new},
            runbook=None if definition is None else definition.get("runbook"),
        )

    def kill(self, key: str, *, reason: str) -> AuditRecord | None:
        """Kill flag *key* for the fleet; ``None`` if it was already killed."""
        return self._flag_write(
            key,
            KILL,
            value=True,
            action="flag.kill",
            reason=reason,
            part="killed",
            new=True,
        )

    def revive(self, key: str, *, reason: str) -> AuditRecord | None:
        """Undo a kill of *key*; ``None`` if it was not killed."""
        return self._flag_write(
            key,
            KILL,
            value=False,
            action="flag.revive",
            reason=reason,
            part="killed",
            new=False,
        )

    def set_override(
        self, key: str, variant: str, *, reason: str
    ) -> AuditRecord | None:
        """Serve *variant* of *key* to everyone until cleared.

        Raises:
            Refused: unknown flag, or *variant* is not one of its variants.
        """
        _, definition = self._find_flag(key, need_definition=True)
        variants = list((definition or {}).get("variants", []))
        if variant not in variants:
            raise Refused(
                f"flag {key!r} has no variant {variant!r}; its variants: {', '.join(variants)}"
            )
        return self._flag_write(
            key,
            OVERRIDE,
            {"value": variant},
            action="flag.override",
            reason=reason,
            part="override",
            new=variant,
            need_definition=True,
        )

    def clear_override(self, key: str, *, reason: str) -> AuditRecord | None:
        """Remove the override of *key*; ``None`` if there was none."""
        return self._flag_write(
            key,
            OVERRIDE,
            None,
            action="flag.clear_override",
            reason=reason,
            part="override",
            new=None,
        )

    def set_split(
        self, key: str, weights: Mapping[str, float | Decimal], *, reason: str
    ) -> AuditRecord | None:
        """Serve *key*'s fallthrough with *weights* (percent per variant, summing to 100).

        Raises:
            Refused: unknown flag or variant, or weights that are not a split.
        """
        _, definition = self._find_flag(key, need_definition=True)
        variants = dict.fromkeys((definition or {}).get("variants", []))
        try:
            parsed = check_split(key, weights, variants, "fallthrough", "tipkit ops")
        except ConfigError as exc:
            raise Refused(str(exc)) from None
        split = {v: w / 1000 for v, w in parsed.items()}
        return self._flag_write(
            key,
            SPLIT,
            {"": parsed},
            action="flag.split",
            reason=reason,
            part="split",
            new=split,
            need_definition=True,
        )

    def clear_split(self, key: str, *, reason: str) -> AuditRecord | None:
        """Remove the run-time split of *key*'s fallthrough; ``None`` if there was none."""
        return self._flag_write(
            key,
            SPLIT,
            {},
            action="flag.clear_split",
            reason=reason,
            part="split",
            new=None,
        )


class Operator(_FlagOps):
    """Read and act on a store's flags, rollouts, breakers and limits, audited.

    Args:
        store: the application's store (``RedisStore(url, prefix=...)``).
        actor: who acts (default: the operating-system user).
        clock: ``time()`` stamps rollout transitions and time in stage.

    Every action needs a non-empty *reason*. Raises :class:`Refused` (bad input,
    an unknown target, a conflict: nothing changed) and
    :class:`~tipkit.errors.StoreError` (the store is unreachable). Thread-safe.
    """

    # -- rollouts ------------------------------------------------------------------
    def rollouts(self) -> list[dict[str, Any]]:
        """Return every rollout with a stored state (and registered ones without)."""
        names = {k for k in self.store.snapshot(ROLLOUTS).entries if "/" not in k} | {
            c.name for c in registry.components(self.store, "rollout")
        }
        return [self._rollout_view(n) for n in sorted(names)]

    def rollout(self, name: str) -> dict[str, Any]:
        """Return one rollout: stage, arms' counts and rates, the judge's bound, time in stage.

        Raises:
            Refused: no rollout has this name.
        """
        view = self._rollout_view(name)
        if view["status"] is None and not view["registered"]:
            raise Refused(f"unknown rollout {name!r}{self._known('rollout', ROLLOUTS)}")
        return view

    def _known(self, kind: str, ns: str) -> str:
        names = {k for k in self.store.snapshot(ns).entries if "/" not in k}
        names |= {c.name for c in registry.components(self.store, kind)}
        return (
            f"; known: {', '.join(sorted(names))}"
            if names
            else f"; no {kind} in this store"
        )

    def _rollout_view(self, name: str) -> dict[str, Any]:
        entry = self.store.get(ROLLOUTS, name)
        comps = [
            c for c in registry.components(self.store, "rollout") if c.name == name
        ]
        live = comps[0].live if comps else {}
        out: dict[str, Any] = {
            "name": name,
            "registered": bool(comps),
            "status": None,
            "runbook": comps[0].config.get("runbook") if comps else None,
        }
        if entry is None or not isinstance(entry.value, dict):
            return out
        doc = entry.value
        stages = tuple(float(s) for s in doc.get("stages", ()))
        v = _state.view(doc, stages)
        history = list(doc.get("history", []))
        verdict = live.get("verdict") or next(
            (h["verdict"] for h in reversed(history) if h.get("verdict")), None
        )
        out.update(
            flag=doc.get("flag"),
            status=v.status,
            stage=v.stage,
            stages=list(stages),
            percent=v.percent,
            attempt=v.attempt,
            time_in_stage=max(self.clock.time() - v.stage_started, 0.0),
            verdict=verdict,
            history=history[-10:],
        )
        return out

    def _rollout_act(
        self, name: str, action: _state.Action, reason: str
    ) -> AuditRecord | None:
        reason = _reason(reason)
        entry = self.store.get(ROLLOUTS, name)
        if entry is None or not isinstance(entry.value, dict):
            raise Refused(f"unknown rollout {name!r}{self._known('rollout', ROLLOUTS)}")
        doc = entry.value
        stages = tuple(float(s) for s in doc["stages"])
        before = _state.view(doc, stages)
        try:
            step = _state.manual(
                action,
                doc,
                reason,
                self.clock.time(),
                verdict=None,
                before=before.percent,
                name=name,
            )
        except RolloutStateError as exc:
            raise Refused(str(exc)) from None
        new = step.apply(doc, stages)
        if new is None:
            return None  # already in that state
        after = _state.view(new, stages)
        label = "promote" if action == "advance" else step.action
        comps = [
            c for c in registry.components(self.store, "rollout") if c.name == name
        ]
        return self._write(
            ROLLOUTS,
            name,
            new,
            entry.version,
            action=f"rollout.{label}",
            target=f"rollout:{name}",
            reason=reason,
            before=_rollout_state(before),
            after=_rollout_state(after),
            runbook=comps[0].config.get("runbook") if comps else None,
        )

    def pause(self, name: str, *, reason: str) -> AuditRecord | None:
        """Pause rollout *name* (it keeps serving its share and judging)."""
        return self._rollout_act(name, "pause", reason)

    def resume(self, name: str, *, reason: str) -> AuditRecord | None:
        """Resume a paused rollout, or restart a rolled-back one."""
        return self._rollout_act(name, "resume", reason)

    def promote(self, name: str, *, reason: str) -> AuditRecord | None:
        """Move rollout *name* to its next stage now, whatever the judge says."""
        return self._rollout_act(name, "advance", reason)

    def rollback(self, name: str, *, reason: str) -> AuditRecord | None:
        """Roll rollout *name* back: every process serves its control."""
        return self._rollout_act(name, "rollback", reason)

    # -- breakers ------------------------------------------------------------------
    def breakers(self) -> list[dict[str, Any]]:
        """Return every shared breaker (registered or with a shared state)."""
        names = set(self.store.snapshot(BREAKERS).entries)
        names |= {c.name for c in registry.components(self.store, "breaker")}
        return [self._breaker_view(n) for n in sorted(names)]

    def breaker(self, name: str) -> dict[str, Any]:
        """Return one breaker's shared state, configuration and live numbers."""
        view = self._breaker_view(name)
        if view["shared_state"] is None and not view["registered"]:
            raise Refused(f"unknown breaker {name!r}{self._known('breaker', BREAKERS)}")
        return view

    def _breaker_view(self, name: str) -> dict[str, Any]:
        entry = self.store.get(BREAKERS, name)
        comps = [
            c for c in registry.components(self.store, "breaker") if c.name == name
        ]
        shared = (
            entry.value.get("state")
            if entry is not None and isinstance(entry.value, dict)
            else None
        )
        return {
            "name": name,
            "registered": bool(comps),
            "shared_state": shared,
            "state": shared
            or (comps[0].live.get("state") if comps else None)
            or "closed",
            "config": comps[0].config if comps else {},
            "live": comps[0].live if comps else {},
            "instances": comps[0].instances if comps else 0,
            "runbook": comps[0].config.get("runbook") if comps else None,
        }

    def _breaker_act(self, name: str, op: str, reason: str) -> AuditRecord | None:
        reason = _reason(reason)
        view = self.breaker(name)
        to = _BREAKER_STATES[op]
        if view["shared_state"] == to:
            return None
        entry = self.store.get(BREAKERS, name)
        return self._write(
            BREAKERS,
            name,
            {"state": to},
            0 if entry is None else entry.version,
            action=f"breaker.{op}",
            target=f"breaker:{name}",
            reason=reason,
            before={"state": view["state"]},
            after={"state": to},
            runbook=view["runbook"],
        )

    def open_breaker(self, name: str, *, reason: str) -> AuditRecord | None:
        """Force breaker *name* open in every process (``force_open``)."""
        return self._breaker_act(name, "open", reason)

    def disable_breaker(self, name: str, *, reason: str) -> AuditRecord | None:
        """Let every call through breaker *name* in every process (``disable``)."""
        return self._breaker_act(name, "disable", reason)

    def reset_breaker(self, name: str, *, reason: str) -> AuditRecord | None:
        """Close breaker *name* in every process (``reset``)."""
        return self._breaker_act(name, "reset", reason)

    # -- limits --------------------------------------------------------------------
    def limits(self) -> list[dict[str, Any]]:
        """Return every registered shared rate limiter."""
        return [_limit_view(c) for c in registry.components(self.store, "limit")]

    def limit(self, name: str) -> dict[str, Any]:
        """Return one limiter's configuration and live numbers."""
        for comp in registry.components(self.store, "limit"):
            if comp.name == name:
                return _limit_view(comp)
        known = [c.name for c in registry.components(self.store, "limit")]
        raise Refused(
            f"unknown limit {name!r}"
            + (f"; known: {', '.join(known)}" if known else "; no limit in this store")
        )

    # -- the log -------------------------------------------------------------------
    def audit(
        self,
        *,
        target: str | None = None,
        actor: str | None = None,
        since: str | float | None = None,
        after: str | None = None,
    ) -> list[AuditRecord]:
        """Return the audit records (see :func:`tipkit.audit.read`)."""
        try:
            return audit.read(
                self.store, target, actor, since, after=after, clock=self.clock
            )
        except ValueError as exc:
            raise Refused(str(exc)) from None


def _limit_view(comp: registry.Component) -> dict[str, Any]:
    return {
        "name": comp.name,
        "config": comp.config,
        "live": comp.live,
        "instances": comp.instances,
        "heartbeat": comp.heartbeat,
    }


def _rollout_state(v: _state.View) -> dict[str, Any]:
    return {"status": v.status, "stage": v.stage, "percent": v.percent}


def _reason(reason: object) -> str:
    try:
        return audit.check_reason(reason)
    except ValueError as exc:
        raise Refused(str(exc)) from None


def _conflict(target: str) -> Conflict:
    return Conflict(
        f"{target} was changed by someone else while this action was being applied; "
        "nothing was written: look again (show) and retry if still needed"
    )
