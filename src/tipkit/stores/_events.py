"""Store outages as events: published once per outage by each user of a store.

A primitive that reads or writes shared state (flags, limiters, breakers,
rollouts) keeps one :class:`Outage` per store it uses. The first failure of an
outage publishes :class:`StoreUnavailable`; further failures publish nothing
until a call succeeds again, which publishes :class:`StoreRecovered` with the
outage's length. A dashboard therefore sees one pair of events per outage and
per primitive, not one per request.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tipkit._core import _fork
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.telemetry._events import BUS, AttributeValue, Event

if TYPE_CHECKING:
    from tipkit.stores._action import Action

__all__ = [
    "ActionConflict",
    "ActionFlushed",
    "ActionPending",
    "Outage",
    "StoreHealth",
    "StoreRecovered",
    "StoreStateLost",
    "StoreUnavailable",
]

logger = logging.getLogger("tipkit")


@dataclass(frozen=True, slots=True)
class _StoreEvent(Event):
    """A store event: the primitive's name and kind, and the fields in ``_exported``."""

    component: str

    _exported: ClassVar[tuple[tuple[str, str], ...]] = ()
    """``(attribute, field)`` pairs exported besides the name and the component."""

    def otel_attributes(self) -> dict[str, AttributeValue]:
        """Return the primitive's name and kind, and this event's own fields."""
        out: dict[str, AttributeValue] = {
            "tipkit.name": self.name,
            "tipkit.component": self.component,
        }
        for attribute, field in self._exported:
            out[attribute] = getattr(self, field)
        return out


@dataclass(frozen=True, slots=True)
class StoreUnavailable(_StoreEvent):
    """A primitive could not reach its store; it follows its failure policy.

    Published once per outage by each primitive (the first failed call).

    Attributes:
        name: the primitive (flag namespace, limiter, breaker or rollout name).
        component: ``"flags"``, ``"ratelimit"``, ``"breaker"`` or ``"rollout"``.
        policy: what the primitive does meanwhile: ``"keep_last"`` (flags,
            breakers, rollouts keep the last state they read), ``"fail_open"``
            or ``"fail_closed"`` (limiters).
        error_type: the class name of the store error's cause (never its
            message, which may quote a URL).
    """

    policy: str
    error_type: str

    otel_name: ClassVar[str] = "tipkit.store.unavailable"
    _exported: ClassVar[tuple[tuple[str, str], ...]] = (
        ("tipkit.store.policy", "policy"),
        ("error.type", "error_type"),
    )


@dataclass(frozen=True, slots=True)
class StoreRecovered(_StoreEvent):
    """A primitive reached its store again after :class:`StoreUnavailable`.

    Attributes:
        name, component: as in :class:`StoreUnavailable`.
        downtime: seconds from the first failure to the first success (the
            primitive's clock); an upper bound on what it missed.
        failures: calls that failed during the outage.
    """

    downtime: float
    failures: int

    otel_name: ClassVar[str] = "tipkit.store.recovered"
    _exported: ClassVar[tuple[tuple[str, str], ...]] = (
        ("tipkit.store.downtime", "downtime"),
        ("tipkit.store.failures", "failures"),
    )


@dataclass(frozen=True, slots=True)
class ActionPending(_StoreEvent):
    """A safety action could not be written: it is in force here and queued.

    Attributes:
        name: the primitive (flag namespace, breaker or rollout name).
        component: ``"flags"``, ``"breaker"``, ``"rollout"``...
        key: the store key the action writes.
    """

    key: str

    otel_name: ClassVar[str] = "tipkit.store.action_pending"
    _exported: ClassVar[tuple[tuple[str, str], ...]] = (("tipkit.store.key", "key"),)


@dataclass(frozen=True, slots=True)
class ActionFlushed(_StoreEvent):
    """A queued safety action reached the store.

    Attributes:
        name, component, key: as in :class:`ActionPending`.
        delay: seconds it waited (the primitive's clock).
    """

    key: str
    delay: float

    otel_name: ClassVar[str] = "tipkit.store.action_flushed"
    _exported: ClassVar[tuple[tuple[str, str], ...]] = (
        ("tipkit.store.key", "key"),
        ("tipkit.store.delay", "delay"),
    )


@dataclass(frozen=True, slots=True)
class ActionConflict(_StoreEvent):
    """A queued action was not written: someone else wrote the key meanwhile.

    Their (newer) write wins; this process now serves it.

    Attributes:
        name, component, key: as in :class:`ActionPending`.
    """

    key: str

    otel_name: ClassVar[str] = "tipkit.store.action_conflict"
    _exported: ClassVar[tuple[tuple[str, str], ...]] = (("tipkit.store.key", "key"),)


@dataclass(frozen=True, slots=True)
class StoreStateLost(_StoreEvent):
    """The store lost a namespace's state (a restart without persistence).

    This process writes back what it still knows (anti-entropy).

    Attributes:
        name, component: as in :class:`ActionPending`.
        facts: how many entries it writes back.
    """

    facts: int

    otel_name: ClassVar[str] = "tipkit.store.state_lost"
    _exported: ClassVar[tuple[tuple[str, str], ...]] = (
        ("tipkit.store.facts", "facts"),
    )


class Outage:
    """Track whether a primitive's store is down; publish the edges only.

    ``ok()`` is the hot-path call: one attribute read while the store is up.
    Thread-safe: the edges are decided under a lock taken only on a failure
    or on the first success after one. Reads *clock* (``monotonic()``) at the
    edges only.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_lock",
        "component",
        "down",
        "failures",
        "name",
        "policy",
        "since",
    )

    def __init__(
        self, name: str, component: str, policy: str, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.name = name
        self.component = component
        self.policy = policy
        self._clock = clock
        self._lock = _fork.new_lock()
        self.down = False
        self.since = 0.0
        self.failures = 0
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()

    def __repr__(self) -> str:
        state = f"down for {self.failures} calls" if self.down else "up"
        return f"<Outage {self.component} {self.name!r} {state}>"

    def failed(self, exc: BaseException) -> None:
        """Count a failed call; publish :class:`StoreUnavailable` if it starts an outage."""
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        with self._lock:
            self.failures += 1
            if self.down:
                return
            self.down = True
            self.since = self._clock.monotonic()
            self.failures = 1
        logger.warning(
            "tipkit: %s %r cannot reach its store (%s); policy %s",
            self.component,
            self.name,
            type(cause).__name__,
            self.policy,
        )
        if StoreUnavailable.listened:
            BUS.publish(
                StoreUnavailable(
                    self.name, self.component, self.policy, type(cause).__name__
                )
            )

    def ok(self) -> None:
        """Note a successful call; publish :class:`StoreRecovered` if it ends an outage."""
        if not self.down:
            return
        self._recovered()

    def _recovered(self) -> None:
        with self._lock:
            was_down, self.down = self.down, False
            downtime = self._clock.monotonic() - self.since
            failures = self.failures
        if not was_down:
            return  # another thread published the recovery
        logger.warning(
            "tipkit: %s %r reaches its store again after %.3fs",
            self.component,
            self.name,
            downtime,
        )
        if StoreRecovered.listened:
            BUS.publish(StoreRecovered(self.name, self.component, downtime, failures))


class StoreHealth:
    """Whether one store object is known not to answer: shared by all its users.

    A call that **timed out** (a server that accepts but never answers, a
    paused or sleeping one) marks the store down. Every :class:`Outage` of
    every primitive on that store object then meets it at once: while down, a
    call is refused without I/O (:meth:`admit` is ``False``), so the primitive
    follows its failure policy (queues its action, serves what it read,
    fails open or closed) at once instead of waiting another full timeout.
    One call at a time is let through as a **probe** every *probe* seconds;
    the first call that is answered marks the store up again. A refused or
    failed call while up does not mark it down (it already failed fast).

    ``down`` is the hot-path read (one attribute while up). Thread-safe; reads
    *clock* (``monotonic()``) only while down. Events stay per primitive: each
    primitive's own ``Outage`` publishes its ``StoreUnavailable`` and
    ``StoreRecovered`` from its own calls (refused ones included).

    Args:
        probe: seconds from a failure to the next probe while down.
        bound: the longest a call (a probe) can take; default ``2 * probe``.
        clock: reads ``monotonic()``.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_lock",
        "_next",
        "bound",
        "cause",
        "closed",
        "down",
        "probe",
        "since",
    )

    def __init__(
        self, probe: float, *, bound: float | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.probe = probe
        self.bound = 2 * probe if bound is None else bound
        self._clock = clock
        self._lock = _fork.new_lock()
        self.down = False
        self.closed = False
        self.since = 0.0
        self._next = 0.0  # while down: when the next probe may start
        self.cause: BaseException | None = None
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()

    def __repr__(self) -> str:
        return f"<StoreHealth {'down' if self.down else 'up'}>"

    def admit(self) -> bool:
        """While down: whether this call may go to the store (the probe when due).

        A probe holds the slot for *bound* (a call's bound, with one reconnect)
        plus one *probe* interval: a probe that never reports (its thread or
        task cancelled) cannot keep the store refused for good.
        """
        with self._lock:
            if not self.down:
                return True
            now = self._clock.monotonic()
            if now < self._next:
                return False
            self._next = now + self.bound + self.probe
            return True

    def timed_out(self, exc: BaseException) -> None:
        """A call timed out: the store is down from now; next probe in *probe* s."""
        with self._lock:
            now = self._clock.monotonic()
            if not self.down:
                self.down = True
                self.since = now
            self.cause = exc
            self._next = now + self.probe

    def failed(self) -> None:
        """A call failed otherwise (refused, reset): re-arm the probe if down."""
        if not self.down:
            return
        with self._lock:
            if self.down:
                self._next = self._clock.monotonic() + self.probe

    def answered(self) -> None:
        """A call was answered (even by an error reply): the store is up."""
        if self.down:
            with self._lock:
                if not self.closed:
                    self.down = False
                    self.cause = None

    def close(self) -> None:
        """The store was closed: refuse every call from now on, without I/O.

        Work still running on the store (a pending action's replay, a
        heartbeat) then fails at once instead of reconnecting to its server.
        """
        with self._lock:
            self.closed = self.down = True
            self.cause = None
            self._next = math.inf


# ------------------------------------------------------- a durable action's reports


def report_pending(outage: Outage, key: str) -> None:
    """Say that *key*'s action waits for the store (a WARNING, ``ActionPending``)."""
    logger.warning(
        "tipkit: %s %r: %s kept pending until the store answers",
        outage.component,
        outage.name,
        key,
    )
    if ActionPending.listened:
        BUS.publish(ActionPending(outage.name, outage.component, key))


def report_settled(outage: Outage, action: Action, state: str, waited: float) -> None:
    """Say how a durable *action* ended: a conflict always, a write if it waited."""
    if state == "conflict":
        logger.warning(
            "tipkit: %s %r: %s was written by someone else while it was "
            "pending here; their write wins",
            outage.component,
            outage.name,
            action.key,
        )
        if ActionConflict.listened:
            BUS.publish(ActionConflict(outage.name, outage.component, action.key))
    elif state == "written" and action.queued:
        logger.warning(
            "tipkit: %s %r: pending %s reached the store after %.3fs",
            outage.component,
            outage.name,
            action.key,
            waited,
        )
        if ActionFlushed.listened:
            BUS.publish(
                ActionFlushed(outage.name, outage.component, action.key, waited)
            )


def report_lost(outage: Outage, facts: int) -> None:
    """Say the store lost a namespace; *facts* entries are written back."""
    logger.warning(
        "tipkit: %s %r: the store lost its state (restarted without "
        "persistence?); writing back %d entries",
        outage.component,
        outage.name,
        facts,
    )
    if StoreStateLost.listened:
        BUS.publish(StoreStateLost(outage.name, outage.component, facts))
