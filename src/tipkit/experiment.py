"""Shadow experiments: run new code beside the old on live inputs, serve only the old.

::

    exp = Experiment("pricing-v2", control=price_v1, candidate=price_v2,
                     sample=5.0, sample_key=lambda order: order.customer_id,
                     mode="background", timeout=0.2)
    price = exp(order)          # always price_v1's result, or price_v1's exception

On a sampled call the candidate (or several named candidates) runs on the same
arguments, its result is compared with the control's, and the outcome is counted
(``tipkit.experiment.comparisons``), published as an :class:`ExperimentCompared`
event per candidate and handed to ``publish=`` as an :class:`ExperimentResult`.
Outcomes: ``matched``, ``mismatched``, ``ignored``, ``candidate_error``,
``timeout`` and ``skipped``.

**Isolation.** Nothing the candidate or the experiment's callbacks do changes what
the caller gets: every ``Exception`` they raise is caught, counted and logged once.
What they cost depends on the mode:

* ``mode="inline"`` (the default) runs control and candidates one after the other
  on the caller's thread (or task), in random order, so the call takes the
  control's time *plus* the candidates' and the callbacks' time. A sync candidate
  cannot be preempted: one that runs past ``timeout`` is reported as ``timeout``
  when it returns, and the caller has waited for it. An async candidate is
  cancelled at ``timeout`` (:func:`asyncio.timeout`).
* ``mode="background"`` returns the control's result as soon as the control is
  done; candidates, comparison and publishing run on a small pool of daemon
  threads (sync) or on bounded asyncio tasks (async). At most
  ``max_workers + queue_size`` runs are in flight; beyond that a run is skipped
  and counted ``skipped``, never queued without limit. A sync candidate still
  running after ``timeout`` is reported as ``timeout`` (it keeps its thread until
  it returns: Python cannot kill a thread); an async one is cancelled.

Only ``sample_key``, ``run_if`` and, in inline mode, everything else run on the
caller's path; keep ``sample_key`` and ``run_if`` fast.

**Irreversible operations.** A function marked :func:`irreversible` (it charges a
card, deletes, sends an email) must not run a second time in the shadow of the
control: an experiment with such a candidate is refused with a
:class:`~tipkit.errors.ConfigError` unless ``compensate=`` undoes each run.

**What is exported.** Counters and events carry the experiment's name, the
candidate's name and the outcome, nothing else: never arguments, values, context
or exception messages. Those stay in process (``publish=``, :meth:`Experiment.mismatches`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import math
import operator
import random
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import (
    Any,
    ClassVar,
    Final,
    Generic,
    Literal,
    NamedTuple,
    ParamSpec,
    Protocol,
    TypeVar,
    overload,
)

from tipkit._core import _fork
from tipkit._core._durations import to_seconds
from tipkit._core._guard import check_decoratable
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import ConfigError, TipkitError
from tipkit.flags._bucketing import BUCKETS, bucket_of
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY, Counter
from tipkit.telemetry._events import BUS, AttributeValue, Event

__all__ = [
    "OUTCOMES",
    "Experiment",
    "ExperimentCallbackFailed",
    "ExperimentCompared",
    "ExperimentResult",
    "Mismatch",
    "MismatchError",
    "Observation",
    "Outcome",
    "irreversible",
    "irreversible_reason",
    "is_irreversible",
    "same_error",
]

logger = logging.getLogger("tipkit")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

Outcome = Literal[
    "matched", "mismatched", "ignored", "candidate_error", "timeout", "skipped"
]
OUTCOMES: Final[tuple[Outcome, ...]] = (
    "matched",
    "mismatched",
    "ignored",
    "candidate_error",
    "timeout",
    "skipped",
)
"""Every outcome of a candidate run, in the order reports list them."""

Mode = Literal["inline", "background"]
_DISAGREE: Final = frozenset({"mismatched", "candidate_error"})
_CONTROL: Final = "control"
_IDLE_EXIT: Final = 10.0  # seconds an idle worker thread waits before exiting


class _Random(Protocol):
    def random(self) -> float: ...


# ------------------------------------------------------------------ irreversible

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


# ------------------------------------------------------------------ results


def same_error(control: BaseException, candidate: BaseException) -> bool:
    """Return whether two exceptions match: same type and same ``args``.

    The default ``compare_errors=``.
    """
    return type(control) is type(candidate) and control.args == candidate.args


class Observation(NamedTuple):
    """What one behaviour (the control or a candidate) did on one call.

    A named tuple: built on every sampled call, it must be cheap.

    Attributes:
        name: ``"control"`` or the candidate's name.
        value: the return value (``None`` if it raised or timed out).
        exception: the exception it raised, or ``None``.
        duration: seconds it ran, on the experiment's clock.
        cleaned: ``clean(value)`` if a cleaner is set (``None`` if the cleaner
            failed), else ``value``: what to show or publish.
        timed_out: it ran past the experiment's ``timeout`` (or was cancelled
            at it).
    """

    name: str
    value: Any = None
    exception: BaseException | None = None
    duration: float = 0.0
    cleaned: Any = None
    timed_out: bool = False

    @property
    def raised(self) -> bool:
        """Whether the behaviour raised."""
        return self.exception is not None

    def describe(self) -> str:
        """Return a short text: the cleaned value's repr or the exception's."""
        if self.timed_out:
            return f"timed out after {self.duration:.3g}s"
        if self.exception is not None:
            return f"raised {self.exception!r}"
        return repr(self.cleaned)


class ExperimentResult(NamedTuple):
    """Everything one sampled call of an experiment observed (a named tuple).

    Kept in process (``publish=``, events' ``result``); only the experiment's
    name, candidate names and outcomes are ever exported.

    Attributes:
        name: the experiment.
        control: the control's observation.
        candidates: each candidate's observation, by name (skipped candidates
            are absent).
        outcomes: each candidate's outcome, by name.
        context: the static and per-call context.
        args, kwargs: the call's arguments (shared with the control, not copied).
    """

    name: str
    control: Observation
    candidates: Mapping[str, Observation]
    outcomes: Mapping[str, Outcome]
    context: Mapping[str, Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]

    @property
    def matched(self) -> bool:
        """Whether every candidate matched (or its difference was ignored)."""
        return all(o in {"matched", "ignored"} for o in self.outcomes.values())

    @property
    def disagreeing(self) -> tuple[str, ...]:
        """Names of candidates whose outcome is ``mismatched`` or ``candidate_error``."""
        return tuple(n for n, o in self.outcomes.items() if o in _DISAGREE)


def _call_text(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One call where a candidate disagreed with the control (kept in process only).

    Attributes:
        experiment: the experiment's name.
        candidate: the candidate's name.
        outcome: ``mismatched`` or ``candidate_error``.
        args, kwargs: the call's arguments.
        control, observed: the control's and the candidate's observations (their
            ``cleaned`` values are what to show).
        context: the call's context.
    """

    experiment: str
    candidate: str
    outcome: Outcome
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    control: Observation
    observed: Observation
    context: Mapping[str, Any]

    def __str__(self) -> str:
        return (
            f"{self.experiment}/{self.candidate} {self.outcome} on "
            f"({_call_text(self.args, self.kwargs)}): control "
            f"{self.control.describe()}, candidate {self.observed.describe()}"
        )


class MismatchError(TipkitError, AssertionError):
    """A candidate disagreed with the control under ``raise_on_mismatch=True``.

    For tests only. Also an :class:`AssertionError`, so test runners show it as a
    failed assertion. The control's exception, if any, is ``__cause__``.

    Attributes:
        result: the :class:`ExperimentResult`.
    """

    def __init__(self, result: ExperimentResult) -> None:
        lines = [
            f"experiment {result.name!r}: candidate {name!r} {result.outcomes[name]} "
            f"on ({_call_text(result.args, result.kwargs)}): control "
            f"{result.control.describe()}, candidate "
            f"{result.candidates[name].describe()}"
            for name in result.disagreeing
        ]
        super().__init__("\n".join(lines))
        self.result = result


# ------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class ExperimentCompared(Event):
    """A candidate's run was judged (one event per candidate per sampled call).

    Exported with the experiment's name, the candidate's name and the outcome
    only; ``result`` stays in process.

    Attributes:
        name: the experiment.
        candidate: the candidate's name.
        outcome: one of :data:`OUTCOMES`.
        result: the whole result; ``None`` for a ``timeout`` reported while the
            candidate was still running (the result follows to ``publish=`` when
            it returns).
    """

    candidate: str
    outcome: str
    result: ExperimentResult | None = None

    otel_name: ClassVar[str] = "tipkit.experiment.compared"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the experiment name, candidate name and outcome."""
        return {
            names.EXPERIMENT_NAME: self.name,
            names.EXPERIMENT_CANDIDATE: self.candidate,
            names.OUTCOME: self.outcome,
        }


@dataclass(frozen=True, slots=True)
class ExperimentCallbackFailed(Event):
    """A callback of the experiment raised; the caller was not affected.

    A failed ``compensate`` means a candidate's side effect may not be undone.

    Attributes:
        name: the experiment.
        callback: which one: ``compare``, ``compare_errors``, ``ignore``,
            ``clean``, ``run_if``, ``sample_key``, ``call_context``,
            ``before_run``, ``publish`` or ``compensate``.
        error_type: the exception's class name (never its message).
    """

    callback: str
    error_type: str

    otel_name: ClassVar[str] = "tipkit.experiment.callback_failed"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the experiment name, the callback and the error type."""
        return {
            names.EXPERIMENT_NAME: self.name,
            names.EXPERIMENT_CALLBACK: self.callback,
            names.ERROR_TYPE: self.error_type,
        }


# ------------------------------------------------------------------ worker pool


class _Pool:
    """At most ``max_workers`` daemon threads and ``queue_size`` waiting jobs.

    Not a ThreadPoolExecutor: its queue is unbounded and it joins its threads at
    interpreter exit, so one hung shadow candidate would hang the shutdown of the
    service it shadows. Threads start on demand and exit after idling.
    """

    __slots__ = (
        "__weakref__",
        "_cond",
        "_drained",
        "_idle",
        "_inflight",
        "_jobs",
        "_threads",
        "capacity",
        "max_workers",
        "name",
    )

    def __init__(self, name: str, max_workers: int, queue_size: int) -> None:
        self.name = name
        self.max_workers = max_workers
        self.capacity = max_workers + queue_size
        self._reset()
        _fork.register(self)

    def _reset(self) -> None:
        lock = _fork.new_lock()
        self._cond = threading.Condition(lock)
        self._drained = threading.Condition(lock)
        self._jobs: deque[Callable[[], object]] = deque()
        self._threads = 0
        self._idle = 0
        self._inflight = 0

    def _after_fork_in_child(self) -> None:
        # The workers do not exist in the child; their queued jobs belong to the parent.
        self._reset()

    @property
    def inflight(self) -> int:
        return self._inflight

    def submit(self, job: Callable[[], object]) -> bool:
        """Queue *job*; return ``False`` (and drop it) when the pool is full."""
        with self._cond:
            if self._inflight >= self.capacity:
                return False
            self._inflight += 1
            self._jobs.append(job)
            if self._idle > 0:
                self._cond.notify()
                return True
            if self._threads >= self.max_workers:
                return True
            self._threads += 1
        try:
            threading.Thread(
                target=_work,
                args=(self,),
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


def _work(pool: _Pool) -> None:
    cond = pool._cond
    while True:
        with cond:
            while not pool._jobs:
                pool._idle += 1
                woken = cond.wait(_IDLE_EXIT)
                pool._idle -= 1
                if not woken and not pool._jobs:
                    pool._threads -= 1
                    return
            job = pool._jobs.popleft()
        try:
            job()
        except BaseException:  # a worker survives anything a candidate throws
            logger.exception("tipkit experiment worker caught an error")
        finally:
            with cond:
                pool._inflight -= 1
                if pool._inflight == 0:
                    pool._drained.notify_all()


# ------------------------------------------------------------------ experiment


class _Running:
    """A sync candidate running in the background, for the timeout sweep."""

    __slots__ = ("candidate", "deadline", "done", "reported")

    def __init__(self, candidate: str, deadline: float) -> None:
        self.candidate = candidate
        self.deadline = deadline
        self.done = False
        self.reported = False


_RawControl = tuple[Any, BaseException | None, float]


def _is_async(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004  # the class's __call__, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


def _percent(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Experiment: {name} must be a number, got {value!r}")
    if math.isnan(value) or not 0 <= value <= 100:
        raise ValueError(
            f"Experiment: {name} must be a percent in [0, 100], got {value!r}"
        )
    return float(value)


def _count_arg(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Experiment: {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"Experiment: {name} must be >= {minimum}, got {value!r}")
    return value


def _callable_or_none(value: object, name: str) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"Experiment: {name} must be callable, got {value!r}")


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
            sampling and the run order (default: the :mod:`random` module).
        mode: ``"inline"`` or ``"background"`` (see the module docstring).
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
        clock: durations and timeouts are read from it (``monotonic()``).

    Raises:
        ConfigError: a candidate is marked :func:`irreversible` and no
            *compensate* is given.
        TypeError: a callable argument is not callable or is a generator
            function, or a sync control has an async candidate.
        ValueError: a bad name, percent, count or timeout, or
            ``raise_on_mismatch`` with ``mode="background"``.

    Thread-safe: one experiment may be called from many threads and tasks.
    """

    def __init__(  # noqa: C901, PLR0912, PLR0915  # one validation per option, in order
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
        rng: _Random | None = None,
        mode: Mode = "inline",
        timeout: float | timedelta | None = None,
        raise_on_mismatch: bool = False,
        max_workers: int = 2,
        queue_size: int = 16,
        compensate: Callable[..., object] | None = None,
        keep_mismatches: int = 100,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        given: object = name  # checked at run time: callers may be untyped
        if not isinstance(given, str) or not given:
            raise ValueError(f"Experiment: name must be a non-empty str, got {name!r}")
        self.name = name
        label = f"Experiment {name!r}"
        check_decoratable(control, label)
        if isinstance(candidate, Mapping):
            cands = dict(candidate)
            if not cands:
                raise ValueError(f"{label}: candidate mapping is empty")
        else:
            cands = {"candidate": candidate}
        for cname, fn in cands.items():
            key: object = cname
            if not isinstance(key, str) or not key or key == _CONTROL:
                raise ValueError(
                    f"{label}: candidate names must be non-empty str other than "
                    f"'control', got {cname!r}"
                )
            check_decoratable(fn, label)
        for arg, value in (
            ("compare", compare),
            ("compare_errors", compare_errors),
            ("clean", clean),
            ("run_if", run_if),
            ("call_context", call_context),
            ("before_run", before_run),
            ("publish", publish),
            ("sample_key", sample_key),
            ("compensate", compensate),
        ):
            _callable_or_none(value, arg)
        ignorers = tuple(ignore)
        for ig in ignorers:
            if not callable(ig):
                raise TypeError(
                    f"{label}: each ignore entry must be callable, got {ig!r}"
                )
        if mode not in {"inline", "background"}:
            raise ValueError(
                f"{label}: mode must be 'inline' or 'background', got {mode!r}"
            )
        if raise_on_mismatch and mode == "background":
            raise ValueError(
                f"{label}: raise_on_mismatch needs mode='inline' (a background run "
                "cannot raise into the caller)"
            )
        self.is_async = _is_async(control)
        if not self.is_async:
            for cname, fn in cands.items():
                if _is_async(fn):
                    raise TypeError(
                        f"{label}: candidate {cname!r} is async but the control is "
                        "sync; a sync call cannot await it. Shadow an async control, "
                        "or give a sync candidate"
                    )
        if compensate is None:
            for cname, fn in cands.items():
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
        if context is not None and not isinstance(context, Mapping):
            raise TypeError(f"{label}: context must be a mapping, got {context!r}")
        if rng is not None and not callable(getattr(rng, "random", None)):
            raise TypeError(f"{label}: rng must have a random() method, got {rng!r}")
        self.sample = _percent(sample, "sample")
        secs = None if timeout is None else to_seconds(timeout, "timeout")
        if secs is not None and secs <= 0:
            raise ValueError(f"{label}: timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = secs
        self.mode: Mode = mode
        self.max_workers = _count_arg(max_workers, "max_workers", 1)
        self.queue_size = _count_arg(queue_size, "queue_size", 0)
        keep = _count_arg(keep_mismatches, "keep_mismatches", 0)

        self.control = control
        self.candidates: Mapping[str, Callable[..., Any]] = MappingProxyType(cands)
        self._items = tuple(cands.items())
        # One candidate: the two possible orders, built once (a shuffle per call
        # costs more than the rest of the bookkeeping).
        if len(self._items) == 1 and mode == "inline":
            ctl = (_CONTROL, control)
            self._pair: tuple[tuple[Any, ...], tuple[Any, ...]] | None = (
                (ctl, self._items[0]),
                (self._items[0], ctl),
            )
        elif len(self._items) == 1:
            self._pair = (self._items, self._items)
        else:
            self._pair = None
        self._compare = compare
        self._compare_errors = compare_errors
        self._ignore = ignorers
        self._clean = clean
        self._run_if = run_if
        self.context: Mapping[str, Any] = MappingProxyType(dict(context or {}))
        self._call_context = call_context
        self._before_run = before_run
        self._publish = publish
        self._sample_key = sample_key
        self._rng: _Random = rng if rng is not None else random
        self._never = self.sample == 0
        self._always = self.sample == 100
        self._cut = self.sample * (BUCKETS / 100)
        self._prefix = f"{name}."
        self.raise_on_mismatch = raise_on_mismatch
        self._compensate = compensate
        self._clock = clock
        self._background = mode == "background"
        self._mismatches: deque[Mismatch] = deque(maxlen=keep)

        # Counters exist before the first call so the hot path pays one inc().
        self._calls = Counter("calls", {})
        self._sampled = Counter("sampled", {})
        self._tally: dict[tuple[str, str], Counter] = {}
        self._exported: dict[tuple[str, str], Counter] = {}
        for cname in cands:
            for outcome in OUTCOMES:
                attrs = {
                    names.EXPERIMENT_NAME: name,
                    names.EXPERIMENT_CANDIDATE: cname,
                    names.OUTCOME: outcome,
                }
                self._exported[cname, outcome] = REGISTRY.counter(
                    names.EXPERIMENT_COMPARISONS, attrs
                )
                self._tally[cname, outcome] = Counter(outcome, attrs)
        self._errors: dict[str, Counter] = {}
        self._lock = _fork.new_lock()
        self._running: dict[int, _Running] = {}
        self._pool = _Pool(name, self.max_workers, self.queue_size)
        self._tasks: set[asyncio.Task[None]] = set()
        self._ainflight = 0
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()
        self._running = {}

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
        if self._background:
            return self._run_background(args, kwargs)
        return self._run_inline(args, kwargs)

    def run(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Same as calling the experiment."""
        return self(*args, **kwargs)

    async def arun(
        self: Experiment[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await the experiment of an async control; same as ``await exp(...)``."""
        return await self(*args, **kwargs)

    # -------------------------------------------------------------- decisions

    def _should_run(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        if not self._always:
            key_fn = self._sample_key
            if key_fn is None:
                if self._rng.random() * BUCKETS >= self._cut:
                    return False
            else:
                try:
                    key = key_fn(*args, **kwargs)
                    text = key if isinstance(key, str) else str(key)
                except Exception as exc:
                    self._failed("sample_key", exc)
                    return False
                if bucket_of(self._prefix, text) >= self._cut:
                    return False
        run_if = self._run_if
        if run_if is not None:
            try:
                if not run_if(*args, **kwargs):
                    return False
            except Exception as exc:
                self._failed("run_if", exc)
                return False
        self._sampled.inc()
        return True

    def _order(self) -> Sequence[tuple[str, Callable[..., Any]]]:
        """Return the candidates (and the control, inline) in random order."""
        pair = self._pair
        if pair is not None:
            return pair[0] if self._rng.random() < 0.5 else pair[1]
        items: list[tuple[str, Callable[..., Any]]] = list(self._items)
        if not self._background:
            items.append((_CONTROL, self.control))
        rand = self._rng.random
        for i in range(len(items) - 1, 0, -1):
            j = int(rand() * (i + 1))
            items[i], items[j] = items[j], items[i]
        return items

    def _context_for(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        fn = self._call_context
        if fn is None:
            return self.context
        try:
            extra = fn(*args, **kwargs)
            merged = {**self.context, **extra}
        except Exception as exc:
            self._failed("call_context", exc)
            return self.context
        return merged

    def _observation(
        self,
        name: str,
        value: Any,
        exc: BaseException | None,
        duration: float,
        timed_out: bool = False,
    ) -> Observation:
        cleaned = value
        if self._clean is not None and exc is None and not timed_out:
            try:
                cleaned = self._clean(value)
            except Exception as error:
                self._failed("clean", error)
                cleaned = None
        return Observation(name, value, exc, duration, cleaned, timed_out)

    def _judge(self, control: Observation, cand: Observation) -> Outcome:
        outcome: Outcome
        if cand.timed_out:
            return "timeout"
        if cand.exception is not None:
            if control.exception is None:
                outcome = "candidate_error"
            else:
                outcome = self._agree(
                    "compare_errors",
                    self._compare_errors,
                    control.exception,
                    cand.exception,
                )
        elif control.exception is not None:
            outcome = "mismatched"
        else:
            outcome = self._agree("compare", self._compare, control.value, cand.value)
        if outcome != "matched":
            for ig in self._ignore:
                try:
                    if ig(control, cand):
                        return "ignored"
                except Exception as exc:
                    self._failed("ignore", exc)
        return outcome

    def _agree(
        self, which: str, fn: Callable[[Any, Any], object], a: Any, b: Any
    ) -> Outcome:
        # A comparator that fails proves nothing: count it and call it a mismatch.
        try:
            return "matched" if fn(a, b) else "mismatched"
        except Exception as exc:
            self._failed(which, exc)
            return "mismatched"

    # -------------------------------------------------------------- reporting

    def _failed(self, callback: str, exc: BaseException) -> None:
        counter = self._errors.get(callback)
        if counter is None:
            with self._lock:
                counter = self._errors.setdefault(callback, Counter(callback, {}))
            logger.error(
                "experiment %r: %s raised %s; the caller is not affected and later "
                "errors of this callback are counted, not logged",
                self.name,
                callback,
                type(exc).__name__,
                exc_info=exc,
            )
        counter.inc()
        if ExperimentCallbackFailed.listened:
            BUS.publish(
                ExperimentCallbackFailed(self.name, callback, type(exc).__name__)
            )

    def _count(
        self, candidate: str, outcome: Outcome, result: ExperimentResult | None
    ) -> None:
        self._exported[candidate, outcome].inc()
        self._tally[candidate, outcome].inc()
        if ExperimentCompared.listened:
            BUS.publish(ExperimentCompared(self.name, candidate, outcome, result))

    def _finish(
        self,
        control: Observation,
        observed: Mapping[str, Observation],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        context: Mapping[str, Any],
        reported: set[str] | frozenset[str] = frozenset(),
    ) -> ExperimentResult | None:
        """Judge, count, keep and publish one call's runs; never raises."""
        try:
            outcomes: dict[str, Outcome] = {}
            for cname, _ in self._items:
                obs = observed.get(cname)
                outcomes[cname] = (
                    "skipped" if obs is None else self._judge(control, obs)
                )
            result = ExperimentResult(
                self.name, control, observed, outcomes, context, args, kwargs
            )
            for cname, outcome in outcomes.items():
                if cname not in reported:
                    self._count(cname, outcome, result)
                if outcome in _DISAGREE and self._mismatches.maxlen:
                    self._mismatches.append(
                        Mismatch(
                            self.name,
                            cname,
                            outcome,
                            args,
                            kwargs,
                            control,
                            observed[cname],
                            context,
                        )
                    )
            if self._publish is not None:
                try:
                    self._publish(result)
                except Exception as exc:
                    self._failed("publish", exc)
        except Exception:  # pragma: no cover - never let a tipkit bug reach the caller
            logger.exception("experiment %r: internal error while reporting", self.name)
            return None
        return result

    def _skip(
        self, control: _RawControl, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> None:
        # On the caller's path: counters and events only, never publish=.
        result = None
        if ExperimentCompared.listened:
            obs = Observation(_CONTROL, control[0], control[1], control[2], control[0])
            outcomes: dict[str, Outcome] = dict.fromkeys(self.candidates, "skipped")
            result = ExperimentResult(
                self.name, obs, {}, outcomes, self.context, args, kwargs
            )
        for cname in self.candidates:
            self._count(cname, "skipped", result)

    def _compensate_sync(
        self, obs: Observation, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> None:
        fn = self._compensate
        if fn is None:
            return
        try:
            out = fn(obs, *args, **kwargs)
            if inspect.isawaitable(out):
                close = getattr(out, "close", None)
                if close is not None:
                    close()
                raise TypeError("compensate returned an awaitable in a sync experiment")
        except Exception as exc:
            self._failed("compensate", exc)

    async def _compensate_async(
        self, obs: Observation, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> None:
        fn = self._compensate
        if fn is None:
            return
        try:
            out = fn(obs, *args, **kwargs)
            if inspect.isawaitable(out):
                await out
        except Exception as exc:
            self._failed("compensate", exc)

    def _before_sync(self) -> bool:
        fn = self._before_run
        if fn is None:
            return True
        try:
            fn()
        except Exception as exc:
            self._failed("before_run", exc)
            return False
        return True

    async def _before_async(self) -> bool:
        fn = self._before_run
        if fn is None:
            return True
        try:
            out = fn()
            if inspect.isawaitable(out):
                await out
        except Exception as exc:
            self._failed("before_run", exc)
            return False
        return True

    # -------------------------------------------------------------- sync inline

    def _run_inline(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        # Callbacks that are not set cost one attribute test, not a call.
        context = self.context if self._call_context is None else None
        if context is None:
            context = self._context_for(args, kwargs)
        if self._before_run is not None and not self._before_sync():
            return self.control(*args, **kwargs)
        clock = self._clock
        timeout = self.timeout
        plain = self._clean is None
        observed: dict[str, Observation] = {}
        value: Any = None
        error: Exception | None = None
        control: Observation | None = None
        now = clock.monotonic()
        for cname, fn in self._order():
            start = now
            if cname == _CONTROL:
                try:
                    value = fn(*args, **kwargs)
                except Exception as exc:
                    error = exc
                now = clock.monotonic()
                control = (
                    Observation(_CONTROL, value, error, now - start, value)
                    if plain
                    else self._observation(_CONTROL, value, error, now - start)
                )
                continue
            cvalue: Any = None
            cerror: Exception | None = None
            try:
                cvalue = fn(*args, **kwargs)
            except Exception as exc:
                cerror = exc
            now = clock.monotonic()
            took = now - start
            late = timeout is not None and took > timeout
            obs = (
                Observation(cname, cvalue, cerror, took, cvalue, late)
                if plain
                else self._observation(cname, cvalue, cerror, took, late)
            )
            observed[cname] = obs
            if self._compensate is not None:
                self._compensate_sync(obs, args, kwargs)
                now = clock.monotonic()
        assert control is not None
        result = self._finish(control, observed, args, kwargs, context=context)
        if self.raise_on_mismatch and result is not None and result.disagreeing:
            raise MismatchError(result) from error
        if error is not None:
            raise error
        return value  # type: ignore[no-any-return]  # the control's own result

    # -------------------------------------------------------------- sync background

    def _run_background(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        clock = self._clock
        start = clock.monotonic()
        try:
            value = self.control(*args, **kwargs)
        except Exception as exc:
            self._submit((None, exc, clock.monotonic() - start), args, kwargs)
            raise
        self._submit((value, None, clock.monotonic() - start), args, kwargs)
        return value

    def _submit(
        self, control: _RawControl, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            if self._running:
                self._sweep(self._clock.monotonic())
            # The candidate sees the caller's context variables (synthetic
            # traffic marks, spans), as a task created here would.
            job = functools.partial(
                contextvars.copy_context().run, self._job, control, args, kwargs
            )
            if not self._pool.submit(job):
                self._skip(control, args, kwargs)
        except Exception:  # pragma: no cover - never let a tipkit bug reach the caller
            logger.exception("experiment %r: could not start a shadow run", self.name)

    def _sweep(self, now: float) -> None:
        """Report background sync candidates past their timeout (lazily, at *now*)."""
        due: list[str] = []
        with self._lock:
            for run in self._running.values():
                if not run.reported and not run.done and now > run.deadline:
                    run.reported = True
                    due.append(run.candidate)
        for cname in due:
            self._count(cname, "timeout", None)

    def _job(
        self, raw: _RawControl, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        context = self._context_for(args, kwargs)
        if not self._before_sync():
            return
        clock = self._clock
        timeout = self.timeout
        observed: dict[str, Observation] = {}
        reported: set[str] = set()
        for cname, fn in self._order():
            start = clock.monotonic()
            run = None
            if timeout is not None:
                run = _Running(cname, start + timeout)
                with self._lock:  # the sweep iterates this dict from other threads
                    self._running[id(run)] = run
            value: Any = None
            error: Exception | None = None
            try:
                value = fn(*args, **kwargs)
            except Exception as exc:
                error = exc
            end = clock.monotonic()
            late = timeout is not None and end - start > timeout
            if run is not None:
                with self._lock:
                    run.done = True
                    del self._running[id(run)]
                    if run.reported:
                        reported.add(cname)
                        late = True
            obs = self._observation(cname, value, error, end - start, late)
            observed[cname] = obs
            self._compensate_sync(obs, args, kwargs)
        control = self._observation(_CONTROL, *raw)
        self._finish(
            control, observed, args, kwargs, context=context, reported=reported
        )

    # -------------------------------------------------------------- async

    async def _arun(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._never or not self._should_run(args, kwargs):
            return await self.control(*args, **kwargs)  # type: ignore[misc]  # async control
        if self._background:
            clock = self._clock
            start = clock.monotonic()
            try:
                value = await self.control(*args, **kwargs)  # type: ignore[misc]  # async control
            except Exception as exc:
                self._spawn((None, exc, clock.monotonic() - start), args, kwargs)
                raise
            self._spawn((value, None, clock.monotonic() - start), args, kwargs)
            return value
        return await self._arun_inline(args, kwargs)

    async def _aobserve(
        self,
        cname: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Observation:
        clock = self._clock
        timeout = self.timeout
        value: Any = None
        error: Exception | None = None
        expired = False
        start = clock.monotonic()
        try:
            if timeout is None:
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
            else:
                scope = asyncio.timeout(timeout)
                try:
                    async with scope:
                        value = fn(*args, **kwargs)
                        if inspect.isawaitable(value):
                            value = await value
                except TimeoutError:
                    if not scope.expired():
                        raise
                    expired = True
                    value = None
        except Exception as exc:
            error = exc
        took = clock.monotonic() - start
        late = expired or (timeout is not None and took > timeout)
        obs = self._observation(cname, value, error, took, late)
        await self._compensate_async(obs, args, kwargs)
        return obs

    async def _arun_inline(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        context = self._context_for(args, kwargs)
        if not await self._before_async():
            return await self.control(*args, **kwargs)  # type: ignore[misc]  # async control
        clock = self._clock
        observed: dict[str, Observation] = {}
        value: Any = None
        error: Exception | None = None
        control: Observation | None = None
        for cname, fn in self._order():
            if cname == _CONTROL:
                start = clock.monotonic()
                try:
                    value = await fn(*args, **kwargs)
                except Exception as exc:
                    error = exc
                control = self._observation(
                    _CONTROL, value, error, clock.monotonic() - start
                )
            else:
                observed[cname] = await self._aobserve(cname, fn, args, kwargs)
        assert control is not None
        result = self._finish(control, observed, args, kwargs, context=context)
        if self.raise_on_mismatch and result is not None and result.disagreeing:
            raise MismatchError(result) from error
        if error is not None:
            raise error
        return value

    def _spawn(
        self, control: _RawControl, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            with self._lock:
                full = self._ainflight >= self.max_workers + self.queue_size
                if not full:
                    self._ainflight += 1
            if full:
                self._skip(control, args, kwargs)
                return
            loop = asyncio.get_running_loop()
            sem = self._semaphores.get(loop)
            if sem is None:
                sem = self._semaphores.setdefault(
                    loop, asyncio.Semaphore(self.max_workers)
                )
            task = loop.create_task(self._ajob(sem, control, args, kwargs))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        except Exception:  # pragma: no cover - never let a tipkit bug reach the caller
            logger.exception("experiment %r: could not start a shadow run", self.name)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        with self._lock:
            self._ainflight -= 1
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover
            logger.error(
                "experiment %r: shadow task failed",
                self.name,
                exc_info=task.exception(),
            )

    async def _ajob(
        self,
        sem: asyncio.Semaphore,
        raw: _RawControl,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        async with sem:
            context = self._context_for(args, kwargs)
            if not await self._before_async():
                return
            observed: dict[str, Observation] = {}
            for cname, fn in self._order():
                observed[cname] = await self._aobserve(cname, fn, args, kwargs)
            control = self._observation(_CONTROL, *raw)
            self._finish(control, observed, args, kwargs, context=context)

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
        if self._running:
            self._sweep(self._clock.monotonic())
        counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        for (cname, outcome), counter in self._tally.items():
            if candidate is None or cname == candidate:
                counts[outcome] += counter.value
        return counts

    @property
    def calls(self) -> int:
        """Calls made through the experiment."""
        return self._calls.value

    @property
    def sampled(self) -> int:
        """Calls that were sampled (and passed ``run_if``) to run the candidates."""
        return self._sampled.value

    @property
    def pending(self) -> int:
        """Background runs queued or running now."""
        return self._pool.inflight + self._ainflight

    def errors(self) -> dict[str, int]:
        """Return how often each callback raised (only those that did)."""
        return {k: c.value for k, c in self._errors.items() if c.value}

    def mismatches(self, candidate: str | None = None) -> list[Mismatch]:
        """Return the recent disagreements, oldest first (in process only).

        At most ``keep_mismatches`` are kept; each has the call's arguments and
        both observations' cleaned values.
        """
        return [
            m for m in self._mismatches if candidate is None or m.candidate == candidate
        ]

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no background thread run is queued or running.

        Waits in real time (the runs are real threads), at most *timeout*
        seconds (``None``: no limit). Returns whether the pool went idle. For
        tests and graceful shutdown; a hung candidate keeps it waiting.
        """
        done = self._pool.wait_idle(timeout)
        if self._running:
            self._sweep(self._clock.monotonic())
        return done

    async def adrain(self) -> None:
        """Wait for this loop's background tasks of the experiment to finish."""
        loop = asyncio.get_running_loop()
        tasks = [t for t in list(self._tasks) if t.get_loop() is loop]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def __repr__(self) -> str:
        control = getattr(self.control, "__qualname__", repr(self.control))
        counts = " ".join(f"{k}={v}" for k, v in self.stats().items() if v)
        timeout = "" if self.timeout is None else f" timeout={self.timeout:g}s"
        keyed = " by key" if self._sample_key is not None else ""
        return (
            f"<Experiment {self.name!r} control={control} candidates="
            f"{list(self.candidates)} mode={self.mode} sample={self.sample:g}%{keyed}"
            f"{timeout} calls={self.calls} sampled={self.sampled}"
            + (f" {counts}" if counts else "")
            + ">"
        )
