"""Where a ``Flags``' evaluation table comes from: the provider and the store.

:class:`Source` refreshes the provider's compiled snapshot and (through
:class:`~tipkit.flags._store_sync.StoreSync`) the store's kills, overrides and
splits when each is due, and when either changed returns the new plans, built
by the one precedence (:func:`~tipkit.flags._precedence.plan`). It never
raises: a provider that fails keeps the last snapshot (or answers
``PROVIDER_NOT_READY``/``GENERAL`` until the first one), a store that fails
keeps the last state. Not locked itself: its owner refreshes one at a time.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

from tipkit.errors import ConfigError
from tipkit.flags._compiled import CompiledFlag, FlagSet
from tipkit.flags._model import ErrorCode
from tipkit.flags._outcomes import OnceLog
from tipkit.flags._precedence import Plan, plan
from tipkit.flags._providers import FlagProvider, ProviderNotReadyError
from tipkit.flags._sticky import Sticky
from tipkit.flags._store_sync import StoreSync

__all__ = ["Source"]

_INF = float("inf")


class Source:
    """The provider's snapshot and the store's state of one ``Flags``, as plans."""

    __slots__ = (
        "__weakref__",
        "_expired",
        "_interval",
        "_local",
        "_log",
        "_provider",
        "flag_set",
        "not_ready",
        "provider_next",
        "sticky",
        "sync",
    )

    def __init__(
        self,
        provider: FlagProvider,
        sync: StoreSync,
        local_overrides: Mapping[str, Any],
        expired: Callable[[], object],
        log: OnceLog,
        *,
        sticky: Sticky | None = None,
    ) -> None:
        """Serve *provider* and *sync*; call the bound method *expired* when either changes."""
        self._provider = provider
        self.sync = sync
        self._local = local_overrides
        self._interval = sync.interval
        self._log = log
        self.sticky = sticky
        # Weak, as the provider and the store hold their callbacks.
        self._expired = weakref.WeakMethod(expired)
        self.flag_set: FlagSet | None = None
        # Why a flag cannot be found while no snapshot was ever served.
        self.not_ready: tuple[ErrorCode, str] | None = (
            ErrorCode.PROVIDER_NOT_READY,
            "the provider has not served flags yet",
        )
        self.provider_next = -_INF
        provider.subscribe(self._provider_changed)

    def _provider_changed(self) -> None:
        self.provider_next = -_INF
        self._tell()

    def expire(self) -> None:
        """Make provider and store due now (``Flags.refresh``)."""
        self.provider_next = self.sync.next = -_INF
        self._tell()

    def _tell(self) -> None:
        expired = self._expired()
        if expired is not None:
            expired()

    @property
    def next(self) -> float:
        """When the next refresh is due (the earlier of provider and store)."""
        return min(self.provider_next, self.sync.next)

    def summary(self) -> str:
        """Return ``flags=N killed=N overrides=N <status>`` for ``repr(flags)``."""
        fs, state, not_ready = self.flag_set, self.sync.state, self.not_ready
        overrides = len(state.overrides) + len(self._local)
        status = "ready" if not_ready is None else not_ready[0].value.lower()
        return (
            f"flags={0 if fs is None else len(fs.flags)} killed={len(state.kills)} "
            f"overrides={overrides} {status}"
        )

    def refresh(self, now: float, *, store: bool = True) -> dict[str, Plan] | None:
        """Refresh what is due with sync I/O; return the new plans if anything changed.

        May block on the store's sync methods (bounded by its timeout) and on
        the provider (a file provider stats its file).
        """
        changed = self._refresh_provider(now)
        if store and now >= self.sync.next:
            changed |= self.sync.refresh(now)
        changed |= self.sync.take_remerge()
        return self._plans() if changed else None

    async def arefresh(self, now: float) -> dict[str, Plan] | None:
        """:meth:`refresh` awaiting the store's async methods: never a sync store call."""
        changed = self._refresh_provider(now)
        if now >= self.sync.next:
            changed |= await self.sync.arefresh(now)
        changed |= self.sync.take_remerge()
        return self._plans() if changed else None

    def _refresh_provider(self, now: float) -> bool:
        if now < self.provider_next:
            return False
        try:
            flag_set, next_check = self._provider.current(now)
        except Exception as exc:
            self.provider_next = now + min(self._interval, 1.0)
            if not isinstance(exc, ProviderNotReadyError):
                self._log(
                    f"provider:{type(exc).__name__}",
                    "tipkit: the flag provider %r raised",
                    self._provider,
                    exc,
                )
            if self.flag_set is not None:
                return False
            self.not_ready = (
                (ErrorCode.PROVIDER_NOT_READY, str(exc) or "the provider is not ready")
                if isinstance(exc, ProviderNotReadyError)
                else (ErrorCode.PARSE_ERROR, "the flag document does not parse")
                if isinstance(exc, ConfigError)
                else (ErrorCode.GENERAL, f"the provider raised {type(exc).__name__}")
            )
            return True
        self.provider_next = next_check
        if flag_set is self.flag_set:
            return False
        self.flag_set = flag_set
        self.not_ready = None
        return True

    def _plans(self) -> dict[str, Plan]:
        fs = self.flag_set
        flags = {} if fs is None else fs.flags
        return plan(flags, self.sync.state, self._local, self._bad_split, self.sticky)

    def _bad_split(
        self,
        flag: CompiledFlag,
        rule_id: str | None,
        weights: Mapping[str, int],
        exc: ValueError,
    ) -> None:
        self._log(
            f"split:{flag.key}:{rule_id}:{sorted(weights.items())}",
            "tipkit: the run-time split of flag %r does not fit it; "
            "serving the document's weights",
            flag.key,
            exc,
        )
