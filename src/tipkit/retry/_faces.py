"""The faces of a retry: the decorator, ``call``/``acall`` and ``retry_context``.

Each runs on :class:`~tipkit.retry._engine.Attempts`, the one retry loop.
The decorator and ``call``/``acall`` make the first attempt themselves, as a
plain call (one clock reading and a ``try``), and build a loop only once it has
failed (:meth:`Attempts.after`), so a success on the first try costs about as
much as the call itself. What differs between their sync and async forms is the
``await``, nothing else.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from datetime import timedelta
from types import FunctionType, MethodType
from typing import Any, ClassVar, ParamSpec, TypeVar

from tipkit._core._callonly import CallOnly
from tipkit._core._decorate import Decorates
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import RejectedError
from tipkit.fallback import ExcTypes, Fallback
from tipkit.retry._budget import RetryBudget
from tipkit.retry._engine import Attempt, Attempts, Counters
from tipkit.retry._policy import On, Policy, check_name, refuse_irreversible

__all__ = ["Retry", "RetryingBlock", "retry", "retry_context"]

P = ParamSpec("P")
R = TypeVar("R")

_NO_FALLBACK: Any = object()


class Retry(CallOnly, Decorates):
    """A retry policy: decorate ``def``/``async def`` functions, or ``call``/``acall``.

    Made by :func:`retry`. It cannot be a ``with`` block (a block runs once): use
    :func:`retry_context` for that. Thread-safe and asyncio-safe: no per-call
    state lives on the object. The decorator dispatch and the refused ``with``
    faces come from ``_core`` (:class:`Decorates`, :class:`CallOnly`).
    """

    __slots__ = ("_by_name", "_fallback", "_plain", "_policy", "name")

    # compose() refuses `with` for guards that must re-run the work.
    _reruns: ClassVar[bool] = True
    _no_block: ClassVar[str] = (
        "must re-run the work, which a `with` block cannot do: decorate "
        "a function, use call()/acall(), or loop: `for attempt in "
        "retry_context(...): with attempt: ...`"
    )
    _composition_role: ClassVar[str] = "retry"

    def __init__(
        self, policy: Policy, name: str | None, fallback: Fallback[Any] | None = None
    ) -> None:
        self._policy = policy
        self.name = name
        self._by_name: dict[str, Counters] = {}
        self._fallback = fallback
        # With a fallback, call/acall hand the call to this twin without one (same
        # policy, name and counters), so the plain faces need no second copy.
        self._plain: Retry | None = None
        if fallback is not None:
            self._plain = Retry(policy, name)
            self._plain._by_name = self._by_name

    @property
    def budget(self) -> RetryBudget | None:
        """The retry budget this policy spends from, if any."""
        return self._policy.budget

    def _refuse(self, fn: Callable[..., Any]) -> None:
        """Refuse an ``@irreversible`` *fn* (see :func:`refuse_irreversible`).

        ``call``/``acall`` run this per call: a plain function or bound method
        with no attributes carries no mark (nor a ``__wrapped__`` link) and is
        answered without the generic walk (~2 us) or this retry's ``repr``
        (~3 us), which is built only for the error.
        """
        cls = fn.__class__
        if (cls is FunctionType and not fn.__dict__) or (
            cls is MethodType and not fn.__func__.__dict__  # type: ignore[attr-defined]  # narrowed by the class test
        ):
            return
        policy = self._policy
        refuse_irreversible(
            fn,
            f"{self!r}",
            idempotency_key=policy.idempotency_key,
            compensate=policy.compensate,
        )

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<retry{label} {self._policy.describe()}>"

    def _counters(self, name: str) -> Counters:
        found = self._by_name.get(name)
        if found is None:
            found = self._by_name[name] = Counters(name)
        return found

    def _name_for(self, fn: Callable[..., Any]) -> str:
        return self.name or getattr(fn, "__qualname__", None) or repr(fn)

    def _after_for(
        self, fn: Callable[..., Any]
    ) -> Callable[[float, Exception], Attempts | None]:
        """Return ``(start, error) -> loop or None`` for calls of *fn* (see Attempts.after)."""
        name = self._name_for(fn)
        return functools.partial(
            Attempts.after, self._policy, name, self._counters(name)
        )

    # Decorates.__call__ refuses generator functions, then picks one of these once.
    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        self._refuse(fn)
        budget = self._policy.budget
        wrapped = (
            self._first_sync(fn)
            if budget is None
            else self._first_sync_budget(fn, budget)
        )
        return wrapped if self._fallback is None else self._fallback(wrapped)

    def _first_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        now = self._policy.clock.monotonic
        after = self._after_for(fn)

        @functools.wraps(fn)
        def retried(*args: P.args, **kwargs: P.kwargs) -> R:
            start = now()
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if (loop := after(start, exc)) is None:
                    raise
            # Outside the `except`: later errors must not chain to the first.
            return loop.run(fn, args, kwargs)

        return retried

    def _first_sync_budget(
        self, fn: Callable[P, R], budget: RetryBudget
    ) -> Callable[P, R]:
        # A separate closure: a retry without a budget pays nothing for it.
        now = self._policy.clock.monotonic
        after = self._after_for(fn)
        record = budget.record_first
        count = budget._pending.__next__  # record_first inlined: one C call per call

        @functools.wraps(fn)
        def retried(*args: P.args, **kwargs: P.kwargs) -> R:
            start = now()
            if start >= budget._edge:
                record(start)
            else:
                count()
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if (loop := after(start, exc)) is None:
                    raise
            return loop.run(fn, args, kwargs)

        return retried

    def _wrap_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        self._refuse(fn)
        wrapped = self._first_async(fn)
        return wrapped if self._fallback is None else self._fallback(wrapped)

    def _first_async(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        now = self._policy.clock.monotonic
        after = self._after_for(fn)
        budget = self._policy.budget

        @functools.wraps(fn)
        async def retried(*args: P.args, **kwargs: P.kwargs) -> R:
            start = now()
            if budget is not None:
                budget.record_first(start)
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                if (loop := after(start, exc)) is None:
                    raise
            return await loop.arun(fn, args, kwargs)

        return retried

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)``, retrying it; return its result.

        Raises:
            TypeError: *fn* is a coroutine function (use :meth:`acall`).
            Exception: the last attempt's exception, itself, when retrying gives up.
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"{fn!r} is a coroutine function: use `await acall(...)`")
        # _refuse's fast answer, inline: a Python call per call is ~10% of this face.
        cls = fn.__class__
        if not (cls is FunctionType and not fn.__dict__):
            self._refuse(fn)
        if self._plain is not None:
            return self._fallback.call(self._plain.call, fn, *args, **kwargs)  # type: ignore[union-attr]  # set together
        policy = self._policy
        start = policy.clock.monotonic()
        if policy.budget is not None:
            policy.budget.record_first(start)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if (loop := self._after_for(fn)(start, exc)) is None:
                raise
        return loop.run(fn, args, kwargs)

    async def acall(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)``, retrying it; return its result.

        Raises:
            Exception: the last attempt's exception, itself, when retrying gives up.
        """
        cls = fn.__class__
        if not (cls is FunctionType and not fn.__dict__):
            self._refuse(fn)
        if self._plain is not None:
            return await self._fallback.acall(self._plain.acall, fn, *args, **kwargs)  # type: ignore[union-attr]  # set together
        policy = self._policy
        start = policy.clock.monotonic()
        if policy.budget is not None:
            policy.budget.record_first(start)
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            if (loop := self._after_for(fn)(start, exc)) is None:
                raise
        return await loop.arun(fn, args, kwargs)


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
    budget: RetryBudget | None = None,
    compensate: Callable[[Exception], object] | None = None,
    idempotency_key: str | None = None,
    fallback: Any = _NO_FALLBACK,
    fallback_on: ExcTypes | None = None,
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
        budget: a :class:`~tipkit.retry.RetryBudget` shared with other
            policies: a retry it refuses is not made, and the last error is
            raised at once (reason ``"budget"``), never slept for.
        compensate: a synchronous ``(exc) -> None`` run after each failed
            attempt, before the next; makes an ``@irreversible`` function
            retriable. If it raises, retrying stops with its error.
        idempotency_key: the name of the parameter of the function carrying a
            key the dependency deduplicates on; makes an ``@irreversible``
            function retriable (the same arguments, so the same key, go to
            every attempt).
        fallback: a value, or a synchronous ``(exc) -> value``, returned instead
            of raising an error in *fallback_on* (see :mod:`tipkit.fallback`).
        fallback_on: what the fallback answers (default: tipkit's rejections,
            :class:`~tipkit.errors.RejectedError`). *on* keeps its meaning:
            what is retried.

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
        ConfigError: when decorating (or calling) an ``@irreversible``
            function without *compensate* or *idempotency_key*.
    """
    policy = Policy(
        on=on,
        attempts=attempts,
        timeout=timeout,
        wait_initial=wait_initial,
        wait_max=wait_max,
        wait_jitter=wait_jitter,
        wait_exp_base=wait_exp_base,
        retry_rejected=retry_rejected,
        clock=clock,
        budget=budget,
        compensate=compensate,
        idempotency_key=idempotency_key,
    )
    if name is not None:
        check_name(name, "retry")
    if fallback is _NO_FALLBACK:
        if fallback_on is not None:
            raise TypeError("retry: fallback_on= needs fallback=")
        return Retry(policy, name)
    answer = Fallback(
        fallback, RejectedError if fallback_on is None else fallback_on, name or "retry"
    )
    return Retry(policy, name, answer)


class RetryingBlock:
    """Iterate (``for``/``async for``) to run a block until it succeeds or gives up.

    Made by :func:`retry_context`. Each iteration yields an :class:`Attempt`;
    the loop ends after the first attempt whose block raised nothing, and
    re-raises the last error when retrying gives up. Each ``for`` starts a fresh
    loop, whose timeout counts from that moment.
    """

    __slots__ = ("_counters", "_policy", "name")

    def __init__(self, policy: Policy, name: str) -> None:
        self._policy = policy
        self.name = name
        self._counters = Counters(name)

    def __repr__(self) -> str:
        return f"<retry_context {self.name!r} {self._policy.describe()}>"

    def __iter__(self) -> Iterator[Attempt]:
        policy = self._policy
        return Attempts(policy, self.name, self._counters, policy.clock.monotonic())

    def __aiter__(self) -> AsyncIterator[Attempt]:
        policy = self._policy
        return Attempts(policy, self.name, self._counters, policy.clock.monotonic())


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
    budget: RetryBudget | None = None,
) -> RetryingBlock:
    """Return an iterable that retries a block, as stamina's ``retry_context`` does.

    ::

        for attempt in retry_context(on=ConnectionError, attempts=3):
            with attempt:
                send()

        async for attempt in retry_context(on=ConnectionError):
            with attempt:
                await send()

    Same arguments and semantics as :func:`retry` (a block has no function to
    inspect, so there is no ``compensate``/``idempotency_key``/``fallback``).

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
    """
    policy = retry(
        on=on,
        attempts=attempts,
        timeout=timeout,
        wait_initial=wait_initial,
        wait_max=wait_max,
        wait_jitter=wait_jitter,
        wait_exp_base=wait_exp_base,
        retry_rejected=retry_rejected,
        clock=clock,
        budget=budget,
    )._policy
    check_name(name, "retry_context")
    return RetryingBlock(policy, name)
