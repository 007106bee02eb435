"""The four run paths (inline and background, sync and async) over one engine.

A driver runs the behaviours a :class:`~tipkit.experiment._plan.Plan` chose and
hands what each did to the call's :class:`~tipkit.experiment._plan.Trial`: it
times them on the experiment's clock, calls ``before_run`` and ``compensate``
and enforces the timeout. That, and where the runs happen, is all that differs
between the paths:

* inline: the caller's thread or task runs the trial, then gets
  ``trial.serve(trial.finish())``;
* background: the caller runs the control alone and gets ``trial.serve()``;
  the trial is handed to a bounded pool (threads for sync, tasks for async)
  that runs the candidates and finishes it, or counts it ``skipped``.

:class:`SyncDriver` and :class:`AsyncDriver` differ only in awaiting. A sync
candidate cannot be interrupted: past its timeout it is counted when it returns
(inline) or as soon as someone looks (:class:`Overdue`, background). An async
candidate is cancelled at its timeout as :func:`asyncio.timeout` would cancel
it, in the caller's task, but by an alarm that sleeps on the injected clock
(``clock.asleep``), never on the event loop's own timer: tests with a fake clock
wait for nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any

from tipkit._core import _fork
from tipkit.clock import Clock
from tipkit.experiment._plan import Behaviour, Plan, Trial
from tipkit.experiment._pool import TaskPool, ThreadPool
from tipkit.experiment._report import Ledger
from tipkit.experiment._result import CONTROL

__all__ = ["AsyncDriver", "Overdue", "SyncDriver"]

logger = logging.getLogger("tipkit")


class _Running:
    """A sync candidate running in the background, for the timeout sweep."""

    __slots__ = ("candidate", "deadline", "done", "reported")

    def __init__(self, candidate: str, deadline: float) -> None:
        self.candidate = candidate
        self.deadline = deadline
        self.done = False
        self.reported = False


class Overdue:
    """Background sync candidates still running, to count a late one as it runs.

    Python cannot stop a thread, so a hung candidate never returns to be judged:
    :meth:`sweep` (on the next hand-off, ``stats()`` and ``drain()``) counts each
    one past its deadline ``timeout`` at once, and the trial later counts it only
    once. Expires lazily at the caller's *now*, never with a timer thread.
    Thread-safe.
    """

    __slots__ = ("__weakref__", "_ledger", "_lock", "_running", "timeout")

    def __init__(self, timeout: float, ledger: Ledger) -> None:
        self.timeout = timeout
        self._ledger = ledger
        self._lock = _fork.new_lock()
        self._running: dict[int, _Running] = {}
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()
        self._running = {}

    def __bool__(self) -> bool:
        return bool(self._running)

    def start(self, candidate: str, now: float) -> _Running:
        """Watch *candidate*, started at *now*."""
        run = _Running(candidate, now + self.timeout)
        with self._lock:  # the sweep iterates this dict from other threads
            self._running[id(run)] = run
        return run

    def stop(self, run: _Running) -> bool:
        """Stop watching *run*; return whether a sweep already counted it."""
        with self._lock:
            run.done = True
            del self._running[id(run)]
            return run.reported

    def sweep(self, now: float) -> None:
        """Count each watched candidate past its deadline at *now* as ``timeout``."""
        due: list[str] = []
        with self._lock:
            for run in self._running.values():
                if not run.reported and not run.done and now > run.deadline:
                    run.reported = True
                    due.append(run.candidate)
        for cname in due:
            self._ledger.count(cname, "timeout", None)


class _Driver:
    """What both colours share: the plan, the clock and the hand-off to a pool."""

    __slots__ = ("_before", "_clock", "_compensate", "_control", "_ledger", "_plan")

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._ledger = plan.ledger
        self._control = plan.control
        self._clock: Clock = plan.options.clock
        self._before = plan.options.before_run
        self._compensate = plan.options.compensate

    def _hand_off(
        self, submit: Callable[[Any, Trial], bool], job: Any, trial: Trial
    ) -> None:
        """Submit ``job(trial)`` to a pool; count the trial skipped if it is full."""
        try:
            if not submit(job, trial):
                self._ledger.skip(
                    trial.value, trial.error, trial.took, trial.args, trial.kwargs
                )
        except Exception:  # pragma: no cover - never let a tipkit bug reach the caller
            logger.exception(
                "experiment %r: could not start a shadow run", self._plan.name
            )


class SyncDriver(_Driver):
    """Run a sync experiment: on the caller's thread, or on a :class:`ThreadPool`."""

    __slots__ = ("overdue", "pool")

    def __init__(self, plan: Plan, pool: ThreadPool, overdue: Overdue | None) -> None:
        super().__init__(plan)
        self.pool = pool
        self.overdue = overdue

    def inline(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run control and candidates here, judge, and serve the control's result."""
        trial = Trial(self._plan, args, kwargs)
        if not self._run(trial):
            return self._control(*args, **kwargs)
        return trial.conclude()

    def background(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the control here and hand the candidates to the pool."""
        trial = Trial(self._plan, args, kwargs)
        self._behave(trial, self._plan.control_only)
        overdue = self.overdue
        if overdue:
            overdue.sweep(self._clock.monotonic())
        self._hand_off(self.pool.submit, self._job, trial)
        return trial.serve()

    def _job(self, trial: Trial) -> None:
        if self._run(trial):
            trial.finish()

    def _run(self, trial: Trial) -> bool:
        """Run the trial's behaviours in the plan's order; ``False`` if before_run failed."""
        plan = self._plan
        if plan.call_context is not None:
            trial.context = plan.context_for(trial.args, trial.kwargs)
        ready = self._before is None or self._hook("before_run", self._before)
        if not ready:
            return False
        self._behave(trial, plan.order())
        return True

    def _behave(self, trial: Trial, behaviours: Sequence[Behaviour]) -> None:
        """Run and time each behaviour, hand it to the trial, compensate it."""
        clock = self._clock
        args = trial.args
        kwargs = trial.kwargs
        overdue = self.overdue
        now = clock.monotonic()
        for name, fn in behaviours:
            start = now
            run = (
                None if overdue is None or name == CONTROL else overdue.start(name, now)
            )
            value: Any = None
            error: Exception | None = None
            try:
                value = fn(*args, **kwargs)
            except Exception as exc:
                error = exc
            now = clock.monotonic()
            counted = run is not None and self._stop(run, trial)
            obs = trial.observe(name, value, error, now - start, counted)
            if obs is not None and self._compensate is not None:
                self._hook("compensate", self._compensate, obs, *args, **kwargs)
                now = clock.monotonic()

    def _stop(self, run: _Running, trial: Trial) -> bool:
        """Stop watching *run*; if a sweep counted it already, tell the trial."""
        if self.overdue is None or not self.overdue.stop(run):
            return False
        trial.mark_reported(run.candidate)
        return True

    def _hook(
        self, callback: str, fn: Callable[..., object], *args: Any, **kw: Any
    ) -> bool:
        """Call the option *callback*; count its failure and return ``False``."""
        try:
            out = fn(*args, **kw)
            if inspect.isawaitable(out):
                close = getattr(out, "close", None)
                if close is not None:
                    close()  # never awaited: say so by closing, not by a warning
                raise TypeError(
                    f"{callback} returned an awaitable in a sync experiment"
                )
        except Exception as exc:
            self._ledger.failed(callback, exc)
            return False
        return True


class AsyncDriver(_Driver):
    """Run an async experiment: in the caller's task, or on a :class:`TaskPool`."""

    __slots__ = ("pool",)

    def __init__(self, plan: Plan, pool: TaskPool) -> None:
        super().__init__(plan)
        self.pool = pool

    async def inline(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run control and candidates in this task, judge, and serve the control's result."""
        trial = Trial(self._plan, args, kwargs)
        if not await self._run(trial):
            return await self._control(*args, **kwargs)
        return trial.conclude()

    async def background(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the control in this task and hand the candidates to the pool."""
        trial = Trial(self._plan, args, kwargs)
        await self._behave(trial, self._plan.control_only)
        self._hand_off(self.pool.submit, self._job, trial)
        return trial.serve()

    async def _job(self, trial: Trial) -> None:
        if await self._run(trial):
            trial.finish()

    async def _run(self, trial: Trial) -> bool:
        """Run the trial's behaviours in the plan's order; ``False`` if before_run failed."""
        plan = self._plan
        if plan.call_context is not None:
            trial.context = plan.context_for(trial.args, trial.kwargs)
        ready = self._before is None or await self._hook("before_run", self._before)
        if not ready:
            return False
        await self._behave(trial, plan.order())
        return True

    async def _behave(self, trial: Trial, behaviours: Sequence[Behaviour]) -> None:
        """Run and time each behaviour (a candidate up to its timeout), compensate it."""
        clock = self._clock
        args, kwargs = trial.args, trial.kwargs
        timeout = self._plan.timeout
        for name, fn in behaviours:
            value: Any = None
            error: Exception | None = None
            expired = False
            start = clock.monotonic()
            try:
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):  # else a sync candidate: it has run
                    if timeout is None or name == CONTROL:
                        value = await value
                    else:
                        deadline = start + timeout
                        value, expired = await _within(value, deadline, clock)
            except Exception as exc:
                error = exc
            took = clock.monotonic() - start
            obs = trial.observe(name, value, error, took, expired)
            if obs is not None and self._compensate is not None:
                await self._hook("compensate", self._compensate, obs, *args, **kwargs)

    async def _hook(
        self, callback: str, fn: Callable[..., object], *args: Any, **kw: Any
    ) -> bool:
        """Call the option *callback*, awaiting it if async; count its failure."""
        try:
            out = fn(*args, **kw)
            if inspect.isawaitable(out):
                await out
        except Exception as exc:
            self._ledger.failed(callback, exc)
            return False
        return True


async def _within(
    awaitable: Awaitable[Any], deadline: float, clock: Clock
) -> tuple[Any, bool]:
    """Await *awaitable* in this task until *deadline* on *clock*: ``(value, expired)``.

    :func:`asyncio.timeout` on the injected clock: past the deadline an alarm
    cancels this task, and the cancellation is taken back here. The candidate's
    own exceptions, ``TimeoutError`` included, propagate: they are its errors,
    not the experiment's timeout. A cancellation from elsewhere propagates too.
    """
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - awaited outside asyncio: nothing to cancel
        return await awaitable, False
    cutoff = _Cutoff(task, deadline, clock)
    cancelling = task.cancelling()
    try:
        value = await _Suspending(awaitable, cutoff.arm)
    except asyncio.CancelledError:
        if cutoff.fired and task.uncancel() <= cancelling:
            return None, True
        raise
    finally:
        cutoff.disarm()
    if cutoff.fired:  # it swallowed the cancellation and finished late
        task.uncancel()
        return value, True
    return value, False


class _Cutoff:
    """Cancel *task* at *deadline* on *clock*, from an alarm task armed on demand."""

    __slots__ = ("_alarm", "_clock", "_deadline", "_task", "fired")

    def __init__(self, task: asyncio.Task[Any], deadline: float, clock: Clock) -> None:
        self._task = task
        self._deadline = deadline
        self._clock = clock
        self._alarm: asyncio.Task[None] | None = None
        self.fired = False

    def arm(self) -> None:
        """Start the alarm: the candidate waits for something at last."""
        self._alarm = self._task.get_loop().create_task(self._ring())

    def disarm(self) -> None:
        """Stop the alarm, if it was armed."""
        if self._alarm is not None:
            self._alarm.cancel()

    async def _ring(self) -> None:
        # Reads the clock once the candidate has suspended: time it spent
        # before that (a fake clock's asleep, say) counts against the deadline.
        remaining = self._deadline - self._clock.monotonic()
        if remaining > 0:
            await self._clock.asleep(remaining)
        self.fired = True
        self._task.cancel()


class _Suspending:
    """Await an awaitable as ``await`` would, calling *hook* at its first suspension.

    A candidate that finishes without ever waiting (most do) starts no alarm
    task: timing it costs a generator, not a task and a loop turn.
    """

    __slots__ = ("_awaitable", "_hook")

    def __init__(self, awaitable: Awaitable[Any], hook: Callable[[], None]) -> None:
        self._awaitable = awaitable
        self._hook = hook

    def __await__(self) -> Generator[Any, None, Any]:
        inner = self._awaitable.__await__()
        thrown: BaseException | None = None
        hooked = False
        while True:  # ``yield from inner``, spelled out to see the first yield
            try:
                signal = inner.send(None) if thrown is None else inner.throw(thrown)
            except StopIteration as done:
                return done.value
            if not hooked:
                hooked = True
                self._hook()
            try:
                yield signal
            except GeneratorExit:
                inner.close()
                raise
            except BaseException as exc:  # the event loop throws cancellation in
                thrown = exc
            else:
                thrown = None
