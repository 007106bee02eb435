"""Shared helpers of the rate-limiter tests: the bound, a deadline, counters, reserving."""

from __future__ import annotations

import math

from hypothesis import strategies as st

from tipkit._core._guard import Wait
from tipkit.deadline import DeadlineScope, deadline
from tipkit.ratelimit import TokenBucket
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock

EPS = 1e-9

bucket_ops = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.integers(1, 5)),
        st.tuples(st.just("advance"), st.floats(0, 3, allow_nan=False)),
    ),
    max_size=60,
)


def within_bound(
    admits: list[tuple[float, float]], rate: float, capacity: float
) -> bool:
    """Return whether every window [t_i, t_j] admitted at most capacity + rate * (t_j - t_i)."""
    admits = sorted(admits)
    for i, (start, _) in enumerate(admits):
        total = 0.0
        for end, tokens in admits[i:]:
            total += tokens
            if total > capacity + rate * (end - start) + 1e-6:
                return False
    return True


def deadline_in(clock: FakeClock, seconds: float) -> DeadlineScope:
    """Return a tipkit deadline named "outer", *seconds* from entry on *clock*."""
    return deadline(seconds, name="outer", clock=clock)


def counter(name: str, result: str, mode: str = "enforce") -> int:
    """Return the requests counter of limiter *name* for *result* and *mode*."""
    return REGISTRY.value(
        names.RATELIMIT_REQUESTS,
        {names.RATELIMIT_NAME: name, names.RESULT: result, names.MODE: mode},
    )


def reserve(bucket: TokenBucket, clock: FakeClock, tokens: float) -> bool | Wait:
    """Make the first decision of a waiting acquire of *tokens*, as acquire() does."""
    return bucket._begin(clock.monotonic(), tokens, math.inf)
