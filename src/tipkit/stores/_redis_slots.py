"""Cluster calls sent straight to the primary of their slot, on redis-py's slot map.

redis-py's cluster path answers ``CLUSTERDOWN`` (every slot refused while a
primary is failed and full coverage is required, Redis' default) by sleeping
0.25 s and re-reading the slot map inside the call: 3.5x a 0.1 s store timeout
measured. Its async twin closes every connection of the client first, under
the feet of the other tasks on it (an ``AttributeError`` reached the
application). Sent to the slot's primary on a plain client of that node, the
refusal is an error reply like any other: the call fails at once, bounded, and
the store is not taken for down.

redis-py's path still goes (``MISS``) when the map has no owner for the slot,
on a redirect (``MOVED``/``ASK``) or a broken connection (it follows and
refreshes), and after a timeout until a call got through that way: it
re-reads the map after a failure, so a failover is found even while the old
primary hangs. A new event loop's async client is initialized on the key's
primary, not on the first of the map (a hung one made the first call of a
new loop time out for keys on healthy primaries).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tipkit.stores._redis_health import TIMEOUTS
from tipkit.stores._redis_lua import Script
from tipkit.stores._redis_target import ERRORS, redis

__all__ = ["MISS", "adirect", "direct", "evalsha", "initialize", "run_script"]

MISS = object()
"""Not sent to the slot's primary: redis-py's cluster path goes instead."""

_FOLLOWED = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.ConnectionError,
)


def direct(clients: Any, client: Any, key: str, call: Callable[[Any], Any]) -> Any:
    """``call`` on a plain client of *key*'s primary (from *client*'s map), or ``MISS``.

    *clients* carries ``via_cluster``: set after a timeout here, cleared by
    the caller when redis-py's path got through.
    """
    if clients.via_cluster:
        return MISS
    try:
        node = client.nodes_manager.slots_cache[client.keyslot(key)][0]
        plain = node.redis_connection
    except (KeyError, IndexError, AttributeError):
        return MISS
    if plain is None:
        return MISS
    try:
        return call(plain)
    except _FOLLOWED:
        return MISS
    except TIMEOUTS:
        clients.via_cluster = True
        raise


def run_script(
    clients: Any,
    client: Any,
    script: Script,
    keys: tuple[str, ...],
    args: tuple[str, ...],
) -> Any:
    """:func:`direct` for a script: :func:`evalsha` on ``keys[0]``'s primary, or ``MISS``."""
    return direct(clients, client, keys[0], lambda n: evalsha(n, script, keys, args))


def evalsha(
    node: Any, script: Script, keys: tuple[str, ...], args: tuple[str, ...]
) -> Any:
    """``EVALSHA`` on a plain node client; on ``NOSCRIPT`` the script is loaded there.

    On that node only: redis-py's ``SCRIPT LOAD`` on a cluster goes to every
    primary, and one that hangs made a call for a healthy one time out.
    """
    try:
        return node.evalsha(script.sha, len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        node.script_load(script.source)
        return node.evalsha(script.sha, len(keys), *keys, *args)


async def adirect(
    clients: Any,
    client: Any,
    script: Script,
    keys: tuple[str, ...],
    args: tuple[str, ...],
) -> Any:
    """Async :func:`direct` for a script, on *client*'s node of ``keys[0]``."""
    if clients.via_cluster:
        return MISS
    try:
        node = client.get_node_from_key(keys[0])
    except (*ERRORS, KeyError, IndexError, AttributeError):
        return MISS
    if node is None:
        return MISS
    command = ("EVALSHA", script.sha, len(keys), *keys, *args)
    try:
        try:
            return await node.execute_command(*command)
        except redis.exceptions.NoScriptError:  # loaded there only (see evalsha)
            await node.execute_command("SCRIPT LOAD", script.source)
            return await node.execute_command(*command)
    except _FOLLOWED:
        return MISS
    except TIMEOUTS:
        clients.via_cluster = True
        raise


async def initialize(client: Any, key: str | None) -> None:
    """Initialize an async cluster *client*: its slot map, then ``COMMAND`` on *key*'s primary."""
    manager = client.nodes_manager
    if key is None or not hasattr(client, "commands_parser"):
        await client.initialize()
        return
    await manager.initialize()
    node = client.get_node_from_key(key) or manager.default_node
    manager.default_node = node
    await client.commands_parser.initialize(node)
    client._initialize = False  # as redis-py's own initialize() ends
