"""Fork safety: re-create per-process state in a forked child.

Servers fork workers after importing the app (gunicorn ``--preload``,
multiprocessing's ``fork`` start method). A lock held by another thread at the
moment of the fork stays held forever in the child, because that thread does not
exist there. Objects that own locks register here; the child re-creates them.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Protocol

__all__ = ["ForkAware", "new_lock", "register"]


class ForkAware(Protocol):
    """An object that can rebuild its per-process state in a forked child."""

    def _after_fork_in_child(self) -> None: ...


_objects: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def register(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every forked child while *obj* lives.

    Thread-safe: ``WeakSet.add`` runs under the GIL. Costs one set insertion, at
    construction only.
    """
    _objects.add(obj)


def new_lock() -> threading.Lock:
    """Return a new lock (the seam that keeps lock creation in one place)."""
    return threading.Lock()


def _reinit_in_child() -> None:
    for obj in list(_objects):
        obj._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_reinit_in_child)
