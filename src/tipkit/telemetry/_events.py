"""Typed events and their listeners: the seam telemetry plugs into.

Primitives publish frozen, slotted event objects. Building one costs about
0.4 µs, so a primitive first checks its event class's ``listened`` flag (one
class-attribute read, kept up to date by the bus whenever listeners change) and
builds nothing when nobody listens for that type::

    if BreakerStateChanged.listened:
        BUS.publish(BreakerStateChanged(...))

``listened`` is ``False`` (nobody listens), ``True`` (someone always does) or a
:class:`Condition` when the only listener wants the type in some contexts: the
OpenTelemetry export wants a span event only while the current span records,
so outside one (or inside a sampled-out one) the check costs one small call and
nothing is built.

A publisher on the hottest path (flag evaluation) checks ``probe`` instead::

    if FlagEvaluated.probe and FlagEvaluated.probe():
        ...  # then the exact answer, bool(FlagEvaluated.listened), if a condition

``probe`` is ``None`` while nobody listens (the same one attribute read as
``listened``), else a zero-argument callable whose falsy result means nobody
wants the event here. A condition may offer a coarser, cheaper ``probe`` of its
own (a truthy result then means only "maybe"); the OpenTelemetry export's is one
C-level call, the read of the current OpenTelemetry context, which is empty
outside any span.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar

from tipkit._core import _fork

__all__ = [
    "BUS",
    "AttributeValue",
    "Condition",
    "Event",
    "EventBus",
    "Listener",
    "add_listener",
    "remove_listener",
]

logger = logging.getLogger("tipkit")

E = TypeVar("E", bound="Event")


AttributeValue = str | bool | int | float


class Condition(Protocol):
    """When a conditional listener wants an event: truthy in the contexts it does.

    ``mode(cls)`` says how the listener wants event type *cls*: ``True`` always,
    ``False`` never (nothing is built for it on its account), ``None`` only where
    ``bool(condition)`` is true. ``bool(condition)`` is evaluated by the
    publisher, on the hot path, in the publishing context.
    """

    def __bool__(self) -> bool: ...

    def mode(self, cls: type[Event]) -> bool | None: ...


_always: Callable[[], bool] = True.__bool__  # a C call: the probe of "always"


def probe_of(listened: bool | Condition) -> Callable[[], object] | None:
    """Return the ``probe`` that goes with *listened* (see the module docstring)."""
    if listened is False:
        return None
    if listened is True:
        return _always
    probe: Callable[[], object] | None = getattr(listened, "probe", None)
    return listened.__bool__ if probe is None else probe


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every event tipkit publishes.

    Subclasses are frozen, slotted dataclasses with past-tense names
    (``BreakerStateChanged``). Telemetry export reads two things from them:
    ``otel_name`` (the exported event name) and :meth:`otel_attributes` (only
    low-cardinality, non-personal attributes: never context attributes, function
    arguments or exception messages from user code).

    Attributes:
        name: the name of the guard, flag or rollout the event is about.
    """

    name: str

    otel_name: ClassVar[str] = "tipkit.event"
    listened: ClassVar[bool | Condition] = False
    """Truthy while some listener would receive this event type: the hot-path check."""
    probe: ClassVar[Callable[[], object] | None] = None
    """``None`` while nobody listens, else a cheap callable: falsy means not wanted here."""

    def __init_subclass__(cls) -> None:
        # No super() call: slots=True rebuilds the class, which breaks the zero-arg
        # form, and object.__init_subclass__ does nothing we need.
        _EVENT_TYPES.add(cls)
        cls.listened = BUS.listened(cls) if "BUS" in globals() else False
        cls.probe = probe_of(cls.listened)

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the attributes safe to export with this event."""
        return {"tipkit.name": self.name}


Listener = Callable[[Event], None]
_EVENT_TYPES: weakref.WeakSet[type[Event]] = weakref.WeakSet()


class EventBus:
    """Delivers events to listeners, synchronously, in registration order.

    Thread-safe: the listener list is an immutable tuple replaced under a lock, so
    publishing never takes a lock. A listener that raises never breaks the call
    that published the event: its first error is logged on the ``tipkit`` logger
    (with the traceback) and every error is counted in ``listener_errors``.
    """

    __slots__ = (
        "__weakref__",
        "_failed",
        "_listeners",
        "_lock",
        "active",
        "listener_errors",
    )

    def __init__(self) -> None:
        self._lock = _fork.new_lock()
        self._listeners: tuple[
            tuple[Listener, tuple[type[Event], ...] | None, Condition | None], ...
        ] = ()
        self._failed: set[int] = set()
        self.active = False
        self.listener_errors = 0
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()

    def add_listener(
        self,
        listener: Listener,
        *,
        types: type[Event] | tuple[type[Event], ...] | None = None,
        when: Condition | None = None,
    ) -> Listener:
        """Register *listener* for every event, or only for instances of *types*.

        With *when*, the listener wants each type as ``when.mode(cls)`` says
        (always, never, or only in contexts where ``bool(when)`` is true): a
        publisher that checks ``listened`` builds nothing elsewhere (the
        listener may still get events published without that check, and must
        filter them itself). Returns the listener, so this
        works as a decorator. Registering the same callable twice delivers each
        event to it twice.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        if isinstance(types, type):
            types = (types,)
        with self._lock:
            self._listeners = (*self._listeners, (listener, types, when))
            self._refresh()
        return listener

    def remove_listener(self, listener: Listener) -> None:
        """Unregister the last registration of *listener*.

        Raises:
            ValueError: *listener* is not registered.
        """
        with self._lock:
            entries = list(self._listeners)
            for i in range(len(entries) - 1, -1, -1):
                if entries[i][0] == listener:
                    del entries[i]
                    break
            else:
                raise ValueError(f"{listener!r} is not a registered listener")
            self._listeners = tuple(entries)
            self._refresh()

    def wants(self, cls: type[Event]) -> bool:
        """Return whether any listener would receive events of type *cls*."""
        return any(
            types is None or issubclass(cls, types) for _, types, _ in self._listeners
        )

    def listened(self, cls: type[Event]) -> bool | Condition:
        """Return ``cls.listened``: ``True``, ``False`` or the one condition in force."""
        found: bool | Condition = False
        for _, types, when in self._listeners:
            if types is not None and not issubclass(cls, types):
                continue
            mode = None if when is None else when.mode(cls)
            if when is None or mode is True:
                return True
            if mode is False:
                continue
            if found is False:
                found = when
            elif found is not when:
                return True  # two conditions: no cheap answer, always build
        return found

    def _refresh(self) -> None:
        self.active = bool(self._listeners)
        Event.listened = self.active
        Event.probe = _always if self.active else None
        for cls in list(_EVENT_TYPES):
            cls.listened = self.listened(cls)
            cls.probe = probe_of(cls.listened)

    def publish(self, event: Event) -> None:
        """Deliver *event* to every matching listener; never raises."""
        for listener, types, _ in self._listeners:
            if types is not None and not isinstance(event, types):
                continue
            try:
                listener(event)
            except Exception:
                self.listener_errors += 1
                key = id(listener)
                if key not in self._failed:
                    self._failed.add(key)
                    logger.exception(
                        "tipkit event listener %r raised on %s; the error is "
                        "swallowed and later errors of this listener are not logged",
                        listener,
                        type(event).__name__,
                    )

    def listeners(self) -> tuple[Listener, ...]:
        """Return the registered listeners, in delivery order."""
        return tuple(entry[0] for entry in self._listeners)


BUS = EventBus()
"""The process-wide event bus every primitive publishes to."""


def add_listener(
    listener: Listener,
    *,
    types: type[Event] | tuple[type[Event], ...] | None = None,
) -> Listener:
    """Register *listener* on the process-wide bus (see :meth:`EventBus.add_listener`)."""
    return BUS.add_listener(listener, types=types)


def remove_listener(listener: Listener) -> None:
    """Unregister *listener* from the process-wide bus."""
    BUS.remove_listener(listener)
