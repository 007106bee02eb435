"""Real Redis topologies for tests: a 3-master Cluster and a Sentinel set, on loopback.

* :class:`ClusterServers`: three ``redis-server --cluster-enabled yes`` nodes, each in
  a directory of its own, joined by ``redis-cli --cluster create ...
  --cluster-replicas 0 --cluster-yes``; ready once every node reports
  ``cluster_state:ok`` with all 16384 slots served and knows every other node.
  ``replicas=n`` adds n replica nodes (``CLUSTER MEET`` + ``CLUSTER REPLICATE``
  of master ``i % masters``), ready once each one's link to its master is up.
* :class:`SentinelSet`: a master, one replica and three sentinels (quorum 2): the
  smallest set that really fails over when its master is killed (two sentinels
  must agree, and a replica must be there to promote). ``replicas=n`` starts n
  replicas: the sentinels then choose which one to promote, and make the others
  replicate it.

Every wait is bounded by :attr:`bound`, derived from the machine: 50 times what
starting the servers took (a loaded CI machine starts them slowly too), at least
30 seconds. Nothing sleeps: waits poll on an event.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
from tests.redis_server import RedisServer, _free_port

__all__ = [
    "ClusterNode",
    "ClusterServers",
    "SentinelServer",
    "SentinelSet",
    "TopologyError",
    "wait_until",
]


class TopologyError(RuntimeError):
    """A cluster or sentinel set did not come up (or back) within its bound."""


def wait_until(condition: Callable[[], object], seconds: float, what: str) -> float:
    """Poll *condition* (on an event, never sleeping) for *seconds*; return the time taken."""
    start = time.perf_counter()
    tick = threading.Event()
    last: BaseException | None = None
    while True:
        try:
            if condition():
                return time.perf_counter() - start
        except (redis.RedisError, OSError) as exc:
            last = exc
        if time.perf_counter() - start > seconds:
            raise TopologyError(f"{what}: not within {seconds:.1f} s (last: {last!r})")
        tick.wait(0.02)


def _redis_cli(executable: str) -> str:
    cli = Path(executable).with_name("redis-cli")
    return str(cli) if cli.exists() else "redis-cli"


class _Started:
    """Servers as a ``with`` block: started on entry (closed if that fails), closed on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ClusterNode(RedisServer):
    """A redis-server in cluster mode, with its cluster bus on a free port of its own.

    (The default bus port, port + 10000, may be past 65535 for an ephemeral port.)
    """

    def __init__(self, executable: str, *, node_timeout_ms: int) -> None:
        super().__init__(executable)
        self.node_timeout_ms = node_timeout_ms
        self.bus_port = 0

    def _argv(self, port: int) -> list[str]:
        if self.bus_port == 0:
            self.bus_port = _free_port()
        return [
            *super()._argv(port),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-port", str(self.bus_port),
            "--cluster-require-full-coverage", "yes",
        ]  # fmt: skip


class ClusterServers(_Started):
    """Three cluster-mode redis-servers on loopback, joined into one cluster.

    ``nodes[:masters]`` start as the primaries and ``nodes[masters:]`` as their
    replicas; which node is a primary changes with each failover: ask
    :meth:`role`.
    """

    def __init__(
        self,
        executable: str,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 2000,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.executable = executable
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.nodes = [
            ClusterNode(executable, node_timeout_ms=node_timeout_ms)
            for _ in range(masters + replicas)
        ]
        for node in self.nodes:
            node.extra = extra  # e.g. ("--rename-command", "SSUBSCRIBE", "")
        self.bound = 30.0

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one node (a cluster client discovers the others)."""
        return self.nodes[0].url

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node."""
        return [(n.host, n.port) for n in self.nodes]

    def __repr__(self) -> str:
        return f"<ClusterServers {self.addresses}>"

    def start(self) -> None:
        """Start the nodes, create the cluster, wait until every node serves every slot."""
        began = time.perf_counter()
        for node in self.nodes:
            node.start()
        self.bound = max(30.0, 50 * (time.perf_counter() - began))
        create = [
            _redis_cli(self.executable),
            "--cluster", "create",
            *(f"{h}:{p}" for h, p in self.addresses[: self.masters]),
            "--cluster-replicas", "0",
            "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(  # noqa: S603 - a fixed argv of the local redis-cli
            create, capture_output=True, text=True, timeout=self.bound, check=False
        )
        if done.returncode != 0:
            raise TopologyError(f"redis-cli --cluster create failed: {done.stdout}")
        self._add_replicas()
        self.wait_ok()

    def _client(self, node: RedisServer) -> redis.Redis:
        return redis.Redis(host=node.host, port=node.port, socket_timeout=self.bound)

    def node_id(self, node: RedisServer) -> str:
        """The cluster node id of *node*."""
        with self._client(node) as c:
            found = c.cluster("MYID")
        return found.decode() if isinstance(found, bytes) else str(found)

    def role(self, node: RedisServer) -> str:
        """``"master"`` or ``"slave"``, as *node* says now."""
        with self._client(node) as c:
            return str(c.info("replication")["role"])

    def _add_replicas(self) -> None:
        first = self.nodes[0]
        assert isinstance(first, ClusterNode)
        for i, replica in enumerate(self.nodes[self.masters :]):
            master_id = self.node_id(self.nodes[i % self.masters])
            with self._client(replica) as c:
                c.execute_command(
                    "CLUSTER", "MEET", first.host, first.port, first.bus_port
                )
                # REPLICATE needs the master known here: gossip brings it.
                wait_until(
                    lambda c=c, m=master_id: m in str(c.cluster("NODES")),
                    self.bound,
                    "the replica learns its master",
                )
                c.execute_command("CLUSTER", "REPLICATE", master_id)

        def linked() -> bool:
            for replica in self.nodes[self.masters :]:
                with self._client(replica) as c:
                    if c.info("replication").get("master_link_status") != "up":
                        return False
            return True

        wait_until(linked, self.bound, "every replica linked to its master")

    @contextlib.contextmanager
    def no_failover(self) -> Iterator[None]:
        """Within the block no node is failed by its peers (node timeout raised).

        For faults that block a whole node (``DEBUG SLEEP``, SIGSTOP) but must
        not fail it: with ``cluster-require-full-coverage yes`` a failed
        primary stops the whole cluster. Restored on every node afterwards.
        """
        held = str(int(self.bound * 1000) * 10)
        for node in self.nodes:
            with self._client(node) as c:
                c.config_set("cluster-node-timeout", held)
        try:
            yield
        finally:
            for node in self.nodes:
                with self._client(node) as c:
                    c.config_set("cluster-node-timeout", str(self.node_timeout_ms))

    @contextlib.contextmanager
    def announced(self, node: RedisServer, port: int) -> Iterator[None]:
        """Within the block every node names *port* as *node*'s client port.

        (``cluster-announce-port``, set at run time and gossiped.) Clients then
        discover *node* at *port* through ``CLUSTER SLOTS``/``SHARDS`` and
        ``MOVED``, e.g. a FaultProxy in front of it; the cluster bus is not
        affected. Restored (and seen restored by every node) afterwards.
        """

        def named(expected: int) -> bool:
            for host, p in self.addresses:
                with redis.Redis(host=host, port=p, socket_timeout=self.bound) as c:
                    ports = {
                        int(s[2][1]) for s in c.execute_command("CLUSTER", "SLOTS")
                    }
                    if expected not in ports:
                        return False
            return True

        with self._client(node) as c:
            c.config_set("cluster-announce-port", str(port))
        try:
            wait_until(lambda: named(port), self.bound, "the announced port gossiped")
            yield
        finally:
            with self._client(node) as c:
                c.config_set("cluster-announce-port", "0")
            wait_until(lambda: named(node.port), self.bound, "the real port gossiped")

    def _ok(self) -> bool:
        for host, port in self.addresses:
            with redis.Redis(host=host, port=port, socket_timeout=self.bound) as c:
                info = c.cluster("INFO")
                if isinstance(info, bytes | str):  # older redis-py: raw text
                    text = info.decode() if isinstance(info, bytes) else info
                    info = dict(
                        line.split(":", 1) for line in text.split() if ":" in line
                    )
                if (
                    str(info.get("cluster_state")) != "ok"
                    or int(info.get("cluster_slots_ok", 0)) != 16384
                    or int(info.get("cluster_known_nodes", 0)) != len(self.nodes)
                ):
                    return False
        return True

    def wait_ok(self) -> float:
        """Wait until every node says ``cluster_state:ok``; return the time taken."""
        return wait_until(self._ok, self.bound, "cluster_state:ok on every node")

    def close(self) -> None:
        """Stop every node and remove their directories."""
        for node in self.nodes:
            node.close()


class SentinelServer(RedisServer):
    """``redis-server <conf> --sentinel`` monitoring one master."""

    ready_line = "+monitor master"

    def __init__(
        self,
        executable: str,
        *,
        service: str,
        master_port: int,
        quorum: int,
        down_after_ms: int,
        failover_timeout_ms: int,
    ) -> None:
        super().__init__(executable)
        self.service = service
        self.master_port = master_port
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def _argv(self, port: int) -> list[str]:
        assert self._dir is not None
        conf = Path(self._dir, "sentinel.conf")
        # Sentinel rewrites its file (it learns replicas and peers): written once.
        if not conf.exists():
            conf.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                f"dir {self._dir}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} "
                f"{self.quorum}\n"
                f"sentinel down-after-milliseconds {self.service} "
                f"{self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} "
                f"{self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
        return [
            self.executable, str(conf), "--sentinel",
            "--daemonize", "no", "--loglevel", "notice", "--logfile", "",
        ]  # fmt: skip


class SentinelSet(_Started):
    """A master, one replica (or *replicas*) and three sentinels (quorum 2) on loopback.

    Which server is the master changes with each failover: ask :meth:`master`.
    """

    def __init__(
        self,
        executable: str,
        *,
        service: str = "tipkit",
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        replicas: int = 1,
    ) -> None:
        self.executable = executable
        self.service = service
        self.servers = [RedisServer(executable) for _ in range(1 + replicas)]
        self.sentinels: list[SentinelServer] = []
        self._count = sentinels
        self._options = {
            "quorum": quorum,
            "down_after_ms": down_after_ms,
            "failover_timeout_ms": failover_timeout_ms,
        }
        self.bound = 30.0

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every sentinel."""
        return [(s.host, s.port) for s in self.sentinels]

    def __repr__(self) -> str:
        return f"<SentinelSet {self.service!r} sentinels={self.sentinel_addresses}>"

    def start(self) -> None:
        """Start master, replica and sentinels; wait until a failover is possible."""
        began = time.perf_counter()
        master, *replicas = self.servers
        master.start()
        for replica in replicas:
            replica.extra = ("--replicaof", "127.0.0.1", str(master.port))
            replica.start()
        self.sentinels = [
            SentinelServer(
                self.executable,
                service=self.service,
                master_port=master.port,
                **self._options,
            )
            for _ in range(self._count)
        ]
        for sentinel in self.sentinels:
            sentinel.start()
        self.bound = max(30.0, 50 * (time.perf_counter() - began))
        self.wait_healthy()

    def _sentinel(self, index: int = 0) -> redis.Redis:
        host, port = self.sentinel_addresses[index]
        return redis.Redis(host=host, port=port, socket_timeout=self.bound)

    def master(self) -> RedisServer:
        """The server the sentinels currently name as master."""
        with self._sentinel() as s:
            _, port = s.sentinel_get_master_addr_by_name(self.service)
        return next(srv for srv in self.servers if srv.port == int(port))

    def replica(self) -> RedisServer:
        """A server that is not the master (the first one)."""
        master = self.master()
        return next(srv for srv in self.servers if srv is not master)

    def _healthy(self) -> bool:
        ports = set()
        for i in range(len(self.sentinels)):
            with self._sentinel(i) as s:
                state = s.sentinel_master(self.service)
                if "s_down" in state["flags"] or "o_down" in state["flags"]:
                    return False
                if state.get("failover-state", "none") not in ("none", None):
                    return False
                ports.add(int(state["port"]))
                replicas = s.sentinel_slaves(self.service)
                up = [
                    r
                    for r in replicas
                    if r.get("is_slave")
                    and not r.get("is_sdown")
                    and r.get("master-link-status") == "ok"
                    and int(r["port"]) != int(state["port"])
                ]
                if (
                    len(up) < len(self.servers) - 1
                    or int(state.get("num-other-sentinels", 0))
                    < len(self.sentinels) - 1
                ):
                    return False
        if len(ports) != 1:
            return False
        (port,) = ports
        master = next(srv for srv in self.servers if srv.port == port)
        with redis.Redis(host=master.host, port=master.port) as c:
            linked = c.info("replication").get("connected_slaves", 0)
            return bool(linked >= len(self.servers) - 1)

    def wait_healthy(self) -> float:
        """Wait until every sentinel agrees on a master with a live replica."""
        return wait_until(self._healthy, self.bound, "sentinel set healthy")

    def failover(self) -> RedisServer:
        """Force a failover (``SENTINEL FAILOVER``); return the old master."""
        old = self.master()
        with self._sentinel() as s:
            s.sentinel_failover(self.service)
        return old

    @contextlib.contextmanager
    def no_failover(self) -> Iterator[None]:
        """Within the block the sentinels never fail over (``down-after`` raised).

        For faults that must not trigger a failover (the master paused longer
        than ``down-after``); the setting is restored on every sentinel afterwards.
        """
        down_after = str(self._options["down_after_ms"])
        held = str(int(self.bound * 1000) * 10)
        for i in range(len(self.sentinels)):
            with self._sentinel(i) as s:
                s.sentinel_set(self.service, "down-after-milliseconds", held)
        try:
            yield
        finally:
            for i in range(len(self.sentinels)):
                with self._sentinel(i) as s:
                    s.sentinel_set(self.service, "down-after-milliseconds", down_after)

    @contextlib.contextmanager
    def naming(
        self, port: int, service: str = "tipkit-via"
    ) -> Iterator[SentinelServer]:
        """A sentinel of its own that names the server at *port* as *service*'s master.

        For a fault between the application and the master (a proxy in front of
        it, at *port*): the application asks this sentinel, which answers the
        proxy's address, so the client's connections to the master go through
        the proxy. It monitors through the proxy too, alone (quorum 1), and
        never acts on what it sees (``down-after`` and ``failover-timeout``
        beyond the set's bound: no failover, no ``+fix-slave-config`` of the
        set's replica). The set's sentinels ignore it (hello messages for a
        master name they do not monitor are dropped), and it them.
        """
        held = int(self.bound * 1000) * 10
        watcher = SentinelServer(
            self.executable,
            service=service,
            master_port=port,
            quorum=1,
            down_after_ms=held,
            failover_timeout_ms=held,
        )
        watcher.start()
        try:
            yield watcher
        finally:
            watcher.close()

    def wait_master_is_not(self, old: RedisServer) -> float:
        """Wait until the sentinels name another master and it accepts writes."""

        def moved() -> bool:
            new = self.master()
            if new is old:
                return False
            with redis.Redis(host=new.host, port=new.port) as c:
                return c.info("replication").get("role") == "master"

        return wait_until(moved, self.bound, "failover to the replica")

    def close(self) -> None:
        """Stop sentinels and servers and remove their directories."""
        for server in [*self.sentinels, *self.servers]:
            with contextlib.suppress(Exception):
                server.close()
