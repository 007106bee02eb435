"""Circuit breaker: stop calling a dependency that is failing, and probe it back.

::

    breaker = CircuitBreaker("payments", failure_rate_threshold=0.5)

    @breaker
    def charge(order): ...

    with breaker:
        ...

The breaker counts the outcomes of calls in a sliding window
(:class:`CountWindow` or :class:`TimeWindow`, O(1) per call). Once at least
``minimum_calls`` outcomes are in the window and the failure rate or the
slow-call rate reaches its threshold, it opens: calls are rejected at once with
:class:`~tipkit.errors.CircuitOpenError` for ``open_duration``. The first call
after that moves it to half-open, where exactly ``half_open_calls`` trial calls
run; their outcomes alone decide between closing and opening again.

In ``mode="shadow"`` the breaker runs the same state machine, publishes the same
events and counters (marked ``shadow``) but lets every call through; calls it
would have rejected stay out of its window, so its states are exactly those
enforcement would have produced.

Thread-safe and asyncio-safe: one lock guards the decisions, never held while
the protected call runs; in the closed state admission takes no lock at all.
Time is read from the injected ``clock`` (monotonic), once per decision.

The package, as resilience4j and Polly v8 split their breakers:

* ``_breaker``: :class:`CircuitBreaker`, the thin strategy the user holds;
* ``_machine``: the state machine, one class per state (pure: no clock, no I/O);
* ``_window``: the count and time windows;
* ``_config``: argument validation and the rules that read the configuration;
* ``_events``: states, the metrics snapshot and the events;
* ``_sync``: fleet sharing through a store, a collaborator given at construction.
"""

from __future__ import annotations

from tipkit.breaker._admin import BreakerControlled
from tipkit.breaker._breaker import CircuitBreaker
from tipkit.breaker._events import (
    BreakerMetrics,
    BreakerState,
    BreakerStateChanged,
    CallRejected,
)
from tipkit.breaker._window import CountWindow, TimeWindow

__all__ = [
    "BreakerControlled",
    "BreakerMetrics",
    "BreakerState",
    "BreakerStateChanged",
    "CallRejected",
    "CircuitBreaker",
    "CountWindow",
    "TimeWindow",
]
