"""What both limiters share: the event, the decision, argument checks, counting."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar, NamedTuple, Protocol

from tipkit._core._check import check_name, check_number, check_seconds
from tipkit._core._mode import Mode, check_mode
from tipkit.errors import RateLimitedError
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY, Counter
from tipkit.telemetry._events import BUS, AttributeValue, Event

__all__ = [
    "Limits",
    "RateDecision",
    "RateLimited",
    "check_runbook",
    "check_tokens",
    "check_wait",
]

_INF = math.inf


@dataclass(frozen=True, slots=True)
class RateLimited(Event):
    """A limiter refused tokens (or, in shadow mode, would have).

    Attributes:
        key: the key of a :class:`KeyedRateLimiter` (``None`` for a single
            bucket). Never exported: keys are often tenant or user ids.
        retry_after: seconds until the tokens would be there.
        shadow: the limiter is in shadow mode and let the call through.
        runbook: the limiter's runbook URL, if any.
    """

    key: str | None
    retry_after: float
    shadow: bool
    runbook: str | None = None

    otel_name: ClassVar[str] = "tipkit.ratelimit.rejected"

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return name, retry_after, shadow and runbook (never the key)."""
        attrs: dict[str, AttributeValue] = {
            names.RATELIMIT_NAME: self.name,
            "tipkit.retry_after": self.retry_after,
            names.MODE: "shadow" if self.shadow else "enforce",
        }
        if self.runbook is not None:
            attrs[names.RUNBOOK] = self.runbook
        return attrs


class RateDecision(NamedTuple):
    """What a limiter decided for one request: what HTTP rate-limit headers need.

    Attributes:
        allowed: the caller may go ahead (always ``True`` in shadow mode).
        retry_after: seconds until the tokens asked for will be there; ``0.0``
            when allowed (``Retry-After``).
        remaining: tokens left after this decision as this process knows it
            (never negative; a shared bucket: as the store last answered, or
            what this process holds from a batch; ``0.0`` while the store
            fails) (``RateLimit-Remaining``).
        limit: the bucket's capacity (``RateLimit-Limit``).
    """

    allowed: bool
    retry_after: float
    remaining: float
    limit: float


def check_tokens(owner: str, tokens: object, capacity: float) -> float:
    """Return *tokens* as a float, or raise if it is not a servable request."""
    if isinstance(tokens, bool) or not isinstance(tokens, int | float):
        raise TypeError(f"{owner}: tokens must be a number, got {tokens!r}")
    if not tokens > 0 or tokens == _INF:
        raise ValueError(
            f"{owner}: tokens must be a positive finite number, got {tokens!r}"
        )
    if tokens > capacity:
        raise ValueError(
            f"{owner}: tokens={tokens!r} can never be served: the capacity is "
            f"{capacity:g}, so no amount of waiting makes that many tokens available"
        )
    return float(tokens)


def check_wait(value: float | timedelta | None, label: str) -> float:
    """Return a wait in seconds (``None``: as long as it takes), never negative."""
    if value is None:
        return _INF
    return check_seconds(value, label, minimum=0)


def check_runbook(runbook: object) -> str | None:
    """Return *runbook*, or raise ``TypeError`` if it is not a string or ``None``."""
    if runbook is not None and not isinstance(runbook, str):
        raise TypeError(f"runbook must be a URL string or None, got {runbook!r}")
    return runbook


def _counters(name: str, mode: Mode) -> tuple[Counter, Counter]:
    base = {names.RATELIMIT_NAME: name, names.MODE: mode}
    return (
        REGISTRY.counter(names.RATELIMIT_REQUESTS, {**base, names.RESULT: "acquired"}),
        REGISTRY.counter(names.RATELIMIT_REQUESTS, {**base, names.RESULT: "rejected"}),
    )


class _State(Protocol):
    """The attributes :class:`Limits` reads and writes, in each limiter's slots."""

    name: str
    runbook: str | None
    would_reject: int
    _label: str
    _rate: float
    _capacity: float
    _mode: Mode
    _shadow: bool
    _acquired: Counter
    _rejected: Counter

    def _mode_switched(self) -> None: ...


class Limits:
    """Configuration, mode and refusal reporting, shared by both limiters.

    A mixin without slots of its own: each limiter declares the attributes of
    :class:`_State` in its ``__slots__`` and calls :meth:`_init_limits` from its
    constructor (the methods are typed on ``_State``, which mypy can check).
    """

    __slots__ = ()

    def _init_limits(
        self: _State,
        kind: str,
        name: str,
        *,
        rate: float,
        capacity: float,
        mode: Mode,
        runbook: str | None,
    ) -> None:
        self.name = check_name(name, f"{kind}: name")
        # Errors name the limiter by this label, never by repr(): a shared
        # limiter's repr must not be what makes a store round trip.
        self._label = f"{kind} {name!r}"
        self._rate = check_number(rate, f"{self._label}: rate", above=0)
        self._capacity = check_number(capacity, f"{self._label}: capacity", above=0)
        self.runbook = check_runbook(runbook)
        self._mode = check_mode(mode, self._label)
        self._shadow = self._mode == "shadow"
        self._acquired, self._rejected = _counters(name, self._mode)
        self.would_reject = 0

    @property
    def rate(self: _State) -> float:
        """Tokens added per second (to each key's bucket, for a keyed limiter)."""
        return self._rate

    @property
    def capacity(self: _State) -> float:
        """The most tokens a bucket holds."""
        return self._capacity

    @property
    def mode(self: _State) -> Mode:
        """``"enforce"`` or ``"shadow"``; assign to switch a live limiter."""
        return self._mode

    @mode.setter
    def mode(self: _State, value: Mode) -> None:
        mode = check_mode(value, self._label)
        self._acquired, self._rejected = _counters(self.name, mode)
        self._mode = mode
        self._shadow = mode == "shadow"
        self._mode_switched()

    def _mode_switched(self) -> None:
        """Hook: the counters were replaced by a mode switch."""

    def _refused(self: _State, retry_after: float, key: str | None) -> None:
        """Count and report a refusal; the tokens are *retry_after* seconds away."""
        self._rejected.inc()
        if self._shadow:
            self.would_reject += 1
        if RateLimited.listened:
            BUS.publish(
                RateLimited(self.name, key, retry_after, self._shadow, self.runbook)
            )

    def _exceeded(self: _State, retry_after: float, what: str = "") -> RateLimitedError:
        """Build the error for tokens *retry_after* seconds away."""
        return RateLimitedError(
            f"rate limit {self.name!r} exceeded{what} ({self._rate:g}/s, capacity "
            f"{self._capacity:g}): retry after {retry_after:.3f}s",
            name=self.name,
            retry_after=retry_after,
            runbook=self.runbook,
        )

    def _decision(self: _State, retry_after: float, remaining: float) -> RateDecision:
        """Return the decision for a request *retry_after* seconds short (0: taken)."""
        if retry_after and not self._shadow:
            return RateDecision(False, retry_after, max(remaining, 0.0), self._capacity)  # noqa: FBT003  # a NamedTuple, built positionally on a hot path
        return RateDecision(True, 0.0, max(remaining, 0.0), self._capacity)  # noqa: FBT003  # as above
