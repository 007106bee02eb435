"""Test helpers for code that uses flags: a real engine over an in-memory provider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tipkit.clock import Clock
from tipkit.flags._engine import Flags
from tipkit.flags._model import EvaluationDetail, Outcome
from tipkit.flags._outcomes import detail
from tipkit.flags._providers import InMemoryProvider

__all__ = ["RecordingFlags", "fake_flags", "flag_definition"]


def flag_definition(value: Any) -> dict[str, Any]:
    """Return a flag definition serving *value* to everyone.

    A mapping with ``variants`` is taken as a full definition. ``True``/``False``
    become a boolean flag with variants ``on``/``off`` (so overriding to the other
    value serves the other variant); any other value becomes a one-variant flag
    whose variant is named after the value.
    """
    if isinstance(value, Mapping) and "variants" in value:
        return dict(value)
    if isinstance(value, bool):
        return {
            "variants": {"on": True, "off": False},
            "default_variant": "on" if value else "off",
        }
    name = value if isinstance(value, str) and value else "value"
    return {"variants": {name: value}, "default_variant": name}


class RecordingFlags(Flags):
    """A :class:`Flags` that records every evaluation in :attr:`evaluations`.

    Recording costs a detail object per evaluation: for tests only.
    """

    __slots__ = ("evaluations",)

    def __init__(self, provider: InMemoryProvider, **kwargs: Any) -> None:
        self.evaluations: list[EvaluationDetail] = []
        super().__init__(provider, **kwargs)

    @property
    def memory(self) -> InMemoryProvider:
        """The in-memory provider, for ``set_flag``/``replace`` in tests."""
        return self.provider  # type: ignore[return-value]  # always built over one

    def is_enabled(self, key: str, context: Any = None, default: bool = False) -> bool:
        """Evaluate like :meth:`Flags.is_enabled` and record the detail."""
        return self.evaluate(key, context, default).value  # type: ignore[no-any-return]  # bool, or the caller's default

    def get(self, key: str, context: Any = None, default: Any = None) -> Any:
        """Evaluate like :meth:`Flags.get` and record the detail."""
        return self.evaluate(key, context, default).value

    def _complete(self, key: str, context: Any, default: Any) -> tuple[Any, Outcome]:
        value, out = super()._complete(key, context, default)
        self.evaluations.append(detail(value, out))
        return value, out

    def evaluated(self, key: str) -> list[EvaluationDetail]:
        """Return the recorded evaluations of *key*, in order."""
        return [e for e in self.evaluations if e.flag_key == key]


def fake_flags(
    values: Mapping[str, Any] | None = None,
    *,
    document: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    **kwargs: Any,
) -> RecordingFlags:
    """Return a real :class:`Flags` over an :class:`InMemoryProvider`, recording evaluations.

    *values* maps flag keys to the value served to everyone (``{"new-checkout":
    True, "checkout-algo": "v2"}``) or to full flag definitions (with
    ``variants``, rules and splits: splits work exactly as in production).
    *document* is a whole flag document (with segments) merged under *values*.
    Use ``with flags.override(key, value):`` to change a flag for a block, and
    ``flags.memory.set_flag(...)`` to change definitions.

    Raises:
        ConfigError: a definition is invalid.
    """
    doc: dict[str, Any] = {"flags": {}}
    if document is not None:
        doc.update(document)
        doc["flags"] = dict(document.get("flags") or {})
    for key, value in (values or {}).items():
        doc["flags"][key] = flag_definition(value)
    provider = InMemoryProvider(doc, source="<fake_flags>")
    return RecordingFlags(provider, clock=clock, **kwargs)
