"""The experiment users hold: configuration in, faces out, engine underneath."""

from __future__ import annotations

import functools
import operator
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypeVar

from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.experiment._compare import same_error
from tipkit.experiment._drivers import AsyncDriver, Overdue, SyncDriver
from tipkit.experiment._options import Options, Random, RunMode
from tipkit.experiment._plan import Plan
from tipkit.experiment._pool import TaskPool, ThreadPool
from tipkit.experiment._report import Ledger
from tipkit.experiment._result import ExperimentResult, Mismatch, Observation

__all__ = ["Experiment"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Experiment(Generic[P, R]):
    """Run *candidate* beside *control* on live calls; always serve the control.

    Args:
        name: the experiment's name (exported; keep it low-cardinality).
        control: the code in production. Its result or exception is what every
            call returns or raises, unchanged. ``async def`` makes the experiment
            async: ``await exp(...)``.
        candidate: the new code, or a mapping ``{name: callable}`` of several.
            Called with the control's arguments (the same objects: a candidate
            must not mutate them). Candidates of an async experiment may be
            ``async def`` or plain functions; a sync experiment refuses async
            candidates.
        compare: ``compare(control_value, candidate_value) -> bool`` for calls
            where neither raised. Default ``operator.eq``.
        compare_errors: ``compare_errors(control_exc, candidate_exc) -> bool``
            for calls where both raised. Default :func:`same_error` (same type,
            same ``args``).
        ignore: callables ``(control, candidate) -> bool`` over
            :class:`Observation` s; a disagreement any of them accepts is counted
            ``ignored``.
        clean: ``clean(value) -> value`` to show or publish (drop PII, shrink
            big objects). Comparison always uses the raw values.
        run_if: ``run_if(*args, **kwargs) -> bool``: run candidates only when
            true (after sampling).
        context: a static mapping attached to every result (never exported).
        call_context: ``call_context(*args, **kwargs) -> Mapping`` merged over
            *context* per sampled call (never exported).
        before_run: setup called once before the candidates, only on calls
            where they will run (async experiments may pass ``async def``).
        publish: ``publish(result)`` for each sampled call's
            :class:`ExperimentResult`.
        sample: percent of calls that run the candidates, 0 to 100 (default
            100).
        sample_key: ``sample_key(*args, **kwargs) -> str``: sample by consistent
            hash of this key (the flags bucketing: ``bucket(name, key)``), so the
            same key is always in or out and raising *sample* only adds keys.
            Without it, calls are sampled at random from *rng*.
        rng: an object with ``random() -> float`` in ``[0, 1)`` for random
            sampling and the run order (default: a :class:`random.Random` of
            its own, seeded from the :mod:`random` module when the experiment
            is made; it never moves the module's state afterwards).
        mode: a :data:`RunMode`: ``"inline"`` or ``"background"`` (see the
            module docstring).
        timeout: seconds (or a ``timedelta``) a candidate may run; past it the
            outcome is ``timeout``. ``None``: no limit.
        raise_on_mismatch: raise :class:`MismatchError` when a candidate
            disagrees (tests only; inline mode only).
        max_workers: background threads (or concurrent tasks) at most.
        queue_size: background runs waiting for a worker at most; beyond it
            runs are ``skipped``.
        compensate: ``compensate(observation, *args, **kwargs)`` called after
            each candidate run (even one that raised or timed out) to undo its
            side effects. Required for candidates marked :func:`irreversible`.
        keep_mismatches: how many recent disagreements :meth:`mismatches` keeps.
        clock: durations and timeouts are read from it (``monotonic()``), and
            async candidates are cut off on it (``asleep``), never on the
            event loop's timer, so a :class:`~tipkit.testing.FakeClock` drives
            them without waiting.

    Raises:
        ConfigError: a candidate is marked :func:`irreversible` and no
            *compensate* is given.
        TypeError: a callable argument is not callable or is a generator
            function, or a sync control has an async candidate.
        ValueError: a bad name, percent, count or timeout, or
            ``raise_on_mismatch`` with ``mode="background"``.

    Thread-safe: one experiment may be called from many threads and tasks.
    """

    def __init__(
        self,
        name: str,
        *,
        control: Callable[P, R],
        candidate: Callable[..., Any] | Mapping[str, Callable[..., Any]],
        compare: Callable[[Any, Any], object] = operator.eq,
        compare_errors: Callable[[BaseException, BaseException], object] = same_error,
        ignore: Iterable[Callable[[Observation, Observation], object]] = (),
        clean: Callable[[Any], Any] | None = None,
        run_if: Callable[..., object] | None = None,
        context: Mapping[str, Any] | None = None,
        call_context: Callable[..., Mapping[str, Any]] | None = None,
        before_run: Callable[[], object] | None = None,
        publish: Callable[[ExperimentResult], object] | None = None,
        sample: float = 100.0,
        sample_key: Callable[..., object] | None = None,
        rng: Random | None = None,
        mode: RunMode = "inline",
        timeout: float | timedelta | None = None,
        raise_on_mismatch: bool = False,
        max_workers: int = 2,
        queue_size: int = 16,
        compensate: Callable[..., object] | None = None,
        keep_mismatches: int = 100,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        # The signature above is the one list of options: hand it on whole.
        options = Options.check({k: v for k, v in locals().items() if k != "self"})
        self.options = options
        """The validated, frozen configuration."""
        self.name = name
        self.control = control
        self.candidates = options.candidates
        self.context = options.context
        self.is_async = options.is_async
        self.mode: RunMode = options.mode
        self.sample = options.sample
        self.timeout = options.timeout
        self.max_workers = options.max_workers
        self.queue_size = options.queue_size
        self.raise_on_mismatch = options.raise_on_mismatch

        ledger = Ledger(
            name,
            options.candidates,
            context=options.context,
            publish=options.publish,
            keep=options.keep_mismatches,
        )
        plan = Plan(options, ledger)
        self._ledger = ledger
        # The hot path: one counter, one flag, one bound method per decision.
        self._calls = ledger.calls
        self._never = options.sample == 0
        self._should_run = plan.should_run
        self._threads: ThreadPool | None = None
        self._tasks: TaskPool | None = None
        self._overdue: Overdue | None = None
        background = options.mode == "background"
        if self.is_async:
            self._tasks = TaskPool(name, options.max_workers, options.queue_size)
            adriver = AsyncDriver(plan, self._tasks)
            self._adrive = adriver.background if background else adriver.inline
        else:
            self._threads = ThreadPool(name, options.max_workers, options.queue_size)
            if background and options.timeout is not None:
                self._overdue = Overdue(options.timeout, ledger)
            driver = SyncDriver(plan, self._threads, self._overdue)
            self._drive = driver.background if background else driver.inline

    # -------------------------------------------------------------- faces

    @classmethod
    def shadow(
        cls,
        name: str,
        *,
        candidate: Callable[..., Any] | Mapping[str, Callable[..., Any]],
        **options: Any,
    ) -> Callable[[Callable[P, R]], Experiment[P, R]]:
        """Return a decorator that makes the decorated function the control.

        ::

            @Experiment.shadow("pricing-v2", candidate=price_v2, sample=5.0)
            def price(order): ...

        The decorated name becomes the :class:`Experiment` (it keeps the
        function's ``__name__``, ``__doc__`` and ``__wrapped__``). *options* are
        :class:`Experiment`'s keywords.
        """

        def decorate(control: Callable[P, R]) -> Experiment[P, R]:
            exp = cls(name, control=control, candidate=candidate, **options)
            functools.update_wrapper(exp, control)
            return exp

        return decorate

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        # Decorating a method: bind like a function would.
        if instance is None:
            return self
        bound: Callable[..., R] = self  # called with the instance first, like a method
        return functools.partial(bound, instance)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the control (and, when sampled, the candidates); return the control's result.

        The control's exception propagates unchanged. For an async control this
        returns the coroutine to await.
        """
        self._calls.inc()
        if self.is_async:
            return self._arun(args, kwargs)  # type: ignore[return-value]  # R is the control's coroutine type
        if self._never or not self._should_run(args, kwargs):
            return self.control(*args, **kwargs)
        return self._drive(args, kwargs)  # type: ignore[no-any-return]  # the control's own result

    async def _arun(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._never or not self._should_run(args, kwargs):
            return await self.control(*args, **kwargs)  # type: ignore[misc]  # async control
        return await self._adrive(args, kwargs)

    def run(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Same as calling the experiment."""
        return self(*args, **kwargs)

    async def arun(
        self: Experiment[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await the experiment of an async control; same as ``await exp(...)``."""
        return await self(*args, **kwargs)

    # -------------------------------------------------------------- inspection

    def stats(self, candidate: str | None = None) -> dict[str, int]:
        """Return the count of each outcome so far (of one *candidate*, or all).

        Reports background sync candidates past their timeout first (reads the
        clock once). In-process tallies of this experiment object only.

        Raises:
            KeyError: *candidate* is not one of the experiment's candidates.
        """
        if candidate is not None and candidate not in self.candidates:
            raise KeyError(f"experiment {self.name!r} has no candidate {candidate!r}")
        self._sweep()
        return self._ledger.stats(candidate)

    def _sweep(self) -> None:
        overdue = self._overdue
        if overdue:
            overdue.sweep(self.options.clock.monotonic())

    @property
    def calls(self) -> int:
        """Calls made through the experiment."""
        return self._calls.value

    @property
    def sampled(self) -> int:
        """Calls that were sampled (and passed ``run_if``) to run the candidates."""
        return self._ledger.sampled.value

    @property
    def pending(self) -> int:
        """Background runs queued or running now."""
        pool = self._threads or self._tasks
        return 0 if pool is None else pool.inflight

    def errors(self) -> dict[str, int]:
        """Return how often each callback raised (only those that did)."""
        return self._ledger.errors()

    def mismatches(self, candidate: str | None = None) -> list[Mismatch]:
        """Return the recent disagreements, oldest first (in process only).

        At most ``keep_mismatches`` are kept; each has the call's arguments and
        both observations' cleaned values.
        """
        return self._ledger.mismatches(candidate)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no background thread run is queued or running.

        Waits in real time (the runs are real threads), at most *timeout*
        seconds (``None``: no limit). Returns whether the pool went idle. For
        tests and graceful shutdown; a hung candidate keeps it waiting. An async
        experiment has no threads: use :meth:`adrain`.
        """
        done = self._threads is None or self._threads.wait_idle(timeout)
        self._sweep()
        return done

    async def adrain(self) -> None:
        """Wait for this loop's background tasks of the experiment to finish."""
        if self._tasks is not None:
            await self._tasks.drain()

    def __repr__(self) -> str:
        control = getattr(self.control, "__qualname__", repr(self.control))
        counts = " ".join(f"{k}={v}" for k, v in self.stats().items() if v)
        timeout = "" if self.timeout is None else f" timeout={self.timeout:g}s"
        keyed = " by key" if self.options.sample_key is not None else ""
        return (
            f"<Experiment {self.name!r} control={control} candidates="
            f"{list(self.candidates)} mode={self.mode} sample={self.sample:g}%{keyed}"
            f"{timeout} calls={self.calls} sampled={self.sampled}"
            + (f" {counts}" if counts else "")
            + ">"
        )
