"""Capability tags of the OpenFeature gherkin suites, each declared for tipkit.

Every tag a vendored scenario carries must be listed here: supported tags run,
unsupported ones skip with the reason. A tag the spec adds later fails the
collection until someone declares it, so nothing is skipped silently.
"""

from __future__ import annotations

from typing import Any, Final

import pytest

SUPPORTED: Final = frozenset(
    {
        "booleans",
        "strings",
        "numbers",
        "objects",
        "targeting",
        "error-handling",
        "error-handling-not-found",
        "error-handling-types",
        "provider-status",
        "evaluation-details",
        "metadata",
        "Metadata",
        "context-handling",
        "data-types",
        "variants",
        "reason-codes",
        "reason-codes-disabled",
        "hooks",
        "evaluation-options",
        "immutability",
        "async",
    }
)
"""Capabilities tipkit's provider has: their scenarios run and must pass."""

UNSUPPORTED: Final = {
    "reason-codes-cached": "tipkit evaluates in process from a compiled snapshot: "
    "it never answers CACHED",
    "provider-status-fatal": "tipkit's provider has no fatal state: a missing or broken "
    "source is ERROR or STALE and recovers",
    "deprecated": "evaluation.feature is superseded by evaluation_v2.feature and needs "
    "a 'context-aware' flag that test-flags.json does not define",
}
"""Capabilities tipkit does not have, with the reason their scenarios skip."""


def pytest_bdd_apply_tag(tag: str, function: Any) -> bool:
    """Declare each tag: spec references and supported tags are plain labels."""
    if tag.startswith("spec-") or tag in SUPPORTED:
        return True
    if tag in UNSUPPORTED:
        pytest.mark.skip(reason=f"@{tag}: {UNSUPPORTED[tag]}")(function)
        return True
    raise pytest.UsageError(
        f"OpenFeature conformance: tag @{tag} is not declared in "
        "tests/openfeature_conformance/conftest.py (SUPPORTED or UNSUPPORTED)"
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the tags pytest-bdd turns into marks (Examples tags are marks)."""
    for tag in sorted(SUPPORTED | set(UNSUPPORTED)):
        config.addinivalue_line("markers", f"{tag}: OpenFeature capability tag")
