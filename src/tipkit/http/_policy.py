"""What every tipkit HTTP client wrapper does around a request, whatever the client.

Per host (``host:port``) a breaker and a bulkhead made on first use by the
given factories, a rate limiter keyed by host, a retry plan that honours
``Retry-After`` and never retries a non-idempotent method unless told, and the
propagation of the trace context and of tipkit's marks (synthetic, remaining
deadline: :mod:`tipkit.telemetry._propagation`). The client drivers
(``_httpx``, ``_requests``) only send and sleep.
"""

from __future__ import annotations

import email.utils
import math
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import propagate

from tipkit._core import _scope
from tipkit.breaker import CircuitBreaker
from tipkit.bulkhead import Bulkhead
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.retry import Retry
from tipkit.telemetry import _propagation

__all__ = ["IDEMPOTENT", "RETRY_STATUSES", "ClientPolicy", "Plan", "ServerFailure"]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""Methods RFC 9110 defines as idempotent: retried by default."""
RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses worth another attempt (the server said: not now)."""
MAX_HOSTS = 1024

GuardFactory = Callable[[str], Any]
GuardOption = GuardFactory | Mapping[str, Any] | bool | None


def _factory(option: GuardOption, kind: type, arg: str) -> GuardFactory | None:
    if option is None or option is False:
        return None
    if option is True:
        return lambda host: kind(f"http:{host}")
    if isinstance(option, Mapping):
        kwargs = dict(option)
        return lambda host: kind(f"http:{host}", **kwargs)
    if callable(option):
        return option
    raise TypeError(
        f"{arg} must be True, a dict of {kind.__name__} options or a "
        f"callable host -> {kind.__name__}, got {option!r}"
    )


def retry_after_seconds(
    value: str | None, now_utc: datetime | None = None
) -> float | None:
    """Return a ``Retry-After`` value in seconds (delay or HTTP date); ``None`` if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value[:9]))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now_utc or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


class ServerFailure(Exception):  # noqa: N818  # a signal between our own lines, never seen by users
    """Raised inside the breaker's block for a 5xx response, so the breaker counts it."""

    def __init__(self, response: Any) -> None:
        super().__init__("the server answered with a 5xx status")
        self.response = response


class Plan:
    """One request's retry decisions: after each attempt, wait how long, or stop."""

    __slots__ = ("_attempt", "_policy", "_retriable", "_started")

    def __init__(
        self, policy: ClientPolicy, method: str, headers: Mapping[str, str]
    ) -> None:
        self._policy = policy
        self._attempt = 1
        self._retriable = policy.retry is not None and (
            method.upper() in policy.retry_methods
            or (
                policy.idempotency_header is not None
                and policy.idempotency_header in headers
            )
        )
        self._started = policy.clock.monotonic() if self._retriable else 0.0
        if self._retriable:
            budget = policy.retry_policy.budget
            if budget is not None:
                budget.record_first(self._started)

    def after_error(self, exc: Exception) -> float | None:
        """Return the wait before retrying after *exc*, or ``None`` to raise it."""
        if not self._retriable or not self._policy.retry_policy.retriable(exc):
            return None
        return self._next(self._policy.retry_policy.wait_after(exc, self._attempt))

    def after_response(self, status: int, retry_after: str | None) -> float | None:
        """Return the wait before retrying a *status* answer, or ``None`` to return it."""
        if not self._retriable or status not in self._policy.retry_statuses:
            return None
        wait = self._policy.retry_policy.wait_after(None, self._attempt)
        asked = retry_after_seconds(retry_after)
        if asked is not None:
            if asked > self._policy.max_retry_after:
                return None  # the server asks for longer than we would wait
            wait = max(wait, asked)
        return self._next(wait)

    def _next(self, wait: float) -> float | None:
        rp = self._policy.retry_policy
        limit = rp.max_attempts()
        if limit is not None and self._attempt >= limit:
            return None
        now = self._policy.clock.monotonic()
        if rp.timeout is not None and now + wait - self._started >= rp.timeout:
            return None
        node = _scope.top()
        dl = None if node is None else node[3]
        if dl is not None and dl.remaining() <= wait:
            return None  # never sleep past the deadline
        if rp.budget is not None and not rp.budget.try_retry(now):
            return None
        self._attempt += 1
        return wait


class ClientPolicy:
    """The options shared by the httpx transports and the requests adapter."""

    __slots__ = (
        "_breakers",
        "_bulkheads",
        "_lock",
        "breaker_factory",
        "bulkhead_factory",
        "clock",
        "idempotency_header",
        "limiter",
        "max_retry_after",
        "propagate",
        "retry",
        "retry_methods",
        "retry_policy",
        "retry_statuses",
    )

    def __init__(
        self,
        *,
        breaker_per_host: GuardOption = None,
        bulkhead_per_host: GuardOption = None,
        limiter: Any = None,
        retry: Retry | None = None,
        retry_methods: Iterable[str] = IDEMPOTENT,
        retry_statuses: Iterable[int] = RETRY_STATUSES,
        idempotency_header: str | None = "idempotency-key",
        max_retry_after: float = 60.0,
        propagate: bool = True,
    ) -> None:
        self.breaker_factory = _factory(
            breaker_per_host, CircuitBreaker, "breaker_per_host"
        )
        self.bulkhead_factory = _factory(
            bulkhead_per_host, Bulkhead, "bulkhead_per_host"
        )
        if limiter is not None and not (
            hasattr(limiter, "acquire") or hasattr(limiter, "__enter__")
        ):
            raise TypeError(
                f"limiter must be a KeyedRateLimiter or TokenBucket, got {limiter!r}"
            )
        self.limiter = limiter
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(
                f"retry must be made by tipkit.retry.retry(...), got {retry!r}"
            )
        self.retry = retry
        rp: Any = None if retry is None else retry._policy
        self.retry_policy = rp
        self.clock: Clock = SYSTEM_CLOCK if rp is None else rp.clock
        self.retry_methods = frozenset(m.upper() for m in retry_methods)
        self.retry_statuses = frozenset(retry_statuses)
        self.idempotency_header = (
            None if idempotency_header is None else idempotency_header.lower()
        )
        if not 0 <= max_retry_after < math.inf:
            raise ValueError(
                f"max_retry_after must be >= 0 and finite, got {max_retry_after!r}"
            )
        self.max_retry_after = float(max_retry_after)
        self.propagate = bool(propagate)
        self._breakers: dict[str, Any] = {}
        self._bulkheads: dict[str, Any] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        """The configuration, for the wrappers' reprs."""
        parts = []
        if self.breaker_factory is not None:
            parts.append(f"breakers={sorted(self._breakers)}")
        if self.bulkhead_factory is not None:
            parts.append(f"bulkheads={sorted(self._bulkheads)}")
        if self.limiter is not None:
            parts.append(f"limiter={self.limiter!r}")
        if self.retry is not None:
            parts.append(f"retry={self.retry!r}")
        return " ".join(parts)

    def plan(self, method: str, headers: Mapping[str, str]) -> Plan:
        """Return the retry plan of one request."""
        return Plan(self, method, headers)

    def _guard(
        self, table: dict[str, Any], factory: GuardFactory | None, host: str
    ) -> Any:
        if factory is None:
            return None
        guard = table.get(host)
        if guard is None:
            with self._lock:
                guard = table.get(host)
                if guard is None:
                    if len(table) >= MAX_HOSTS:
                        raise ValueError(
                            f"more than {MAX_HOSTS} hosts: a per-host guard for each "
                            "would grow without bound; give a factory that shares guards"
                        )
                    guard = table[host] = factory(host)
        return guard

    def breaker(self, host: str) -> Any:
        """Return *host*'s breaker (made on first use), or ``None``."""
        return self._guard(self._breakers, self.breaker_factory, host)

    def bulkhead(self, host: str) -> Any:
        """Return *host*'s bulkhead (made on first use), or ``None``."""
        return self._guard(self._bulkheads, self.bulkhead_factory, host)

    def guards(self, host: str) -> list[Any]:
        """Return the ``with`` guards of one attempt on *host*, outermost first."""
        guards = []
        limiter = self.limiter
        if limiter is not None:
            guards.append(
                limiter.limit(host) if hasattr(limiter, "max_keys") else limiter
            )
        guards.extend(
            g for g in (self.bulkhead(host), self.breaker(host)) if g is not None
        )
        return guards

    def stamp(self, headers: MutableMapping[str, str]) -> None:
        """Write the trace context and tipkit's marks into outgoing *headers*."""
        if not self.propagate:
            return
        propagate.inject(headers)
        value = _propagation.outgoing(headers.get("baggage"))
        if value:
            headers["baggage"] = value
        elif "baggage" in headers:
            del headers["baggage"]


def remaining_timeout(timeout: float | None) -> float | None:
    """Return *timeout* shortened to the current deadline's remaining time."""
    node = _scope.top()
    dl = None if node is None else node[3]
    if dl is None:
        return timeout
    left = max(0.0, dl.remaining())
    return left if timeout is None else min(timeout, left)
