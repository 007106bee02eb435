"""Token-bucket rate limiters: one bucket, or one bucket per key.

A :class:`TokenBucket` holds up to ``capacity`` tokens and refills at ``rate``
tokens per second; it starts full. Over any interval of length *t* it admits at
most ``capacity + rate * t`` tokens, whatever the number of threads and tasks.

Waiting callers *reserve* their tokens in arrival order (the level goes
negative), so they are served first come, first served: a large request is never
overtaken forever by small ones, and ``try_acquire`` cannot jump the queue. A
waiter that gives up (cancelled, interrupted, out of time) gives its reservation
back, and the waiters behind it are moved forward and woken, so the bound holds
exactly: returned tokens are never handed out twice.

:class:`KeyedRateLimiter` keeps one bucket per key (tenant, client, user) in
bounded memory: it only ever forgets a bucket that has refilled completely, which
is indistinguishable from a bucket that never existed, so eviction can never let
a key burst again.

Both take ``mode="shadow"``: decide and count exactly as enforcement would, report
``would_reject``, admit everything. Both take ``store=`` (a
:class:`tipkit.stores.TokenStore`) to share buckets between processes. Both
answer ``check()`` with a :class:`RateDecision` (what rate-limit headers need).

Layout: ``_bucket`` (TokenBucket), ``_keyed`` (KeyedRateLimiter) and ``_table``
(its bounded key table) decide in process on ``tipkit._core._tokens`` (the token
arithmetic, once); ``_shared`` holds all store I/O and the store failure policy,
a collaborator chosen at construction; ``_common`` the event, the decision and
argument checks.
"""

from __future__ import annotations

from tipkit.ratelimit._bucket import TokenBucket
from tipkit.ratelimit._common import RateDecision, RateLimited
from tipkit.ratelimit._keyed import KeyedRateLimiter

__all__ = ["KeyedRateLimiter", "RateDecision", "RateLimited", "TokenBucket"]
