"""The rollout's flag: its two variants, and setting its split's weights to the stage.

Cohorts come from the flag's own consistent-hash split. The rollout sets the
weights of the flag's fallthrough and of every rule that serves a split to the
stage's share with :meth:`tipkit.flags.Flags.set_split` (through the flags'
store), so every evaluation of the flag anywhere in the app serves the stage,
and raising a stage only ever adds users to the canary.
"""

from __future__ import annotations

import functools
from typing import Any

from tipkit.errors import ConfigError
from tipkit.flags import Flags, InMemoryProvider
from tipkit.rollout._persist import Flow, RolloutStore
from tipkit.rollout._state import CUT_SCALE

__all__ = ["FlagSplit"]


def _definition(percent: float) -> dict[str, Any]:
    """Return the flag a rollout creates: ``canary``/``control`` split at *percent*."""
    rest = round(CUT_SCALE - percent * 1000) / 1000
    return {
        "variants": {"canary": True, "control": False},
        "off_variant": "control",
        "fallthrough": {"split": {"canary": percent, "control": rest}},
    }


class FlagSplit:
    """A rollout's flag: which variant is the canary, and the split serving the stage.

    Args:
        flags: the :class:`~tipkit.flags.Flags` serving the flag.
        flag: the flag key.
        rollout: the rollout's name (for messages).
        canary, control: the variants (default: the flag's first and second).
        percent: the first stage's share, used if the flag must be created.
        persist: runs the flags' writes (off the event loop in async code).

    If the flag does not exist and *flags* is served by an
    :class:`~tipkit.flags.InMemoryProvider`, it is created (``canary: true``,
    ``control: false``, a split) and its document follows the stage.

    Raises:
        ConfigError: the flag is missing (and cannot be created), has fewer
            than two variants, or the variants named are not the flag's or
            are the same.
    """

    __slots__ = (
        "_created",
        "_flags",
        "_persist",
        "canary",
        "control",
        "created_percent",
        "flag",
        "percent",
        "rollout",
    )

    def __init__(
        self,
        flags: Flags,
        flag: str,
        rollout: str,
        *,
        canary: str | None,
        control: str | None,
        percent: float,
        persist: RolloutStore,
    ) -> None:
        self._flags = flags
        self.flag = flag
        self.rollout = rollout
        self._persist = persist
        self.percent: float | None = None
        """The share the split was last set to (``None``: not yet, or it failed)."""
        self.created_percent = percent
        self._created = False
        self.canary, self.control = self._resolve(canary, control, percent)

    def __repr__(self) -> str:
        return (
            f"<FlagSplit {self.flag!r} canary={self.canary!r} control={self.control!r}"
            f" percent={self.percent}>"
        )

    def _resolve(
        self, canary: str | None, control: str | None, percent: float
    ) -> tuple[str, str]:
        fs = self._flags.flag_set
        compiled = None if fs is None else fs.flags.get(self.flag)
        if compiled is None:
            provider = self._flags.provider
            if not isinstance(provider, InMemoryProvider):
                raise ConfigError(
                    f"rollout {self.rollout!r}: flag {self.flag!r} does not exist; define"
                    " it with two variants (canary first, control second) and a split",
                    flag=self.flag,
                )
            provider.set_flag(self.flag, _definition(percent))
            self._flags.refresh()
            self._created = True
            return ("canary", "control")
        variants = list(compiled.variants)
        if len(variants) < 2:
            raise ConfigError(
                f"rollout {self.rollout!r}: flag {self.flag!r} needs two variants "
                f"(canary, control), it has {variants!r}",
                flag=self.flag,
                field="variants",
            )
        canary = canary if canary is not None else variants[0]
        control = control if control is not None else variants[1]
        if canary == control:
            raise ConfigError(
                f"rollout {self.rollout!r}: the canary and control variants of flag "
                f"{self.flag!r} must differ, both are {canary!r}",
                flag=self.flag,
                field="variants",
            )
        for which, v in (("canary_variant", canary), ("control_variant", control)):
            if v not in compiled.variants:
                raise ConfigError(
                    f"rollout {self.rollout!r}: {which} {v!r} is not a variant of flag "
                    f"{self.flag!r} ({variants!r})",
                    flag=self.flag,
                    field="variants",
                )
        return canary, control

    def weights(self, percent: float) -> dict[str, float]:
        """Return the split's weights (percent per variant) for a canary share of *percent*."""
        cut = round(percent * 1000)
        return {self.canary: cut / 1000, self.control: (CUT_SCALE - cut) / 1000}

    def _targets(self) -> tuple[str | None, ...]:
        fs = self._flags.flag_set
        compiled = None if fs is None else fs.flags.get(self.flag)
        rules = () if compiled is None else compiled.rules
        return (None, *(r.id for r in rules if r.serve.is_split))

    def _write(self, weights: dict[str, float]) -> None:
        flags, flag = self._flags, self.flag
        for rule_id in self._targets():
            if flags.get_split(flag, rule_id=rule_id) != weights:
                flags.set_split(flag, weights, rule_id=rule_id)

    def sync(self, percent: float) -> Flow[None]:
        """Make the flag's splits give the canary *percent* (a flow).

        Writes only the targets whose stored weights differ, so the processes
        that all notice a stage change do not all write it. A failure is logged
        (once until a write succeeds) and retried at the next refresh;
        meanwhile requests served by other weights are not judged.
        """
        if self._created and percent != self.created_percent:
            self.created_percent = percent
            provider = self._flags.provider
            if isinstance(provider, InMemoryProvider):
                provider.set_flag(self.flag, _definition(percent))
        ok = yield from self._persist.call(
            functools.partial(self._write, self.weights(percent)),
            f"setting the split of flag {self.flag!r} to {percent:g}%",
            # Said once until a write succeeds again.
            on_error="log" if self.percent is not None else "silent",
        )
        self.percent = percent if ok else None

    def override_to_control(self) -> Flow[None]:
        """Override the flag to its control variant; a failure is logged (a flow)."""
        yield from self._persist.call(
            functools.partial(self._flags.set_override, self.flag, self.control),
            f"overriding flag {self.flag!r} to its control variant (the rollout's"
            " own share is 0)",
            on_error="log",
        )

    def clear_override(self) -> Flow[None]:
        """Clear the rollout's override of the flag (a flow).

        Raises:
            StoreError: the flags' store could not be written.
        """
        yield from self._persist.call(
            functools.partial(self._flags.clear_override, self.flag),
            f"clearing the override of flag {self.flag!r}",
            on_error="raise",
        )
