"""A retry's configuration, validated once and shared by every call it guards."""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable
from datetime import timedelta

from tipkit._core._durations import to_seconds
from tipkit.clock import Clock
from tipkit.errors import ConfigError, RejectedError
from tipkit.experiment._irreversible import irreversible_reason
from tipkit.retry._budget import RetryBudget
from tipkit.retry._testing import TESTING

__all__ = ["ExcTypes", "On", "Policy", "check_name", "refuse_irreversible"]

ExcTypes = type[BaseException] | tuple[type[BaseException], ...]
On = ExcTypes | Callable[[Exception], bool]


class Policy:
    """What a retry decides with: what to retry, how long to wait, when to stop.

    Its configuration is immutable after construction, so one policy serves
    every thread and task. Its jitter comes from its own :class:`random.Random`,
    whose seed is drawn from the :mod:`random` module when the policy is made:
    seeding :mod:`random` before building retries reproduces their waits, and a
    retry waiting on a background thread never moves the global random state
    under another test or a Hypothesis strategy (``Random.uniform`` is safe to
    share between threads).
    """

    __slots__ = (
        "_jitter_seed",
        "_rng",
        "attempts",
        "budget",
        "clock",
        "compensate",
        "exp_base",
        "idempotency_key",
        "on",
        "predicate",
        "retry_rejected",
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
        budget: RetryBudget | None = None,
        compensate: Callable[[Exception], object] | None = None,
        idempotency_key: str | None = None,
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
        # The seed is drawn here, so seeding the random module still
        # reproduces the waits (the demo relies on it), and the waits never
        # touch the global state from whatever thread retries. The generator
        # itself (about 20 us to seed) is made at the first wait: retry_context
        # builds a policy per block, and most blocks never wait.
        self._jitter_seed = random.getrandbits(64)
        self._rng: random.Random | None = None
        if not isinstance(clock, Clock):
            raise TypeError(
                f"clock must provide monotonic(), time(), sleep() and asleep(), got {clock!r}"
            )
        self.clock = clock
        _check_extras(budget, compensate, idempotency_key)
        self.budget = budget
        self.compensate = compensate
        self.idempotency_key = idempotency_key

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
        return min(self.wait_max, base + self._jitter().uniform(0, self.wait_jitter))

    def _jitter(self) -> random.Random:
        """Return this policy's jitter generator, made on first use from its seed.

        Two threads failing at once may each make one; both draw from the same
        seed and one is kept, which is harmless for jitter.
        """
        rng = self._rng
        if rng is None:
            rng = self._rng = random.Random(self._jitter_seed)  # noqa: S311  # jitter, not cryptography
        return rng

    def wait_after(self, exc: BaseException | None, attempt: int) -> float:
        """Return the wait after failed attempt *attempt* raised *exc*.

        Zero in testing mode; a rejection's ``retry_after`` when it has one (it is
        retried only when asked for); else the backoff.
        """
        if TESTING.active:
            return 0.0
        if isinstance(exc, RejectedError) and exc.retry_after is not None:
            return max(0.0, float(exc.retry_after))
        return self.backoff(attempt)

    def max_attempts(self) -> int | None:
        """Return the most attempts a call may make now (testing mode may lower it)."""
        return TESTING.limit(self.attempts)

    def describe(self) -> str:
        """Return the configuration as reprs show it."""
        on = self.on
        if isinstance(on, type):
            on_text = on.__qualname__
        elif isinstance(on, tuple):
            on_text = "(" + ", ".join(t.__qualname__ for t in on) + ")"
        else:
            on_text = getattr(on, "__qualname__", repr(on))
        budget = "" if self.budget is None else f" budget={self.budget.name!r}"
        return (
            f"on={on_text}{budget} attempts={self.attempts} timeout={self.timeout} "
            f"wait={self.wait_initial:g}..{self.wait_max:g}s x{self.exp_base:g} "
            f"jitter={self.wait_jitter:g}s"
        )


def _check_extras(budget: object, compensate: object, idempotency_key: object) -> None:
    """Check the budget, compensation and idempotency key arguments of a retry."""
    if budget is not None and not isinstance(budget, RetryBudget):
        raise TypeError(f"retry: budget must be a RetryBudget, got {budget!r}")
    if compensate is not None and (
        not callable(compensate) or inspect.iscoroutinefunction(compensate)
    ):
        raise TypeError(
            "retry: compensate must be a synchronous function (exc) -> None, "
            f"got {compensate!r}"
        )
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not idempotency_key.isidentifier()
    ):
        raise TypeError(
            "retry: idempotency_key must name the parameter carrying the key, "
            f"got {idempotency_key!r}"
        )


def check_name(name: object, owner: str) -> None:
    """Refuse a *name* that is not a non-empty string.

    Raises:
        TypeError: naming *owner* and the bad value.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"{owner}: name must be a non-empty string, got {name!r}")


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


def _non_negative(value: float | timedelta, arg: str) -> float:
    secs = to_seconds(value, f"retry: {arg}")
    if secs < 0:
        raise ValueError(f"retry: {arg} must be >= 0 seconds, got {value!r}")
    return secs


def refuse_irreversible(
    fn: Callable[..., object],
    what: str,
    *,
    idempotency_key: str | None,
    compensate: object = None,
    can_compensate: bool = True,
) -> None:
    """Refuse to repeat an ``@irreversible`` *fn* unless it is made safe to repeat.

    *idempotency_key* names the parameter of *fn* that carries the key the
    dependency deduplicates on (checked to exist); *compensate* undoes a failed
    attempt (retry only).

    Raises:
        ConfigError: *fn* is irreversible and neither is given; names the
            function, its reason and both ways out.
        TypeError: *fn* has no parameter named *idempotency_key*.
    """
    reason = irreversible_reason(fn)
    if reason is None or compensate is not None:
        return
    label = getattr(fn, "__qualname__", repr(fn))
    if idempotency_key is None:
        raise ConfigError(
            f"{what} would run {label} more than once, but it is irreversible "
            f"({reason}): pass compensate= (undo a failed attempt) or "
            "idempotency_key= (the parameter carrying a key the dependency "
            "deduplicates on)"
            if can_compensate
            else f"{what} would run {label} more than once, but it is irreversible "
            f"({reason}): pass idempotency_key= (the parameter carrying a key the "
            "dependency deduplicates on)",
            field="idempotency_key",
        )
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: trust the caller
        return
    if idempotency_key not in params and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    ):
        raise TypeError(
            f"{what}: idempotency_key={idempotency_key!r} names no parameter of {label}"
        )
