"""A throwaway standalone primary with replicas on loopback, and the replicated cluster built the same way.

``PrimaryReplicas`` starts one primary and ``replicas`` replicas (``REPLICAOF``), each an
:class:`rxstate.server.EmbeddedServer`, and waits until every replica is in sync: the setup for durable
writes (``connect(durability="replicated")``) and replica reads on one server. ``replicated_cluster()``
is a ``LocalCluster`` of 3 masters with one replica each, for failover tests.

The examples here are not run as doctests: each starts real servers; ``tests/scale`` runs all of this.

Example:
    >>> with PrimaryReplicas(replicas=1) as servers:  # doctest: +SKIP
    ...     store = rxstate.connect(servers.primary.client(), durability="replicated")
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import redis

from rxstate.core.errors import ServerError
from rxstate.server import EmbeddedServer

from .servers import LocalCluster

__all__ = ["PrimaryReplicas", "replicated_cluster"]


def replicated_cluster(*, masters: int = 3, binary: str | None = None) -> LocalCluster:
    """A (not yet started) cluster of ``masters`` primaries with one replica each.

    Example:
        >>> with replicated_cluster() as cluster:  # doctest: +SKIP
        ...     len(cluster.nodes)
        6
    """
    return LocalCluster(masters=masters, replicas=1, binary=binary)


class PrimaryReplicas:
    """One primary and ``replicas`` replicas of it, on free loopback ports.

    Attributes:
        primary: the primary's server.
        replicas: the replicas' servers, in order.
    """

    def __init__(self, *, replicas: int = 1, binary: str | None = None, config: Mapping[str, str] | None = None):
        if replicas < 1:
            raise ServerError(f"PrimaryReplicas needs at least one replica, got {replicas}")
        conf = {"repl-diskless-sync": "yes", "repl-diskless-sync-delay": "0", **(config or {})}
        self.primary = EmbeddedServer(binary=binary, config=conf)
        self.replicas = [EmbeddedServer(binary=binary, config=conf) for _ in range(replicas)]

    def start(self, timeout: float = 20.0) -> Self:
        """Start the primary and the replicas and wait until every replica is in sync.

        Raises:
            ServerError: a server did not start or a replica did not sync within ``timeout`` seconds.
        """
        try:
            self.primary.start()
            for replica in self.replicas:
                self._follow(replica.start())
            self.wait_synced(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def kill_replica(self, i: int = 0) -> None:
        """SIGKILL replica ``i``: durable writes now get fewer confirmations.

        Example:
            >>> servers.kill_replica(0)  # doctest: +SKIP
        """
        self.replicas[i].kill()

    def restart_replica(self, i: int = 0, timeout: float = 20.0) -> None:
        """Start replica ``i`` again, replicating the primary, and wait until it is in sync.

        Example:
            >>> servers.restart_replica(0)  # doctest: +SKIP
        """
        self._follow(self.replicas[i].restart())
        self.wait_synced(timeout)

    def _follow(self, replica: EmbeddedServer) -> None:
        with replica.client() as conn:
            conn.replicaof("127.0.0.1", self.primary.port or 0)

    def _synced(self, replica: EmbeddedServer) -> bool:
        with replica.client(decode_responses=True, socket_timeout=2.0) as conn:
            info: dict[str, Any] = conn.info("replication")
        return info.get("master_link_status") == "up"

    def _online(self) -> int:
        """How many replicas the primary counts as online (the ones a ``WAIT`` hears from)."""
        with self.primary.client(decode_responses=True, socket_timeout=2.0) as conn:
            info: dict[str, Any] = conn.info("replication")
        return sum(1 for key, value in info.items() if key.startswith("slave") and isinstance(value, dict)
                   and value.get("state") == "online")

    def wait_synced(self, timeout: float = 20.0) -> None:
        """Wait until every running replica's link to the primary is up and the primary counts it online.

        Example:
            >>> servers.wait_synced(timeout=5)  # doctest: +SKIP
        """
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                running = [r for r in self.replicas if r.is_running]
                if all(self._synced(r) for r in running) and self._online() == len(running):
                    return
            except redis.RedisError as exc:  # a replica still starting
                last = exc
            time.sleep(0.02)
        raise ServerError(f"replicas of {self.primary.url} did not sync within {timeout} s (last error: {last})")

    def stop(self) -> None:
        """Stop every server. Safe to call twice."""
        for server in (*self.replicas, self.primary):
            server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<PrimaryReplicas primary={self.primary.url} replicas={[r.url for r in self.replicas]}>"
