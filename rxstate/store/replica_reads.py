"""Reading from replicas: ``connect(read_from="replica")`` routes reads that accept bounded staleness to
replicas, while a store still reads its own writes (session consistency) and never reads older than a
change it was told of.

Which reads: entity reads that reach the server without the local cache — ``get``/``get_versioned``/
``get_many`` of a store without a cache, ``get(fields=...)`` misses, ``all``, ``items``, ``ids``,
``count``, ``where`` and other queries. Everything else stays on the primary: ``consistent=True`` reads,
reads inside ``store.replica_reads.primary()``, reads that fill the local cache (a replica's value may be
older than an invalidation the cache has already had, and nothing would evict it then), and every read
the write path, transactions, locks and upkeep make.

Session consistency, by change offsets. Every write reaches the store's Writer, whose two ways out
(``Writer._send``/``_send_many``) this module shadows to learn, per partition, the change record id
(the stream id in ``rx:{ns:p}:changes``) of the store's latest write: the write script's reply carries
it. A replica read of partitions P is one pipeline on the replica: first ``XREVRANGE changes + -
COUNT 1`` of each partition of P the store wrote since the replica was last seen holding that write,
then the reads. Replication is in order and applies a script's effects atomically, so a replica whose
change stream has reached the id holds the write and everything before it; one that has not is behind,
and the read is answered by the primary instead (``stats.behind``). A partition seen up to date costs no
check until the store writes it again. A write whose reply names no change id (a cross-partition
call, a lost reply, a script that returns none) marks its partitions *unresolved*: the next read of
them goes to the primary, with the primary's last change id read in the same pipeline, and later reads
compare against that (``stats.unresolved``). The change feed tells the router of the records it
delivers (``seen``), so a subscriber that reads what it was told of never reads older.

Bounded staleness: with ``max_staleness`` seconds, the router samples ``INFO replication`` of the
primary and of each replica (at most once per second, fewer when the bound is short; not per read):
a replica holding the offset the primary had at time t holds every write made before t. A read goes to
a replica only if that t is within ``max_staleness`` of now and its link is up; else to the primary
(``stats.stale``). A replica that fails is skipped for a second (``stats.failed``).

On a Redis Cluster the router reads through a second ``RedisCluster`` client of the same nodes whose
``load_balancing_strategy`` sends read commands to replicas (redis-py sends ``READONLY`` on its
connections and follows topology changes). Its load balancer is pinned per shard (``_PinnedReplica``),
so a partition's check and its reads land on the same replica.

Written here because redis-py's replica reads route each command on its own, with no notion of a
session: it offers no read-your-writes, no staleness bound, and no way to tie two commands to one
replica. The router is a store attribute (``store.replica_reads``) made by ``Store`` from
``connect(read_from=..., replicas=..., max_staleness=...)``; the collection reads call ``execute``.
The asyncio front does not support it (``rxstate.aio.connect`` refuses ``read_from="replica"``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from redis.connection import parse_url
from redis.exceptions import RedisClusterException

from rxstate.core.errors import RxStateError, UnknownOutcome, ValidationError

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["READ_FROM", "ReplicaReadStats", "ReplicaReads", "check_read_options"]

READ_FROM = ("primary", "replica")
"""The values of ``connect(read_from=...)``."""

StreamId = tuple[int, int]
_ZERO: StreamId = (0, 0)
_ON_PRIMARY: ContextVar[bool] = ContextVar("rxstate_reads_on_primary", default=False)
_COOLDOWN = 1.0  # seconds a failed replica is skipped
_CHECK_EVERY = 1.0  # most seconds between two staleness samples of one replica
_NO_ENTITY_WRITES = frozenset(
    {"lock", "tx_record", "write_outcome", "snapshot", "audit", "subject_key", "sync_ack", "scope_read", "crdt_join"}
)
"""Write scripts whose effects no routed read looks at (locks, transaction records, write outcomes,
event snapshots, audit entries, subject keys, sync acknowledgements) or that write nothing."""


@dataclass
class ReplicaReadStats:
    """What a store's replica reads did (``store.replica_reads.stats``).

    Attributes:
        replica: reads a replica answered.
        behind: reads the primary answered because the replica had not yet applied the store's own write
            (or a change it was told of).
        unresolved: reads the primary answered because an own write's change id was not known yet.
        stale: reads the primary answered because no replica was within ``max_staleness``.
        failed: reads the primary answered because the replica failed (it is skipped for a second).
    """

    replica: int = 0
    behind: int = 0
    unresolved: int = 0
    stale: int = 0
    failed: int = 0

    @property
    def fallbacks(self) -> int:
        """Reads routed to a replica that the primary answered instead."""
        return self.behind + self.unresolved + self.stale + self.failed


def check_read_options(read_from: object, replicas: object, max_staleness: object, client: Any) -> None:
    """Validate ``connect``'s ``read_from``, ``replicas`` and ``max_staleness`` (before anything is written).

    Raises:
        ValidationError: a bad value (``field`` names the argument).

    Example:
        >>> check_read_options("replica", ["redis://127.0.0.1:6380/0"], 2.0, redis.Redis())
    """
    from rxstate.core.scripts import is_cluster

    if read_from not in READ_FROM:
        raise ValidationError(f"read_from must be one of {READ_FROM}, not {read_from!r}", field="read_from")
    if not isinstance(replicas, list | tuple) or not all(
        isinstance(r, str) or hasattr(r, "pipeline") for r in replicas
    ):
        raise ValidationError(
            f"replicas must be a list of redis:// URLs or redis-py clients, not {replicas!r}", field="replicas"
        )
    if max_staleness is not None and (
        isinstance(max_staleness, bool)
        or not isinstance(max_staleness, int | float)
        or not 0 < max_staleness < math.inf
    ):
        raise ValidationError(
            f"max_staleness must be a positive number of seconds or None, not {max_staleness!r}",
            field="max_staleness",
        )
    for r in replicas:
        _check_replica(r)
    if read_from == "primary":
        if replicas or max_staleness is not None:
            raise ValidationError(
                "replicas= and max_staleness= are for read_from='replica'",
                field="replicas" if replicas else "max_staleness",
            )
        return
    if type(client).__module__.startswith("fakeredis"):
        raise ValidationError(
            "read_from='replica' needs a real server with replicas; fakeredis has none", field="read_from"
        )
    if is_cluster(client):
        if replicas:
            raise ValidationError(
                "on a Redis Cluster the replicas are found from the cluster's topology: leave replicas= out",
                field="replicas",
            )
    elif not replicas:
        raise ValidationError("read_from='replica' on a standalone primary needs replicas=[...]", field="replicas")


def _check_replica(replica: Any) -> None:
    """A replica URL must parse, and a replica client must return bytes (as the store's client must)."""
    if isinstance(replica, str):
        try:
            parse_url(replica)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            raise ValidationError(f"replicas: {replica!r} is not a Redis URL ({exc})", field="replicas") from exc
        return
    kwargs = getattr(getattr(replica, "connection_pool", None), "connection_kwargs", {}) or {}
    if kwargs.get("decode_responses"):
        raise ValidationError(
            f"replicas: {replica!r} decodes responses; rxstate needs decode_responses=False", field="replicas"
        )


def parse_id(raw: bytes | str) -> StreamId:
    """A stream id (``"<ms>-<seq>"``) as a tuple that sorts like the stream does.

    Example:
        >>> parse_id(b"1700000000000-3") < parse_id("1700000000001-0")
        True
    """
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _change_ids(script: str, reply: Any) -> list[StreamId] | None:
    """The change record ids a write call's reply names ([] if it changed nothing), or None if unknown."""
    try:
        if script in ("mutate", "project"):
            entries = reply
        elif script == "sync_write":
            entries = [[reply[0], reply[1]]]
        elif script == "append":
            entries = [[reply[0], reply[2]]]
        elif script == "reap":
            return [] if int(reply) == 0 else None
        else:
            return None
        return [parse_id(e[1]) for e in entries if e[0] != b"ERR" and e[1] not in (b"", "")]
    except (TypeError, ValueError, IndexError):
        return None


class _Freshness:
    """Whether one replica is within ``max_staleness`` of its primary, sampled at most every ``interval``."""

    def __init__(self, primary: Any, replica: Any, max_staleness: float) -> None:
        self._primary = primary
        self._replica = replica
        self._max = max_staleness
        self._interval = min(_CHECK_EVERY, max(max_staleness / 2, 0.05))
        self._samples: deque[tuple[float, int]] = deque()
        self._replid: str | None = None
        self._since = -math.inf  # the replica holds every write the primary had at this (monotonic) time
        self._checked = -math.inf
        self._lock = threading.Lock()

    def fresh(self) -> bool:
        now = time.monotonic()
        if now - self._checked >= self._interval and self._lock.acquire(blocking=False):
            try:
                self._sample()
            finally:
                self._lock.release()
        return now - self._since <= self._max

    def _sample(self) -> None:
        self._checked = time.monotonic()
        try:
            primary = self._primary.info("replication")
            taken = time.monotonic()
            replica = self._replica.info("replication")
        except (redis.RedisError, RedisClusterException, OSError):
            return  # unknown: the last verdict ages out
        replid = str(primary.get("master_replid"))
        if replid != self._replid:  # a new replication history: offsets of the old one mean nothing
            self._replid, self._samples = replid, deque()
        self._samples.append((taken, int(primary.get("master_repl_offset", 0))))
        while len(self._samples) > 1 and self._samples[1][0] < taken - self._max - 2 * self._interval:
            self._samples.popleft()
        if replica.get("master_link_status") != "up" or str(replica.get("master_replid")) != replid:
            return
        held = int(replica.get("slave_repl_offset", -1))
        for at, offset in reversed(self._samples):
            if offset <= held:
                self._since = max(self._since, at)
                return


class _PinnedReplica(redis.cluster.LoadBalancer):
    """A cluster load balancer that always picks the same replica of a shard (one per client)."""

    def __init__(self) -> None:
        super().__init__()
        self._salt = str(id(self))

    def get_server_index(self, primary: str, list_size: int, load_balancing_strategy: Any = None) -> int:
        return 1 + zlib.crc32(f"{primary}/{self._salt}".encode()) % (list_size - 1)


class ReplicaReads:
    """Routes a store's stale-tolerant reads to replicas (see the module docstring).

    Example:
        >>> store = rxstate.connect(primary_url, read_from="replica", replicas=[replica_url])  # doctest: +SKIP
        >>> store.replica_reads.stats.replica  # doctest: +SKIP
        0
    """

    def __init__(self, store: Store, replicas: Sequence[Any], max_staleness: float | None) -> None:
        self._store = store
        self._ns = store.namespace
        self.max_staleness = max_staleness
        """The staleness bound in seconds (None: none; replica reads are then only session-consistent)."""
        self.stats = ReplicaReadStats()
        """Counters of what the reads did."""
        self._lock = threading.Lock()
        self._own: dict[int, StreamId] = {}  # partition -> latest change id this store wrote or was told of
        self._unresolved: dict[int, int] = {}  # partition -> writes of unknown change id (a generation)
        self._held: dict[tuple[str, int], StreamId] = {}  # (replica, partition) -> id it was seen holding
        self._down: dict[str, float] = {}  # replica -> until when it is skipped
        self._owned: list[Any] = []
        self._turn = itertools.count()
        self._fresh: dict[str, _Freshness] = {}
        self._cluster: Any = None
        self._clients: list[Any] = []
        if store.is_cluster:
            self._cluster = _replica_cluster_client(store.client)
            self._owned.append(self._cluster)
        else:
            for r in replicas:
                client = redis.Redis.from_url(r) if isinstance(r, str) else r
                if isinstance(r, str):
                    self._owned.append(client)
                self._clients.append(client)
            if max_staleness is not None:
                self._fresh = {str(i): _Freshness(store.client, c, max_staleness) for i, c in enumerate(self._clients)}
        self._watch_writer()

    # -- what this store wrote ----------------------------------------------------------------------
    def _partition(self, key: Any) -> int | None:
        text = key.decode() if isinstance(key, bytes) else str(key)
        start = text.find("{")
        stop = text.find("}", start + 1)
        ns, _, p = text[start + 1 : stop].rpartition(":")
        return int(p) if start >= 0 and ns == self._ns and p.isdigit() else None

    def _watch_writer(self) -> None:
        writer = self._store.writer
        send, send_many = writer._send, writer._send_many

        def watched_send(script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
            try:
                reply = send(script, keys, args)
            except BaseException as exc:
                self._wrote(script, keys, exc)
                raise
            self._wrote(script, keys, reply)
            return reply

        def watched_send_many(calls: Sequence[tuple[str, Sequence[Any], Sequence[Any]]]) -> list[Any]:
            try:
                replies: list[Any] = send_many(calls)
            except BaseException as exc:
                for script, keys, _args in calls:
                    self._wrote(script, keys, exc)
                raise
            for (script, keys, _args), reply in zip(calls, replies, strict=True):
                self._wrote(script, keys, reply)
            return replies

        # the Writer's two ways out are its documented observation point (as for rxstate.metrics)
        writer._send = watched_send  # type: ignore[method-assign]
        writer._send_many = watched_send_many  # type: ignore[method-assign]

    def _wrote(self, script: str, keys: Sequence[Any], reply: Any) -> None:
        if script in _NO_ENTITY_WRITES:
            return
        parts = {p for p in map(self._partition, keys) if p is not None}
        if not parts:
            return
        if isinstance(reply, BaseException):
            if isinstance(reply, RxStateError) and not isinstance(reply, UnknownOutcome):
                return  # refused by a check: the call wrote nothing
            ids = None
        else:
            ids = _change_ids(script, reply)
        if ids is not None and not ids:
            return
        with self._lock:
            if ids is None or len(parts) > 1:
                for p in parts:
                    self._unresolved[p] = self._unresolved.get(p, 0) + 1
            else:
                (p,) = parts
                self._own[p] = max(self._own.get(p, _ZERO), *ids)

    def seen(self, changes: Iterable[tuple[int, str]]) -> None:
        """Note change records the store was told of (``(partition, offset)``): later reads see them too.

        Example:
            >>> store.replica_reads.seen([(3, "1700000000000-0")])  # doctest: +SKIP
        """
        with self._lock:
            for p, offset in changes:
                at = parse_id(offset)
                if at > self._own.get(p, _ZERO):
                    self._own[p] = at

    # -- reading ------------------------------------------------------------------------------------
    def _count(self, outcome: str) -> None:
        with self._lock:
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)

    @contextlib.contextmanager
    def primary(self) -> Iterator[None]:
        """Send the reads of this block (this thread or task) to the primary.

        Example:
            >>> with store.replica_reads.primary():  # doctest: +SKIP
            ...     agents.where(status="busy").ids()  # linearizable, like consistent=True
        """
        token = _ON_PRIMARY.set(True)
        try:
            yield
        finally:
            _ON_PRIMARY.reset(token)

    def execute(self, keys: Iterable[str], build: Callable[[Any], None]) -> list[Any]:
        """The replies of the reads ``build(pipeline)`` queues (of ``keys``' partitions): from a replica
        when it may answer, else from the primary (see the module docstring)."""
        if _ON_PRIMARY.get():
            return self._on_primary(build)
        parts = sorted({p for p in map(self._partition, keys) if p is not None})
        with self._lock:
            unresolved = {p: self._unresolved[p] for p in parts if p in self._unresolved}
            wanted = {p: self._own[p] for p in parts if p in self._own}
        if unresolved:
            self._count("unresolved")
            return self._resolving(unresolved, build)
        route = self._route(parts)
        if route is None:
            return self._on_primary(build)
        name_of, pipe = route
        checks = [(p, at) for p, at in wanted.items() if self._held.get((name_of(p), p), _ZERO) < at]
        ks = self._store.keyspace
        for p, _at in checks:
            pipe.xrevrange(ks.changes(p), "+", "-", count=1)
        build(pipe)
        try:
            replies: list[Any] = pipe.execute()
        except (redis.RedisError, RedisClusterException, OSError):
            self._count("failed")
            for p in parts or [0]:
                self._down[name_of(p)] = time.monotonic() + _COOLDOWN
            return self._on_primary(build)
        behind = False
        for (p, at), last in zip(checks, replies, strict=False):
            held = parse_id(last[0][0]) if last else _ZERO
            node = (name_of(p), p)
            if held > self._held.get(node, _ZERO):
                self._held[node] = held
            behind |= held < at
        if behind:
            self._count("behind")
            return self._on_primary(build)
        self._count("replica")
        return replies[len(checks) :]

    def _on_primary(self, build: Callable[[Any], None]) -> list[Any]:
        pipe = self._store.client.pipeline(transaction=False)
        build(pipe)
        replies: list[Any] = pipe.execute()
        return replies

    def _resolving(self, unresolved: dict[int, int], build: Callable[[Any], None]) -> list[Any]:
        """Read on the primary, learning its last change id of each unresolved partition in passing."""
        ks = self._store.keyspace
        pipe = self._store.client.pipeline(transaction=False)
        order = sorted(unresolved)
        for p in order:
            pipe.xrevrange(ks.changes(p), "+", "-", count=1)
        build(pipe)
        replies: list[Any] = pipe.execute()
        with self._lock:
            for p, last in zip(order, replies, strict=False):
                at = parse_id(last[0][0]) if last else _ZERO
                if at > self._own.get(p, _ZERO):
                    self._own[p] = at
                if self._unresolved.get(p) == unresolved[p]:  # no other write of unknown id since
                    del self._unresolved[p]
        return replies[len(order) :]

    def _route(self, parts: Sequence[int]) -> tuple[Callable[[int], str], Any] | None:
        """The replica to read ``parts`` from (a namer of its nodes and a pipeline), or None (with why counted)."""
        now = time.monotonic()
        if self._cluster is not None:
            names = {p: self._cluster_node(p) for p in parts}
            if any(self._down.get(name, 0.0) > now for name in names.values()):
                self._count("failed")
                return None
            if self.max_staleness is not None and not all(self._fresh_node(p, name) for p, name in names.items()):
                self._count("stale")
                return None
            return (lambda p: names.get(p) or self._cluster_node(p)), self._cluster.pipeline(transaction=False)
        start = next(self._turn)
        down = False
        for n in range(len(self._clients)):
            i = (start + n) % len(self._clients)
            name = str(i)
            if self._down.get(name, 0.0) > now:
                down = True
                continue
            fresh = self._fresh.get(name)
            if fresh is not None and not fresh.fresh():
                continue
            return (lambda _p, name=name: name), self._clients[i].pipeline(transaction=False)
        if down:
            self._count("failed")
        else:
            self._count("stale")
        return None

    def _cluster_node(self, p: int) -> str:
        node = self._replica_node(p)
        return str(node.name)

    def _replica_node(self, p: int) -> Any:
        client = self._cluster
        slot = client.keyslot(self._store.keyspace.changes(p))
        return client.nodes_manager.get_node_from_slot(slot, load_balancing_strategy=_REPLICAS)

    def _fresh_node(self, p: int, name: str) -> bool:
        fresh = self._fresh.get(name)
        if fresh is None:
            client = self._cluster
            slot = client.keyslot(self._store.keyspace.changes(p))
            primary = client.nodes_manager.slots_cache[slot][0]
            replica = self._replica_node(p)
            assert self.max_staleness is not None
            fresh = self._fresh.setdefault(
                name,
                _Freshness(
                    client.get_redis_connection(primary), client.get_redis_connection(replica), self.max_staleness
                ),
            )
        return fresh.fresh()

    def close(self) -> None:
        """Close the replica clients this store made (from URLs, or the cluster's replica client)."""
        for client in self._owned:
            with contextlib.suppress(redis.RedisError, OSError):
                client.close()


_REPLICAS = redis.cluster.LoadBalancingStrategy.ROUND_ROBIN_REPLICAS
_NOT_CLONED = frozenset({"host", "port", "redis_connect_func", "retry", "cache", "cache_config", "connection_pool"})


def _replica_cluster_client(client: Any) -> Any:
    """A ``RedisCluster`` of ``client``'s nodes whose read commands go to a pinned replica of each shard."""
    from redis.cluster import ClusterNode, RedisCluster

    options = {k: v for k, v in client.nodes_manager.connection_kwargs.items() if k not in _NOT_CLONED}
    startup = [ClusterNode(n.host, n.port) for n in client.get_nodes()]  # type: ignore[no-untyped-call]
    replica_client = RedisCluster(startup_nodes=startup, load_balancing_strategy=_REPLICAS, **options)
    replica_client.nodes_manager.read_load_balancer = _PinnedReplica()
    return replica_client
