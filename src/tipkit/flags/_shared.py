"""Building one flag's outcomes and serves, with equal objects shared per document.

A 10,000-flag document of one shape would otherwise hold 10,000 equal copies of
its variant maps, split tables and names; the compiler's *shared* dict keeps
one of each (nothing compiled is ever mutated). Split off ``_compile``.
"""

from __future__ import annotations

from typing import Any

from tipkit.flags._compiled import Serve
from tipkit.flags._model import Outcome, Reason
from tipkit.flags._schemes import Scheme

__all__ = ["FlagBuilder", "same_str", "shared_variants"]


class FlagBuilder:
    """Builds the shared outcomes of one flag (one per variant, reason and rule)."""

    def __init__(
        self,
        key: str,
        variants: dict[str, Any],
        version: str,
        shared: dict[Any, Any],
        scheme: Scheme | None = None,
    ) -> None:
        self.key = key
        self.variants = variants
        self.version = version
        self.shared = shared
        self.scheme = scheme  # a vendor's bucketing of the flag's splits (_schemes)

    def outcome(self, variant: str, reason: Reason, rule_id: str | None) -> Outcome:
        # Names written as values ("off", a rule id) are one string per document.
        return Outcome(
            self.key,
            self.variants[variant],
            self.shared.setdefault(variant, variant),
            reason,
            rule_id=None
            if rule_id is None
            else self.shared.setdefault(rule_id, rule_id),
            flag_version=self.version,
        )

    def serve(
        self,
        spec: Any,
        reason: Reason,
        rule_id: str | None,
        salt: str,
        bucket_by: str | None,
    ) -> Serve:
        if isinstance(spec, str):
            return Serve((self.outcome(spec, reason, rule_id),))
        names = tuple(n for n, _ in spec)
        weights = tuple(w for _, w in spec)
        return Serve(
            tuple(self.outcome(n, Reason.SPLIT, rule_id) for n in names),
            weights=weights,
            salt=salt,
            bucket_by=bucket_by,
            shared=self.shared,
            scheme=self.scheme,
        )


def same_str(name: str | None, shared: dict[Any, Any]) -> str | None:
    return None if name is None else shared.setdefault(name, name)


def shared_variants(variants: dict[str, Any], shared: dict[Any, Any]) -> dict[str, Any]:
    """Return one dict for equal scalar variant maps (never mutated once compiled)."""
    if any(isinstance(v, dict | list) for v in variants.values()):
        return variants
    key = ("variants", *((n, v.__class__, v) for n, v in variants.items()))
    return shared.setdefault(key, variants)  # type: ignore[no-any-return]  # a variants map
