"""Flag and document ``metadata``: validated, bounded, read-only (moved from ``_compile``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from tipkit.flags._yaml import line_of

__all__ = ["METADATA_CHARS", "METADATA_ENTRIES", "_NO_METADATA", "_metadata"]

METADATA_ENTRIES: Final = 64
"""At most this many ``metadata`` entries per flag or document."""
METADATA_CHARS: Final = 1024
"""At most this many characters in one ``metadata`` key or string value."""
_NO_METADATA: Final[Mapping[str, Any]] = MappingProxyType({})


def _metadata(
    value: Any, bad: Callable[[str, int | None], None], line: int | None
) -> Mapping[str, Any]:
    """Validate a ``metadata`` mapping; return it read-only (empty where bad)."""
    if value is None:
        return _NO_METADATA
    if not isinstance(value, dict):
        bad(f"'metadata' must be a mapping, got {type(value).__name__}", line)
        return _NO_METADATA
    if len(value) > METADATA_ENTRIES:
        bad(f"'metadata' has {len(value)} entries; at most {METADATA_ENTRIES}", line)
        return _NO_METADATA
    clean: dict[str, Any] = {}
    for k, v in value.items():
        at = line_of(value, k)
        if not isinstance(k, str) or not k or len(k) > METADATA_CHARS:
            bad(f"a metadata key must be a non-empty string, got {k!r}", at)
        elif not isinstance(v, (bool, str, int, float)):
            bad(
                f"metadata {k!r} must be a bool, string, integer or float, "
                f"got {type(v).__name__}",
                at,
            )
        elif isinstance(v, str) and len(v) > METADATA_CHARS:
            bad(f"metadata {k!r} is longer than {METADATA_CHARS} characters", at)
        else:
            clean[k] = v
    return MappingProxyType(clean) if clean else _NO_METADATA
