"""Find the live tipkit objects of an application, through references only.

Two ways in: from an *app* object (and its module's globals), following
references (``gc.get_referents``) without entering other modules, classes or
code, so only what the app can reach is examined; or, with no app, every live
object the garbage collector tracks (what ``check()`` at start-up sees).
Nothing is imported or called: a finding is about the configuration as built.
"""

from __future__ import annotations

import gc
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import CodeType, FrameType, FunctionType, ModuleType
from typing import Any

from tipkit._core._guard import Guard
from tipkit._core._keyed import Keyed
from tipkit.breaker import CircuitBreaker
from tipkit.experiment import Experiment
from tipkit.experiment._irreversible import irreversible_reason
from tipkit.flags import Flags
from tipkit.rollout import Rollout
from tipkit.tripwire import Tripwire

__all__ = ["Inventory", "discover", "innermost", "reachable"]

_LIMIT = 500_000  # objects walked at most: a big app is examined in well under a second
_ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None))
_OPAQUE = (type, ModuleType, CodeType, FrameType)


@dataclass
class Inventory:
    """The tipkit objects found, by kind (each list in discovery order, no repeats)."""

    flags: list[Flags] = field(default_factory=list)
    rollouts: list[Rollout] = field(default_factory=list)
    breakers: list[CircuitBreaker] = field(default_factory=list)
    guards: list[Any] = field(default_factory=list)
    tripwires: list[Tripwire] = field(default_factory=list)
    experiments: list[Experiment[Any, Any]] = field(default_factory=list)
    irreversible: list[Callable[..., Any]] = field(default_factory=list)
    redis_stores: list[Any] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Return how many objects of each kind were found."""
        return {
            "flags": len(self.flags),
            "rollouts": len(self.rollouts),
            "breakers": len(self.breakers),
            "other guards": len(self.guards),
            "tripwires": len(self.tripwires),
            "experiments": len(self.experiments),
            "irreversible functions": len(self.irreversible),
            "redis stores": len(self.redis_stores),
        }

    def add(self, obj: object) -> None:
        """File *obj* under its kind, if it is one doctor examines."""
        if isinstance(obj, Flags):
            self.flags.append(obj)
        elif isinstance(obj, Rollout):
            self.rollouts.append(obj)
        elif isinstance(obj, CircuitBreaker):
            self.breakers.append(obj)
        elif isinstance(obj, Tripwire):
            self.tripwires.append(obj)
        elif isinstance(obj, Guard | Keyed) and hasattr(type(obj), "mode"):
            self.guards.append(obj)
        elif isinstance(obj, Experiment):
            self.experiments.append(obj)
        elif _is_redis_store(obj):
            self.redis_stores.append(obj)
        elif isinstance(obj, FunctionType) and irreversible_reason(obj) is not None:
            # functools.wraps copies the mark onto every wrapper: file the
            # innermost function once.
            inner = innermost(obj)
            if all(inner is not seen for seen in self.irreversible):
                self.irreversible.append(inner)


def innermost(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return the function at the end of *fn*'s ``__wrapped__`` chain."""
    seen: set[int] = set()
    while (inner := getattr(fn, "__wrapped__", None)) is not None and id(
        fn
    ) not in seen:
        seen.add(id(fn))
        fn = inner
    return fn


def _is_redis_store(obj: object) -> bool:
    # By name: checking must not import redis into an app that does not use it.
    cls = type(obj)
    return cls.__name__ == "RedisStore" and cls.__module__.startswith("tipkit.stores")


def reachable(roots: Iterable[object], *, limit: int = _LIMIT) -> Iterable[object]:
    """Yield every object reachable from *roots*, each once, breadth first.

    Does not enter modules other than those among *roots*, nor classes, code or
    frames: an app's reach stops at the libraries it imports.
    """
    roots = list(roots)
    entered = {id(vars(r)) for r in roots if isinstance(r, ModuleType)}
    namespaces = (getattr(m, "__dict__", None) for m in list(sys.modules.values()))
    module_dicts = {id(d) for d in namespaces if d is not None} - entered
    seen: set[int] = set()
    keep: list[object] = []  # ids stay unique only while their objects live
    queue: deque[object] = deque(roots)
    while queue and len(keep) < limit:
        obj = queue.popleft()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        keep.append(obj)
        yield obj
        if isinstance(obj, _ATOMS) or id(obj) in module_dicts:
            continue
        if isinstance(obj, ModuleType):
            if id(vars(obj)) in entered:
                queue.append(vars(obj))
            continue
        if isinstance(obj, _OPAQUE):
            continue
        queue.extend(gc.get_referents(obj))


def discover(app: object | None = None) -> Inventory:
    """Return the inventory of what *app* reaches, or of the whole process if ``None``.

    With *app*, its module's globals are roots too (a module-level ``flags``
    beside an app object is part of the app).
    """
    inventory = Inventory()
    if app is None:
        for obj in gc.get_objects():
            inventory.add(obj)
        return inventory
    roots: list[object] = [app]
    module = sys.modules.get(getattr(app, "__module__", "") or "")
    if isinstance(app, ModuleType):
        module = app
    if module is not None and module is not app:
        roots.append(module)
    for obj in reachable(roots):
        inventory.add(obj)
    return inventory
