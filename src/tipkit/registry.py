"""Where the operator tools find what runs: components register themselves in the store.

Each store-backed component (a :class:`~tipkit.flags.Flags`, a
:class:`~tipkit.rollout.Rollout`, a shared breaker or limiter) writes one entry
``tipkit.registry/<kind>/<name>/<instance>`` at construction: its kind, name, a
summary of its configuration (flag keys and variants, stages, thresholds,
rates: never user data), the process that runs it and a heartbeat time. So
``tipkit ops flags list`` run right after an application built its ``Flags``
finds the flags, with their variants to check an override or a split against.

Best effort: a store that fails at construction costs the component nothing
(one store timeout at most, never an exception); the entry is written again
by the next :func:`beat`, which also refreshes every heartbeat. A daemon
thread beats every :data:`HEARTBEAT` seconds, and every :data:`RETRY` seconds
while a registration has not reached its store (recovery). Entries expire
after :data:`TTL` seconds without a heartbeat (store time, and on read), so a
process that died drops out.

Each process and component instance has its own entry; :func:`components`
merges the live instances of one name: two ``Flags`` of one namespace in two
services (or two objects in one process) with different flags list the union
of their flags.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from tipkit.clock import SYSTEM_CLOCK, Clock

__all__ = [
    "HEARTBEAT",
    "NAMESPACE",
    "RETRY",
    "TTL",
    "Component",
    "Registration",
    "beat",
    "components",
    "register",
    "register_breaker",
    "register_flags",
    "register_limit",
    "register_limit_of",
    "register_rollout",
]

logger = logging.getLogger("tipkit")

NAMESPACE: Final = "tipkit.registry"
HEARTBEAT: Final = 30.0
"""Seconds between heartbeats."""
TTL: Final = 3 * HEARTBEAT
"""Seconds an entry lives without a heartbeat."""
RETRY: Final = 2.0
"""Seconds between retries of registrations that did not reach their store."""

Live = Callable[[], Mapping[str, Any]]


class Registration:
    """One component's entry; kept (weakly) by the process-wide registry.

    ``ok`` says whether the last write reached the store. Thread-safe enough:
    the writes are idempotent writes of the same key.
    """

    __slots__ = (
        "__weakref__",
        "_live",
        "clock",
        "config",
        "key",
        "kind",
        "name",
        "ok",
        "store",
    )

    def __init__(  # noqa: PLR0917  # built by register() only
        self,
        store: Any,
        kind: str,
        name: str,
        config: Mapping[str, Any],
        live: Live | None,
        clock: Clock,
    ) -> None:
        self.store = store
        self.kind = kind
        self.name = name
        self.config = dict(config)
        self._live = live
        self.clock = clock
        self.ok = False
        instance = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.key = f"{kind}/{name}/{instance}"

    def __repr__(self) -> str:
        return f"<Registration {self.kind}/{self.name} ok={self.ok}>"

    def write(self) -> bool:
        """Write the entry with a fresh heartbeat; return whether the store took it."""
        value: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "config": self.config,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "heartbeat": self.clock.time(),
        }
        if self._live is not None:
            try:
                value["live"] = dict(self._live())
            except Exception:  # a summary must never break the component
                logger.exception(
                    "tipkit: live summary of %s/%s failed", self.kind, self.name
                )
        try:
            self.store.set(NAMESPACE, self.key, value, ttl=TTL)
        except Exception as exc:  # the store is down: beat() tries again
            logger.info(
                "tipkit: registering %s/%s failed: %s", self.kind, self.name, exc
            )
            self.ok = False
            return False
        self.ok = True
        return True


_ALL: weakref.WeakSet[Registration] = weakref.WeakSet()
_LOCK = threading.Lock()
_THREAD: list[threading.Thread] = []


def register(
    store: Any,
    kind: str,
    name: str,
    config: Mapping[str, Any],
    *,
    live: Live | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Registration:
    """Register a component in *store* now (best effort); keep it beating.

    Blocks for one store write (bounded by the store's timeout); never raises
    on a store failure. The caller keeps the returned object alive as long
    as the component lives (the registry holds it weakly).
    """
    reg = Registration(store, kind, name, config, live, clock)
    reg.write()
    with _LOCK:
        _ALL.add(reg)
        if clock is SYSTEM_CLOCK and not _THREAD:
            thread = threading.Thread(target=_run, name="tipkit-registry", daemon=True)
            _THREAD.append(thread)
            thread.start()
    return reg


def beat() -> int:
    """Write every live registration again (heartbeat, or retry after an outage).

    Returns how many reached their store.
    """
    with _LOCK:
        regs = list(_ALL)
    return sum(reg.write() for reg in regs)


def _run() -> None:  # pragma: no cover - the daemon thread of real processes
    wait = HEARTBEAT
    while True:
        SYSTEM_CLOCK.sleep(wait)
        with _LOCK:
            regs = list(_ALL)
        # A registration that failed (the store was down) is retried soon.
        wait = HEARTBEAT if all(r.ok for r in regs) else RETRY
        if wait == RETRY:
            _retry(regs)
        else:
            beat()


def _retry(regs: list[Registration]) -> None:  # pragma: no cover - daemon thread
    for reg in regs:
        if not reg.ok:
            reg.write()


def _after_fork_in_child() -> None:  # pragma: no cover - forked children only
    global _LOCK  # noqa: PLW0603  # a lock held by another thread at fork is dead
    _LOCK = threading.Lock()
    _THREAD.clear()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(frozen=True, slots=True)
class Component:
    """A registered component as the fleet sees it (its instances merged).

    Attributes:
        kind, name: what it is (``"flags"``, ``"rollout"``, ``"breaker"``, ``"limit"``).
        config: the instances' summaries merged: mappings (a namespace's
            ``flags``) are the union of every instance's, other values the most
            recent instance's.
        heartbeat: the latest heartbeat of any instance (epoch seconds).
        instances: how many processes registered it and are alive.
        live: the latest instance's live summary (``{}`` if none).
    """

    kind: str
    name: str
    config: dict[str, Any]
    heartbeat: float
    instances: int
    live: dict[str, Any] = field(default_factory=dict)


def components(
    store: Any, kind: str | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> list[Component]:
    """Return the registered components of *store* (of *kind*), sorted by kind and name.

    Instances of one kind and name are merged (see :class:`Component`);
    an instance without a heartbeat for :data:`TTL` seconds (by *clock*'s
    ``time()``) is left out, even if the store has not expired it yet.

    Raises:
        StoreError: the store could not be read.
    """
    snap = store.snapshot(NAMESPACE)
    floor = clock.time() - TTL
    merged: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in snap.entries.values():
        v = entry.value
        if not isinstance(v, dict) or (kind is not None and v.get("kind") != kind):
            continue
        if _beat(v) < floor:
            continue  # a process that stopped beating (the store kept it)
        merged.setdefault((str(v.get("kind")), str(v.get("name"))), []).append(v)
    out = []
    for (k, n), values in sorted(merged.items()):
        values.sort(key=_beat)  # oldest first: the latest instance's values win
        out.append(
            Component(
                k,
                n,
                _union(v.get("config") for v in values),
                _beat(values[-1]),
                len(values),
                _union(v.get("live") for v in values),
            )
        )
    return out


def _beat(value: Mapping[str, Any]) -> float:
    try:
        return float(value.get("heartbeat", 0))
    except (TypeError, ValueError):  # written by hand or by something else
        return 0.0


def _union(parts: Any) -> dict[str, Any]:
    """Merge summaries in order: mappings are united, other values replaced."""
    out: dict[str, Any] = {}
    for part in parts:
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            old = out.get(key)
            if isinstance(old, dict) and isinstance(value, dict):
                out[key] = {**old, **value}
            else:
                out[key] = value
    return out


# -- what each kind of component says about itself (duck-typed: no imports upward)
def _flags_summary(flags: Any) -> dict[str, Any]:
    fs = flags.flag_set
    defs = {} if fs is None else fs.flags
    return {
        "flags": {
            key: {"variants": list(f.variants), "off_variant": f.off_variant}
            for key, f in sorted(defs.items())
        }
    }


def _known_kills(flags: Any) -> frozenset[str]:
    """The kills *flags* last read from its store: no store read (building must not)."""
    state = getattr(
        getattr(getattr(flags, "_source", None), "sync", None), "state", None
    )
    kills = getattr(state, "kills", None)
    return kills if isinstance(kills, frozenset) else frozenset()


def register_flags(flags: Any, namespace: str = "flags") -> Registration:
    """Register a :class:`~tipkit.flags.Flags` (its keys and variants) in its store."""
    return register(
        flags.store,
        "flags",
        namespace,
        _flags_summary(flags),
        live=lambda: {"killed": sorted(_known_kills(flags))},
    )


def register_rollout(rollout: Any, store: Any) -> Registration:
    """Register a :class:`~tipkit.rollout.Rollout` (stages, flag, judge's last verdict)."""

    def live() -> dict[str, Any]:
        verdict = getattr(getattr(rollout, "_local", None), "verdict", None)
        return {} if verdict is None else {"verdict": verdict.as_dict()}

    return register(
        store,
        "rollout",
        rollout.name,
        {
            "flag": rollout.flag,
            "stages": list(rollout.stages),
            "runbook": rollout.runbook,
            "min_samples": rollout.min_samples,
            "confidence": rollout.confidence,
        },
        live=live,
    )


def register_breaker(breaker: Any, store: Any) -> Registration:
    """Register a shared :class:`~tipkit.breaker.CircuitBreaker` (thresholds, state)."""
    cfg = breaker._cfg  # the breaker's own summary of its options
    return register(
        store,
        "breaker",
        breaker.name,
        {
            "failure_rate_threshold": cfg.failure_threshold,
            "minimum_calls": cfg.min_calls,
            "runbook": breaker.runbook,
        },
        live=lambda: {"state": breaker.state.value},
    )


def register_limit(
    limiter: Any, store: Any, *, rate: float, capacity: float, keyed: bool
) -> Registration:
    """Register a shared rate limiter (its rate and capacity; never its keys)."""
    return register(
        store,
        "limit",
        limiter.name,
        {"rate": rate, "capacity": capacity, "keyed": keyed},
    )


def register_limit_of(
    store: Any, name: str, *, rate: float, capacity: float, keyed: bool
) -> Registration | None:
    """Register the shared limiter *name*; ``None`` if *store* keeps no entries.

    A token store that is not also a key-value store (``set``/``snapshot``)
    has nowhere to keep the entry: the limiter is then not listed.
    """
    if not (hasattr(store, "set") and hasattr(store, "snapshot")):
        return None
    return register(
        store, "limit", name, {"rate": rate, "capacity": capacity, "keyed": keyed}
    )
