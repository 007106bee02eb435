"""Retries with exponential backoff and jitter, on tenacity, with a real deadline.

::

    @retry(on=(ConnectionError, TimeoutError), attempts=3, timeout=10.0)
    def fetch() -> bytes: ...

    for attempt in retry_context(on=ConnectionError, attempts=3):
        with attempt:
            ...

tenacity schedules the retries (its attempt numbering, ``wait`` and ``stop``
protocol); tipkit adds what it lacks:

* **time is injected**: the total ``timeout`` is measured on tipkit's clock and
  every wait goes through ``clock.sleep``/``clock.asleep``, so tests under
  :class:`~tipkit.testing.FakeClock` run in zero real time;
* **a deadline that means it**: a retry is given up *without sleeping* when
  ``now + next wait`` reaches the deadline (the call's own ``timeout`` or an outer
  ``tipkit`` deadline), no attempt starts past either, and giving up re-raises
  the last exception itself, never tenacity's ``RetryError``;
* **no hammering**: a :class:`~tipkit.errors.RejectedError` (open breaker, rate
  limited, bulkhead full) is never retried unless asked for; when it is, its
  ``retry_after`` is honoured if it fits in the time left;
* **free on success**: the first attempt is a plain call; tenacity is entered
  only once an attempt has failed.
"""

from __future__ import annotations

import functools
import inspect
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, ClassVar, Literal, ParamSpec, Self, TypeVar, cast, overload

import tenacity

from tipkit._core import _deadline
from tipkit._core._durations import to_seconds
from tipkit._core._guard import check_decoratable
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import RejectedError
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY, Counter
from tipkit.telemetry._events import BUS, AttributeValue, Event

__all__ = [
    "Attempt",
    "Retry",
    "RetryGaveUp",
    "RetryScheduled",
    "RetryingBlock",
    "is_testing",
    "retry",
    "retry_context",
    "set_testing",
]

P = ParamSpec("P")
R = TypeVar("R")

ExcTypes = type[BaseException] | tuple[type[BaseException], ...]
On = ExcTypes | Callable[[Exception], bool]
GiveUpReason = Literal["attempts", "timeout", "deadline", "not_retriable"]


# -- events ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RetryScheduled(Event):
    """An attempt failed with a retriable error; the next one runs after ``wait``.

    Attributes:
        attempt: the number of the attempt that is scheduled (2 for the first retry).
        wait: seconds slept before it.
        error: the exception of the failed attempt (in process only: exported
            telemetry carries its type name, never its message).
    """

    attempt: int
    wait: float
    error: BaseException

    otel_name: ClassVar[str] = "tipkit.retry.scheduled"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return name, attempt, wait and the error's type name."""
        return {
            names.RETRY_NAME: self.name,
            "tipkit.retry.attempt": self.attempt,
            "tipkit.retry.wait": self.wait,
            names.ERROR_TYPE: _type_name(self.error),
        }


@dataclass(frozen=True, slots=True)
class RetryGaveUp(Event):
    """Retrying stopped; the last error is raised to the caller.

    Attributes:
        attempts: attempts made.
        error: the last attempt's exception, which is re-raised.
        reason: ``"attempts"`` (all used), ``"timeout"`` (the next wait would
            reach this retry's deadline), or ``"deadline"`` (an outer tipkit
            deadline ends first).
    """

    attempts: int
    error: BaseException
    reason: GiveUpReason

    otel_name: ClassVar[str] = "tipkit.retry.gave_up"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return name, attempts, reason and the error's type name."""
        return {
            names.RETRY_NAME: self.name,
            "tipkit.retry.attempts": self.attempts,
            "tipkit.retry.reason": self.reason,
            names.ERROR_TYPE: _type_name(self.error),
        }


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__
        if cls.__module__ == "builtins"
        else f"{cls.__module__}.{cls.__qualname__}"
    )


# -- testing mode ----------------------------------------------------------------------
class _Testing:
    __slots__ = ("active", "attempts", "cap")

    def __init__(self) -> None:
        self.active = False
        self.attempts = 1
        self.cap = False


_TESTING = _Testing()


class _TestingRestorer:
    """Returned by :func:`set_testing`; as a context manager, restores the previous mode."""

    __slots__ = ("_previous",)

    def __init__(self, previous: tuple[bool, int, bool]) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _TESTING.active, _TESTING.attempts, _TESTING.cap = self._previous

    def __repr__(self) -> str:
        return f"<set_testing restores active={self._previous[0]}>"


def set_testing(
    testing: bool, *, attempts: int = 1, cap: bool = False
) -> _TestingRestorer:
    """Make every retry in this process instant and bounded, for test suites.

    With *testing* true, no retry waits (the clock is not slept on) and each
    retried call makes *attempts* attempts (with *cap*, at most *attempts*: fewer
    if the retry is configured with fewer). Works as a plain call and as a
    context manager that restores the previous mode on exit::

        with set_testing(True, attempts=2):
            ...

    Not thread-local: it is a process-wide switch, like stamina's.

    Raises:
        TypeError, ValueError: *attempts* is not a positive int.
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        raise TypeError(f"set_testing: attempts must be an int, got {attempts!r}")
    if attempts < 1:
        raise ValueError(f"set_testing: attempts must be >= 1, got {attempts!r}")
    previous = (_TESTING.active, _TESTING.attempts, _TESTING.cap)
    _TESTING.active, _TESTING.attempts, _TESTING.cap = (
        bool(testing),
        attempts,
        bool(cap),
    )
    return _TestingRestorer(previous)


def is_testing() -> bool:
    """Return whether :func:`set_testing` mode is on."""
    return _TESTING.active


# -- the policy: configuration and the tenacity scheduler ---------------------------------
_GAVE_UP = object()


def _check_on(
    on: object,
) -> tuple[ExcTypes | None, Callable[[Exception], bool] | None, bool]:
    """Return (types, predicate, names_a_rejection)."""
    if isinstance(on, type):
        if not issubclass(on, BaseException):
            raise TypeError(
                f"retry: on must be exception types or a predicate, got {on!r}"
            )
        return on, None, issubclass(on, RejectedError)
    if isinstance(on, tuple):
        if not on:
            raise ValueError(
                "retry: on=() would never retry; name at least one exception type"
            )
        for item in on:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise TypeError(
                    f"retry: on must hold exception types, got {item!r} in {on!r}"
                )
        return on, None, any(issubclass(t, RejectedError) for t in on)
    if callable(on):
        if inspect.iscoroutinefunction(on):
            raise TypeError("retry: on= predicates must be synchronous functions")
        return None, on, False
    raise TypeError(f"retry: on must be exception types or a predicate, got {on!r}")


def _check_name(name: object, owner: str) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{owner}: name must be a non-empty string, got {name!r}")


def _non_negative(value: float | timedelta, arg: str) -> float:
    secs = to_seconds(value, f"retry: {arg}")
    if secs < 0:
        raise ValueError(f"retry: {arg} must be >= 0 seconds, got {value!r}")
    return secs


class _Policy:
    """Everything a retry decides with, shared by every call it guards."""

    __slots__ = (
        "attempts",
        "clock",
        "exp_base",
        "on",
        "predicate",
        "retry_rejected",
        "tenacity",
        "timeout",
        "types",
        "wait_initial",
        "wait_jitter",
        "wait_max",
    )

    def __init__(
        self,
        *,
        on: On,
        attempts: int | None,
        timeout: float | timedelta | None,
        wait_initial: float | timedelta,
        wait_max: float | timedelta,
        wait_jitter: float | timedelta,
        wait_exp_base: float,
        retry_rejected: bool,
        clock: Clock,
    ) -> None:
        self.on = on
        self.types, self.predicate, names_rejection = _check_on(on)
        if not isinstance(retry_rejected, bool):
            raise TypeError(
                f"retry: retry_rejected must be a bool, got {retry_rejected!r}"
            )
        self.retry_rejected = retry_rejected or names_rejection
        if attempts is not None:
            if isinstance(attempts, bool) or not isinstance(attempts, int):
                raise TypeError(
                    f"retry: attempts must be an int or None, got {attempts!r}"
                )
            if attempts < 1:
                raise ValueError(f"retry: attempts must be >= 1, got {attempts!r}")
        self.attempts = attempts
        self.timeout = None if timeout is None else _non_negative(timeout, "timeout")
        if self.timeout == 0:
            raise ValueError("retry: timeout must be > 0 seconds (None: no time limit)")
        if attempts is None and self.timeout is None:
            raise ValueError(
                "retry: attempts=None and timeout=None would retry forever; bound one"
            )
        self.wait_initial = _non_negative(wait_initial, "wait_initial")
        self.wait_max = _non_negative(wait_max, "wait_max")
        self.wait_jitter = _non_negative(wait_jitter, "wait_jitter")
        if isinstance(wait_exp_base, bool) or not isinstance(
            wait_exp_base, int | float
        ):
            raise TypeError(
                f"retry: wait_exp_base must be a number, got {wait_exp_base!r}"
            )
        if not 1 <= wait_exp_base < math.inf:
            raise ValueError(
                f"retry: wait_exp_base must be >= 1 and finite, got {wait_exp_base!r}"
            )
        self.exp_base = float(wait_exp_base)
        if not isinstance(clock, Clock):
            raise TypeError(
                f"clock must provide monotonic(), time(), sleep() and asleep(), got {clock!r}"
            )
        self.clock = clock
        # One scheduler for every call: tenacity keeps its per-iteration state in a
        # thread-local and `iter` never yields, so calls on threads and tasks share it.
        self.tenacity = tenacity.Retrying(
            sleep=clock.sleep,
            stop=self._stop,
            wait=self._wait,
            retry=tenacity.retry_always,
            retry_error_callback=_gave_up,
        )

    def retriable(self, exc: Exception) -> bool:
        """Return whether *exc* is to be retried."""
        if isinstance(exc, RejectedError) and not self.retry_rejected:
            return False
        if self.types is not None:
            return isinstance(exc, self.types)
        assert self.predicate is not None
        return bool(self.predicate(exc))

    def backoff(self, attempt: int) -> float:
        """Return the wait after failed attempt number *attempt* (1-based), with jitter."""
        try:
            base = self.wait_initial * self.exp_base ** (attempt - 1)
        except OverflowError:
            return self.wait_max
        return min(self.wait_max, base + random.uniform(0, self.wait_jitter))  # noqa: S311  # jitter, not cryptography

    def max_attempts(self) -> int | None:
        if _TESTING.active:
            if _TESTING.cap and self.attempts is not None:
                return min(_TESTING.attempts, self.attempts)
            return _TESTING.attempts
        return self.attempts

    # tenacity protocol: `wait` then `stop` are asked after every failed attempt.
    def _wait(self, state: tenacity.RetryCallState) -> float:
        if _TESTING.active:
            return 0.0
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RejectedError) and exc.retry_after is not None:
            return max(0.0, float(exc.retry_after))
        return self.backoff(state.attempt_number)

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        run: _Run = state.tipkit_run  # type: ignore[attr-defined]  # set by _Run
        limit = self.max_attempts()
        if limit is not None and state.attempt_number >= limit:
            run.reason = "attempts"
            return True
        wait = state.upcoming_sleep
        if run.deadline is not None and self.clock.monotonic() + wait >= run.deadline:
            run.reason = "timeout"
            return True
        dl = _deadline.CURRENT.get()
        if dl is not None and dl.remaining() <= wait:
            run.reason = "deadline"
            return True
        return False

    def describe(self) -> str:
        on = self.on
        if isinstance(on, type):
            on_text = on.__qualname__
        elif isinstance(on, tuple):
            on_text = "(" + ", ".join(t.__qualname__ for t in on) + ")"
        else:
            on_text = getattr(on, "__qualname__", repr(on))
        return (
            f"on={on_text} attempts={self.attempts} timeout={self.timeout} "
            f"wait={self.wait_initial:g}..{self.wait_max:g}s x{self.exp_base:g} "
            f"jitter={self.wait_jitter:g}s"
        )


def _gave_up(_state: tenacity.RetryCallState) -> object:
    return _GAVE_UP


class _Counters:
    __slots__ = ("failure", "gave_up", "retried", "success")

    def __init__(self, name: str) -> None:
        def counter(outcome: str) -> Counter:
            return REGISTRY.counter(
                names.RETRY_ATTEMPTS, {names.RETRY_NAME: name, names.OUTCOME: outcome}
            )

        self.success = counter("success")
        self.retried = counter("retried")
        self.gave_up = counter("gave_up")
        self.failure = counter("failure")


class _Run:
    """One retried call after its first failure: the tenacity state and the deadline."""

    __slots__ = ("counters", "deadline", "name", "policy", "reason", "state")

    def __init__(  # noqa: PLR0917  # internal: the failure path hands everything over
        self,
        policy: _Policy,
        name: str,
        counters: _Counters,
        start: float,
        fn: Callable[..., Any] | None,
        args: Any,
        kwargs: Any,
    ) -> None:
        self.policy = policy
        self.name = name
        self.counters = counters
        self.deadline = None if policy.timeout is None else start + policy.timeout
        self.reason: GiveUpReason = "attempts"
        # tenacity's statistics are per thread; begin() resets this thread's.
        policy.tenacity.begin()
        self.state = tenacity.RetryCallState(policy.tenacity, fn, args, kwargs)
        self.state.tipkit_run = self  # type: ignore[attr-defined]  # read by _Policy._stop

    def failed(self, exc: Exception) -> float | None:
        """Record retriable *exc*; return the wait before the next attempt, or ``None``."""
        state = self.state
        state.set_exception((type(exc), exc, exc.__traceback__))
        do = self.policy.tenacity.iter(state)
        if do is _GAVE_UP:
            self.gave_up(exc)
            return None
        wait = float(cast("tenacity.DoSleep", do))
        self.counters.retried.inc()
        if RetryScheduled.listened:
            BUS.publish(RetryScheduled(self.name, state.attempt_number + 1, wait, exc))
        state.prepare_for_next_attempt()
        return wait

    def may_start(self, exc: Exception) -> bool:
        """Return whether the next attempt may start now (else give up with *exc*)."""
        if self.deadline is not None and self.policy.clock.monotonic() >= self.deadline:
            self.reason = "timeout"
        else:
            dl = _deadline.CURRENT.get()
            if dl is None or not dl.expired():
                return True
            self.reason = "deadline"
        self.state.attempt_number -= 1  # the scheduled attempt never ran
        self.gave_up(exc)
        return False

    def gave_up(self, exc: Exception) -> None:
        self.counters.gave_up.inc()
        if RetryGaveUp.listened:
            BUS.publish(
                RetryGaveUp(self.name, self.state.attempt_number, exc, self.reason)
            )


# -- the decorator ---------------------------------------------------------------------
class Retry:
    """A retry policy: decorate ``def``/``async def`` functions, or ``call``/``acall``.

    Made by :func:`retry`. It cannot be a ``with`` block (a block runs once): use
    :func:`retry_context` for that. Thread-safe and asyncio-safe: no per-call
    state lives on the object.
    """

    __slots__ = ("_by_name", "_policy", "name")

    # compose() refuses `with` for guards that must re-run the work.
    _reruns: ClassVar[bool] = True

    def __init__(self, policy: _Policy, name: str | None) -> None:
        self._policy = policy
        self.name = name
        self._by_name: dict[str, _Counters] = {}

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<retry{label} {self._policy.describe()}>"

    def _counters(self, name: str) -> _Counters:
        found = self._by_name.get(name)
        if found is None:
            found = self._by_name[name] = _Counters(name)
        return found

    def _name_for(self, fn: Callable[..., Any]) -> str:
        return self.name or getattr(fn, "__qualname__", None) or repr(fn)

    def __enter__(self) -> None:
        raise TypeError(
            f"{self!r} must re-run the work, which a `with` block cannot do: decorate "
            "a function, use call()/acall(), or loop: `for attempt in "
            "retry_context(...): with attempt: ...`"
        )

    def __exit__(
        self, *exc_info: object
    ) -> None:  # pragma: no cover - __enter__ always raises
        return None

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate *fn* (a plain or ``async def`` function) with this retry.

        Raises:
            TypeError: *fn* is a generator or async generator function.
        """
        check_decoratable(fn, self)
        if inspect.iscoroutinefunction(fn):
            return self._wrap_async(fn)
        return self._wrap_sync(fn)

    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        policy = self._policy
        now = policy.clock.monotonic
        retriable = policy.retriable
        name = self._name_for(fn)
        counters = self._counters(name)
        again = self._again_sync

        @functools.wraps(fn)
        def retried(*args: P.args, **kwargs: P.kwargs) -> R:
            # The first attempt is a plain call: tenacity only after a failure.
            start = now()
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not retriable(exc):
                    counters.failure.inc()
                    raise
                error = exc
            # Outside the `except`: later errors must not chain to this one.
            return again(fn, args, kwargs, error, start, name, counters)

        return retried

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        policy = self._policy
        now = policy.clock.monotonic
        retriable = policy.retriable
        name = self._name_for(fn)
        counters = self._counters(name)
        again = self._again_async

        @functools.wraps(fn)
        async def retried(*args: P.args, **kwargs: P.kwargs) -> R:
            start = now()
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                if not retriable(exc):
                    counters.failure.inc()
                    raise
                error = exc
            return await again(fn, args, kwargs, error, start, name, counters)

        return retried

    def _again_sync(  # noqa: PLR0917  # internal: the failure path hands everything over
        self,
        fn: Callable[..., R],
        args: Any,
        kwargs: Any,
        error: Exception,
        start: float,
        name: str,
        counters: _Counters,
    ) -> R:
        policy = self._policy
        run = _Run(policy, name, counters, start, fn, args, kwargs)
        while True:
            wait = run.failed(error)
            if wait is None:
                raise error
            if wait > 0:
                policy.clock.sleep(wait)
            if not run.may_start(error):
                raise error
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not policy.retriable(exc):
                    counters.failure.inc()
                    raise
                error = exc
                continue
            counters.success.inc()
            return result

    async def _again_async(  # noqa: PLR0917  # internal: the failure path hands everything over
        self,
        fn: Callable[..., Awaitable[R]],
        args: Any,
        kwargs: Any,
        error: Exception,
        start: float,
        name: str,
        counters: _Counters,
    ) -> R:
        policy = self._policy
        run = _Run(policy, name, counters, start, fn, args, kwargs)
        while True:
            wait = run.failed(error)
            if wait is None:
                raise error
            if wait > 0:
                await policy.clock.asleep(wait)
            if not run.may_start(error):
                raise error
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                if not policy.retriable(exc):
                    counters.failure.inc()
                    raise
                error = exc
                continue
            counters.success.inc()
            return result

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)``, retrying it; return its result.

        Raises:
            TypeError: *fn* is a coroutine function (use :meth:`acall`).
            Exception: the last attempt's exception, itself, when retrying gives up.
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"{fn!r} is a coroutine function: use `await acall(...)`")
        policy = self._policy
        start = policy.clock.monotonic()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            name = self._name_for(fn)
            if not policy.retriable(exc):
                self._counters(name).failure.inc()
                raise
            error = exc
        return self._again_sync(
            fn, args, kwargs, error, start, name, self._counters(name)
        )

    async def acall(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)``, retrying it; return its result."""
        policy = self._policy
        start = policy.clock.monotonic()
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            name = self._name_for(fn)
            if not policy.retriable(exc):
                self._counters(name).failure.inc()
                raise
            error = exc
        return await self._again_async(
            fn, args, kwargs, error, start, name, self._counters(name)
        )


def retry(
    *,
    on: On,
    attempts: int | None = 10,
    timeout: float | timedelta | None = 45.0,
    wait_initial: float | timedelta = 0.1,
    wait_max: float | timedelta = 5.0,
    wait_jitter: float | timedelta = 1.0,
    wait_exp_base: float = 2.0,
    retry_rejected: bool = False,
    name: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Retry:
    """Return a decorator that retries a function on the errors named by *on*.

    After failed attempt *n* it waits ``min(wait_max, wait_initial *
    wait_exp_base ** (n - 1) + uniform(0, wait_jitter))`` seconds on *clock*,
    at most *attempts* attempts in all and within *timeout* seconds of the first
    attempt's start. It gives up without sleeping when the next wait would reach
    the timeout or the current tipkit deadline, never starts an attempt past
    either, and then raises the last exception itself.

    Args:
        on: an exception type, a tuple of them, or a synchronous predicate
            ``(exc) -> bool``. Only :class:`Exception` subclasses are retried
            (never ``KeyboardInterrupt`` or ``asyncio.CancelledError``).
        attempts: the most attempts, the first included (``None``: no limit,
            then *timeout* must be set).
        timeout: the most seconds from the first attempt's start (``None``: no
            limit, then *attempts* must be set).
        wait_initial: the first wait, before jitter.
        wait_max: the longest wait, jitter included.
        wait_jitter: the most random seconds added to each wait.
        wait_exp_base: how much each wait grows over the previous one.
        retry_rejected: also retry :class:`~tipkit.errors.RejectedError`
            (open breaker, rate limited, bulkhead full) matched by *on*. Naming
            a ``RejectedError`` subclass in *on* asks for it too. A rejection's
            ``retry_after`` replaces the backoff, and the retry gives up at once
            if it does not fit in the time left.
        name: names the retry in events and metrics (default: the function's
            qualified name).
        clock: the clock for the timeout and the waits.

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
    """
    policy = _Policy(
        on=on,
        attempts=attempts,
        timeout=timeout,
        wait_initial=wait_initial,
        wait_max=wait_max,
        wait_jitter=wait_jitter,
        wait_exp_base=wait_exp_base,
        retry_rejected=retry_rejected,
        clock=clock,
    )
    if name is not None:
        _check_name(name, "retry")
    return Retry(policy, name)


# -- retry_context: stamina-style blocks ----------------------------------------------------
class Attempt:
    """One attempt of a :func:`retry_context` loop; use it as ``with attempt:``.

    A retriable error raised in the block is recorded and swallowed (the loop
    decides whether to go round again or re-raise it); any other error passes.
    """

    __slots__ = ("_error", "_policy", "num")

    def __init__(self, num: int, policy: _Policy) -> None:
        self.num = num
        self._policy = policy
        self._error: Exception | None = None

    def __repr__(self) -> str:
        return f"<Attempt {self.num}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if isinstance(exc, Exception) and self._policy.retriable(exc):
            self._error = exc
            return True
        return False


class RetryingBlock:
    """Iterate (``for``/``async for``) to run a block until it succeeds or gives up.

    Made by :func:`retry_context`. Each iteration yields an :class:`Attempt`;
    the loop ends after the first attempt whose block raised nothing, and
    re-raises the last error when retrying gives up.
    """

    __slots__ = ("_counters", "_policy", "name")

    def __init__(self, policy: _Policy, name: str) -> None:
        self._policy = policy
        self.name = name
        self._counters = _Counters(name)

    def __repr__(self) -> str:
        return f"<retry_context {self.name!r} {self._policy.describe()}>"

    def __iter__(self) -> Iterator[Attempt]:
        policy = self._policy
        start = policy.clock.monotonic()
        attempt = Attempt(1, policy)
        yield attempt
        error = attempt._error
        if error is None:
            return
        run = _Run(policy, self.name, self._counters, start, None, (), {})
        while True:
            wait = run.failed(error)
            if wait is None:
                raise error
            if wait > 0:
                policy.clock.sleep(wait)
            if not run.may_start(error):
                raise error
            attempt = Attempt(run.state.attempt_number, policy)
            yield attempt
            if attempt._error is None:
                self._counters.success.inc()
                return
            error = attempt._error

    def __aiter__(self) -> AsyncIterator[Attempt]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Attempt]:
        policy = self._policy
        start = policy.clock.monotonic()
        attempt = Attempt(1, policy)
        yield attempt
        error = attempt._error
        if error is None:
            return
        run = _Run(policy, self.name, self._counters, start, None, (), {})
        while True:
            wait = run.failed(error)
            if wait is None:
                raise error
            if wait > 0:
                await policy.clock.asleep(wait)
            if not run.may_start(error):
                raise error
            attempt = Attempt(run.state.attempt_number, policy)
            yield attempt
            if attempt._error is None:
                self._counters.success.inc()
                return
            error = attempt._error


def retry_context(
    *,
    on: On,
    attempts: int | None = 10,
    timeout: float | timedelta | None = 45.0,
    wait_initial: float | timedelta = 0.1,
    wait_max: float | timedelta = 5.0,
    wait_jitter: float | timedelta = 1.0,
    wait_exp_base: float = 2.0,
    retry_rejected: bool = False,
    name: str = "retry_context",
    clock: Clock = SYSTEM_CLOCK,
) -> RetryingBlock:
    """Return an iterable that retries a block, as stamina's ``retry_context`` does.

    ::

        for attempt in retry_context(on=ConnectionError, attempts=3):
            with attempt:
                send()

        async for attempt in retry_context(on=ConnectionError):
            with attempt:
                await send()

    Same arguments and semantics as :func:`retry`.

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
    """
    policy = _Policy(
        on=on,
        attempts=attempts,
        timeout=timeout,
        wait_initial=wait_initial,
        wait_max=wait_max,
        wait_jitter=wait_jitter,
        wait_exp_base=wait_exp_base,
        retry_rejected=retry_rejected,
        clock=clock,
    )
    _check_name(name, "retry_context")
    return RetryingBlock(policy, name)
