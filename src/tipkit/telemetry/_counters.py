"""In-process counters and gauges, read at collection time.

A guarded call pays one counter increment (a C call, tens of nanoseconds), never
an OpenTelemetry SDK call. :func:`tipkit.telemetry.instrument` exposes these as
observable instruments that read :meth:`CounterRegistry.snapshot` when the SDK
collects.

Counter names and attribute keys are the exported metric names (see
``tipkit.telemetry._names``), so what a test reads here is what a backend sees.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from tipkit._core import _fork

__all__ = [
    "REGISTRY",
    "Attributes",
    "Counter",
    "CounterReading",
    "CounterRegistry",
    "GaugeReading",
]

Attributes = Mapping[str, str | int | float | bool]
_Key = tuple[str, tuple[tuple[str, str | int | float | bool], ...]]


class Counter:
    """A monotonic integer counter that loses no increment under many threads.

    ``inc()`` is :meth:`itertools.count.__next__`, a single C call that the GIL
    makes atomic (``d[k] += 1`` is not). ``add(n)`` takes a lock and is for the
    rarer paths that count several at once. ``divert(fn)`` sends ``inc()`` to
    *fn* until ``restore()`` (how :func:`tipkit.telemetry.synthetic` counts
    probe traffic apart); ``fast_inc`` is always the C increment itself.
    """

    __slots__ = (
        "_count",
        "_extra",
        "_lock",
        "_reads",
        "attributes",
        "fast_inc",
        "inc",
        "name",
    )

    def __init__(self, name: str, attributes: Attributes) -> None:
        self.name = name
        self.attributes: dict[str, str | int | float | bool] = dict(attributes)
        self._count = itertools.count()
        self.fast_inc: Callable[[], int] = self._count.__next__
        self.inc: Callable[[], int] = self.fast_inc
        self._extra = 0
        self._reads = 0  # draws of _count made by reading the value, not by inc()
        self._lock = _fork.new_lock()

    def add(self, amount: int) -> None:
        """Add a non-negative *amount*.

        Raises:
            ValueError: *amount* is negative (counters only go up).
        """
        if amount < 0:
            raise ValueError(
                f"counter {self.name!r}: amount must be >= 0, got {amount}"
            )
        with self._lock:
            self._extra += amount

    @property
    def value(self) -> int:
        """The current total (takes the counter's lock; ``inc()`` never does)."""
        with self._lock:
            # next() returns how many values were drawn before it: every inc()
            # plus the earlier reads, which _reads counts. Reads are serialised
            # by the lock; inc() needs none.
            drawn = next(self._count)
            value = drawn - self._reads
            self._reads += 1
            return value + self._extra

    @property
    def diverted(self) -> bool:
        """Whether ``inc()`` is sent elsewhere now (see :meth:`divert`)."""
        return self.inc is not self.fast_inc

    def divert(self, inc: Callable[[], int]) -> None:
        """Make ``inc()`` call *inc* until :meth:`restore`.

        *inc* usually ends in ``fast_inc()`` of this or another counter. Holders
        of the counter see the change at once: they call ``counter.inc``.
        """
        self.inc = inc

    def restore(self) -> None:
        """Make ``inc()`` the C increment again."""
        self.inc = self.fast_inc

    def __repr__(self) -> str:
        return f"<Counter {self.name!r} {self.attributes} value={self.value}>"


class CounterReading(NamedTuple):
    """One counter's value at snapshot time."""

    name: str
    attributes: dict[str, str | int | float | bool]
    value: int


class GaugeReading(NamedTuple):
    """One gauge observation at snapshot time."""

    name: str
    attributes: dict[str, str | int | float | bool]
    value: float


GaugeCallback = Callable[[Any], Iterable[tuple[float, Attributes]]]


class CounterRegistry:
    """All counters and gauges of the process.

    Thread-safe. ``counter()`` returns the one counter for a (name, attributes)
    pair, creating it on first use; primitives call it at construction and keep the
    counter, so the hot path never looks anything up.
    """

    __slots__ = (
        "__weakref__",
        "_counters",
        "_gauges",
        "_lock",
        "histogram_sink",
        "on_created",
    )

    def __init__(self) -> None:
        self._lock = _fork.new_lock()
        self._counters: dict[_Key, Counter] = {}
        self._gauges: list[tuple[str, weakref.ref[Any], GaugeCallback]] = []
        self.histogram_sink: Callable[[str, float, Attributes], None] | None = None
        # Called (outside the lock) with each new counter: synthetic() routes
        # counters first created while one of its blocks is open.
        self.on_created: Callable[[Counter], None] | None = None
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()
        for counter in self._counters.values():
            counter._lock = _fork.new_lock()

    def counter(self, name: str, attributes: Attributes | None = None) -> Counter:
        """Return the counter for *name* and *attributes*, creating it once."""
        attrs = dict(attributes or {})
        key: _Key = (name, tuple(sorted(attrs.items())))
        found = self._counters.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._counters.get(key)
            if found is not None:
                return found
            found = self._counters[key] = Counter(name, attrs)
        hook = self.on_created
        if hook is not None:
            hook(found)
        return found

    def counters(self) -> list[Counter]:
        """Return every counter of the registry (a snapshot list)."""
        with self._lock:
            return list(self._counters.values())

    def register_gauge(self, name: str, owner: object, callback: GaugeCallback) -> None:
        """Observe gauge *name* by calling ``callback(owner)`` at collection time.

        *owner* is held weakly: a garbage-collected guard stops reporting. The
        callback yields ``(value, attributes)`` pairs.
        """
        with self._lock:
            self._gauges.append((name, weakref.ref(owner), callback))

    def record(self, name: str, value: float, attributes: Attributes) -> None:
        """Record a histogram value if telemetry is instrumented; else do nothing.

        Only for paths that already wait or carry a span: recording costs an SDK
        call once instrumented.
        """
        sink = self.histogram_sink
        if sink is not None:
            sink(name, value, attributes)

    def snapshot(self, name: str | None = None) -> list[CounterReading]:
        """Return every counter (or those called *name*) with its current value."""
        return [
            CounterReading(c.name, dict(c.attributes), c.value)
            for c in self.counters()
            if name is None or c.name == name
        ]

    def value(self, name: str, attributes: Attributes | None = None) -> int:
        """Return the sum of counters called *name* whose attributes include *attributes*."""
        want = dict(attributes or {})
        return sum(
            r.value
            for r in self.snapshot(name)
            if all(r.attributes.get(k) == v for k, v in want.items())
        )

    def gauges(self, name: str | None = None) -> list[GaugeReading]:
        """Observe every live gauge (or those called *name*) now."""
        with self._lock:
            entries = list(self._gauges)
            self._gauges = [e for e in entries if e[1]() is not None]
        readings: list[GaugeReading] = []
        for gname, ref, callback in entries:
            owner = ref()
            if owner is None or (name is not None and gname != name):
                continue
            readings.extend(
                GaugeReading(gname, dict(attrs), float(value))
                for value, attrs in callback(owner)
            )
        return readings


REGISTRY = CounterRegistry()
"""The process-wide registry every primitive counts in."""
