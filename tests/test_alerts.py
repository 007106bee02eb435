"""Alert webhooks, delivered to a real HTTP server on loopback."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tipkit import audit
from tipkit.alerts import Webhook
from tipkit.breaker import CircuitBreaker
from tipkit.stores import MemoryStore
from tipkit.testing import FakeClock


class Receiver:
    """A loopback HTTP server that records each POSTed JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.release.wait(10)
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_each_event_is_delivered_once_with_text_and_fields(receiver: Receiver) -> None:
    """A breaker opening and an operator action: one message each, Slack text + fields."""
    hook = Webhook(receiver.url)
    try:
        breaker = CircuitBreaker(
            "payments", runbook="https://rb.invalid/payments", clock=FakeClock()
        )
        breaker.force_open()
        audit.record(
            MemoryStore(),
            actor="alice",
            action="flag.kill",
            target="flag:checkout",
            reason="errors up",
            before={"killed": False},
            after={"killed": True},
        )
        hook.flush()
    finally:
        hook.close()
    assert ["breaker_open", "operator_action"] == [b["event"] for b in receiver.bodies]
    opened, action = receiver.bodies
    assert "breaker payments is forced open" in opened["text"]
    assert "https://rb.invalid/payments" in opened["text"]
    assert ("alice", "flag:checkout", "errors up") == (
        action["actor"],
        action["target"],
        action["reason"],
    )
    assert (2, 0, 0) == (hook.sent, hook.failed, hook.dropped)


def test_on_selects_the_events(receiver: Receiver) -> None:
    """on=["rollback"] ignores breaker openings."""
    hook = Webhook(receiver.url, on=["rollback"])
    CircuitBreaker("x", clock=FakeClock()).force_open()
    hook.flush()
    hook.close()
    assert [] == receiver.bodies
    with pytest.raises(ValueError, match="unknown events"):
        Webhook(receiver.url, on=["everything"])


def test_a_down_server_costs_nothing_and_drops_are_counted(receiver: Receiver) -> None:
    """A stuck endpoint: publishing never blocks, the bounded queue drops and counts."""
    receiver.release.clear()  # the first post hangs until released
    hook = Webhook(receiver.url, max_queue=2)
    breaker = CircuitBreaker("b", clock=FakeClock())
    for _ in range(6):
        breaker.force_open()
        breaker.reset()
    receiver.release.set()
    hook.flush()
    hook.close()
    assert 6 == hook.sent + hook.dropped
    assert hook.dropped >= 3
    assert hook.sent == len(receiver.bodies)


def test_retries_back_off_on_the_clock_then_give_up() -> None:
    """Nothing listens: each message is tried retries+1 times with doubling sleeps, then counted."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clock = FakeClock()
    hook = Webhook(f"http://127.0.0.1:{port}/", retries=3, backoff=0.5, clock=clock)
    CircuitBreaker("c", clock=FakeClock()).force_open()
    hook.flush()
    hook.close()
    assert [0.5, 1.0, 2.0] == clock.sleeps
    assert (0, 1) == (hook.sent, hook.failed)
