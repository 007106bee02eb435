"""How long this test process stood still: the part of a wall-clock bound that is not tipkit's.

A fault test bounds each call by the store timeout (twice, with one reconnect)
plus the machine's slack, measured before the fault. On a loaded 2-core CI
machine the whole process can still stand still for a while *during* the fault
(a full garbage collection of a large heap, no core for it): every thread's
call then ends late by the same amount, though no store call took longer than
its timeout. :data:`STALLS` measures that: a thread that asks to wake every
``TICK`` seconds records by how much it woke late. ``STALLS.worst(start, end)``
is the longest such stall that overlapped a window, which a bound adds, and a
failure message shows, so a late call caused by tipkit is still caught.
"""

from __future__ import annotations

import collections
import threading
import time

__all__ = ["STALLS", "Stalls"]

TICK = 0.005
KEEP = 120.0  # seconds of history kept


class Stalls:
    """A background ticker that records when this process woke late, and by how much."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: collections.deque[tuple[float, float]] = collections.deque()
        self._thread: threading.Thread | None = None
        self._tick = threading.Event()  # never set: its wait is the tick
        self.ticks = 0  # how many ticks have ended (the meter is running once > 0)

    def start(self) -> None:
        """Start ticking (once per process; a daemon thread that never ends)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tests-stalls", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            before = time.perf_counter()
            self._tick.wait(TICK)
            after = time.perf_counter()
            late = after - before - TICK
            self.ticks += 1
            if late > TICK:
                with self._lock:
                    self._seen.append((before, after))
                    while self._seen and self._seen[0][1] < after - KEEP:
                        self._seen.popleft()

    def worst(self, start: float, end: float) -> float:
        """The longest stall (seconds late) that overlapped ``[start, end]`` (perf_counter)."""
        with self._lock:
            spans = [(b, a) for b, a in self._seen if a > start and b < end]
        return max((a - b - TICK for b, a in spans), default=0.0)


STALLS = Stalls()
