"""An event loop that ends while its server hangs leaves no socket to a finalizer.

The async client of a loop is closed at the loop's shutdown; against a server
that never answers (a FaultProxy blackhole, a SIGSTOPped redis-server, a
paused Redis Cluster primary) that close is bounded and aborts the transports
it could not close politely. Asserted: ``gc.collect()`` under
``warnings.simplefilter("error")`` reports nothing to ``sys.unraisablehook``
(an unclosed socket, transport, connection or cluster node would).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from tests.fault_proxy import FaultProxy
from tests.redis_fixtures import _executable
from tests.redis_server import RedisServer
from tests.redis_topology import ClusterServers

from tipkit.errors import StoreError
from tipkit.stores import RedisStore

TIMEOUT = 0.2  # a hung server is never answered: only the bound depends on it


@contextmanager
def finalizer_reports() -> Iterator[list[str]]:
    """Collect what finalizers report (unraisable warnings) during the block and a gc."""
    caught: list[str] = []
    old = sys.unraisablehook

    def hook(u: Any) -> None:
        caught.append(f"{u.exc_type.__name__}: {u.exc_value}")

    gc.collect()  # what earlier tests left is not ours
    sys.unraisablehook = hook
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield caught
            gc.collect()
    finally:
        sys.unraisablehook = old


def fifty_hung_calls(store: RedisStore, key: str) -> tuple[list[str], float]:
    """50 concurrent async calls in a loop of their own; what they raised, and the run's time."""

    async def one() -> str:
        try:
            await store.atake_tokens(key, 1, rate=1000, capacity=1000)
        except StoreError as exc:
            return type(exc.__cause__).__name__
        return "answered"

    async def main() -> list[str]:
        return list(await asyncio.gather(*(one() for _ in range(50))))

    start = time.perf_counter()
    results = asyncio.run(main())  # the loop ends: its client is closed
    return results, time.perf_counter() - start


def check(results: list[str], took: float, caught: list[str]) -> None:
    """Nothing answered, the loop's run bounded, no finalizer report."""
    assert "answered" not in results
    assert [] == caught
    # 2x the timeout for the calls, 2x for the bounded close, plus a busy machine.
    assert took < 4 * TIMEOUT + 2.0, took


@pytest.mark.parametrize("fault", ["blackhole", "sigstop"])
def test_a_loop_ending_on_a_hung_server_leaves_no_connection(fault: str) -> None:
    """Blackhole / SIGSTOP: 50 async calls time out, the loop ends, nothing left open."""
    with RedisServer(_executable()) as server, FaultProxy(server.port) as proxy:
        url = proxy.url if fault == "blackhole" else server.url
        store = RedisStore(url, prefix=f"c:{uuid.uuid4().hex[:8]}:", timeout=TIMEOUT)
        store.set("ns", "k", 1)  # healthy: the connection pool exists
        hang: Callable[[], None] = (
            (lambda: proxy.set("blackhole")) if fault == "blackhole" else server.pause
        )
        hang()
        try:
            with finalizer_reports() as caught:
                results, took = fifty_hung_calls(store, "b")
                store.close()
                del store  # its loops' clients go with it (and their finalizers)
        finally:
            if fault == "sigstop":
                server.resume()
            proxy.set("pass")
        check(results, took, caught)


def test_a_loop_ending_on_a_paused_cluster_primary_leaves_no_connection() -> None:
    """Cluster: redis-py skips its close after a timeout; tipkit closes every node anyway."""
    with ClusterServers(_executable(), node_timeout_ms=600_000) as cluster:
        node = cluster.nodes[0]
        url = f"redis+cluster://{node.host}:{node.port}"
        store = RedisStore(url, prefix="{hung}:", timeout=TIMEOUT)
        store.set("ns", "k", 1)
        owner = int(store.client.get_node_from_key("{hung}:x").port)
        victim = next(n for n in cluster.nodes if n.port == owner)
        victim.pause()
        try:
            with finalizer_reports() as caught:
                results, took = fifty_hung_calls(store, "b")
                store.close()
                del store  # its loops' clients go with it (and their finalizers)
        finally:
            victim.resume()
        check(results, took, caught)
