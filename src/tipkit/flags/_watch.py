"""Watching a flag file: when a change is safe to load, and the thread that looks.

:class:`Settle` is the pure decision (no I/O, no clock of its own): given the
file's stat and ``now``, is there a change, and is it finished? A change is
loaded once the stat (modification time, size, inode) has stayed the same for
``settle`` seconds, so a file written in several chunks (an editor, ``cp``
over it) is not loaded half-written; a new inode (an atomic rename into
place, the safe way to publish) is loaded at once.

:class:`Watcher` is the one background thread that polls: it calls a function
every ``interval`` seconds of real time until stopped, and outlives any
exception that function raises. Providers use it so that an evaluation never
reads or parses a file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Settle", "Stat", "WatchedGone", "Watcher"]

logger = logging.getLogger("tipkit")

Stat = tuple[int, int, int]
"""A file's ``(st_mtime_ns, st_size, st_ino)``; ``None`` when the file is missing."""


class Settle:
    """Decide when a changed file is complete enough to load. Not thread-safe.

    ``loaded`` is the stat of the content being served. :meth:`observe` is
    called with each look at the file and answers whether to load now.
    """

    __slots__ = ("loaded", "pending", "pending_since", "settle")

    def __init__(self, loaded: Stat | None, settle: float) -> None:
        self.loaded = loaded
        self.settle = settle
        self.pending: Stat | None = None
        self.pending_since = 0.0

    def observe(self, stat: Stat | None, now: float) -> bool:
        """Return whether the file at *stat* should be loaded at *now*."""
        if stat is None or stat == self.loaded:
            self.pending = None
            return False
        if self.loaded is not None and stat[2] != self.loaded[2]:
            # A new inode: the file was renamed into place whole.
            return True
        if stat != self.pending:
            self.pending, self.pending_since = stat, now
            return self.settle <= 0
        return now - self.pending_since >= self.settle

    def done(self, stat: Stat | None) -> None:
        """Record that *stat* was loaded (or tried: a broken file waits for a change)."""
        self.loaded = stat
        self.pending = None


class WatchedGone(Exception):  # noqa: N818  # a signal, not an error
    """Raised by a poll function whose owner was garbage-collected: the watcher ends."""


class Watcher:
    """A daemon thread calling *poll* every *interval* seconds until :meth:`stop`.

    Real time on purpose: the watcher is the one place tipkit waits on its own,
    and ``threading.Event.wait`` returns at once on :meth:`stop`. An exception
    from *poll* is logged at DEBUG and the watcher goes on; :class:`WatchedGone`
    ends it (the owner holds *poll* weakly and was collected).
    """

    __slots__ = ("_stop", "_thread", "interval", "name", "poll")

    def __init__(self, poll: Callable[[], object], interval: float, name: str) -> None:
        self.poll = poll
        self.interval = interval
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (again after :meth:`stop` or a fork); idempotent."""
        if self.running:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name=self.name, daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (at most *timeout* seconds)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.poll()
            except WatchedGone:
                return
            except Exception:  # the watcher must outlive any one bad look
                logger.debug("tipkit: the flag file watcher failed once", exc_info=True)
