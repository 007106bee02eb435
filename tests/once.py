"""Build a costly fixture once per test run, however many xdist workers need it."""

from __future__ import annotations

import fcntl
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def once_per_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], T]
) -> T:
    """Return ``make(directory)``, computed once for the whole run, not once per worker.

    xdist builds a module-scoped fixture in every worker that runs one of the
    module's tests; a costly one (a docs build, a demo run) is made once, under a
    file lock in the run's shared temporary directory, and the other workers
    unpickle what it returned. Without xdist it simply runs.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    directory = root / f"once-{name}"
    saved = root / f"once-{name}.pickle"
    with (root / f"once-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if saved.exists():
            # Written by another worker of this very run, a few lines below.
            value: T = pickle.loads(saved.read_bytes())  # noqa: S301
            return value
        directory.mkdir(exist_ok=True)
        value = make(directory)
        saved.write_bytes(pickle.dumps(value))
        return value
