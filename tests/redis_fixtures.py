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
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from tests.redis_server import RedisServer, find_redis_server

if TYPE_CHECKING:
    from tipkit.stores import RedisStore

__all__ = ["private_redis_server", "redis_server", "redis_store", "redis_url"]


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
