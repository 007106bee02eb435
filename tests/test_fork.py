"""Fork safety: a child forked while another thread holds tipkit's locks still works."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from tipkit.stores import MemoryStore
from tipkit.telemetry import counters
from tipkit.telemetry._events import BUS

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
    pytest.mark.skipif(
        not hasattr(os, "fork") or sys.platform == "darwin", reason="needs os.fork"
    ),
]


def test_child_works_when_a_thread_held_the_locks_at_fork() -> None:
    """Locks held by another thread at fork time are re-created in the child."""
    store = MemoryStore()
    counter = counters.counter("tipkit.test.fork")
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store._lock, counter._lock, BUS._lock, counters._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, reported by exit code
            code = 1
            try:
                store.set("ns", "k", 1)
                counter.add(2)
                counters.counter("tipkit.test.fork.child").inc()
                BUS.add_listener(print)
                BUS.remove_listener(print)
                code = 0 if store.get("ns", "k") is not None else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join()
    assert os.waitstatus_to_exitcode(status) == 0


def test_child_forked_inside_a_guard_finishes_and_reuses_it() -> None:
    """A process forked mid-`with guard:` exits the block in the child and uses the guard again."""
    from tests.test_core import Recorder

    from tipkit.clock import SYSTEM_CLOCK

    guard = Recorder(SYSTEM_CLOCK)
    with guard:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, reported by exit code
            code = 1
            try:
                guard.__exit__(None, None, None)
                code = (
                    0 if guard.call(lambda: 5) == 5 and len(guard.released) == 2 else 4
                )
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(guard.released) == 1


def test_flags_and_rollout_work_in_a_child_forked_while_their_locks_were_held() -> None:
    """Flags, its provider and a rollout keep working in a child forked mid-refresh."""
    from tipkit.flags import Flags, _store_sync
    from tipkit.rollout import Rollout
    from tipkit.telemetry import _otel

    flags = Flags.from_dict(
        {
            "flags": {
                "new": {
                    "variants": {"on": True, "off": False},
                    "fallthrough": {"split": {"on": 50, "off": 50}},
                }
            }
        }
    )
    rollout = Rollout("new", flags=flags, stages=[10, 100])
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with (
            flags._lock,
            flags._provider._sub_lock,
            rollout._lock,
            _store_sync._PEERS_LOCK,
            _otel._LOCK,
        ):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, reported by exit code
            code = 1
            try:
                flags.kill("new")
                ok = (
                    flags.evaluate("new", "user-1", default=True).reason.value
                    == "DISABLED"
                )
                flags.revive("new")
                rollout.pause()
                code = 0 if ok else 5
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join()
    assert os.waitstatus_to_exitcode(status) == 0
