"""Console test helpers: a uvicorn server in a thread, forms, a judged rollout."""

from __future__ import annotations

import random
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.ops_support import DOC

from tipkit import registry
from tipkit.clock import SYSTEM_CLOCK
from tipkit.flags import Flags
from tipkit.rollout import ErrorRateCheck, Rollout
from tipkit.testing import FakeClock

TOKEN = "console-test-token-0123456789"  # noqa: S105  # a test token
STARTED_DEADLINE = 30.0  # generous: a loaded CI machine
# The application's flags plus the rollout's: one Flags per namespace registers
# all of its keys (the registry shows the latest registration of a namespace).
SEARCH_DOC = {
    "flags": {
        **DOC["flags"],
        "search": {"variants": {"new": True, "old": False}, "default_variant": "old"},
    }
}


@contextmanager
def console_server(app: Any) -> Iterator[str]:
    """Serve *app* with uvicorn on a free loopback port; yield its URL once it has started.

    Waits on uvicorn's ``started`` flag (joining the server thread in short
    slices, never sleeping) with a generous deadline.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True
    )
    thread.start()
    deadline = SYSTEM_CLOCK.monotonic() + STARTED_DEADLINE
    while not server.started:
        if not thread.is_alive() or SYSTEM_CLOCK.monotonic() > deadline:
            raise RuntimeError("the console's uvicorn server did not start")
        thread.join(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STARTED_DEADLINE)
        sock.close()


def csrf_of(html: str) -> str:
    """Return the CSRF field of the first form on a page."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found[1]


class SearchRollout:
    """A rollout with a judged history: two stages passed, then rolled back by the judge."""

    def __init__(self, store: Any, clock: FakeClock) -> None:
        self.flags = Flags.from_dict(
            SEARCH_DOC, store=store, clock=clock, refresh_interval=0
        )
        self.rollout = Rollout(
            "search",
            flags=self.flags,
            stages=[10, 25, 50, 100],
            min_samples=100,
            min_stage_duration=30,
            checks=[ErrorRateCheck(max_increase=0.02, pass_below=0.08)],
            clock=clock,
            runbook="https://runbooks.invalid/search",
        )
        self.clock = clock
        self.rng = random.Random(7)
        self.regs = [
            registry.register_flags(self.flags),
            registry.register_rollout(self.rollout, store),
        ]

    def traffic(self, canary_error: float, control_error: float, until: str) -> None:
        """Send requests until the rollout's next transition, which must be *until*."""
        seen = len(self.rollout.status().history)
        for i in range(1, 8001):
            with self.rollout.observe(f"u{self.rng.randrange(10**9)}") as arm:
                self.clock.advance(0.05)
                rate = canary_error if arm.is_canary else control_error
                if self.rng.random() < rate:
                    arm.fail()
            if i % 50 == 0:
                history = self.rollout.status().history
                if len(history) > seen:
                    assert until == history[-1]["action"]
                    return
        raise AssertionError(f"the rollout never reached {until!r}")

    def play(self) -> None:
        """Pass the first two stages, then fail the third: an automatic rollback."""
        self.traffic(0.02, 0.02, "advanced")
        self.traffic(0.02, 0.02, "advanced")
        self.traffic(0.25, 0.02, "rolled_back")
