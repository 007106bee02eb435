"""What every importer shares: the report of what did not translate, names, weights."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tipkit.flags._bucketing import BUCKETS

__all__ = [
    "Flag",
    "ImportResult",
    "Untranslatable",
    "percents",
    "split",
    "variant_names",
]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Untranslatable(Exception):  # noqa: N818  # a control-flow signal, not an error type
    """Raised inside an importer: this flag cannot keep its users' variants in tipkit."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why


@dataclass
class ImportResult:
    """A tipkit document and every part of the vendor's file that did not translate.

    ``skipped`` lists ``(flag, where, why)`` for each flag left out of
    ``document`` because translating it would change what some user is served;
    ``notes`` lists what was dropped without changing any assignment
    (descriptions of tracking, payload types, ...).
    """

    vendor: str
    document: dict[str, Any]
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every flag translated."""
        return not self.skipped

    def report(self) -> list[str]:
        """Return one human line per skipped flag and note."""
        lines = [
            f"not translated: flag {flag!r}: {where}: {why}"
            for flag, where, why in self.skipped
        ]
        lines += [f"note: {n}" for n in self.notes]
        return lines


class Flag:
    """A tipkit flag being built, with the one per-flag bucketing it may need."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.doc: dict[str, Any] = {}
        self.rules: list[dict[str, Any]] = []
        self.bucketing: dict[str, Any] | None = None
        self.bucket_by: str | None = None
        self._bucket_by_set = False
        self.flagd_version = 3

    def use_bucketing(
        self, where: str, bucketing: dict[str, Any], by: str | None
    ) -> None:
        """Require *bucketing* and *by* for a split; a flag has one of each."""
        if self.bucketing is not None and self.bucketing != bucketing:
            raise Untranslatable(
                where,
                f"splits bucket differently ({self.bucketing} and {bucketing}); "
                "a tipkit flag has one bucketing",
            )
        if self._bucket_by_set and self.bucket_by != by:
            raise Untranslatable(
                where,
                f"splits bucket on different attributes ({self.bucket_by!r} and {by!r})",
            )
        self.bucketing = bucketing
        self.bucket_by = by
        self._bucket_by_set = True

    def build(self) -> dict[str, Any]:
        """Return the tipkit flag document."""
        out = {k: v for k, v in self.doc.items() if k != "fallthrough"}
        if self.bucketing is not None:
            out["bucketing"] = self.bucketing
        if self.bucket_by is not None:
            out["bucket_by"] = self.bucket_by
        if self.rules:
            out["rules"] = self.rules
        out["fallthrough"] = self.doc["fallthrough"]
        return out


def variant_names(values: Iterable[Any]) -> list[str]:
    """Name variants after their values where readable and unique, else ``v0, v1, ...``."""
    vals = list(values)
    names: list[str] = []
    for v in vals:
        if isinstance(v, bool):
            names.append("on" if v else "off")
        elif isinstance(v, str | int | float) and _NAME.match(str(v)):
            names.append(str(v))
        else:
            break
    if len(names) == len(vals) and len(set(names)) == len(names):
        return names
    return [f"v{i}" for i in range(len(vals))]


def percents(thousandths: Iterable[int]) -> list[int | float]:
    """Return thousandths of a percent as the percents a tipkit split is written in."""
    out: list[int | float] = []
    for t in thousandths:
        d = Decimal(t) / 1000
        out.append(int(d) if d == d.to_integral_value() else float(d))
    return out


def split(where: str, names: list[str], thousandths: list[int]) -> dict[str, Any]:
    """Return ``{split: {name: percent}}``; *thousandths* must sum to 100000.

    Raises:
        Untranslatable: a variant appears twice (its two ranges cannot be one).
    """
    if sum(thousandths) != BUCKETS:
        raise Untranslatable(where, f"weights sum to {sum(thousandths)}, not {BUCKETS}")
    if len(set(names)) != len(names):
        raise Untranslatable(
            where,
            f"a variant appears twice in one split ({names}); tipkit has one range each",
        )
    return {"split": dict(zip(names, percents(thousandths), strict=True))}
