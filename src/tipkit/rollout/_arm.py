"""One observed request (:class:`Arm`), the per-stage summary, and ``route()``."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, Self, TypeVar, cast

from tipkit._core._guard import check_decoratable
from tipkit.rollout._events import ArmSummary

if TYPE_CHECKING:
    from tipkit.rollout._persist import Flow
    from tipkit.rollout._rollout import Rollout

__all__ = [
    "NO_CONTEXT",
    "Arm",
    "StageSummary",
    "finish_values",
    "record_values",
    "route",
]

logger = logging.getLogger("tipkit")

P = ParamSpec("P")
R = TypeVar("R")

NO_CONTEXT: Final[Any] = object()
"""An arm's context when it has none to evaluate: it runs control, unjudged."""

_IN_FLIGHT: set[asyncio.Future[Any]] = set()
"""Store work shielded from a cancelled request, kept alive until it is done."""


class Arm:
    """One observed request: which arm it is on, and the context manager timing it.

    The request is assigned when the block is entered: ``with`` evaluates the
    flag in the calling thread, ``async with`` through the flags' async
    evaluation; ``is_canary``, ``variant`` and ``judged`` are set from then on.
    Leaving the block records the outcome: an exception (an
    :class:`Exception`; cancellation and ``KeyboardInterrupt`` are not
    outcomes) counts as an error, as does :meth:`fail`; the block's duration is
    the latency.

    Attributes:
        is_canary: run the new code.
        variant: the flag variant served (``None`` when the flag served none).
        judged: the split assigned this request, so it feeds the judge.
    """

    __slots__ = (
        "_context",
        "_done",
        "_failed",
        "_rollout",
        "_start",
        "_values",
        "is_canary",
        "judged",
        "variant",
    )

    # Set when the block is entered.
    is_canary: bool
    variant: str | None
    judged: bool
    _start: float

    def __init__(self, rollout: Rollout, context: Any) -> None:
        self._rollout = rollout
        self._context = context
        self._failed = False
        self._done = False
        self._values: dict[str, float] | None = None

    def __repr__(self) -> str:
        try:
            arm = "canary" if self.is_canary else "control"
        except AttributeError:
            return "<Arm not entered yet>"
        return f"<Arm {arm} variant={self.variant!r} judged={self.judged}>"

    def fail(self) -> None:
        """Count this request as an error without raising (a 5xx response, say)."""
        self._failed = True

    def observe(self, **values: float) -> None:
        """Attach business values to this request: ``arm.observe(order_value=42.0, checkout=True)``.

        Each name feeds the rollout's :class:`~tipkit.rollout.RateCheck` or
        :class:`~tipkit.rollout.MeanCheck` of that name when the block is left
        (a judged request only); names no check uses are ignored. A later
        value of the same name replaces an earlier one.

        Raises:
            ValueError: a value is not a finite number.
        """
        for name, v in values.items():
            f = float(v)
            if not math.isfinite(f):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            if self._values is None:
                self._values = {}
            self._values[name] = f

    # Entering is the request path: sync and async differ only in how they
    # wait (the store's sync or async methods, the flags' assign or aassign).
    def __enter__(self) -> Self:
        rollout = self._rollout
        now = rollout._clock.monotonic()
        if now >= rollout._next_refresh:
            rollout._persist.guarded(rollout._refresh(now))
            now = rollout._clock.monotonic()
        context = self._context
        rollout._assign(
            self,
            None
            if context is NO_CONTEXT
            else rollout._flags.assign(rollout.flag, context),
            now,
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        rollout = self._rollout
        work = rollout._finish(self, exc_type)
        if work is not None:
            rollout._persist.guarded(work)

    async def __aenter__(self) -> Self:
        rollout = self._rollout
        now = rollout._clock.monotonic()
        if now >= rollout._next_refresh:
            await rollout._persist.aguarded(rollout._refresh(now))
            now = rollout._clock.monotonic()
        context = self._context
        rollout._assign(
            self,
            None
            if context is NO_CONTEXT
            else await rollout._flags.aassign(rollout.flag, context),
            now,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        rollout = self._rollout
        work = rollout._finish(self, exc_type)
        if work is not None:
            # A transition cut off by a cancelled request would lose what
            # follows its write (the override, the event, the hooks).
            task = asyncio.ensure_future(rollout._persist.aguarded(work))
            _IN_FLIGHT.add(task)
            task.add_done_callback(_IN_FLIGHT.discard)
            await asyncio.shield(task)


class StageSummary:
    """This process's per-stage latency/error summary (the judge has the counts).

    Not thread-safe: the rollout's lock serialises it.
    """

    __slots__ = ("errors", "lat_max", "lat_sum", "n")

    def __init__(self) -> None:
        self.n = [0, 0]
        self.errors = [0, 0]
        self.lat_sum = [0.0, 0.0]
        self.lat_max = [0.0, 0.0]

    def add(self, arm: int, failed: bool, latency: float) -> None:
        """Count one outcome of *arm* (1: canary)."""
        self.n[arm] += 1
        self.errors[arm] += failed
        self.lat_sum[arm] += latency
        self.lat_max[arm] = max(self.lat_max[arm], latency)

    def summary(self, arm: int) -> ArmSummary:
        """Return *arm*'s numbers (1: canary)."""
        n = self.n[arm]
        return ArmSummary(
            n,
            self.errors[arm],
            self.errors[arm] / n if n else 0.0,
            self.lat_sum[arm] / n if n else 0.0,
            self.lat_max[arm],
        )


def finish_values(rollout: Rollout, arm: Arm, values: dict[str, float]) -> Any:
    """Record business *values* for *arm*'s cohort now (no request); return the due flow."""
    arm._done = True
    if not arm.judged:
        return None
    return record_values(
        rollout, arm.is_canary, values, None, rollout._clock.monotonic()
    )


def record_values(
    rollout: Rollout,
    is_canary: bool,
    values: dict[str, float] | None,
    due: Any,
    now: float,
) -> Flow[Any] | None:
    """Record business *values* for one cohort at *now*; return the store work due.

    *due* is what recording the request itself asked for (``None``: nothing,
    ``True``: a judgement, else a flush). No I/O: the caller runs the work.
    """
    if values:
        local = rollout._local
        for metric, value in values.items():
            also = local.record_value(is_canary, metric, value, now)
            due = due if also is None or due is True else also
    if due is None:
        return None
    engine = rollout._engine
    return engine.judge(now) if due is True else engine.flush(due, now)


def _arm_for(
    rollout: Rollout,
    ctx_fn: Callable[..., Any] | None,
    context: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Arm:
    if ctx_fn is None:
        return Arm(rollout, context)
    try:
        return Arm(rollout, ctx_fn(*args, **kwargs))
    except Exception:
        logger.warning(
            "tipkit: the context function of rollout %r raised",
            rollout.name,
            exc_info=True,
        )
        return Arm(rollout, NO_CONTEXT)


def route(
    rollout: Rollout,
    fallback: Callable[..., Any],
    context: Callable[..., Any] | Any,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Return the decorator of :meth:`Rollout.route`."""
    ctx_fn = context if callable(context) else None

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        check_decoratable(fn, rollout)
        if inspect.iscoroutinefunction(fn):
            async_fn = cast("Callable[P, Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def routed_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with _arm_for(rollout, ctx_fn, context, args, kwargs) as arm:
                    if arm.is_canary:
                        return await async_fn(*args, **kwargs)
                    result = fallback(*args, **kwargs)
                    if inspect.isawaitable(result):
                        return await result
                    return result

            return cast("Callable[P, R]", routed_async)

        @functools.wraps(fn)
        def routed(*args: P.args, **kwargs: P.kwargs) -> R:
            with _arm_for(rollout, ctx_fn, context, args, kwargs) as arm:
                if arm.is_canary:
                    return fn(*args, **kwargs)
                return cast("R", fallback(*args, **kwargs))

        return routed

    return decorate
