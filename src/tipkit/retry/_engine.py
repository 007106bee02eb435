"""The one retry loop: an iterator of attempts, driven by ``for`` or ``async for``.

:class:`Attempts` holds the state of one retried call. Its decision,
:meth:`Attempts._step`, is synchronous and never sleeps: it returns the next
:class:`Attempt`, or the seconds to wait before it, or ``None`` when the loop is
over, and raises the last error when retrying gives up. The two drivers,
``__next__`` (sleeps on the clock) and ``__anext__`` (awaits the clock's
``asleep``), are the only code that differs between sync and async; the
decorator, ``call``/``acall`` and :func:`~tipkit.retry.retry_context` all run on
them (stamina's ``_RetryContextIterator`` is the model).

tenacity schedules the retries: its attempt numbering and its ``wait`` then
``stop`` protocol, asked once per failed attempt through ``Retrying.iter``, which
never sleeps and never yields. tipkit supplies the wait (its backoff, or a
rejection's ``retry_after``) and a stop that reads tipkit's clock and deadlines,
and does the sleeping itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, Self, TypeVar, cast

import tenacity

from tipkit._core import _deadline
from tipkit.retry._events import GiveUpReason, RetryGaveUp, RetryScheduled
from tipkit.retry._policy import Policy
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY, Counter
from tipkit.telemetry._events import BUS

__all__ = ["Attempt", "Attempts", "Counters"]

R = TypeVar("R")


class Counters:
    """The ``tipkit.retry.attempts`` counters of one retry name, by outcome."""

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


class Attempt:
    """One attempt of a retry loop; run its work in ``with attempt:``.

    A retriable error raised in the block is recorded and swallowed (the loop
    decides whether to go round again or re-raise it); any other error passes.
    The first attempt of a loop is the loop itself (``_loop`` is ``None``): a
    block that succeeds at once allocates one object, not two.
    """

    __slots__ = ("_loop", "num")

    def __init__(self, num: int, loop: Attempts | None) -> None:
        self.num = num
        self._loop = loop

    def __repr__(self) -> str:
        return f"<Attempt {self.num}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        loop: Attempts = self._loop or self  # type: ignore[assignment]  # None: the loop's own first attempt
        if exc is None:  # the block succeeded: the loop is over
            loop._over = True
            if self.num > 1:
                loop._counters.success.inc()
            return False
        return loop._ended(exc)


class Attempts(Attempt):
    """The attempts of one retried call: ``for``/``async for`` yields each in turn.

    The loop ends after an attempt whose block raised nothing (or was never
    entered); it re-raises the last retriable error itself when retrying gives
    up: tenacity stops it (attempts used up), the next wait would reach the
    retry's timeout or the current tipkit deadline, or that time has passed when
    the next attempt is due. A fresh object per call: not shared between threads
    or tasks. The loop is its own first attempt (an object allocation is most
    of the cost of a block that succeeds at once).
    """

    __slots__ = (
        "_counters",
        "_error",
        "_name",
        "_number",
        "_over",
        "_policy",
        "_reason",
        "_start",
        "_state",
        "_waited",
    )

    _reason: GiveUpReason  # set by whatever decides to give up, read by _give_up
    # Set on the first failure, not here: a block that succeeds at once never reads
    # them, and each store is a few percent of its cost.
    _waited: bool  # the wait before the next attempt is over
    _over: bool  # the loop is done (read with a default: may be unset)
    _state: tenacity.RetryCallState  # tenacity's schedule (read with a default)

    def __init__(
        self, policy: Policy, name: str, counters: Counters, start: float
    ) -> None:
        """Begin a loop for *policy* at *start*, a reading of its clock."""
        self.num = 1  # the loop is its own first attempt (Attempt.__init__, inline)
        self._loop = None
        self._policy = policy
        self._name = name
        self._counters = counters
        self._start = start
        self._error: Exception | None = None  # the last attempt's, not yet acted on
        self._number = 0  # attempts handed out

    @classmethod
    def after(
        cls,
        policy: Policy,
        name: str,
        counters: Counters,
        start: float,
        error: Exception,
    ) -> Attempts | None:
        """Return the loop of a call whose first attempt, begun at *start*, raised *error*.

        The faces make the first attempt themselves, as a plain call, and build a
        loop only after it failed. Return ``None`` (counted as a failure) when
        *error* is not to be retried: the caller re-raises it.
        """
        loop = cls(policy, name, counters, start)
        loop._number = 1
        return loop if loop._ended(error) else None

    # -- the drivers: the only code that differs between sync and async ----------------
    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Attempt:
        if not self._number and self._policy.budget is None:
            # The first attempt, nothing to record: _step's first branch, inline.
            self._number = 1
            return self
        if self._error is not None and (budget := self._policy.budget) is not None:
            budget.exchange_if_due(self._policy.clock.monotonic())
        while isinstance(step := self._step(), float):
            self._policy.clock.sleep(step)
        if step is None:
            raise StopIteration
        return step

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Attempt:
        if not self._number and self._policy.budget is None:  # as in __next__
            self._number = 1
            return self
        if self._error is not None and (budget := self._policy.budget) is not None:
            await budget.aexchange_if_due(self._policy.clock.monotonic())
        while isinstance(step := self._step(), float):
            await self._policy.clock.asleep(step)
        if step is None:
            raise StopAsyncIteration
        return step

    def run(self, fn: Callable[..., R], args: Any, kwargs: Any) -> R:
        """Run ``fn(*args, **kwargs)`` in each attempt until one returns; return that."""
        for attempt in self:
            with attempt:
                return fn(*args, **kwargs)
        raise _unreachable()  # pragma: no cover

    async def arun(self, fn: Callable[..., Awaitable[R]], args: Any, kwargs: Any) -> R:
        """Await ``fn(*args, **kwargs)`` in each attempt until one returns; return that."""
        async for attempt in self:
            with attempt:
                return await fn(*args, **kwargs)
        raise _unreachable()  # pragma: no cover

    # -- the decision ------------------------------------------------------------------
    def _step(self) -> Attempt | float | None:
        """Return the next attempt, the seconds to wait before it, or ``None`` (done).

        Raises:
            Exception: the last attempt's error, itself, when retrying gives up.
        """
        error = self._error
        if error is None:
            if self._number:  # the last block raised nothing (or the loop is over)
                self._over = True
                return None
            self._number = 1  # the first attempt: nothing to decide
            budget = self._policy.budget
            if budget is not None:
                budget.record_first(self._policy.clock.monotonic())
            return self  # the loop is its first attempt
        if getattr(self, "_over", False):  # gave up: the error stays, the loop is done
            return None
        if self._waited:
            self._waited = False
            self._check_time_left(error)
        else:
            wait = self._schedule(error)
            if wait > 0:
                self._waited = True
                return wait
            self._check_time_left(error)
        self._error = None
        self._number += 1
        return Attempt(self._number, self)

    def _ended(self, exc: BaseException) -> bool:
        """Record that the last attempt's block raised *exc*; return whether to swallow it.

        (A block that raised nothing ends the loop in :meth:`Attempt.__exit__`.)
        """
        if not isinstance(exc, Exception):  # KeyboardInterrupt, CancelledError
            self._over = True
            return False
        if self._policy.retriable(exc):
            self._waited = False  # (it is whenever an attempt ran)
            compensate = self._policy.compensate
            if compensate is not None:
                try:
                    compensate(exc)
                except Exception:
                    # An attempt that cannot be undone must not be repeated.
                    self._over = True
                    self._counters.failure.inc()
                    raise
            self._error = exc
            return True
        self._over = True
        self._counters.failure.inc()
        return False

    def _schedule(self, error: Exception) -> float:
        """Ask tenacity about failed attempt ``_number``; return the wait before the next.

        Raises:
            Exception: *error*, when tenacity stops.
        """
        state: tenacity.RetryCallState | None = getattr(self, "_state", None)
        if state is None:
            # tenacity's statistics are per thread; begin() resets this thread's.
            _SCHEDULER.begin()
            state = self._state = tenacity.RetryCallState(_SCHEDULER, None, (), {})
            state.tipkit_loop = self  # type: ignore[attr-defined]  # read by _stop/_wait
        state.set_exception((type(error), error, error.__traceback__))
        do = _SCHEDULER.iter(state)
        if do is _GAVE_UP:
            self._give_up(error)
        wait = float(cast("tenacity.DoSleep", do))
        self._counters.retried.inc()
        if RetryScheduled.listened:
            BUS.publish(RetryScheduled(self._name, self._number + 1, wait, error))
        state.prepare_for_next_attempt()
        return wait

    def _stops(self, wait: float) -> bool:
        """Return whether to give up before waiting *wait* (tenacity's ``stop``)."""
        limit = self._policy.max_attempts()
        if limit is not None and self._number >= limit:
            self._reason = "attempts"
            return True
        timeout = self._policy.timeout
        if (
            timeout is not None
            and self._policy.clock.monotonic() + wait >= self._start + timeout
        ):
            self._reason = "timeout"
            return True
        outer = _deadline.current()
        if outer is not None and outer.remaining() <= wait:
            self._reason = "deadline"
            return True
        budget = self._policy.budget
        if budget is not None and not budget.try_retry(self._policy.clock.monotonic()):
            self._reason = "budget"
            return True
        return False

    def _check_time_left(self, error: Exception) -> None:
        """Give up with *error* if no attempt may start now (a wait or attempt overran).

        Raises:
            Exception: *error*, when the timeout or the current deadline has passed.
        """
        timeout = self._policy.timeout
        if (
            timeout is not None
            and self._policy.clock.monotonic() >= self._start + timeout
        ):
            self._reason = "timeout"
        else:
            outer = _deadline.current()
            if outer is None or not outer.expired():
                return
            self._reason = "deadline"
        self._give_up(error)

    def _give_up(self, error: Exception) -> NoReturn:
        """Count and report giving up after ``_number`` attempts; raise *error* itself."""
        self._over = True
        self._counters.gave_up.inc()
        if RetryGaveUp.listened:
            BUS.publish(RetryGaveUp(self._name, self._number, error, self._reason))
        raise error


def _unreachable() -> AssertionError:
    # The loop ends only after a block that raised nothing, and run()/arun() return
    # from theirs; mypy cannot see that.
    return AssertionError("a retry loop ended without a result")  # pragma: no cover


# -- the tenacity scheduler every retry shares --------------------------------------------
_GAVE_UP = object()


def _loop_of(state: tenacity.RetryCallState) -> Attempts:
    return cast("Attempts", state.tipkit_loop)  # type: ignore[attr-defined]  # set by Attempts


def _wait(state: tenacity.RetryCallState) -> float:
    outcome = state.outcome
    exc = outcome.exception() if outcome is not None else None
    return _loop_of(state)._policy.wait_after(exc, state.attempt_number)


def _stop(state: tenacity.RetryCallState) -> bool:
    return _loop_of(state)._stops(state.upcoming_sleep)


def _gave_up(_state: tenacity.RetryCallState) -> object:
    return _GAVE_UP


# One scheduler for every call of every retry: tenacity keeps its per-iteration state
# in a thread-local and `iter` never yields, so calls on threads and tasks share it.
# It never sleeps either (only its __call__/__iter__ would): the drivers above do.
_SCHEDULER = tenacity.Retrying(
    stop=_stop, wait=_wait, retry=tenacity.retry_always, retry_error_callback=_gave_up
)
