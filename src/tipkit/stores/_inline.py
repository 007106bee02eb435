"""The async twins of an in-process store, written once: they run inline.

A store whose operations never block (``MemoryStore``, its audit log) answers
its async methods by calling the sync ones: :func:`inline_twin` makes each such
method from its sync twin, keeping the signature for type checkers and docs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

__all__ = ["inline_twin"]

S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")


def inline_twin(
    method: Callable[Concatenate[S, P], R],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """Return the async twin of a store method that never blocks: it runs inline.

    One body for every async method of an in-process store, with the sync
    method's signature (``functools.wraps``) and name prefixed with ``a``. It
    looks the sync method up on the object, so a subclass that overrides the
    sync method changes its twin too (as ``await self.get(...)`` did).
    """
    name = method.__name__

    @functools.wraps(method)
    async def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return getattr(self, name)(*args, **kwargs)  # type: ignore[no-any-return]  # the method wrapped

    owner, _, _ = method.__qualname__.rpartition(".")
    twin.__name__ = f"a{name}"
    twin.__qualname__ = f"{owner}.a{name}" if owner else f"a{name}"
    twin.__doc__ = f"Async twin of :meth:`{method.__name__}` (runs inline)."
    return twin
