"""Helpers for testing code that uses tipkit.

* :class:`FakeClock`: pass as ``clock=``; nothing sleeps, waits are recorded.
* :func:`capture_events`: the tipkit events published inside a block.
* :func:`fake_flags`: a real :class:`~tipkit.flags.Flags` over in-memory flags
  that records every evaluation (percentage splits work as in production).
* :func:`capture_telemetry`: real OpenTelemetry SDK providers with in-memory
  exporters for a block (needs ``opentelemetry-sdk``, in the ``test`` extra).
* :func:`set_testing`: retries become instant and capped, for your own suite
  (also a context manager).
* :func:`keys_in`: targeting keys a flag serves a given variant, to pick users
  inside (or outside) a percentage split without brute force in every test.

The pytest plugin installed with tipkit offers these as fixtures:
``tipkit_clock``, ``tipkit_events``, ``tipkit_flags`` and ``tipkit_telemetry``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from tipkit._core._durations import to_seconds
from tipkit.telemetry._events import BUS, Event

if TYPE_CHECKING:
    from tipkit.flags import Flags

__all__ = [
    "EPOCH",
    "CapturedTelemetry",
    "FakeClock",
    "RecordingFlags",
    "capture_events",
    "capture_telemetry",
    "fake_flags",
    "flag_definition",
    "keys_in",
    "set_testing",
]

E = TypeVar("E", bound=Event)

EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: FakeClock.time() at monotonic 0


class FakeClock:
    """A clock that only moves when told to, for tests that never sleep.

    ``monotonic()`` starts at 0 and ``time()`` at :data:`EPOCH` (2026-01-01 UTC);
    :meth:`advance` moves both. ``sleep``/``asleep`` advance at once and append the
    duration to :attr:`sleeps`. Waiting on an event returns at once: if the event
    is already set it costs nothing, otherwise the full timeout passes (and is
    appended to :attr:`waits`). Thread-safe.
    """

    def __init__(self, start: float = 0.0, *, epoch: float = EPOCH) -> None:
        self._lock = threading.Lock()
        self._now = float(start)
        self._epoch = float(epoch) - float(start)
        self.sleeps: list[float] = []
        self.waits: list[float] = []

    def __repr__(self) -> str:
        return f"<FakeClock now={self._now} sleeps={len(self.sleeps)}>"

    def monotonic(self) -> float:
        """Return the fake monotonic time."""
        return self._now

    def time(self) -> float:
        """Return the fake wall-clock time (epoch seconds)."""
        return self._epoch + self._now

    def advance(self, seconds: float | timedelta) -> None:
        """Move time forward by *seconds*.

        Raises:
            ValueError: *seconds* is negative (a monotonic clock never goes back).
        """
        secs = to_seconds(seconds, "seconds")
        if secs < 0:
            raise ValueError(
                f"FakeClock.advance: time cannot go backwards (got {secs})"
            )
        with self._lock:
            self._now += secs

    def sleep(self, seconds: float) -> None:
        """Record *seconds* in :attr:`sleeps` and advance by them, at once."""
        if seconds < 0:
            raise ValueError(f"FakeClock.sleep: seconds must be >= 0, got {seconds}")
        with self._lock:
            self.sleeps.append(seconds)
            self._now += seconds

    async def asleep(self, seconds: float) -> None:
        """Record *seconds* in :attr:`sleeps`, advance, and yield to the loop once."""
        self.sleep(seconds)
        await asyncio.sleep(0)  # noqa: TID251  # yields to other tasks; waits for nothing

    def wait_event(self, event: threading.Event, timeout: float) -> bool:
        """Return at once: ``True`` if *event* is set, else advance by *timeout*."""
        if event.is_set():
            return True
        with self._lock:
            self.waits.append(timeout)
            self._now += timeout
        return event.is_set()

    async def await_future(self, future: asyncio.Future[Any], timeout: float) -> bool:
        """Async twin of :meth:`wait_event`; yields to the loop once first."""
        await asyncio.sleep(0)  # noqa: TID251  # lets already-scheduled wake-ups run
        if future.done():
            return True
        with self._lock:
            self.waits.append(timeout)
            self._now += timeout
        return future.done()


@contextmanager
def capture_events(
    *types: type[E],
) -> Iterator[list[E]]:
    """Collect the events published inside the block (optionally only of *types*).

    Yields the list the events are appended to, in publication order. Events are
    captured from every thread while the block runs.
    """
    captured: list[E] = []

    def listener(event: Event) -> None:
        captured.append(event)  # type: ignore[arg-type]  # filtered by `types` on the bus

    BUS.add_listener(listener, types=types or None)
    try:
        yield captured
    finally:
        BUS.remove_listener(listener)


def keys_in(
    flags: Flags,
    key: str,
    variant: str,
    n: int = 1,
    *,
    prefix: str = "user-",
    attributes: Mapping[str, Any] | None = None,
    limit: int = 100_000,
) -> list[str]:
    """Return the first *n* targeting keys that flag *key* serves *variant*.

    Tries ``f"{prefix}0"``, ``f"{prefix}1"``, ... (with *attributes* as the rest
    of the evaluation context) against the flags' current configuration, kill
    switches and overrides included, so the answer is what production would
    serve those keys: bucketing is a specification, the same keys come back on
    every run and every machine. Nothing is counted, recorded or published (a
    :func:`fake_flags` ``evaluations`` list and captured telemetry stay clean).
    Use it to pick users inside a 10% split, or outside it (``variant="off"``).

    Raises:
        KeyError: *key* is not a flag of *flags*.
        ValueError: *n* < 1, or fewer than *n* of the first *limit* keys get
            *variant* (a weight of 0, a rule that never matches these
            attributes, or a variant name that does not exist).
    """
    if n < 1:
        raise ValueError(f"keys_in: n must be >= 1, got {n}")
    flag_set = flags.flag_set  # refreshes the provider snapshot when due
    run = flags._table.get(key)  # the compiled evaluation, without the counting path
    if run is None or flag_set is None or key not in flag_set.flags:
        raise KeyError(f"keys_in: no flag {key!r} in {flags!r}")
    attrs = dict(attributes or {})
    found: list[str] = []
    for i in range(limit):
        candidate = f"{prefix}{i}"
        if run(attrs, candidate).variant == variant:
            found.append(candidate)
            if len(found) == n:
                return found
    known = sorted(flag_set.flags[key].variants)
    raise ValueError(
        f"keys_in: only {len(found)} of the first {limit} keys get variant "
        f"{variant!r} of flag {key!r} (variants: {known}); is its weight 0, or "
        "do the attributes miss a rule?"
    )


# Re-exported at the end: these modules import tipkit.testing's neighbours, not it.
from tipkit.flags._testing import RecordingFlags, fake_flags, flag_definition  # noqa: E402
from tipkit.retry import set_testing  # noqa: E402
from tipkit.telemetry._capture import CapturedTelemetry, capture_telemetry  # noqa: E402
