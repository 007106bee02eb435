"""Pytest fixtures for tests that need a real Redis server.

Register from ``tests/conftest.py`` with ``pytest_plugins = ["tests.redis_fixtures"]``.

* ``redis_server`` (session): one redis-server on a free loopback port, stopped
  after the session. Skipped when redis-server is not installed, except in CI
  (``CI=true``), where the Redis tests must run and a missing server fails them.
* ``redis_url`` (session): its ``redis://`` URL.
* ``redis_store`` (function): a ``RedisStore`` with a prefix of its own, whose
  keys are deleted afterwards.
* ``private_redis_server`` (function): a server of the test's own, for fault
  tests that stop, pause or restart it.
* ``redis_cluster`` (session): a real 3-master Redis Cluster on loopback
  (``tests/redis_topology.py``); ``cluster_store`` (function): a ``RedisStore``
  on it with a prefix of its own, its keys deleted afterwards.
* ``redis_sentinel`` (session): a master, a replica and three sentinels;
  ``sentinel_store`` (function): a ``RedisStore(sentinel=..., service_name=...)``.
  Each test gets the set healthy (every sentinel agrees, the replica is linked),
  whichever server is master after an earlier test's failover.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from tests.redis_server import RedisServer, find_redis_server
from tests.redis_topology import ClusterServers, SentinelSet

if TYPE_CHECKING:
    from tipkit.stores import RedisStore

__all__ = [
    "cluster_store",
    "private_redis_server",
    "redis_cluster",
    "redis_sentinel",
    "redis_server",
    "redis_store",
    "redis_url",
    "sentinel_store",
]


def _executable() -> str:
    exe = find_redis_server()
    if exe is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; in CI the Redis tests must run")
        pytest.skip(message)
    return exe


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server on a free loopback port for the whole session."""
    with RedisServer(_executable()) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL."""
    return redis_server.url


@pytest.fixture
def redis_store(redis_server: RedisServer) -> Iterator[RedisStore]:
    """A RedisStore on the session server with a prefix unique to this test."""
    from tipkit.stores import RedisStore

    prefix = f"tipkit-test:{uuid.uuid4().hex[:12]}:"
    # A generous timeout: the machine running the suite may be busy, and the
    # fault tests measure the bound with their own stores.
    store = RedisStore(redis_server.url, prefix=prefix, timeout=5.0)
    yield store
    keys = list(store.client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        store.client.delete(*keys)
    store.close()


@pytest.fixture
def private_redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, free to be stopped, paused or restarted."""
    with RedisServer(_executable()) as server:
        yield server


def _drop_keys(store: RedisStore, prefix_token: str) -> None:
    client = store.client
    keys = list(client.scan_iter(match=f"*{prefix_token}*", count=1000))
    for key in keys:  # one by one: on a cluster they are on many slots
        client.delete(key)


def machine_timeout(url: str, floor: float = 0.05) -> float:
    """A store timeout that healthy calls to *url* never trip on this machine now.

    *floor* on an idle machine; on a loaded one, 3x the slowest of 20 sync calls
    and of 50 concurrent async ones, measured with a generous timeout (so a
    fault test's healthy phase never starts an outage of its own).
    """
    from tipkit.stores import RedisStore  # redis is optional here

    probe = RedisStore(url, prefix="probe:", timeout=10.0)
    slowest = 0.0
    for _ in range(20):
        start = time.perf_counter()
        probe.set("ns", "k", 1)
        slowest = max(slowest, time.perf_counter() - start)

    async def one() -> float:
        start = time.perf_counter()
        await probe.aset("ns", "k", 1)
        return time.perf_counter() - start

    async def fifty() -> float:
        return max(await asyncio.gather(*(one() for _ in range(50))))

    slowest = max(slowest, asyncio.run(fifty()))
    probe.close()
    return max(floor, 3 * slowest)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterServers]:
    """A 3-master Redis Cluster on loopback for the whole session."""
    with ClusterServers(_executable()) as cluster:
        yield cluster


@pytest.fixture
def cluster_store(redis_cluster: ClusterServers) -> Iterator[RedisStore]:
    """A RedisStore on the session cluster (``cluster=True``), prefix unique to this test."""
    from tipkit.stores import RedisStore

    token = uuid.uuid4().hex[:12]
    store = RedisStore(
        redis_cluster.url, cluster=True, prefix=f"tipkit-test:{token}:", timeout=5.0
    )
    yield store
    _drop_keys(store, token)
    store.close()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelSet]:
    """A master, a replica and three sentinels (quorum 2) for the whole session."""
    with SentinelSet(_executable()) as sentinels:
        yield sentinels


@pytest.fixture
def sentinel_store(redis_sentinel: SentinelSet) -> Iterator[RedisStore]:
    """A RedisStore through the session's sentinels, prefix unique to this test."""
    from tipkit.stores import RedisStore

    redis_sentinel.wait_healthy()
    token = uuid.uuid4().hex[:12]
    store = RedisStore(
        sentinel=redis_sentinel.sentinel_addresses,
        service_name=redis_sentinel.service,
        prefix=f"tipkit-test:{token}:",
        timeout=5.0,
    )
    yield store
    _drop_keys(store, token)
    store.close()
