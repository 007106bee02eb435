"""Marks for side-effecting functions that shadow runs must not repeat."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Final, TypeVar, overload

__all__ = ["irreversible", "irreversible_reason", "is_irreversible"]

F = TypeVar("F", bound=Callable[..., Any])
_MARK: Final = "__tipkit_irreversible__"
_DEFAULT_REASON: Final = "marked @irreversible"


@overload
def irreversible(fn: F, /, *, reason: str | None = None) -> F: ...
@overload
def irreversible(*, reason: str | None = None) -> Callable[[F], F]: ...
def irreversible(
    fn: F | None = None, /, *, reason: str | None = None
) -> F | Callable[[F], F]:
    """Mark *fn* as side-effecting: shadow experiments refuse to re-run it.

    Use as ``@irreversible``, ``@irreversible(reason="charges a card")`` or
    ``irreversible(fn, reason=...)``. The function itself is returned unchanged
    (no wrapper, no cost per call); the mark is an attribute, found through
    ``functools.wraps`` chains, bound methods and ``functools.partial``.

    Raises:
        TypeError: *fn* is not callable, or cannot carry an attribute (a
            builtin): mark the Python function that wraps it instead.
        ValueError: *reason* is empty.
    """
    given: object = reason  # checked at run time: callers may be untyped
    if given is not None and (not isinstance(given, str) or not given.strip()):
        raise ValueError(
            f"irreversible: reason must be a non-empty str, got {reason!r}"
        )
    text = reason or _DEFAULT_REASON

    def mark(target: F) -> F:
        if not callable(target):
            raise TypeError(f"irreversible marks callables, got {target!r}")
        # A bound method shares its function's attributes; the function is what
        # has the side effect, for every instance.
        holder = getattr(target, "__func__", target)
        try:
            setattr(holder, _MARK, text)
        except (AttributeError, TypeError) as exc:
            raise TypeError(
                f"irreversible: cannot mark {target!r} (it takes no attributes); "
                "mark the Python function that calls it instead"
            ) from exc
        return target

    return mark if fn is None else mark(fn)


def irreversible_reason(fn: object) -> str | None:
    """Return why *fn* is marked :func:`irreversible`, or ``None`` if it is not.

    Looks at *fn*, then follows ``__wrapped__`` (``functools.wraps``),
    ``__func__`` (bound methods) and ``.func`` (``functools.partial``) links, so a
    decorated irreversible function is still recognised.
    """
    seen: set[int] = set()
    todo = [fn]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        try:
            found = getattr(obj, _MARK, None)
        except Exception:  # a hostile __getattr__ must not break construction
            found = None
        if isinstance(found, str):
            return found
        for link in ("__wrapped__", "__func__", "func"):
            try:
                nxt = getattr(obj, link, None)
            except Exception:
                nxt = None
            if nxt is not None and callable(nxt):
                todo.append(nxt)
        # A callable instance does its work in its class's __call__.
        call = getattr(type(obj), "__call__", None)  # noqa: B004  # the method, not callable()
        if inspect.isfunction(call):
            todo.append(call)
    return None


def is_irreversible(fn: object) -> bool:
    """Return whether *fn* (or a function it wraps) is marked :func:`irreversible`."""
    return irreversible_reason(fn) is not None
