"""What ``tipkit doctor`` reports: findings, the maturity levels, the report."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, metadata
from typing import Literal

__all__ = ["DOCS", "LEVELS", "Finding", "Report", "Severity", "docs_url"]

Severity = Literal["error", "warning", "info"]

LEVELS: dict[int, str] = {
    1: "staging only",
    2: "observability",
    3: "flags and canaries",
    4: "automated progressive delivery",
    5: "testing in production as culture",
}
"""The maturity levels, as ``docs/adoption.md`` describes them."""


def _docs_base() -> str:
    try:
        urls = metadata("tipkit").get_all("Project-URL") or []
    except PackageNotFoundError:  # pragma: no cover - an uninstalled source tree
        urls = []
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "documentation":
            return str(url).strip().rstrip("/") + "/"
    return "https://tipkit.invalid/docs/"  # pragma: no cover - metadata always has it


DOCS = _docs_base()
"""Where the documentation lives (the package's ``Documentation`` URL)."""


def docs_url(page: str, anchor: str = "") -> str:
    """Return the URL of docs page *page* (``"doctor"``), at *anchor* if given."""
    return f"{DOCS}{page}.html" + (f"#{anchor}" if anchor else "")


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a running configuration lacks, with how to fix it.

    Attributes:
        code: a stable name (``flag-no-off-variant``), also the anchor of its
            section in ``docs/doctor.md``.
        level: the maturity level this finding stands in the way of.
        severity: ``"error"`` blocks *level*; ``"warning"`` should be fixed but
            does not block it; ``"info"`` is worth knowing.
        target: what it is about (``flag 'new-checkout'``, ``telemetry``).
        message: what is wrong, in one sentence.
        fix: what to do, as code or a command where one exists.
        docs: the URL of the section explaining it.
    """

    code: str
    level: int
    severity: Severity
    target: str
    message: str
    fix: str
    docs: str = ""

    def __post_init__(self) -> None:
        if not self.docs:
            object.__setattr__(self, "docs", docs_url("doctor", self.code))


_ORDER = {"error": 0, "warning": 1, "info": 2}


def _wrap(text: str, first: str, rest: str | None = None) -> list[str]:
    # Long words (URLs, code) are never broken: a copied fix must still work.
    return textwrap.wrap(
        text,
        80,
        initial_indent=first,
        subsequent_indent=first if rest is None else rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


@dataclass(frozen=True, slots=True)
class Report:
    """What :func:`tipkit.doctor.check` found.

    Attributes:
        level: the highest maturity level the configuration supports: every
            error of a level at or below it is absent (1 at least).
        findings: every finding, errors first, then by level.
        inventory: how many of each kind of object were examined
            (``{"flags": 1, "breakers": 2, ...}``).
    """

    level: int
    findings: tuple[Finding, ...]
    inventory: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, findings: list[Finding], inventory: dict[str, int]) -> Report:
        """Return the report of *findings*, its level computed from the errors."""
        unique = {(f.code, f.target): f for f in reversed(findings)}
        findings = list(unique.values())  # the same gap seen twice is one finding
        blocked = [f.level for f in findings if f.severity == "error"]
        level = max(1, min(blocked, default=6) - 1)
        ordered = sorted(findings, key=lambda f: (_ORDER[f.severity], f.level, f.code))
        return cls(level, tuple(ordered), dict(inventory))

    @property
    def errors(self) -> tuple[Finding, ...]:
        """The findings of severity ``error``."""
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """The findings of severity ``warning``."""
        return tuple(f for f in self.findings if f.severity == "warning")

    def codes(self) -> list[str]:
        """Return the codes of every finding, in report order (for tests and CI)."""
        return [f.code for f in self.findings]

    def exit_code(self, *, require: int | None = None, strict: bool = False) -> int:
        """Return the CLI's exit code: 0 healthy, 1 findings that fail the check.

        Fails on any error finding, on any warning too if *strict*, and when the
        supported level is below *require* (then only errors of levels above
        *require* are forgiven: ``require=3`` passes an app with no rollout).
        """
        if require is not None:
            if self.level < require:
                return 1
            relevant = [f for f in self.findings if f.level <= require]
        else:
            relevant = list(self.findings)
        bad = {"error", "warning"} if strict else {"error"}
        return 1 if any(f.severity in bad for f in relevant) else 0

    def to_json(self) -> str:
        """Return the report as one JSON object (``level``, ``findings``, ...)."""
        return json.dumps(
            {
                "level": self.level,
                "level_name": LEVELS[self.level],
                "inventory": self.inventory,
                "findings": [asdict(f) for f in self.findings],
            },
            indent=2,
        )

    def render(self) -> str:
        """Return the report as text for a terminal (no colour, 80 columns)."""
        seen = (
            ", ".join(f"{n} {k}" for k, n in self.inventory.items() if n) or "nothing"
        )
        lines = [f"tipkit doctor: level {self.level} of 5 ({LEVELS[self.level]})"]
        lines += _wrap(f"examined: {seen}", "", "  ")
        if not self.findings:
            lines.append("no findings: every check passed")
        for f in self.findings:
            lines += [
                "",
                f"{f.severity.upper()} [{f.code}] level {f.level}: {f.target}",
            ]
            lines += _wrap(f.message, "  ")
            lines += _wrap(f"fix: {f.fix}", "  ", "       ")
            lines.append(f"  docs: {f.docs}")
        counts = f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        nxt = self.level + 1
        if nxt in LEVELS:
            todo = sum(1 for f in self.errors if f.level == nxt)
            lines += ["", f"{counts}; to reach level {nxt}: fix {todo} error(s)"]
        else:
            lines += ["", counts]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()
