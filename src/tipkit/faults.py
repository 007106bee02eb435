"""Fault injection gated by a feature flag: chaos that is bucketed, killable and audited.

::

    chaos = inject(
        flags,
        "chaos-payments",
        faults=[Latency(0.2, p=0.5), Raise(ConnectionError)],
        context=lambda order: order.user_id,
    )

    @chaos
    def pay(order): ...

For each call the flag (a boolean flag) is evaluated for the call's context; a
call it serves ``True`` gets the faults, each with its own probability ``p``,
in order: a :class:`Latency` delays the call on the injected clock, a
:class:`Raise` raises instead of calling, a :class:`Result` returns a value
instead of calling. So the flag's split decides the share of calls (bucketed by
the targeting key: the same users every time), its rules decide who (only
synthetic traffic, a region, a segment), and killing the flag stops every
fault at once, audited like any flag change. Inside :func:`tipkit.synthetic`
the context carries the attribute ``synthetic`` (the kind, e.g. ``"test"``), so
a rule ``{attr: synthetic, op: exists}`` confines chaos to synthetic traffic.

Every injected fault is counted (``tipkit.fault.injected``, by fault kind and
mode), published as :class:`FaultInjected` and marked on the current span
(attribute ``tipkit.fault.injected``). With ``mode="shadow"`` the decision is
made and reported, but nothing is injected. Setting the environment variable
``TIPKIT_FAULTS=off`` forbids injection process-wide (no flag is even
evaluated): for environments where chaos is never allowed. An
``@irreversible`` function is refused: a fault must never stand in for a
side effect the caller believes happened.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, ParamSpec, TypeVar

from tipkit._core._decorate import Decorates
from tipkit._core._durations import to_seconds
from tipkit._core._flow import Call, Flow, adrive, drive
from tipkit._core._mode import Mode, check_mode
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import ConfigError
from tipkit.experiment._irreversible import irreversible_reason
from tipkit.flags import EvaluationContext, Flags
from tipkit.telemetry._counters import REGISTRY
from tipkit.telemetry._events import BUS, AttributeValue, Event
from tipkit.telemetry._synthetic import current_synthetic

__all__ = [
    "FAULTS_INJECTED",
    "Fault",
    "FaultInjected",
    "Inject",
    "Latency",
    "Raise",
    "Result",
    "allowed",
    "inject",
]

P = ParamSpec("P")
R = TypeVar("R")

FAULTS_INJECTED = "tipkit.fault.injected"  # {fault}, by kind and mode
FAULT_NAME = "tipkit.fault.name"
FAULT_KIND = "tipkit.fault.kind"


def allowed() -> bool:
    """Return whether fault injection is allowed in this process (``TIPKIT_FAULTS``)."""
    return os.environ.get("TIPKIT_FAULTS", "").strip().lower() not in (
        "off",
        "0",
        "false",
        "no",
    )


def _probability(p: object, owner: str) -> float:
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
        raise ValueError(f"{owner}: p must be a probability in [0, 1], got {p!r}")
    return float(p)


class Fault:
    """One fault: applied to an injected call with probability ``p``."""

    __slots__ = ("p",)
    kind: ClassVar[str] = "fault"

    def __init__(self, p: float) -> None:
        self.p = _probability(p, type(self).__name__)


class Latency(Fault):
    """Delay the call by *seconds* (on the injector's clock) before it runs."""

    __slots__ = ("seconds",)
    kind: ClassVar[str] = "latency"

    def __init__(self, seconds: float | timedelta, *, p: float = 1.0) -> None:
        super().__init__(p)
        self.seconds = to_seconds(seconds, "Latency: seconds")
        if self.seconds < 0:
            raise ValueError(f"Latency: seconds must be >= 0, got {seconds!r}")

    def __repr__(self) -> str:
        return f"Latency({self.seconds:g}, p={self.p:g})"


class Raise(Fault):
    """Raise instead of calling.

    *error* is an exception type (built with no arguments), an exception
    instance, or a function returning one.
    """

    __slots__ = ("error",)
    kind: ClassVar[str] = "raise"

    def __init__(
        self,
        error: type[BaseException] | BaseException | Callable[[], BaseException],
        *,
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        if not (isinstance(error, BaseException) or callable(error)):
            raise TypeError(
                f"Raise: error must be an exception or a factory, got {error!r}"
            )
        self.error = error

    def build(self) -> BaseException:
        """Return the exception to raise (a fresh one unless an instance was given)."""
        error = self.error
        if isinstance(error, BaseException):
            return error
        made = error()
        if not isinstance(made, BaseException):
            raise TypeError(f"Raise: the factory returned {made!r}, not an exception")
        return made

    def __repr__(self) -> str:
        return (
            f"Raise({getattr(self.error, '__qualname__', self.error)!r}, p={self.p:g})"
        )


class Result(Fault):
    """Return *value* instead of calling (not in a ``with`` block: it has no value)."""

    __slots__ = ("value",)
    kind: ClassVar[str] = "result"

    def __init__(self, value: object, *, p: float = 1.0) -> None:
        super().__init__(p)
        self.value = value

    def __repr__(self) -> str:
        return f"Result({self.value!r}, p={self.p:g})"


@dataclass(frozen=True, slots=True)
class FaultInjected(Event):
    """A fault was injected into a call (or, in shadow mode, would have been).

    Attributes:
        flag: the flag that selected the call.
        kind: ``latency``, ``raise`` or ``result``.
        shadow: nothing was injected (shadow mode).
    """

    flag: str
    kind: str
    shadow: bool = False

    otel_name: ClassVar[str] = "tipkit.fault.injected"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the injector's name, its flag, the fault kind and the mode."""
        return {
            FAULT_NAME: self.name,
            "feature_flag.key": self.flag,
            FAULT_KIND: self.kind,
            "tipkit.mode": "shadow" if self.shadow else "enforce",
        }


def _mark_span(kind: str) -> None:
    try:
        from opentelemetry import trace  # noqa: PLC0415  # only when a fault is injected

        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("tipkit.fault.injected", kind)
    except Exception:  # telemetry must never break the call
        return


_CALL = object()  # the plan's answer "run the call"


class Inject(Decorates):
    """Inject faults into the calls a flag selects. Made by :func:`inject`.

    Decorates plain and ``async def`` functions (a generator function is a
    ``TypeError``, an ``@irreversible`` one a ``ConfigError``).

    Thread-safe and asyncio-safe; every face evaluates the flag once per call
    (async faces with ``aassign``-style async evaluation, never blocking the loop).
    """

    __slots__ = (
        "_context",
        "_counters",
        "_mode",
        "_rng",
        "clock",
        "faults",
        "flag",
        "flags",
        "name",
    )

    _composition_role: ClassVar[str] = "inject"

    def __init__(  # inject() documents each
        self,
        flags: Flags,
        flag: str,
        faults: Sequence[Fault],
        *,
        context: Callable[..., Any] | None,
        name: str,
        mode: Mode,
        rng: random.Random | None,
        clock: Clock,
    ) -> None:
        if not isinstance(flags, Flags):
            raise TypeError(f"inject: flags must be a tipkit Flags, got {flags!r}")
        given: object = flag  # untyped callers pass anything
        if not isinstance(given, str) or not flag:
            raise TypeError(f"inject: flag must be a non-empty str, got {flag!r}")
        faults = tuple(faults)
        if not faults or not all(isinstance(f, Fault) for f in faults):
            raise TypeError(
                f"inject: faults must be Latency/Raise/Result objects, got {faults!r}"
            )
        if context is not None and not callable(context):
            raise TypeError(
                f"inject: context must be a function of the call's arguments, got {context!r}"
            )
        self.flags = flags
        self.flag = flag
        self.faults = faults
        self._context = context
        self.name = name
        self._mode: Mode = check_mode(mode, f"inject {name!r}")
        self._rng = rng or random.Random()  # noqa: S311  # chaos, not cryptography
        self.clock = clock
        self._counters = {
            (kind, m): REGISTRY.counter(
                FAULTS_INJECTED, {FAULT_NAME: name, FAULT_KIND: kind, "tipkit.mode": m}
            )
            for kind in ("latency", "raise", "result")
            for m in ("enforce", "shadow")
        }

    def __repr__(self) -> str:
        return (
            f"<inject {self.name!r} flag={self.flag!r} faults={list(self.faults)!r} "
            f"mode={self._mode} injected={self.injected()}>"
        )

    @property
    def mode(self) -> Mode:
        """``"enforce"`` or ``"shadow"``; assign to switch."""
        return self._mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        self._mode = check_mode(value, f"inject {self.name!r}")

    def injected(self, kind: str | None = None, *, shadow: bool = False) -> int:
        """Return how many faults (of *kind*) were injected (or would have been, *shadow*).

        Read from the metrics, which count by name: injectors sharing a name
        share these counts.
        """
        mode = "shadow" if shadow else "enforce"
        return sum(
            c.value
            for (k, m), c in self._counters.items()
            if m == mode and kind in (None, k)
        )

    # -- the decision ---------------------------------------------------------------------
    def _ctx(self, args: Any, kwargs: Any) -> Any:
        ctx = None if self._context is None else self._context(*args, **kwargs)
        mark = current_synthetic()
        if mark is None:
            return ctx
        if isinstance(ctx, EvaluationContext):
            return EvaluationContext(
                ctx.targeting_key, {**ctx.attributes, "synthetic": mark}
            )
        if isinstance(ctx, dict):
            return {**ctx, "synthetic": mark}
        return EvaluationContext(ctx, {"synthetic": mark})

    def _plan(self, selected: bool) -> list[Fault]:
        """Return the faults to apply to a call the flag did (or did not) select."""
        if not selected:
            return []
        rng = self._rng
        plan = [f for f in self.faults if f.p >= 1 or rng.random() < f.p]
        shadow = self._mode == "shadow"
        for fault in plan:
            self._counters[fault.kind, self._mode].inc()
            if FaultInjected.listened:
                BUS.publish(FaultInjected(self.name, self.flag, fault.kind, shadow))
            if not shadow:
                _mark_span(fault.kind)
        return [] if shadow else plan

    def _decide(self, args: Any, kwargs: Any) -> list[Fault]:
        if not allowed():
            return []
        return self._plan(self.flags.is_enabled(self.flag, self._ctx(args, kwargs)))

    async def _adecide(self, args: Any, kwargs: Any) -> list[Fault]:
        if not allowed():
            return []
        return self._plan(
            await self.flags.ais_enabled(self.flag, self._ctx(args, kwargs))
        )

    def _effects(self, plan: list[Fault]) -> Flow[Any]:
        """Apply *plan* in order, once for both faces: sleep, raise, or return a value."""
        for fault in plan:
            if isinstance(fault, Latency):
                yield Call(self.clock, "sleep", (fault.seconds,))
            elif isinstance(fault, Raise):
                raise fault.build()
            elif isinstance(fault, Result):
                return fault.value
        return _CALL

    def _apply(self, plan: list[Fault]) -> Any:
        return drive(self._effects(plan)) if plan else _CALL

    async def _aapply(self, plan: list[Fault]) -> Any:
        return await adrive(self._effects(plan)) if plan else _CALL

    # -- faces ------------------------------------------------------------------------------
    def _refuse(self, fn: Callable[..., Any]) -> None:
        reason = irreversible_reason(fn)
        if reason is not None:
            label = getattr(fn, "__qualname__", repr(fn))
            raise ConfigError(
                f"{self!r} refuses to inject faults into {label}, which is irreversible "
                f"({reason}): a fault must not stand in for a side effect",
                flag=self.flag,
            )

    # Decorates.__call__ refuses generator functions, then picks one of these once.
    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        self._refuse(fn)

        @functools.wraps(fn)
        def injected(*args: P.args, **kwargs: P.kwargs) -> Any:
            out = self._apply(self._decide(args, kwargs))
            return fn(*args, **kwargs) if out is _CALL else out

        return injected

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        self._refuse(fn)

        @functools.wraps(fn)
        async def ainjected(*args: P.args, **kwargs: P.kwargs) -> Any:
            out = await self._aapply(await self._adecide(args, kwargs))
            return await fn(*args, **kwargs) if out is _CALL else out

        return ainjected

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` with the faults the flag selects for it."""
        self._refuse(fn)
        out = self._apply(self._decide(args, kwargs))
        return fn(*args, **kwargs) if out is _CALL else out

    async def acall(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)`` with the faults the flag selects for it."""
        self._refuse(fn)
        out = await self._aapply(await self._adecide(args, kwargs))
        return await fn(*args, **kwargs) if out is _CALL else out

    def _check_block(self) -> None:
        if any(isinstance(f, Result) for f in self.faults):
            raise TypeError(
                f"{self!r} holds a Result fault, which a `with` block cannot return"
            )

    def __enter__(self) -> None:
        """Apply latency and raise faults before the block (its context: no arguments)."""
        self._check_block()
        self._apply(self._decide((), {}))

    def __exit__(self, *exc_info: object) -> None:
        return None

    async def __aenter__(self) -> None:
        """Async :meth:`__enter__`: evaluates the flag and sleeps without blocking the loop."""
        self._check_block()
        await self._aapply(await self._adecide((), {}))

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def inject(  # the options of an injector, keyword-only
    flags: Flags,
    flag: str,
    faults: Sequence[Fault],
    *,
    context: Callable[..., Any] | None = None,
    name: str | None = None,
    mode: Mode = "enforce",
    rng: random.Random | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Inject:
    """Return a guard injecting *faults* into the calls boolean flag *flag* selects.

    Args:
        flags: the :class:`~tipkit.Flags` evaluating *flag*.
        flag: a boolean flag: ``True`` for a call means "inject".
        faults: :class:`Latency`, :class:`Raise` and :class:`Result` faults,
            applied in order, each with its own probability ``p``.
        context: a function of the call's arguments returning its evaluation
            context (a targeting key, a mapping or an
            :class:`~tipkit.EvaluationContext`); ``None``: no context (in
            ``with`` blocks always none). Inside :func:`tipkit.synthetic` the
            attribute ``synthetic`` is added.
        name: names the injector in metrics and events (default: *flag*).
        mode: ``"enforce"`` or ``"shadow"`` (decide and report, inject nothing).
        rng: the random source for ``p`` (a seeded one makes tests exact).
        clock: the clock latency faults sleep on.

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
    """
    return Inject(
        flags,
        flag,
        faults,
        context=context,
        name=name or flag,
        mode=mode,
        rng=rng,
        clock=clock,
    )
