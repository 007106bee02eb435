"""Watches: callbacks a store calls when a namespace is written."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

__all__ = ["Callback", "Watch"]

logger = logging.getLogger("tipkit")

Callback = Callable[[], object]


def _strong(callback: Callback) -> Callable[[], Callback | None]:
    return lambda: callback


class Watch:
    """A subscription made by a store's ``watch``; :meth:`cancel` ends it.

    Holds a bound method weakly (watching does not keep its object alive) and
    any other callable strongly.
    """

    __slots__ = ("_ref", "_remove", "channel", "namespace")

    def __init__(
        self,
        namespace: str,
        callback: Callback,
        remove: Callable[[Watch], None],
        channel: bytes = b"",
    ) -> None:
        self.namespace = namespace
        self.channel = channel
        self._remove = remove
        self._ref: Callable[[], Callback | None]
        if hasattr(callback, "__self__") and hasattr(callback, "__func__"):
            self._ref = weakref.WeakMethod(callback)
        else:
            self._ref = _strong(callback)

    def __repr__(self) -> str:
        return f"<Watch {self.namespace!r} live={self._ref() is not None}>"

    @property
    def live(self) -> bool:
        """Whether the callback's object still exists."""
        return self._ref() is not None

    def fire(self) -> bool:
        """Call the callback; return ``False`` if its object is gone.

        A callback that raises is logged on the ``tipkit`` logger, never raised:
        the writer (or the listener thread) must carry on.
        """
        callback = self._ref()
        if callback is None:
            return False
        try:
            callback()
        except Exception:
            logger.exception("tipkit: a store watch callback raised")
        return True

    def cancel(self) -> None:
        """Stop calling the callback. Idempotent and thread-safe."""
        self._remove(self)
