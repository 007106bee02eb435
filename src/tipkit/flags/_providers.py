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
from tipkit.flags._document import FlagSet, compile_document, format_of, load_text
from tipkit.flags._events import FlagsReloadFailed
from tipkit.telemetry._events import BUS

__all__ = ["FileProvider", "FlagProvider", "InMemoryProvider", "ProviderNotReadyError"]

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
    Thread-safe.
    """

    name = "memory"

    def __init__(
        self, document: Mapping[str, Any] | None = None, *, source: str = "<memory>"
    ) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.source = source
        doc = {"flags": {}} if document is None else copy.deepcopy(dict(document))
        self._snapshot = compile_document(doc, source)
        self._document: dict[str, Any] = doc

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
        doc = copy.deepcopy(dict(document))
        snapshot = compile_document(doc, self.source)
        with self._lock:
            self._document, self._snapshot = doc, snapshot
        self._changed()

    def set_flag(self, key: str, definition: Mapping[str, Any]) -> None:
        """Add or replace the flag *key*; raises ``ConfigError`` if the result is invalid."""
        with self._lock:
            doc = copy.deepcopy(self._document)
            flags = doc.setdefault("flags", {})
            flags[key] = copy.deepcopy(dict(definition))
            snapshot = compile_document(doc, self.source)
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
            snapshot = compile_document(doc, self.source)
            self._document, self._snapshot = doc, snapshot
        self._changed()


class FileProvider(FlagProvider):
    """Flags from a JSON or YAML file (by extension), reloaded when it changes.

    No thread watches the file: when flags are evaluated and at least
    *reload_interval* seconds (default 1) have passed on *clock* since the last
    look, one evaluating thread checks the file's stat (modification time, size,
    inode) and, if it changed, reloads and swaps the compiled snapshot
    atomically. A reload that fails validation keeps the last good snapshot,
    publishes :class:`FlagsReloadFailed` with the :class:`~tipkit.errors.ConfigError`
    and keeps it in :attr:`last_error`; the same broken file is not re-read until
    it changes again.

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
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.reload_interval = to_seconds(reload_interval, "reload_interval")
        if self.reload_interval < 0:
            raise ValueError(f"reload_interval must be >= 0, got {reload_interval!r}")
        self.clock = clock
        self._format = format_of(self.path)
        self._lock = threading.Lock()
        self.last_error: ConfigError | None = None
        self.reloads = 0
        self._stat = self._stat_now()
        if self._stat is None:
            raise ConfigError("flag file not found", source=str(self.path))
        self._snapshot = self._load()
        self._next_check = clock.monotonic() + self.reload_interval

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

    def _stat_now(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> FlagSet:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError("flag file not found", source=str(self.path)) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read flag file: {exc}", source=str(self.path)
            ) from exc
        return load_text(text, str(self.path), fmt=self._format)

    def current(self, now: float) -> tuple[FlagSet, float]:
        """Return the snapshot, first checking the file if *reload_interval* passed."""
        if now >= self._next_check:
            self.check(now)
        return self._snapshot, self._next_check

    def check(self, now: float | None = None) -> bool:
        """Look at the file now; reload it if it changed. Return whether it reloaded.

        If another thread is already checking, return ``False`` at once rather
        than wait: evaluation never blocks on a reload.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            now = self.clock.monotonic() if now is None else now
            self._next_check = now + self.reload_interval
            stat = self._stat_now()
            if stat == self._stat:
                return False
            self._stat = stat
            try:
                snapshot = self._load()
            except ConfigError as exc:
                self.last_error = exc
                logger.warning(
                    "tipkit: reloading %s failed; keeping the last good flags: %s",
                    self.path,
                    exc,
                )
                if FlagsReloadFailed.listened:
                    BUS.publish(FlagsReloadFailed(name=str(self.path), error=exc))
                return False
            self._snapshot = snapshot
            self.last_error = None
            self.reloads += 1
        finally:
            self._lock.release()
        self._changed()
        return True

    def reload(self) -> None:
        """Re-read the file now, changed or not.

        Raises:
            ConfigError: the file is invalid; the last good snapshot stays.
        """
        with self._lock:
            self._stat = self._stat_now()
            try:
                snapshot = self._load()
            except ConfigError as exc:
                self.last_error = exc
                if FlagsReloadFailed.listened:
                    BUS.publish(FlagsReloadFailed(name=str(self.path), error=exc))
                raise
            self._snapshot = snapshot
            self.last_error = None
            self.reloads += 1
        self._changed()
