"""Importers: another flag system's exported JSON to a tipkit document that keeps cohorts.

``import_flags(vendor, data)`` returns an :class:`ImportResult`: the tipkit
document (each split under the vendor's ``bucketing`` scheme, so every user
keeps the variant the vendor served) and the list of flags left out because
they would not translate exactly, each with where and why. The document is
compiled before it is returned; a flag tipkit refuses is moved to that list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from tipkit.errors import ConfigError
from tipkit.flags._document import compile_document
from tipkit.flags._import._common import ImportResult, Untranslatable
from tipkit.flags._import._flagd import import_flagd
from tipkit.flags._import._growthbook import import_growthbook
from tipkit.flags._import._launchdarkly import import_launchdarkly
from tipkit.flags._import._unleash import import_unleash

__all__ = ["VENDORS", "ImportResult", "Untranslatable", "import_flags"]

VENDORS: Final = ("launchdarkly", "unleash", "growthbook", "flagd")


def import_flags(
    vendor: str, data: Any, *, env: str | None = None, flagd_version: int = 3
) -> ImportResult:
    """Translate *vendor*'s exported flags *data* (parsed JSON) into a tipkit document.

    *env* picks the environment of a LaunchDarkly REST API flag or an Unleash
    export (default: ``production``, or the only one); *flagd_version* the
    flagd ``fractional`` hash (3, or 2 for flagd servers before the v3 spec).
    Never returns a
    document that fails to load.

    Raises:
        ValueError: *vendor* is unknown, or *data* is not that vendor's format.
    """
    importers: dict[str, Callable[[Any], ImportResult]] = {
        "launchdarkly": lambda d: import_launchdarkly(d, env=env),
        "unleash": lambda d: import_unleash(d, env=env),
        "growthbook": import_growthbook,
        "flagd": lambda d: import_flagd(d, version=flagd_version),
    }
    if vendor not in importers:
        raise ValueError(
            f"unknown vendor {vendor!r}; expected one of: {', '.join(VENDORS)}"
        )
    result = importers[vendor](data)
    _keep_loadable(result)
    return result


def _keep_loadable(result: ImportResult) -> None:
    flags = result.document["flags"]
    for _ in range(len(flags) + 1):
        try:
            compile_document(result.document, f"<{result.vendor} import>")
        except ConfigError as exc:
            bad = {p.flag for p in exc.problems if p.flag in flags}
            if not bad:
                raise  # pragma: no cover - an importer wrote a bad top level
            for p in exc.problems:
                if p.flag is not None and p.flag in bad:
                    result.skipped.append(
                        (p.flag, p.field or "", f"tipkit refuses it: {p.message}")
                    )
            for key in bad:
                del flags[key]
        else:
            return
