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
  only once an attempt has failed;
* **a budget for the whole service**: ``budget=RetryBudget(...)``, shared by
  every policy naming it, caps retries at a share of first attempts
  (``_budget``; fleet-wide through a store in ``_budget_store``);
* **no repeating the irreversible**: an ``@irreversible`` function is refused
  unless given ``compensate=`` or ``idempotency_key=``.

One engine runs every face: ``_engine`` is an iterator of attempts with a
sync and an async driver; ``_faces`` holds the decorator,
``call``/``acall`` and ``retry_context`` over it, ``_policy`` the validated
configuration, ``_events`` what listeners see and ``_testing`` the test mode.
"""

from tipkit.retry._budget import RetryBudget
from tipkit.retry._engine import Attempt
from tipkit.retry._events import RetryGaveUp, RetryScheduled
from tipkit.retry._faces import Retry, RetryingBlock, retry, retry_context
from tipkit.retry._testing import is_testing, set_testing

__all__ = [
    "Attempt",
    "Retry",
    "RetryBudget",
    "RetryGaveUp",
    "RetryScheduled",
    "RetryingBlock",
    "is_testing",
    "retry",
    "retry_context",
    "set_testing",
]

# Public names keep the module they had before the package split: their reprs,
# pickles and documentation say tipkit.retry, not a private module.
for _public in (
    Attempt,
    Retry,
    RetryBudget,
    RetryGaveUp,
    RetryScheduled,
    RetryingBlock,
    is_testing,
    retry,
    retry_context,
    set_testing,
):
    _public.__module__ = __name__
del _public
