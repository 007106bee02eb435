"""Where background runs go: a bounded pool of threads, or of asyncio tasks.

Both take at most ``max_workers + queue_size`` jobs in flight and refuse the
next one (``submit`` returns ``False``) instead of queueing without limit, and
both run a job in a copy of the submitter's context variables.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from tipkit._core import _fork

__all__ = ["TaskPool", "ThreadPool"]

logger = logging.getLogger("tipkit")

T = TypeVar("T")

_IDLE_EXIT: Final = 10.0  # seconds an idle worker thread waits before exiting


class _Bounded:
    """What both pools share: a name, a bound, an in-flight count, fork safety."""

    __slots__ = ("__weakref__", "_inflight", "capacity", "max_workers", "name")

    def __init__(self, name: str, max_workers: int, queue_size: int) -> None:
        self.name = name
        self.max_workers = max_workers
        self.capacity = max_workers + queue_size
        self._reset()
        _fork.register(self)

    def _reset(self) -> None:
        self._inflight = 0

    def _after_fork_in_child(self) -> None:
        # The workers do not exist in the child; their queued jobs belong to the parent.
        self._reset()

    @property
    def inflight(self) -> int:
        """Jobs queued or running now."""
        return self._inflight


class ThreadPool(_Bounded):
    """At most ``max_workers`` daemon threads and ``queue_size`` waiting jobs.

    Not a ThreadPoolExecutor: its queue is unbounded and it joins its threads at
    interpreter exit, so one hung shadow candidate would hang the shutdown of the
    service it shadows. Threads start on demand and exit after idling.
    Thread-safe; re-made empty in a forked child.
    """

    __slots__ = ("_cond", "_drained", "_idle", "_jobs", "_threads")

    def _reset(self) -> None:
        super()._reset()
        lock = _fork.new_lock()
        self._cond = threading.Condition(lock)
        self._drained = threading.Condition(lock)
        self._jobs: deque[Callable[[], object]] = deque()
        self._threads = 0
        self._idle = 0

    def submit(self, job: Callable[[T], object], arg: T) -> bool:
        """Queue ``job(arg)``; return ``False`` (dropping it) when the pool is full.

        The job runs in a copy of the caller's context variables (synthetic
        traffic marks, spans), as a task created here would.
        """
        with self._cond:
            if self._inflight >= self.capacity:
                return False
            self._inflight += 1
            self._jobs.append(
                functools.partial(contextvars.copy_context().run, job, arg)
            )
            if self._idle > 0:
                self._cond.notify()
                return True
            if self._threads >= self.max_workers:
                return True
            self._threads += 1
        try:
            threading.Thread(
                target=self._work,
                name=f"tipkit-experiment-{self.name}",
                daemon=True,
            ).start()
        except RuntimeError:  # the process cannot start threads now
            with self._cond:
                self._threads -= 1
                if self._threads == 0:
                    self._jobs.clear()
                    self._inflight = 0
                    return False
        return True

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until no job is queued or running; real time, not a clock."""
        with self._drained:
            return self._drained.wait_for(lambda: self._inflight == 0, timeout)

    def _work(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._jobs:
                    self._idle += 1
                    woken = cond.wait(_IDLE_EXIT)
                    self._idle -= 1
                    if not woken and not self._jobs:
                        self._threads -= 1
                        return
                job = self._jobs.popleft()
            try:
                job()
            except BaseException:  # a worker survives anything a candidate throws
                logger.exception("tipkit experiment worker caught an error")
            finally:
                with cond:
                    self._inflight -= 1
                    if self._inflight == 0:
                        self._drained.notify_all()


class TaskPool(_Bounded):
    """At most ``max_workers`` running tasks per event loop, ``capacity`` in flight.

    Tasks run on the submitter's running loop (and so in a copy of its context).
    Thread-safe: the in-flight count is taken under a lock, so one experiment
    may be awaited from several loops in several threads.
    """

    __slots__ = ("_lock", "_semaphores", "_tasks")

    def _reset(self) -> None:
        super()._reset()
        self._lock = _fork.new_lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()

    def submit(self, job: Callable[[T], Coroutine[Any, Any, None]], arg: T) -> bool:
        """Start ``job(arg)`` as a task of the running loop; ``False`` when full.

        Raises:
            RuntimeError: no event loop is running in this thread.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._inflight >= self.capacity:
                return False
            self._inflight += 1
        sem = self._semaphores.get(loop)
        if sem is None:
            sem = self._semaphores.setdefault(loop, asyncio.Semaphore(self.max_workers))
        task = loop.create_task(_bounded(sem, job(arg)))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return True

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        with self._lock:
            self._inflight -= 1
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover
            logger.error(
                "experiment %r: shadow task failed",
                self.name,
                exc_info=task.exception(),
            )

    async def drain(self) -> None:
        """Wait for this loop's tasks to finish."""
        loop = asyncio.get_running_loop()
        tasks = [t for t in list(self._tasks) if t.get_loop() is loop]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def _bounded(sem: asyncio.Semaphore, job: Coroutine[Any, Any, None]) -> None:
    async with sem:
        await job
