"""Hedged requests: when a call is slow, start another; the first result wins.

::

    @hedge(after="p95", max_extra=1)
    async def lookup(key): ...

    @hedge(after=0.05, budget=RetryBudget("hedge", ratio=0.05))
    def read(key): ...

A call starts its first attempt at once. If no attempt has returned after the
delay, another starts (up to ``max_extra`` more, one delay apart); the first
attempt to *succeed* wins. An error ends the call only once no attempt is left
running (the first attempt's error is raised; a failure before the delay is
raised at once: hedging answers slowness, :func:`~tipkit.retry.retry` answers
errors). Async losers are cancelled and awaited (no task outlives the call);
sync losers run in worker threads that cannot be stopped: they are abandoned,
their results dropped, and counted.

The delay is a number of seconds or a live latency quantile (``"p95"``, or a
:class:`~tipkit._quantile.LatencyQuantile`): a histogram in constant memory
fed by every finished attempt. A hedge budget (a
:class:`~tipkit.retry.RetryBudget`, default 10% of calls plus one a second)
caps the extra load: hedging multiplies the load of a partial outage exactly
when a dependency is slowest (loki PR#4826). Hedging repeats the call, so an
``@irreversible`` function is refused unless given ``idempotency_key=``.

In ``mode="shadow"`` a call runs once, in the caller's thread or task, and a
call slower than the delay is counted as a hedge it would have started.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import queue
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, ParamSpec, TypeVar

from tipkit._core._callonly import CallOnly
from tipkit._core._decorate import Decorates
from tipkit._core._durations import to_seconds
from tipkit._core._mode import Mode, check_mode
from tipkit._quantile import LatencyQuantile, parse_quantile
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import RejectedError
from tipkit.fallback import ExcTypes, Fallback
from tipkit.retry import RetryBudget
from tipkit.retry._policy import refuse_irreversible
from tipkit.telemetry._counters import REGISTRY
from tipkit.telemetry._events import BUS, AttributeValue, Event

__all__ = ["HEDGE_ATTEMPTS", "Hedge", "HedgeStarted", "hedge"]

P = ParamSpec("P")
R = TypeVar("R")

HEDGE_ATTEMPTS = "tipkit.hedge.attempts"  # {attempt}, by kind
HEDGE_NAME = "tipkit.hedge.name"
_KINDS = ("primary", "hedged", "denied", "would_hedge", "won", "abandoned", "cancelled")
_NO_FALLBACK: Any = object()
_DEFAULT: Any = object()


@dataclass(frozen=True, slots=True)
class HedgeStarted(Event):
    """A call was slower than the delay: another attempt started (or, in shadow, would have).

    Attributes:
        attempt: the number of the attempt started (2 for the first hedge).
        delay: the delay the call waited, seconds.
        shadow: no attempt was started (shadow mode).
    """

    attempt: int
    delay: float
    shadow: bool = False

    otel_name: ClassVar[str] = "tipkit.hedge.started"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the hedge's name, the attempt, the delay and the mode."""
        return {
            HEDGE_NAME: self.name,
            "tipkit.hedge.attempt": self.attempt,
            "tipkit.hedge.delay": self.delay,
            "tipkit.mode": "shadow" if self.shadow else "enforce",
        }


class Hedge(CallOnly, Decorates):
    """Run a slow call again in parallel; return the first success. Made by :func:`hedge`.

    Decorates plain and ``async def`` functions (a generator function is a
    ``TypeError``; an ``@irreversible`` one without ``idempotency_key=`` a
    ``ConfigError``), or runs them through :meth:`call` / :meth:`acall`; a
    ``with`` block is a ``TypeError``. Thread-safe and asyncio-safe: per-call
    state lives in the call.
    """

    __slots__ = (
        "_executor",
        "_fallback",
        "_inc",
        "_key",
        "_lock",
        "_max_workers",
        "_mode",
        "after",
        "budget",
        "clock",
        "max_extra",
        "name",
    )

    _reruns: ClassVar[bool] = True
    _no_block: ClassVar[str] = (
        "must run the work more than once, which a `with` block cannot do: "
        "decorate a function or use call()/acall()"
    )
    _composition_role: ClassVar[str] = "hedge"

    def __init__(  # hedge() validates and names every option
        self,
        *,
        after: float | timedelta | str | LatencyQuantile,
        max_extra: int,
        budget: RetryBudget | None,
        name: str,
        mode: Mode,
        idempotency_key: str | None,
        max_workers: int,
        fallback: Fallback[Any] | None,
        clock: Clock,
    ) -> None:
        if isinstance(after, str):
            after = LatencyQuantile(parse_quantile(after))
        elif not isinstance(after, LatencyQuantile):
            after = to_seconds(after, "hedge: after")
            if after < 0:
                raise ValueError(f"hedge: after must be >= 0 seconds, got {after!r}")
        self.after: float | LatencyQuantile = after
        if not _int_at_least(max_extra, 1):
            raise ValueError(f"hedge: max_extra must be an int >= 1, got {max_extra!r}")
        self.max_extra = max_extra
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(
                f"hedge: budget must be a RetryBudget or None, got {budget!r}"
            )
        self.budget = budget
        if not _nonempty_str(name):
            raise TypeError(f"hedge: name must be a non-empty str, got {name!r}")
        self.name = name
        self._mode: Mode = check_mode(mode, f"hedge {name!r}")
        self._key = idempotency_key
        if not _int_at_least(max_workers, 2):
            raise ValueError(
                f"hedge: max_workers must be an int >= 2, got {max_workers!r}"
            )
        self._max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._fallback = fallback
        self.clock = clock
        self._inc = {
            kind: REGISTRY.counter(
                HEDGE_ATTEMPTS, {HEDGE_NAME: name, "tipkit.hedge.kind": kind}
            )
            for kind in _KINDS
        }

    def __repr__(self) -> str:
        after = (
            self.after
            if isinstance(self.after, LatencyQuantile)
            else f"{self.after:g}s"
        )
        return (
            f"<hedge {self.name!r} after={after} max_extra={self.max_extra} "
            f"mode={self._mode} hedged={self.count('hedged')} denied={self.count('denied')}>"
        )

    @property
    def mode(self) -> Mode:
        """``"enforce"`` or ``"shadow"``; assign to switch a live hedge."""
        return self._mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        self._mode = check_mode(value, f"hedge {self.name!r}")

    def count(self, kind: str) -> int:
        """Return how many attempts of *kind* there were.

        Kinds: primary, hedged, denied, would_hedge, won (a hedge beat the first
        attempt), abandoned, cancelled.
        """
        return self._inc[kind].value

    def delay(self) -> float:
        """Return the current hedging delay, seconds."""
        after = self.after
        return after.value() if isinstance(after, LatencyQuantile) else after

    def _observe(self, seconds: float) -> None:
        if isinstance(self.after, LatencyQuantile):
            self.after.observe(seconds)

    def _may_hedge(self, attempt: int, delay: float) -> bool:
        """Decide whether attempt number *attempt* may start (the budget's say)."""
        budget = self.budget
        if budget is not None and not budget.try_retry(self.clock.monotonic()):
            self._inc["denied"].inc()
            return False
        self._inc["hedged"].inc()
        if HedgeStarted.listened:
            BUS.publish(HedgeStarted(self.name, attempt, delay))
        return True

    def _begin(self) -> tuple[float, float]:
        self._inc["primary"].inc()
        now = self.clock.monotonic()
        if self.budget is not None:
            self.budget.record_first(now)
        return now, self.delay()

    def _shadow_done(self, start: float, delay: float) -> None:
        elapsed = self.clock.monotonic() - start
        self._observe(elapsed)
        if elapsed > delay:
            self._inc["would_hedge"].inc()
            if HedgeStarted.listened:
                BUS.publish(HedgeStarted(self.name, 2, delay, shadow=True))

    # -- sync: attempts in worker threads ------------------------------------------------
    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self._max_workers, thread_name_prefix=f"tipkit-hedge-{self.name}"
                )
            return self._executor

    def _run_sync(self, fn: Callable[..., R], args: Any, kwargs: Any) -> R:  # noqa: C901, PLR0912, PLR0915  # one event loop over the attempts reads best whole
        start, delay = self._begin()
        clock = self.clock
        if self._mode == "shadow":
            try:
                return fn(*args, **kwargs)
            finally:
                self._shadow_done(start, delay)
        results: queue.SimpleQueue[tuple[int, BaseException | None, Any]] = (
            queue.SimpleQueue()
        )
        ready = threading.Event()
        observe = self._observe

        def attempt(number: int, began: float) -> None:
            try:
                value = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller's thread
                results.put((number, exc, None))
            else:
                observe(clock.monotonic() - began)
                results.put((number, None, value))
            ready.set()

        wait_on = getattr(clock, "wait_event", None) or _plain_wait
        pool = self._pool()
        pool.submit(contextvars.copy_context().run, attempt, 1, start)
        launched, running, first_error = 1, 1, None
        next_at = start + delay
        while True:
            try:
                number, error, value = results.get_nowait()
            except queue.Empty:
                ready.clear()
                if not results.empty():
                    continue
                hedging = launched <= self.max_extra
                if hedging:
                    wait = next_at - clock.monotonic()
                    if wait > 0:
                        wait_on(ready, wait)
                        continue
                    launched += 1
                    if self._may_hedge(launched, delay):
                        running += 1
                        pool.submit(
                            contextvars.copy_context().run,
                            attempt,
                            launched,
                            clock.monotonic(),
                        )
                        next_at += delay
                    else:
                        launched = (
                            self.max_extra + 1
                        )  # the budget said no: no more hedges
                    continue
                ready.wait()
                continue
            running -= 1
            if error is None:
                if number > 1:
                    self._inc["won"].inc()
                for _ in range(running):
                    self._inc["abandoned"].inc()
                return value  # type: ignore[no-any-return]  # the function's result
            if first_error is None or number == 1:
                first_error = error
            if running == 0:  # every attempt started has failed
                raise first_error

    # -- async: attempts as tasks ---------------------------------------------------------
    async def _run_async(  # noqa: C901, PLR0912  # as _run_sync
        self, fn: Callable[..., Awaitable[R]], args: Any, kwargs: Any
    ) -> R:
        start, delay = self._begin()
        clock = self.clock
        if self._mode == "shadow":
            try:
                return await fn(*args, **kwargs)
            finally:
                self._shadow_done(start, delay)
        loop = asyncio.get_running_loop()
        begun: dict[asyncio.Task[R], tuple[int, float]] = {}

        def launch(number: int) -> None:
            task: asyncio.Task[R] = loop.create_task(fn(*args, **kwargs))  # type: ignore[arg-type]  # an awaitable of a coroutine function
            begun[task] = (number, clock.monotonic())

        launch(1)
        launched, first_error = 1, None
        next_at = start + delay
        try:
            while True:
                running = [t for t in begun if not t.done()]
                finished = [t for t in begun if t.done()]
                for task in finished:
                    number, began = begun.pop(task)
                    error = task.exception()
                    if error is None:
                        self._observe(clock.monotonic() - began)
                        if number > 1:
                            self._inc["won"].inc()
                        return task.result()
                    if first_error is None or number == 1:
                        first_error = error
                if not running:  # every attempt started has failed
                    assert first_error is not None
                    raise first_error
                if launched <= self.max_extra:
                    wait = next_at - clock.monotonic()
                    if wait > 0:
                        if running:
                            await self._any_done(running, wait)
                        continue
                    launched += 1
                    if self._may_hedge(launched, delay):
                        launch(launched)
                        next_at += delay
                    else:
                        launched = self.max_extra + 1
                    continue
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await self._cancel(begun)

    async def _any_done(self, tasks: list[asyncio.Task[Any]], timeout: float) -> None:
        """Wait on the clock until one of *tasks* is done or *timeout* passes."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake(_task: object) -> None:
            if not woken.done():
                woken.set_result(None)

        for task in tasks:
            task.add_done_callback(wake)
        try:
            await_future = getattr(self.clock, "await_future", None)
            if await_future is not None:
                await await_future(woken, timeout)
            else:
                await asyncio.wait((woken,), timeout=timeout)
        finally:
            for task in tasks:
                task.remove_done_callback(wake)

    async def _cancel(self, begun: dict[asyncio.Task[Any], tuple[int, float]]) -> None:
        """Cancel every attempt still running and wait for it to end (no leaks)."""
        losers = [t for t in begun if not t.done()]
        for task in losers:
            task.cancel()
            began = begun[task][1]
            self._observe(
                self.clock.monotonic() - began
            )  # censored: at least this slow
            self._inc["cancelled"].inc()
        if losers:
            await asyncio.gather(*losers, return_exceptions=True)
        for task in begun:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: no "exception never retrieved" warning

    # -- faces ------------------------------------------------------------------------------
    def _refuse(self, fn: Callable[..., Any]) -> None:
        refuse_irreversible(
            fn, repr(self), idempotency_key=self._key, can_compensate=False
        )

    # Decorates.__call__ refuses generator functions, then picks one of these once.
    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        self._refuse(fn)

        @functools.wraps(fn)
        def hedged(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self._run_sync(fn, args, kwargs)

        return hedged if self._fallback is None else self._fallback(hedged)

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        self._refuse(fn)

        @functools.wraps(fn)
        async def ahedged(*args: P.args, **kwargs: P.kwargs) -> Any:
            return await self._run_async(fn, args, kwargs)

        return ahedged if self._fallback is None else self._fallback(ahedged)

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` hedged (attempts in worker threads); return the winner's."""
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"{fn!r} is a coroutine function: use `await acall(...)`")
        self._refuse(fn)
        if self._fallback is not None:
            return self._fallback.call(self._run_sync, fn, args, kwargs)
        return self._run_sync(fn, args, kwargs)

    async def acall(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)`` hedged (attempts as tasks); return the winner's result."""
        self._refuse(fn)
        if self._fallback is not None:
            return await self._fallback.acall(self._run_async, fn, args, kwargs)
        return await self._run_async(fn, args, kwargs)

    def shutdown(self) -> None:
        """Stop this hedge's worker threads once their attempts end (sync faces only)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _int_at_least(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _plain_wait(event: threading.Event, timeout: float) -> bool:
    return event.wait(timeout)


def hedge(  # the options of a hedge, all keyword-only
    *,
    after: float | timedelta | str | LatencyQuantile = "p95",
    max_extra: int = 1,
    budget: RetryBudget | None = _DEFAULT,
    name: str = "hedge",
    mode: Mode = "enforce",
    idempotency_key: str | None = None,
    max_workers: int = 32,
    fallback: Any = _NO_FALLBACK,
    fallback_on: ExcTypes | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Hedge:
    """Return a guard that starts another attempt of a slow call; the first success wins.

    Args:
        after: the delay before each extra attempt: seconds, or a live latency
            quantile (``"p95"`` (default), ``"p99"``, or a
            :class:`~tipkit._quantile.LatencyQuantile` for its initial value,
            sample size and decay). A quantile starts at 0.1 s until 20
            latencies were seen.
        max_extra: extra attempts per call at most (default 1).
        budget: caps extra attempts at a share of calls (default
            ``RetryBudget(ratio=0.1, min_per_second=1)``, this hedge's own;
            pass a shared one, or ``None`` for no cap).
        name: names the hedge in metrics, events and threads.
        mode: ``"enforce"`` or ``"shadow"`` (run once, count would-be hedges).
        idempotency_key: the parameter carrying a key the dependency
            deduplicates on; required to hedge an ``@irreversible`` function.
        max_workers: worker threads of the sync faces (attempts beyond them queue).
        fallback: a value, or ``(exc) -> value``, returned instead of raising an
            error in *fallback_on* (see :mod:`tipkit.fallback`).
        fallback_on: what the fallback answers (default: tipkit's rejections).
        clock: the clock the delay and latencies are measured on.

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
    """
    if budget is _DEFAULT:
        budget = RetryBudget(
            f"hedge:{name}", ratio=0.1, min_per_second=1.0, clock=clock
        )
    if fallback is _NO_FALLBACK:
        if fallback_on is not None:
            raise TypeError("hedge: fallback_on= needs fallback=")
        answer = None
    else:
        answer = Fallback(
            fallback, RejectedError if fallback_on is None else fallback_on, name
        )
    return Hedge(
        after=after,
        max_extra=max_extra,
        budget=budget,
        name=name,
        mode=mode,
        idempotency_key=idempotency_key,
        max_workers=max_workers,
        fallback=answer,
        clock=clock,
    )
