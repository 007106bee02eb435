"""One safety action on its way to the store (see ``_durable``)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from tipkit.stores._protocol import JSON

__all__ = ["Action"]

logger = logging.getLogger("tipkit")


class Action:
    """One write of a safety action: *value* at *key*, pending until written.

    ``state`` is ``"pending"``, ``"written"``, ``"conflict"`` (someone else's
    newer write won) or ``"expired"`` (its time to live ran out before the store
    answered). ``done`` says whether the store has it.
    """

    __slots__ = (
        "_callbacks",
        "base",
        "expires",
        "fresh",
        "key",
        "queued",
        "since",
        "state",
        "value",
        "version",
    )

    def __init__(
        self, key: str, value: JSON, base: int | None, expires: float | None, now: float
    ) -> None:
        self.key = key
        self.value = value
        self.base = base
        self.expires = expires
        self.since = now
        self.state = "pending"
        self.version = 0
        self.queued = False
        self.fresh = False  # its submitter's first write is under way: no replay yet
        self._callbacks: list[Callable[[Action], object]] = []

    def __repr__(self) -> str:
        return f"<Action {self.key}={self.value!r} {self.state}>"

    @property
    def done(self) -> bool:
        """Whether the store has this write."""
        return self.state == "written"

    def on_settled(self, callback: Callable[[Action], object]) -> None:
        """Call *callback(action)* once it is written, in conflict or expired.

        At once if it already is. Called from the flusher thread: be quick, never raise.
        """
        if self.state != "pending":
            callback(self)
        else:
            self._callbacks.append(callback)

    def _settle(self, state: str) -> None:
        self.state = state
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception("tipkit: an action callback raised")
