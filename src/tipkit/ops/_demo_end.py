"""The ending of ``tipkit demo``: an operator kills a flag from the CLI, then reads the log."""

from __future__ import annotations

# ruff: noqa: T201  # the demo prints what the operator typed
import contextlib
import io
from typing import Any

from tipkit import registry
from tipkit.ops._stores import serve_memory

__all__ = ["operator_ending"]


def operator_ending(store: Any, flags: Any, key: str, *, actor: str = "on-call") -> str:
    """Run ``tipkit ops flags kill KEY`` and ``tipkit ops audit`` against the demo's store.

    *flags* is registered (so the CLI knows the flag and its variants); a
    ``MemoryStore`` is served in process as ``memory://demo``, any other store
    is used through the same operator API. Returns what the two commands
    printed (the audit log shows the automatic actions, ``tipkit:*`` actors,
    beside the operator's kill).
    """
    from tipkit._cli import main  # noqa: PLC0415  # the CLI imports this package

    reg = registry.register_flags(flags)
    url = serve_memory("demo", store)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        print(
            f"$ tipkit ops flags kill {key} --reason 'checkout errors' --actor {actor}"
        )
        main(["ops", "flags", "kill", key, "--reason", "checkout errors", "--actor", actor,
              "--store", url])  # fmt: skip
        print("$ tipkit ops audit")
        main(["ops", "audit", "--store", url])
    del reg
    return out.getvalue()
