"""Where flags come from: in memory (tests, code) or a file with hot reload."""

from __future__ import annotations

import copy
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from tipkit._core import _fork
from tipkit._core._durations import to_seconds
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import ConfigError
from tipkit.flags._document import (
    FlagSet,
    compile_plain,
    format_of,
    load_text,
    read_text,
    where,
)
from tipkit.flags._events import FlagsReloadFailed
from tipkit.flags._limits import DEFAULT_LIMITS, LimitError, Limits, checked_copy
from tipkit.flags._watch import Settle, Stat, WatchedGone, Watcher
from tipkit.telemetry._counters import REGISTRY
from tipkit.telemetry._events import BUS

__all__ = [
    "FileProvider",
    "FlagProvider",
    "InMemoryProvider",
    "ProviderNotReadyError",
    "document_provider",
]

logger = logging.getLogger("tipkit")

_NEVER = float("inf")


class ProviderNotReadyError(Exception):
    """A provider has no flags to serve yet; evaluation answers ``PROVIDER_NOT_READY``."""


class FlagProvider:
    """Base class of flag providers: serves compiled snapshots, tells when they change.

    A subclass implements :meth:`current`. When its snapshot changes outside of
    :meth:`current` (a ``set_flag`` call, say), it calls :meth:`_changed` so every
    :class:`~tipkit.flags.Flags` using it sees the change on its next evaluation.
    """

    name = "provider"

    def __init__(self) -> None:
        self._subscribers: list[weakref.WeakMethod[Callable[[], None]]] = []
        self._sub_lock = threading.Lock()
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        """Re-create this provider's locks: one held at fork time is never released."""
        self._sub_lock = threading.Lock()
        if hasattr(self, "_lock"):
            self._lock = threading.Lock()

    def current(self, now: float) -> tuple[FlagSet, float]:
        """Return the snapshot to serve and the monotonic time to ask again.

        Called by :class:`~tipkit.flags.Flags` only when that time has come or
        after :meth:`_changed`, never on every evaluation.

        Raises:
            ProviderNotReadyError: there is nothing to serve yet.
        """
        raise NotImplementedError

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call the bound method *callback* (held weakly) whenever the snapshot changes."""
        with self._sub_lock:
            self._subscribers.append(weakref.WeakMethod(callback))

    def _changed(self) -> None:
        with self._sub_lock:
            alive = [(ref, ref()) for ref in self._subscribers]
            self._subscribers = [ref for ref, cb in alive if cb is not None]
        for _, cb in alive:
            if cb is not None:
                cb()


class InMemoryProvider(FlagProvider):
    """Flags from a document held in memory, changeable at run time.

    *document* is a flag document (the same schema as a file) or ``None`` for
    an empty one. :meth:`set_flag`, :meth:`remove_flag` and :meth:`replace`
    validate the whole new document before swapping it in atomically, so a bad
    change raises :class:`~tipkit.errors.ConfigError` and changes nothing.
    Every document is copied and checked against *limits* first
    (:class:`Limits`). Thread-safe.
    """

    name = "memory"

    def __init__(
        self,
        document: Mapping[str, Any] | None = None,
        *,
        source: str = "<memory>",
        limits: Limits | None = None,
    ) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.source = source
        self.limits = DEFAULT_LIMITS if limits is None else limits
        doc = self._plain({"flags": {}} if document is None else document)
        self._snapshot = compile_plain(doc, source, self.limits)
        self._document: dict[str, Any] = doc

    def _plain(self, document: object) -> dict[str, Any]:
        """Return a checked plain copy of *document*; raise ConfigError if it is none."""
        if not isinstance(document, Mapping):
            raise ConfigError(
                "a flag document must be a mapping with 'flags', "
                f"got {type(document).__name__}",
                source=self.source,
            )
        try:
            plain: dict[str, Any] = checked_copy(
                document, self.limits
            )  # linear: no cycles
        except LimitError as exc:
            raise ConfigError(
                exc.message, source=self.source, **where(exc.path)
            ) from None
        return plain

    def __repr__(self) -> str:
        return f"<InMemoryProvider {self.source!r} flags={len(self._snapshot.flags)}>"

    @property
    def snapshot(self) -> FlagSet:
        """The compiled snapshot being served."""
        return self._snapshot

    def current(self, now: float) -> tuple[FlagSet, float]:  # noqa: ARG002  # pushes its changes
        """Return the snapshot; it changes only through this object's methods."""
        return self._snapshot, _NEVER

    def document(self) -> dict[str, Any]:
        """Return a copy of the document being served."""
        with self._lock:
            return copy.deepcopy(self._document)

    def replace(self, document: Mapping[str, Any]) -> None:
        """Serve *document* instead; raises ``ConfigError`` and keeps the old one if invalid."""
        doc = self._plain(document)
        snapshot = compile_plain(doc, self.source, self.limits)
        with self._lock:
            self._document, self._snapshot = doc, snapshot
        self._changed()

    def set_flag(self, key: str, definition: Mapping[str, Any]) -> None:
        """Add or replace the flag *key*; raises ``ConfigError`` if the result is invalid."""
        with self._lock:
            doc = copy.deepcopy(self._document)
            flags = doc.setdefault("flags", {})
            flags[key] = definition
            doc = self._plain(doc)
            snapshot = compile_plain(doc, self.source, self.limits)
            self._document, self._snapshot = doc, snapshot
        self._changed()

    def remove_flag(self, key: str) -> None:
        """Remove the flag *key*.

        Raises:
            KeyError: there is no such flag.
        """
        with self._lock:
            doc = copy.deepcopy(self._document)
            del doc.get("flags", {})[key]
            snapshot = compile_plain(doc, self.source, self.limits)
            self._document, self._snapshot = doc, snapshot
        self._changed()


class FileProvider(FlagProvider):
    """Flags from a JSON or YAML file (by extension), reloaded in the background.

    A daemon thread (:class:`~tipkit.flags._watch.Watcher`) looks at the file's
    stat (modification time, size, inode) every *reload_interval* seconds
    (default 1) and, once a change has *settled* (the stat unchanged for
    *settle* seconds, default one polling interval; at once for a new inode,
    which is what an atomic rename gives), parses it on that thread and swaps the
    compiled snapshot in atomically. An evaluation never reads or parses the
    file. With ``watch=False`` no thread runs: call :meth:`poll` (what the
    thread calls) or :meth:`reload` yourself.

    A reload that fails keeps the last good snapshot and reports the failure
    once until the file is fixed: :class:`FlagsReloadFailed`, a WARNING on the
    ``tipkit`` logger and the ``tipkit.flag.reload_failures`` counter;
    :attr:`last_error` holds the :class:`~tipkit.errors.ConfigError` and
    :attr:`status` is ``"stale"``. The same broken file is not parsed again
    until it changes. *limits* bounds the document (:class:`Limits`).

    Raises:
        ConfigError: the file is missing or invalid at construction.
    """

    name = "file"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        reload_interval: float | timedelta = 1.0,
        clock: Clock = SYSTEM_CLOCK,
        limits: Limits | None = None,
        settle: float | timedelta | None = None,
        watch: bool = True,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.reload_interval = to_seconds(reload_interval, "reload_interval")
        if self.reload_interval < 0:
            raise ValueError(f"reload_interval must be >= 0, got {reload_interval!r}")
        self._settle_given = settle is not None
        self.settle = (
            self.reload_interval if settle is None else to_seconds(settle, "settle")
        )
        if self.settle < 0:
            raise ValueError(f"settle must be >= 0, got {settle!r}")
        self.clock = clock
        self.limits = DEFAULT_LIMITS if limits is None else limits
        self._format = format_of(self.path)
        self._lock = threading.Lock()
        self.last_error: ConfigError | None = None
        self.reloads = 0
        self.changed_keys: tuple[str, ...] = ()
        self._on_failed: list[weakref.WeakMethod[Callable[[ConfigError], None]]] = []
        self._failures = REGISTRY.counter(
            "tipkit.flag.reload_failures", {"tipkit.flags.file": str(self.path)}
        )
        stat = self._stat_now()
        if stat is None:
            raise ConfigError("flag file not found", source=str(self.path))
        self._snapshot = self._load()
        self._settle = Settle(stat, self.settle)
        self._watcher = Watcher(
            _weakly(self.poll),
            self.reload_interval or 0.05,
            f"tipkit-watch-{self.path.name}",
        )
        if watch:
            self._watcher.start()

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        if self._watcher._thread is not None:  # it was watching
            self._watcher._thread = None  # threads do not survive fork
            self._watcher.start()

    def __repr__(self) -> str:
        state = "ok" if self.last_error is None else "stale (last reload failed)"
        return (
            f"<FileProvider {str(self.path)!r} reload_interval={self.reload_interval}s "
            f"flags={len(self._snapshot.flags)} reloads={self.reloads} {state}>"
        )

    @property
    def snapshot(self) -> FlagSet:
        """The compiled snapshot being served (the last good one)."""
        return self._snapshot

    @property
    def status(self) -> str:
        """``"ok"``, or ``"stale"`` while the file on disk failed to load."""
        return "ok" if self.last_error is None else "stale"

    @property
    def watching(self) -> bool:
        """Whether the background watcher thread is running."""
        return self._watcher.running

    def watch(self, *, interval: float | None = None) -> None:
        """Start the watcher thread (idempotent); *interval* replaces ``reload_interval``.

        Without an explicit ``settle``, a change settles over one *interval*.
        """
        if interval is not None and interval != self._watcher.interval:
            if not interval > 0:
                raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
            self._watcher.stop()
            self._watcher.interval = interval
            if not self._settle_given:
                self.settle = self._settle.settle = interval
        self._watcher.start()

    def subscribe_failed(self, callback: Callable[[ConfigError], None]) -> None:
        """Call the bound method *callback* (held weakly) when a reload starts failing.

        Called once per failure, on the watcher's thread, until the file loads
        again (then :meth:`subscribe`'s callbacks run).
        """
        with self._sub_lock:
            self._on_failed.append(weakref.WeakMethod(callback))

    def close(self) -> None:
        """Stop the watcher thread; the last snapshot stays served."""
        self._watcher.stop()

    def _stat_now(self) -> Stat | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> FlagSet:
        text = read_text(self.path, self.limits)
        return load_text(text, str(self.path), fmt=self._format, limits=self.limits)

    def current(self, now: float) -> tuple[FlagSet, float]:  # noqa: ARG002  # pushes its changes
        """Return the snapshot; never reads the file (the watcher does, and pushes)."""
        return self._snapshot, _NEVER

    def poll(self, now: float | None = None) -> bool:
        """Look at the file once; load it if a change has settled. Return whether it swapped.

        What the watcher thread calls. If another thread is already loading,
        return ``False`` at once rather than wait.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            now = self.clock.monotonic() if now is None else now
            stat = self._stat_now()
            if not self._settle.observe(stat, now):
                return False
            self._settle.done(stat)
            swapped = self._swap(raise_errors=False)
        finally:
            self._lock.release()
        if swapped:
            self._changed()
        return swapped

    def check(self, now: float | None = None) -> bool:
        """Same as :meth:`poll` (the older name)."""
        return self.poll(now)

    def reload(self) -> None:
        """Re-read the file now, changed or settled or not.

        Raises:
            ConfigError: the file is invalid; the last good snapshot stays.
        """
        with self._lock:
            self._settle.done(self._stat_now())
            self._swap(raise_errors=True)
        self._changed()

    def _swap(self, *, raise_errors: bool) -> bool:
        try:
            snapshot = self._load()
        except ConfigError as exc:
            self._failed(exc)
            if raise_errors:
                raise
            return False
        old = self._snapshot.flags
        self.changed_keys = tuple(
            sorted(
                k
                for k in old.keys() | snapshot.flags.keys()
                if k not in old
                or k not in snapshot.flags
                or old[k].version != snapshot.flags[k].version
            )
        )
        self._snapshot = snapshot
        if self.last_error is not None:
            logger.warning("tipkit: %s loads again; serving it", self.path)
        self.last_error = None
        self.reloads += 1
        return True

    def _failed(self, exc: ConfigError) -> None:
        first = self.last_error is None
        self.last_error = exc
        if not first:
            logger.debug("tipkit: %s still fails to load: %s", self.path, exc)
            return
        self._failures.inc()
        logger.warning(
            "tipkit: reloading %s failed; keeping the last good flags (reported "
            "once until fixed): %s",
            self.path,
            exc,
        )
        if FlagsReloadFailed.listened:
            BUS.publish(FlagsReloadFailed(name=str(self.path), error=exc))
        with self._sub_lock:
            callbacks = [ref() for ref in self._on_failed]
        for callback in callbacks:
            if callback is not None:
                callback(exc)


def _weakly(method: Callable[[], bool]) -> Callable[[], bool]:
    """Return *method* held weakly: a provider nobody uses is collected, its watcher ends."""
    ref = weakref.WeakMethod(method)

    def call() -> bool:
        bound = ref()
        if bound is None:
            raise WatchedGone
        return bound()

    return call


def document_provider(
    document: object, limits: Limits | None = None
) -> InMemoryProvider:
    """Return ``InMemoryProvider(document, limits=limits)`` (``Flags.from_dict``).

    Raises:
        ConfigError: *document* is not a mapping (``None`` included), exceeds
            *limits* or is invalid.
    """
    if not isinstance(document, Mapping):
        raise ConfigError(
            "a flag document must be a mapping with 'flags', "
            f"got {type(document).__name__}",
            source="<memory>",
        )
    return InMemoryProvider(document, limits=limits)
