"""Size limits of a flag document, and the one walk that enforces them on plain data.

A flag document is untrusted input (``shared/DESIGN.md`` principle 11): its
size, nesting, strings, numbers and alias expansion are bounded before anything
else reads it, so no document can make a load hang, recurse without end or eat
memory. :class:`Limits` holds the bounds (defaults below, documented in
``docs/flags.md``); pass ``limits=Limits(max_flags=100_000)`` to raise one.

The YAML reader enforces the same limits while it builds (``_yaml.py``, with
line and column); :func:`checked_copy` enforces them on data that did not come
from text (``Flags.from_dict``, ``InMemoryProvider``), copying it as plain data
in the same pass.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "DEFAULT_LIMITS",
    "FLOAT_MAX_INT",
    "LimitError",
    "Limits",
    "check_counts",
    "checked_copy",
    "gc_paused",
]

FLOAT_MAX_INT: Final = int(sys.float_info.max)
"""The largest integer a float can hold: larger ones are refused at load."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on a flag document; every one is checked at load.

    Attributes:
        max_bytes: the document's size in UTF-8 bytes (default 8 MiB).
        max_flags: how many flags (default 20,000).
        max_rules: how many rules one flag may have (default 1,000).
        max_depth: how deeply mappings and lists may nest (default 64).
        max_string: the length of any one string or key (default 65,536).
        max_nodes: how many values (scalars, mappings, lists) in all
            (default 2,000,000; a flag of the usual shape has about 20).
        alias_expansion: YAML aliases are resolved by reference, and the
            values they stand for may add at most this many times the values
            written in the file (default 10): a "billion laughs" is refused.
        max_prerequisite_depth: how long a chain of prerequisites may be
            (a flag whose parent has a parent is 2 deep; default 10).
    """

    max_bytes: int = 8 * 1024 * 1024
    max_flags: int = 20_000
    max_rules: int = 1_000
    max_depth: int = 64
    max_string: int = 65_536
    max_nodes: int = 2_000_000
    alias_expansion: int = 10
    max_prerequisite_depth: int = 10

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                msg = f"Limits.{name} must be a positive int, got {value!r}"
                raise ValueError(msg)


DEFAULT_LIMITS: Final = Limits()


class LimitError(Exception):
    """A document exceeds a limit; ``path`` is where (a tuple of keys and indexes)."""

    def __init__(self, message: str, path: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a document loads.

    A load allocates hundreds of thousands of objects that all stay alive; the
    collector would walk the growing heap again and again, making a load's cost
    grow faster than the document (1.8 s instead of 1.0 s at 10,000 flags).
    The load is bounded by its limits, so the pause is too. Restored as it was.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _too_deep(limits: Limits) -> str:
    return (
        f"nesting deeper than {limits.max_depth} levels "
        "(raise Limits.max_depth if this is meant)"
    )


def checked_copy(doc: Any, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Return a plain copy of *doc*, checked against *limits* (see :func:`_checked_copy`)."""
    with gc_paused():
        return _checked_copy(doc, limits)


def _checked_copy(doc: Any, limits: Limits) -> Any:  # noqa: C901  # one walk, one case per kind
    """Return a plain copy of *doc* (dicts, lists, scalars), checked against *limits*.

    Iterative (no recursion), so any nesting or a mapping that contains itself
    ends in a :class:`LimitError`, not a ``RecursionError``. Tuples become
    lists; other values are kept as they are (the compiler reports them).

    Raises:
        LimitError: depth, string length, integer range or node count exceeded.
    """
    max_depth, max_string, max_nodes = (
        limits.max_depth,
        limits.max_string,
        limits.max_nodes,
    )
    nodes = 0

    def scalar(value: Any, path: tuple[Any, ...]) -> Any:
        if value.__class__ is str or isinstance(value, str):
            if len(value) > max_string:
                raise LimitError(
                    f"a string of {len(value)} characters is longer than "
                    f"Limits.max_string ({max_string})",
                    path,
                )
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not -FLOAT_MAX_INT <= value <= FLOAT_MAX_INT
        ):
            raise LimitError("an integer beyond the range of a float is refused", path)
        return value

    root: list[Any] = [None]
    # Each task: (source, parent container, slot in parent, depth, path).
    tasks: list[tuple[Any, Any, Any, int, tuple[Any, ...]]] = [(doc, root, 0, 0, ())]
    while tasks:
        value, parent, slot, depth, path = tasks.pop()
        nodes += 1
        if nodes > max_nodes:
            raise LimitError(
                f"more than Limits.max_nodes ({max_nodes}) values in the document",
                path,
            )
        if isinstance(value, Mapping):
            if depth >= max_depth:
                raise LimitError(_too_deep(limits), path)
            out: dict[Any, Any] = {}
            parent[slot] = out
            for key, item in value.items():
                scalar(key, (*path, key))
                out[key] = None
                tasks.append((item, out, key, depth + 1, (*path, key)))
        elif isinstance(value, Sequence) and not isinstance(
            value, str | bytes | bytearray
        ):
            if depth >= max_depth:
                raise LimitError(_too_deep(limits), path)
            seq: list[Any] = [None] * len(value)
            parent[slot] = seq
            for i, item in enumerate(value):
                tasks.append((item, seq, i, depth + 1, (*path, i)))
        else:
            parent[slot] = scalar(value, path)
    return root[0]


def check_counts(doc: Any, limits: Limits) -> list[tuple[str, str | None, str]]:
    """Return ``(message, flag, field)`` for each flag-count or rule-count limit exceeded."""
    found: list[tuple[str, str | None, str]] = []
    if not isinstance(doc, dict):
        return found
    flags = doc.get("flags")
    if not isinstance(flags, dict):
        return found
    if len(flags) > limits.max_flags:
        found.append(
            (
                f"{len(flags)} flags is more than Limits.max_flags ({limits.max_flags})",
                None,
                "flags",
            )
        )
    for key, fdoc in flags.items():
        rules = fdoc.get("rules") if isinstance(fdoc, dict) else None
        if isinstance(rules, list) and len(rules) > limits.max_rules:
            found.append(
                (
                    f"{len(rules)} rules is more than Limits.max_rules ({limits.max_rules})",
                    str(key),
                    "rules",
                )
            )
    return found
