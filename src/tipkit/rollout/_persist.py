"""All of a rollout's store I/O, and what each store failure does.

The I/O is written once, as *flows*: generators that yield an operation
(:class:`Get`, :class:`Put`, :class:`Cas`, :class:`Increment`, or
:class:`Blocking` for another component's blocking call) and are sent its
result. Two drivers run any flow and are the only code that differs between
sync and async:

* :func:`drive` calls the store's sync methods in the calling thread;
* :func:`adrive` awaits the store's async methods (``aget``, ``aset``,
  ``acompare_and_set``, ``aincrement``) and runs a :class:`Blocking` call in a
  worker thread, so a flow never blocks an event loop.

A failing operation is thrown into its flow, and the flows here decide what it
does: the request path and the judge keep the last known state and retry at
their next refresh or checkpoint (one ``StoreUnavailable`` event per outage,
component ``"rollout"``); the manual controls and the constructor raise
:class:`~tipkit.errors.StoreError`. Nothing here holds a lock while it waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator, Mapping
from typing import Any, Final, Literal, TypeVar

from tipkit._core._flow import adrive, drive
from tipkit.clock import Clock
from tipkit.errors import StoreConflictError, StoreError
from tipkit.rollout._fleet import FleetCounts, apply_batch
from tipkit.rollout._state import HISTORY_MAX
from tipkit.stores import Entry, Store
from tipkit.stores._events import Outage

__all__ = [
    "NAMESPACE",
    "Blocking",
    "Cas",
    "FleetCounts",
    "Flow",
    "Get",
    "Increment",
    "OnCallError",
    "Op",
    "Put",
    "RolloutStore",
    "adrive",
    "drive",
]

logger = logging.getLogger("tipkit")

T = TypeVar("T")

OnCallError = Literal["raise", "log", "silent"]

NAMESPACE: Final = "tipkit.rollouts"
CAS_TRIES: Final = 8
COUNTS_TTL: Final = 7 * 24 * 3600.0  # fleet counts of a stage outlive any stage


# ------------------------------------------------------------------ operations


class Op:
    """One I/O operation a flow yields; the driver returns its result to the flow."""

    __slots__ = ()

    def run(self, store: Store) -> Any:  # pragma: no cover - abstract
        """Do it with the store's sync methods, in the calling thread."""
        raise NotImplementedError

    async def arun(self, store: Store) -> Any:  # pragma: no cover - abstract
        """Do it with the store's async methods (never blocking the loop)."""
        raise NotImplementedError


class Get(Op):
    """``store.get(namespace, key)``: the entry or ``None``."""

    __slots__ = ("key", "namespace")

    def __init__(self, namespace: str, key: str) -> None:
        self.namespace = namespace
        self.key = key

    def run(self, store: Store) -> Entry | None:
        """Read the entry."""
        return store.get(self.namespace, self.key)

    async def arun(self, store: Store) -> Entry | None:
        """Read the entry."""
        return await store.aget(self.namespace, self.key)


class Put(Op):
    """``store.set(namespace, key, value)``: the new version."""

    __slots__ = ("key", "namespace", "value")

    def __init__(self, namespace: str, key: str, value: Any) -> None:
        self.namespace = namespace
        self.key = key
        self.value = value

    def run(self, store: Store) -> int:
        """Write the entry."""
        return store.set(self.namespace, self.key, self.value)

    async def arun(self, store: Store) -> int:
        """Write the entry."""
        return await store.aset(self.namespace, self.key, self.value)


class Cas(Op):
    """``store.compare_and_set(...)``: the new version, or ``None`` if it changed."""

    __slots__ = ("key", "namespace", "value", "version")

    def __init__(self, namespace: str, key: str, value: Any, version: int) -> None:
        self.namespace = namespace
        self.key = key
        self.value = value
        self.version = version

    def run(self, store: Store) -> int | None:
        """Write the entry if it is still at the version read."""
        return store.compare_and_set(
            self.namespace, self.key, self.value, version=self.version
        )

    async def arun(self, store: Store) -> int | None:
        """Write the entry if it is still at the version read."""
        return await store.acompare_and_set(
            self.namespace, self.key, self.value, version=self.version
        )


class Increment(Op):
    """``store.increment(key, amounts, ttl=...)``: every field's new total."""

    __slots__ = ("amounts", "key", "ttl")

    def __init__(self, key: str, amounts: Mapping[str, float], ttl: float) -> None:
        self.key = key
        self.amounts = amounts
        self.ttl = ttl

    def run(self, store: Store) -> dict[str, float]:
        """Add the amounts."""
        return store.increment(self.key, self.amounts, ttl=self.ttl)

    async def arun(self, store: Store) -> dict[str, float]:
        """Add the amounts."""
        return await store.aincrement(self.key, self.amounts, ttl=self.ttl)


class Blocking(Op):
    """A call into another component that blocks on its own I/O (the flags' writes).

    Run in the calling thread by :func:`drive`, in a worker thread by
    :func:`adrive`.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn

    def run(self, store: Store) -> Any:  # noqa: ARG002  # Op protocol
        """Call it."""
        return self.fn()

    async def arun(self, store: Store) -> Any:  # noqa: ARG002  # Op protocol
        """Call it in a worker thread."""
        return await asyncio.to_thread(self.fn)


Flow = Generator[Op, Any, T]


# drive(flow, store) / adrive(flow, store): the core's one pair of drivers
# (tipkit._core._flow), each op run with the store's sync or async methods.


# ------------------------------------------------------------------ the rollout's store


class RolloutStore:
    """One rollout's state, judge counts and fleet counts in a store, as flows.

    Args:
        store: the store.
        name: the rollout's name: its state is ``tipkit.rollouts/<name>``, its
            saved judge counts ``tipkit.rollouts/<name>/judge``.
        clock: read at the edges of an outage (``StoreUnavailable`` and
            ``StoreRecovered`` events).

    Thread-safe; holds no lock while it waits on the store.
    """

    __slots__ = ("name", "outage", "store")

    def __init__(self, store: Store, name: str, *, clock: Clock) -> None:
        self.store = store
        self.name = name
        self.outage = Outage(name, "rollout", "keep_last", clock=clock)

    def __repr__(self) -> str:
        return f"<RolloutStore {self.name!r} {self.store!r}>"

    def run(self, flow: Flow[T]) -> T:
        """Run *flow* in the calling thread (blocks for the store's round trips)."""
        return drive(flow, self.store)

    async def arun(self, flow: Flow[T]) -> T:
        """Run *flow* with the store's async methods."""
        return await adrive(flow, self.store)

    def guarded(self, flow: Flow[Any]) -> None:
        """Run *flow* on the request path: nothing it raises reaches the caller.

        The flows report store failures themselves; anything else (a bug, a
        store that raises what it should wrap) is logged here, so a ``with``
        block never raises from the rollout nor replaces the application's
        exception.
        """
        try:
            drive(flow, self.store)
        except Exception:
            logger.exception("tipkit: rollout %r: store work failed", self.name)

    async def aguarded(self, flow: Flow[Any]) -> None:
        """Async :meth:`guarded`."""
        try:
            await adrive(flow, self.store)
        except Exception:
            logger.exception("tipkit: rollout %r: store work failed", self.name)

    def failed(self, exc: Exception, what: str) -> None:
        """Report a store failure (one outage event), or log a conflict or a bug."""
        self._failed(exc, what)

    def _failed(self, exc: Exception, what: str) -> None:
        if isinstance(exc, StoreConflictError):
            logger.warning(
                "tipkit: rollout %r: %s: %s; retried at the next checkpoint",
                self.name,
                what,
                exc,
            )
        elif isinstance(exc, StoreError):
            self.outage.failed(exc)  # logged and published once per outage
        else:  # a store that does not wrap its errors, or a bug: say where
            self.outage.failed(exc)
            logger.error("tipkit: rollout %r: %s", self.name, what, exc_info=exc)

    # -- the state ---------------------------------------------------------------
    def poll(self) -> Flow[tuple[bool, Entry | None]]:
        """Read the state: ``(True, entry or None)``, or ``(False, None)`` if the store failed.

        A failure is reported (one ``StoreUnavailable`` per outage), never raised.
        """
        try:
            entry: Entry | None = yield Get(NAMESPACE, self.name)
        except Exception as exc:  # keep the last known state
            self._failed(exc, "reading its state failed")
            return False, None
        self.outage.ok()
        return True, entry

    def open(
        self, new: Callable[[], dict[str, Any]]
    ) -> Flow[tuple[Mapping[str, Any], int, bool]]:
        """Read the state, or write ``new()`` if there is none: ``(state, version, created)``.

        Raises:
            StoreError: the store failed.
            StoreConflictError: the state kept appearing and disappearing.
        """
        for _ in range(CAS_TRIES):
            entry: Entry | None = yield Get(NAMESPACE, self.name)
            if entry is not None:
                return entry.value, entry.version, False
            doc = new()
            version: int | None = yield Cas(NAMESPACE, self.name, doc, 0)
            if version is not None:
                return doc, version, True
        raise self._conflict()

    def _conflict(self) -> StoreConflictError:
        return StoreConflictError(
            f"rollout {self.name!r}: the stored state kept changing;"
            " transition not applied",
            namespace=NAMESPACE,
            key=self.name,
            tries=CAS_TRIES,
        )

    def transition(
        self,
        change: Callable[[Mapping[str, Any]], dict[str, Any] | None],
        fallback: Mapping[str, Any],
        *,
        quiet: bool,
    ) -> Flow[tuple[Mapping[str, Any], int, bool] | None]:
        """Apply *change* to the stored state with compare-and-set.

        *change* gets the stored state (or *fallback* if the store lost it)
        and returns the new one, or ``None`` when it no longer applies.
        Returns ``(state, version, written)``: the state written, or the stored
        state *change* declined (``written`` false); ``None`` when the store
        had no state and *change* declined, or, if *quiet*, when the store
        failed (reported as an outage, or logged after :data:`CAS_TRIES` lost
        races).

        Raises:
            StoreError: the store failed (not *quiet*).
            StoreConflictError: other writers won every try (not *quiet*).
        """
        try:
            for _ in range(CAS_TRIES):
                entry: Entry | None = yield Get(NAMESPACE, self.name)
                base, version = (fallback, 0) if entry is None else entry
                new = change(base)
                if new is None:
                    return (
                        None if entry is None else (entry.value, entry.version, False)
                    )
                new["history"] = new.get("history", [])[-HISTORY_MAX:]
                written: int | None = yield Cas(NAMESPACE, self.name, new, version)
                if written is not None:
                    self.outage.ok()
                    return new, written, True
            raise self._conflict()  # reported below like a store error
        except Exception as exc:
            if not quiet:
                raise
            self._failed(exc, "changing its state failed")
            return None

    # -- the judge's counts ------------------------------------------------------
    def save_judge(self, saved: Mapping[str, Any]) -> Flow[None]:
        """Save the judge's counts; a failure is reported, never raised."""
        try:
            yield Put(NAMESPACE, f"{self.name}/judge", saved)
        except Exception as exc:  # counts are saved again later
            self._failed(exc, "saving judge counts failed")

    def load_judge(self) -> Flow[Mapping[str, Any] | None]:
        """Read the saved judge counts (``None``: none). Store errors propagate."""
        entry: Entry | None = yield Get(NAMESPACE, f"{self.name}/judge")
        if entry is None or not isinstance(entry.value, dict):
            return None
        return entry.value

    # -- the fleet's counts ------------------------------------------------------
    def add_batch(
        self, key: str, pid: str, seq: int, batch: Mapping[str, float]
    ) -> Flow[dict[str, float] | None]:
        """Add batch *seq* of process *pid* to the fleet's totals at *key*, once; return them.

        Compare-and-set on one entry that records each process's last batch
        number with the totals, so a batch whose reply was lost and that is
        sent again is not counted twice. An empty batch only reads the
        totals. ``None``: the store failed or other writers won every try
        (reported, never raised); the caller sends the same batch again.
        """
        try:
            for _ in range(CAS_TRIES):
                entry: Entry | None = yield Get(NAMESPACE, key)
                doc = entry.value if entry is not None else None
                totals, new = apply_batch(
                    doc if isinstance(doc, dict) else None, pid, seq, batch
                )
                if new is None:
                    self.outage.ok()
                    return totals
                version = entry.version if entry is not None else 0
                written: int | None = yield Cas(NAMESPACE, key, new, version)
                if written is not None:
                    self.outage.ok()
                    return totals
            raise self._conflict()
        except Exception as exc:  # the caller keeps the batch and sends it again
            self._failed(exc, "adding its counts failed")
            return None

    # -- other components' writes ------------------------------------------------
    def call(
        self, fn: Callable[[], object], what: str, *, on_error: OnCallError
    ) -> Flow[bool]:
        """Run *fn* (a flags write) off the event loop; return whether it succeeded.

        On a failure, *on_error* says what happens: ``"raise"`` it, ``"log"``
        it (with its traceback, naming *what* was being done) or stay
        ``"silent"`` (the caller already said so once).
        """
        try:
            yield Blocking(fn)
        except Exception:
            if on_error == "raise":
                raise
            if on_error == "log":
                logger.exception("tipkit: rollout %r: %s failed", self.name, what)
            return False
        return True
