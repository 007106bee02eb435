"""The operator's web console: ``tipkit console --store URL`` (extra ``console``).

Server-rendered pages (no JavaScript) over :class:`tipkit.ops.Operator`: flags
with kill and revive, rollouts with their stage timeline, the judge's chart
and pause / promote / rollback, breakers with their state and transitions,
limits, and the audit log (filterable, live). Binds 127.0.0.1 by default;
actions need the console's token and a reason, every form carries a CSRF
token, and every action lands in the audit log. See ``docs/operate.md``.

``create_app`` is imported on first use, so ``tipkit``'s command line starts
(and ``tipkit console --help`` works) without the extra installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tipkit.console._app import LOOPBACK_HOSTS, create_app

__all__ = ["LOOPBACK_HOSTS", "create_app"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'tipkit.console' has no attribute {name!r}")
    try:
        from tipkit.console import _app  # noqa: PLC0415  # the optional extra
    except ModuleNotFoundError as exc:  # pragma: no cover - the extra is missing
        if exc.name not in {"starlette", "uvicorn"}:
            raise
        raise ModuleNotFoundError(
            "the console needs its extra: pip install 'tipkit[console]'",
            name=exc.name,
        ) from exc
    return getattr(_app, name)
