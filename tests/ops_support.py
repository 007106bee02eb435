"""Helpers for the operator-tool tests: an application on a store, and the CLI run in process."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

from tipkit._cli import main
from tipkit.breaker import CircuitBreaker
from tipkit.flags import Flags
from tipkit.rollout import Rollout
from tipkit.testing import FakeClock

DOC = {
    "flags": {
        "checkout": {
            "variants": {"on": True, "off": False},
            "default_variant": "off",
            "off_variant": "off",
        },
        "pricing": {
            "variants": {"new": True, "old": False},
            "default_variant": "old",
        },
    }
}


class App:
    """What an application builds on a store: each part registers itself when built."""

    def __init__(self, store: Any, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock
        self.flags = Flags.from_dict(DOC, store=store, clock=clock, refresh_interval=0)
        self.rollout = Rollout(
            "pricing",
            flags=self.flags,
            stages=[10, 50, 100],
            clock=clock,
            runbook="https://runbooks.invalid/pricing",
        )
        self.breaker = CircuitBreaker(
            "payments", store=store, share="state", clock=clock, refresh_interval=0
        )


def run(*argv: str) -> tuple[int, str, str]:
    """Run ``tipkit ...`` in process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def run_json(*argv: str) -> Any:
    """Run a read with ``--json``; return the parsed output (asserting exit 0)."""
    code, out, err = run(*argv, "--json")
    assert 0 == code, err
    return json.loads(out)


def unique_prefix() -> str:
    """A Redis key prefix of this test's own."""
    return f"tipkit-test:{uuid.uuid4().hex[:12]}:"


@contextlib.contextmanager
def env(**values: str) -> Iterator[None]:
    """Set environment variables inside the block."""
    import os

    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
