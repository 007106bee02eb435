"""An experiment's configuration: every option checked once, frozen.

:class:`Experiment <tipkit.experiment.Experiment>` keeps its keyword-only
constructor; it hands the keywords to :meth:`Options.check`, which validates them
in the order they are documented and returns the normalised, immutable result.
Nothing here runs per call.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, Protocol

from tipkit._core._durations import to_seconds
from tipkit._core._scope import check_decoratable
from tipkit.clock import Clock
from tipkit.errors import ConfigError
from tipkit.experiment._irreversible import irreversible_reason
from tipkit.experiment._result import CONTROL

__all__ = ["RUN_MODES", "Options", "Random", "RunMode", "is_async"]

RunMode = Literal["inline", "background"]
"""Where the candidates run: on the caller's path, or on a bounded worker pool."""
RUN_MODES: tuple[RunMode, ...] = ("inline", "background")

_CALLBACKS = (
    "compare",
    "compare_errors",
    "clean",
    "run_if",
    "call_context",
    "before_run",
    "publish",
    "sample_key",
    "compensate",
)


class Random(Protocol):
    """What an experiment needs of its ``rng=``."""

    def random(self) -> float:
        """Return a float in ``[0, 1)``."""
        ...


def is_async(fn: object) -> bool:
    """Return whether calling *fn* returns a coroutine (a function or a callable object)."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004  # the class's __call__, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


@dataclass(frozen=True, slots=True)
class Options:
    """An experiment's validated options (see :class:`~tipkit.experiment.Experiment`).

    Normalised: ``candidates`` is a read-only ``{name: callable}`` (a single
    candidate is named ``"candidate"``), ``ignore`` a tuple, ``context`` a
    read-only mapping, ``rng`` never ``None``, ``timeout`` seconds or ``None``.
    """

    name: str
    control: Callable[..., Any]
    candidates: Mapping[str, Callable[..., Any]]
    compare: Callable[[Any, Any], object]
    compare_errors: Callable[[BaseException, BaseException], object]
    ignore: tuple[Callable[[Any, Any], object], ...]
    clean: Callable[[Any], Any] | None
    run_if: Callable[..., object] | None
    context: Mapping[str, Any]
    call_context: Callable[..., Mapping[str, Any]] | None
    before_run: Callable[[], object] | None
    publish: Callable[[Any], object] | None
    sample: float
    sample_key: Callable[..., object] | None
    rng: Random
    mode: RunMode
    timeout: float | None
    raise_on_mismatch: bool
    max_workers: int
    queue_size: int
    compensate: Callable[..., object] | None
    keep_mismatches: int
    clock: Clock
    is_async: bool

    @classmethod
    def check(cls, given: Mapping[str, Any]) -> Options:
        """Validate the constructor's keywords *given* (by name) and freeze them.

        Raises:
            ConfigError: a candidate is marked irreversible and no
                ``compensate`` is given.
            TypeError: a wrong type (a callable option that is not callable, a
                generator function, a sync control with an async candidate).
            ValueError: a wrong value (name, percent, count, timeout, mode).
        """
        name: object = given["name"]  # checked at run time: callers may be untyped
        if not isinstance(name, str) or not name:
            raise ValueError(f"Experiment: name must be a non-empty str, got {name!r}")
        label = f"Experiment {name!r}"
        control = given["control"]
        check_decoratable(control, label)
        candidates = _candidates(given["candidate"], label)
        for option in _CALLBACKS:
            _callable_or_none(given[option], option)
        ignore = tuple(given["ignore"])
        for entry in ignore:
            if not callable(entry):
                raise TypeError(
                    f"{label}: each ignore entry must be callable, got {entry!r}"
                )
        mode = _mode(given["mode"], given["raise_on_mismatch"], label)
        asynchronous = is_async(control)
        _check_colours(asynchronous, candidates, label)
        if given["compensate"] is None:
            _refuse_irreversible(name, candidates)
        context = given["context"]
        if context is not None and not isinstance(context, Mapping):
            raise TypeError(f"{label}: context must be a mapping, got {context!r}")
        rng = given["rng"]
        if rng is not None and not callable(getattr(rng, "random", None)):
            raise TypeError(f"{label}: rng must have a random() method, got {rng!r}")
        sample = _percent(given["sample"], "sample")
        timeout = given["timeout"]
        seconds = None if timeout is None else to_seconds(timeout, "timeout")
        if seconds is not None and seconds <= 0:
            raise ValueError(f"{label}: timeout must be > 0 seconds, got {timeout!r}")
        return cls(
            name=name,
            control=control,
            candidates=MappingProxyType(candidates),
            compare=given["compare"],
            compare_errors=given["compare_errors"],
            ignore=ignore,
            clean=given["clean"],
            run_if=given["run_if"],
            context=MappingProxyType(dict(context or {})),
            call_context=given["call_context"],
            before_run=given["before_run"],
            publish=given["publish"],
            sample=sample,
            sample_key=given["sample_key"],
            # Its own generator, seeded from the random module now: seeding the
            # module before building reproduces the run, and sampling later (on
            # a background worker too) never moves the application's state.
            rng=random.Random(random.getrandbits(64)) if rng is None else rng,  # noqa: S311
            mode=mode,
            timeout=seconds,
            raise_on_mismatch=bool(given["raise_on_mismatch"]),
            max_workers=_count(given["max_workers"], "max_workers", 1),
            queue_size=_count(given["queue_size"], "queue_size", 0),
            compensate=given["compensate"],
            keep_mismatches=_count(given["keep_mismatches"], "keep_mismatches", 0),
            clock=given["clock"],
            is_async=asynchronous,
        )


def _candidates(given: object, label: str) -> dict[str, Callable[..., Any]]:
    if isinstance(given, Mapping):
        candidates = dict(given)
        if not candidates:
            raise ValueError(f"{label}: candidate mapping is empty")
    else:
        candidates = {"candidate": given}
    for cname, fn in candidates.items():
        key: object = cname
        if not isinstance(key, str) or not key or key == CONTROL:
            raise ValueError(
                f"{label}: candidate names must be non-empty str other than "
                f"'control', got {cname!r}"
            )
        check_decoratable(fn, label)
    return candidates


def _mode(mode: object, raise_on_mismatch: object, label: str) -> RunMode:
    if mode == "inline":
        return "inline"
    if mode != "background":
        raise ValueError(
            f"{label}: mode must be 'inline' or 'background', got {mode!r}"
        )
    if raise_on_mismatch:
        raise ValueError(
            f"{label}: raise_on_mismatch needs mode='inline' (a background run "
            "cannot raise into the caller)"
        )
    return "background"


def _check_colours(
    asynchronous: bool, candidates: Mapping[str, object], label: str
) -> None:
    if asynchronous:
        return
    for cname, fn in candidates.items():
        if is_async(fn):
            raise TypeError(
                f"{label}: candidate {cname!r} is async but the control is "
                "sync; a sync call cannot await it. Shadow an async control, "
                "or give a sync candidate"
            )


def _refuse_irreversible(name: str, candidates: Mapping[str, object]) -> None:
    for cname, fn in candidates.items():
        reason = irreversible_reason(fn)
        if reason is not None:
            fn_name = getattr(fn, "__qualname__", repr(fn))
            raise ConfigError(
                f"experiment {name!r}: candidate {cname!r} ({fn_name}) is "
                f"irreversible ({reason}): shadowing it would perform its "
                "side effect a second time, for real, on live inputs. Pass "
                "compensate= (a callable that undoes each candidate run) or "
                "do not shadow it",
                field="candidate",
            )


def _percent(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Experiment: {name} must be a number, got {value!r}")
    if math.isnan(value) or not 0 <= value <= 100:
        raise ValueError(
            f"Experiment: {name} must be a percent in [0, 100], got {value!r}"
        )
    return float(value)


def _count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Experiment: {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"Experiment: {name} must be >= {minimum}, got {value!r}")
    return value


def _callable_or_none(value: object, name: str) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"Experiment: {name} must be callable, got {value!r}")
