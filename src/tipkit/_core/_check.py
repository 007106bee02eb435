"""Argument validators shared by every constructor.

Each takes the value and a *label* that names it for the user, usually
``"<Class>: <parameter>"`` (``"Bulkhead: max_wait"``), returns the value
normalised (seconds as ``float``) and raises ``TypeError`` for a wrong type or
``ValueError`` for a wrong value, with a message that starts with the label and
ends with the value received::

    self.name = check_name(name, "Bulkhead: name")
    self._max = check_int(max_concurrent, "Bulkhead: max_concurrent", minimum=1)
    self._max_wait = check_seconds(max_wait, "Bulkhead: max_wait", minimum=0)

``bool`` is never accepted as a number. Validators never read a clock and
never take a lock: call them before anything else in ``__init__``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal, TypeVar, overload

from tipkit._core._durations import to_seconds
from tipkit._core._mode import check_mode
from tipkit.clock import Clock

__all__ = [
    "check_callable",
    "check_clock",
    "check_int",
    "check_mode",
    "check_name",
    "check_number",
    "check_seconds",
]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def check_name(
    value: object, label: str, *, optional: Literal[False] = False
) -> str: ...


@overload
def check_name(value: object, label: str, *, optional: Literal[True]) -> str | None: ...


def check_name(value: object, label: str, *, optional: bool = False) -> str | None:
    """Return *value*, a non-empty ``str`` (or ``None`` when *optional*).

    Raises:
        TypeError: anything else, e.g. ``"Bulkhead: name must be a non-empty str,
            got ''"``.
    """
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        alt = " or None" if optional else ""
        raise TypeError(f"{label} must be a non-empty str{alt}, got {value!r}")
    return value


def check_int(value: object, label: str, *, minimum: int | None = None) -> int:
    """Return *value*, an ``int`` (not a ``bool``) of at least *minimum*.

    Raises:
        TypeError: not an int.
        ValueError: below *minimum*.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{label} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{label} must be >= {minimum}, got {value!r}")
    return value


def check_number(
    value: object,
    label: str,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
) -> float:
    """Return *value*, a finite real number (not a ``bool``), as a ``float``.

    *minimum* and *maximum* are inclusive bounds; *above* is exclusive.

    Raises:
        TypeError: not a number.
        ValueError: NaN, infinite, or out of bounds.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{label} must be a number, got {value!r}")
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"{label} must be finite, got {value!r}")
    _bounds(number, value, label, minimum, above, maximum, "")
    return number


def check_seconds(
    value: float | timedelta,
    label: str,
    *,
    minimum: float | None = None,
    above: float | None = None,
) -> float:
    """Return a duration (seconds as a number, or a ``timedelta``) in seconds.

    *minimum* is inclusive, *above* exclusive (``above=0``: strictly positive).

    Raises:
        TypeError: neither a number nor a timedelta.
        ValueError: NaN, infinite, or out of bounds.
    """
    seconds = to_seconds(value, label)
    unit = "" if label.endswith("seconds") else " seconds"
    _bounds(seconds, value, label, minimum, above, None, unit)
    return seconds


def _bounds(  # noqa: PLR0917  # one helper for both numeric validators
    number: float,
    value: object,
    label: str,
    minimum: float | None,
    above: float | None,
    maximum: float | None,
    unit: str,
) -> None:
    if minimum is not None and number < minimum:
        raise ValueError(f"{label} must be >= {minimum:g}{unit}, got {value!r}")
    if above is not None and number <= above:
        raise ValueError(f"{label} must be > {above:g}{unit}, got {value!r}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{label} must be <= {maximum:g}{unit}, got {value!r}")


def check_callable(value: F, label: str) -> F:
    """Return *value* if it is callable.

    Raises:
        TypeError: it is not.
    """
    if not callable(value):
        raise TypeError(f"{label} must be callable, got {value!r}")
    return value


def check_clock(value: object, label: str = "clock") -> Clock:
    """Return *value* if it is a :class:`~tipkit.clock.Clock`.

    Raises:
        TypeError: it lacks ``monotonic()``, ``time()``, ``sleep()`` or ``asleep()``.
    """
    if not isinstance(value, Clock):
        raise TypeError(
            f"{label} must provide monotonic(), time(), sleep() and asleep() "
            f"(a tipkit Clock), got {value!r}"
        )
    return value
