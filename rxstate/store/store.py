"""``connect`` and ``Store``: one namespace of state on one Redis/Valkey server or cluster."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import redis

from rxstate.cache.lru import EntityCache
from rxstate.core.codec import Codec
from rxstate.core.errors import (
    NotFound,
    SchemaError,
    ServerError,
    ValidationError,
)
from rxstate.core.keys import Keyspace, validate_id, validate_namespace
from rxstate.core.model import Model
from rxstate.core.scripts import ScriptLibrary, is_cluster
from rxstate.store.audit import AUDIT_FLAG, Audit
from rxstate.store.batch import Batch
from rxstate.store.collection import Collection
from rxstate.store.collection_ops import CollectionOps
from rxstate.store.constraints import Constraint, index_fields
from rxstate.store.lock import Lock, ReadWriteLock
from rxstate.store.replica_reads import ReplicaReads, check_read_options
from rxstate.store.transaction import Transaction
from rxstate.store.twophase import sweep
from rxstate.store.writer import WriteCall, Writer

if TYPE_CHECKING:
    from rxstate.security.guard import Guard

__all__ = ["ReadMeter", "Store"]

log = logging.getLogger("rxstate")
M = TypeVar("M", bound=Model)
S = TypeVar("S")
DEFAULT_PARTITIONS = 16
_REAP_BATCH = 200


class ReadMeter(Protocol):
    """Counts what a store reads from the server (``Store.read_meter``; a tenant's read costs)."""

    def count(self, key: str, nbytes: int, reads: int = 1) -> None:
        """``reads`` reads of ``key`` (an entity hash, an event stream page) that returned ``nbytes``."""


class Store:
    """State of one namespace: collections, the write path, and background upkeep.

    Create one with ``rxstate.connect``. A store is thread-safe (redis-py pools connections).

    Example:
        >>> store = rxstate.connect(fakeredis.FakeRedis())
        >>> store.collection("agents", Agent).put("a1", Agent(name="planner")).version
        1
    """

    _collection_type: type[Collection[Any]] = Collection
    """The class of the collections this store opens (the public facade substitutes its own)."""

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = "default",
        partitions: int | None = None,
        actor: str | None = None,
        codec: Codec | None = None,
        change_retention: int = 10_000,
        reap_interval: float | None = 1.0,
        server: Any = None,
        cache: bool = True,
        cache_size: int = 10_000,
        cache_bytes: int | None = None,
        invalidation: str = "auto",
        read_only: bool = False,
        write_record_ms: int = 60_000,
        write_retries: int = 3,
        audit: bool = False,
        guard: Guard | None = None,
        read_from: str = "primary",
        replicas: Sequence[Any] = (),
        max_staleness: float | None = None,
    ) -> None:
        _check_client(client)
        check_read_options(read_from, replicas, max_staleness, client)
        self.client = client
        self.guard = guard
        """The policy check of the principal this store acts as (None: no principal, no checks)."""
        if guard is not None:  # upkeep and settling span every collection: the administrator's store runs it
            reap_interval = None
        self.namespace = validate_namespace(namespace)
        self.read_only = read_only
        """Whether this store only reads: it creates no namespace and opens no collections, locks or writes."""
        if read_only:  # the cache writes probe keys and may CONFIG SET; upkeep writes expiries
            cache, reap_interval = False, None
        self.actor = validate_id(actor, "actor") if actor is not None else f"pid:{os.getpid()}"
        self.codec = codec or Codec()
        if not isinstance(change_retention, int) or change_retention < 1:
            raise ValidationError(f"change_retention must be a positive int, not {change_retention!r}")
        self.change_retention = change_retention
        self.scripts = ScriptLibrary()
        self.server = server
        self.keyspace = Keyspace(namespace, self._init_namespace(partitions))
        self.is_cluster = is_cluster(client)
        self._collections: dict[str, Collection[Any]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reap_interval = reap_interval
        self._reaper: threading.Thread | None = None
        self.borrowed_client = False
        """Whether the client belongs to another store (a tenant's store opened by the registry shares
        its parent's): then ``close`` leaves it open (a closed cluster client cannot be used again)."""
        self.read_meter: ReadMeter | None = None
        """Counts the entity hashes and event entries this store reads from the server (cache hits
        aside), when set: a tenant's store counts its read costs (``rxstate.tenancy.reads``)."""
        self.upkeep_failures = 0
        """How many times the background upkeep (expiry, abandoned transactions) failed."""
        self.last_upkeep_error: Exception | None = None
        """The last such failure, or None."""
        self._services: dict[type, tuple[object, Callable[[Any], None]]] = {}
        self._services_lock = threading.RLock()
        self.writer = Writer(self, record_ms=write_record_ms, retries=write_retries)
        """Sends every write of this store (see ``rxstate.store.writer``)."""
        self.replica_reads = ReplicaReads(self, replicas, max_staleness) if read_from == "replica" else None
        """Routes reads to replicas, with ``stats`` (``connect(read_from="replica")``; see
        ``rxstate.store.replica_reads``); None when every read goes to the primary."""
        if not isinstance(audit, bool):
            raise ValidationError(f"audit must be True or False, not {audit!r}", field="audit")
        self.audit = Audit(self, enable=audit, stored=self._audited)
        """The namespace's tamper-evident audit trail (see ``rxstate.store.audit``)."""
        self._start_cache(cache, cache_size, cache_bytes, invalidation)

    def __repr__(self) -> str:
        return f"<Store namespace={self.namespace!r} partitions={self.keyspace.partitions} actor={self.actor!r}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- namespace ---------------------------------------------------------------------------------
    def _init_namespace(self, partitions: int | None) -> int:
        meta = Keyspace(self.namespace, 1).meta()
        wanted = DEFAULT_PARTITIONS if partitions is None else partitions
        if isinstance(wanted, bool) or not isinstance(wanted, int) or not 1 <= wanted <= 16384:
            raise ValidationError(f"partitions must be an integer in 1..16384, not {partitions!r}")
        try:
            pipe = self.client.pipeline(transaction=False)  # one round trip
            if not self.read_only and self.guard is None:  # a principal joins a namespace, never creates one
                pipe.hsetnx(meta, "partitions", wanted)
            pipe.hmget(meta, "partitions", AUDIT_FLAG)
            raw, audited = pipe.execute()[-1]
            self._audited = audited == b"1"  # read here for ``Audit``: the namespace audits its writes
        except redis.ConnectionError as exc:
            raise ServerError(f"cannot reach the server: {exc}") from exc
        if raw is None:
            raise NotFound(f"namespace {self.namespace!r} does not exist ({meta})", key=meta)
        stored = int(raw)
        if partitions is not None and stored != partitions:
            raise SchemaError(
                f"namespace {self.namespace!r} was created with {stored} partitions, not {partitions}: "
                "the partition count is fixed at creation",
                name=self.namespace,
                field="partitions",
            )
        return stored

    def collection(
        self,
        name: str,
        model: type[M],
        *,
        indexes: Sequence[str] = (),
        partition_key: str | None = None,
        constraints: Sequence[Constraint] = (),
    ) -> Collection[M]:
        """Open (or create) a collection of ``model`` entities.

        The first opening registers the model's name and schema version in the namespace; opening the
        same collection with another model raises ``SchemaError``.

        Args:
            name: collection name (letters, digits, ``_`` and ``-``).
            model: an ``rxstate.Model`` subclass.
            indexes: fields to maintain secondary indexes on, for ``where``.
            partition_key: a field whose value places related entities in one partition.
            constraints: integrity constraints checked by every write (``rxstate.unique``,
                ``references``, ``bounds``, ``one_of``); see ``rxstate.constraints`` for the cluster rules.

        Example:
            >>> agents = store.collection("agents", Agent, indexes=["status"])
            >>> agents.name, agents.model.__name__
            ('agents', 'Agent')
        """
        self._check_writable("open a collection")
        # The lock is never held across a server call: two openers on one thread (coroutines of the asyncio
        # front, each in its own greenlet) would deadlock on it. Registering a schema is idempotent, so
        # two first openers both register, and the first to finish is the one everybody gets.
        with self._lock:
            existing = self._collections.get(name)
        if existing is not None:
            return self._same_collection(existing, model, indexes, partition_key, constraints)
        collection = self._collection_type(
            self, name, model, indexes=indexes, partition_key=partition_key, constraints=constraints
        )
        if self.guard is None:  # a principal's ACL holds no schema registry: its administrator opens them
            self._register_schema(collection)
            collection.constraints.declare_references()
        with self._lock:
            existing = self._collections.setdefault(name, collection)
        if existing is not collection:
            return self._same_collection(existing, model, indexes, partition_key, constraints)
        self._start_reaper()
        return collection

    @staticmethod
    def _same_collection(
        existing: Collection[M],
        model: type[Model],
        indexes: Sequence[str],
        partition_key: str | None,
        constraints: Sequence[Constraint],
    ) -> Collection[M]:
        """``existing``, if it was opened with these arguments; else ``SchemaError``."""
        if existing.model is not model or (
            tuple(dict.fromkeys((*indexes, *index_fields(constraints)))) != existing.indexes
            or partition_key != existing.partition_key
            or tuple(constraints) != existing.constraints.items
        ):
            raise SchemaError(
                f"collection {existing.name!r} is already open here with {existing.model.__name__}, "
                f"indexes={list(existing.indexes)}, partition_key={existing.partition_key!r}",
                name=existing.name,
            )
        return existing

    def _register_schema(self, collection: Collection[Any]) -> None:
        key = self.keyspace.schemas()
        model = collection.model
        entry = {
            "model": getattr(model, "__rxstate_name__", model.__name__),
            "version": model.__version__,
            "indexes": list(collection.indexes),
            "partition_key": collection.partition_key,
            "fields": list(model.model_fields),
            # Classified fields, so that a process without the model still redacts them (change feed).
            "secrets": sorted(model.__rxstate_secrets__),
        }
        if self.client.hsetnx(key, collection.name, json.dumps(entry)):
            return
        stored = json.loads(self.client.hget(key, collection.name))
        if stored["model"] != entry["model"]:
            raise SchemaError(f"collection {collection.name!r} holds {stored['model']} entities, not {entry['model']}")
        if stored.get("partition_key") != entry["partition_key"]:
            raise SchemaError(
                f"collection {collection.name!r} is routed by {stored.get('partition_key')!r}, "
                f"not {entry['partition_key']!r}: the partition key cannot change"
            )
        # A field once classified secret stays so: writers of older and newer versions may both run.
        secrets = sorted(set(stored.get("secrets", ())) | set(entry["secrets"]))
        if entry["version"] > stored["version"] or stored.get("indexes") != entry["indexes"]:
            merged = {**stored, **entry, "version": max(entry["version"], stored["version"]), "secrets": secrets}
        elif stored.get("secrets") != secrets:
            merged = {**stored, "secrets": secrets}
        else:
            return
        self.client.hset(key, collection.name, json.dumps(merged))

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise ValidationError(f"cannot {what} on a read-only store (namespace {self.namespace!r})")

    @property
    def collections(self) -> dict[str, Collection[Any]]:
        """The collections opened on this store, by name."""
        return dict(self._collections)

    # -- the write path ----------------------------------------------------------------------------
    # -- expiry ------------------------------------------------------------------------------------
    def _reap(self, collection: CollectionOps[Any]) -> int:
        ks = self.keyspace
        name = collection.name
        if self.guard is not None and not self.guard.opens("write", name):
            return 0  # expiring writes to the collection; one who may only read leaves that to its writers
        calls: list[WriteCall] = []
        for p in range(ks.partitions):
            keys = [
                ks.expiry(name, p),
                ks.ids(name, p),
                ks.ttl_index(name, p),
                ks.changes(p),
                *(ks.index(name, f, p) for f in collection.indexes),
                *self.writer.reap_keys(p),
            ]
            calls.append(("reap", keys, [name, self.change_retention, _REAP_BATCH, *collection.indexes]))
        total = 0
        for reply in self.writer.call_many(calls):
            if isinstance(reply, BaseException):
                raise reply
            total += int(reply)
        return total

    def _start_reaper(self) -> None:
        if self._reap_interval is None or self._reaper is not None or self._closed.is_set():
            return
        self._reaper = threading.Thread(target=self._reap_loop, name="rxstate-reaper", daemon=True)
        self._reaper.start()

    def _reap_loop(self) -> None:
        assert self._reap_interval is not None
        while not self._closed.wait(self._reap_interval):
            for collection in list(self._collections.values()):
                try:
                    self._reap(collection)
                except Exception as exc:  # keep upkeep alive through transient server errors
                    self._upkeep_failed(f"expiring {collection.name}", exc)
            try:
                sweep(self)  # transactions abandoned by dead clients
            except Exception as exc:
                self._upkeep_failed("settling abandoned transactions", exc)

    def _upkeep_failed(self, what: str, exc: Exception) -> None:
        """Count and report a failure of the background upkeep; it runs again next interval."""
        self.upkeep_failures += 1
        self.last_upkeep_error = exc
        log.warning(
            "rxstate upkeep: %s failed (%s: %s); retrying in %ss", what, type(exc).__name__, exc, self._reap_interval
        )

    # -- lifecycle ---------------------------------------------------------------------------------
    def ping(self) -> bool:
        """Whether the server answers.

        Example:
            >>> store.ping()
            True
        """
        return bool(self.client.ping())

    def close(self) -> None:
        """Stop background work, close connections, and stop an embedded server this store started.

        Example:
            >>> store.close()
            >>> store.change_feed
            Traceback (most recent call last):
            ...
            rxstate.core.errors.ServerError: the store is closed
        """
        if self._closed.is_set():
            return
        self._closed.set()
        self._stop_services()
        self._stop_cache()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
        if not self.borrowed_client:  # a borrowed one is closed by its owner
            try:
                self.client.close()
            except Exception as exc:  # closing is best effort
                log.debug("close: %s", exc)
        if self.replica_reads is not None:
            self.replica_reads.close()
        if self.server is not None:
            self.server.release()

    # -- services: per-store objects of the layers above (change feed, derived graph) ----------------
    def service(self, kind: type[S], make: Callable[[], S], stop: Callable[[S], None]) -> S:
        """The store's one ``kind`` object, made by ``make()`` on first use and stopped by ``close()``.

        Upper layers keep their per-store state here (the shared change feed, the derived-value graph)
        instead of attributes on the store. Services stop in the reverse order of their creation.

        Raises:
            ServerError: the store is closed.

        Example:
            >>> class Meter:
            ...     def stop(self) -> None: ...
            >>> store.service(Meter, Meter, Meter.stop) is store.service(Meter, Meter, Meter.stop)
            True
        """
        entry = self._services.get(kind)
        if entry is None:
            with self._services_lock:
                entry = self._services.get(kind)
                if entry is None:
                    if self._closed.is_set():
                        raise ServerError("the store is closed")
                    entry = (make(), stop)
                    self._services[kind] = entry
        return entry[0]  # type: ignore[return-value]

    def running(self, kind: type[S]) -> S | None:
        """The store's ``kind`` service if it was started, else None.

        Example:
            >>> store.running(rxstate.ChangeFeed) is None  # no subscriber yet
            True
        """
        entry = self._services.get(kind)
        return None if entry is None else entry[0]  # type: ignore[return-value]

    def _stop_services(self) -> None:
        with self._services_lock:
            entries = list(self._services.values())
        for service, stop in reversed(entries):
            stop(service)

    # -- local read cache --------------------------------------------------------------------------
    def _start_cache(self, enabled: bool, size: int, nbytes: int | None, invalidation: str) -> None:
        from rxstate.cache.invalidation import MODES, InvalidationFeed
        from rxstate.store.readthrough import Refresher

        self._cache: EntityCache | None = None
        self._invalidation: InvalidationFeed | None = None
        self._refresher: Refresher | None = None
        if invalidation not in MODES:
            raise ValidationError(f"invalidation must be one of {MODES}, not {invalidation!r}")
        if not enabled:
            return
        channels: list[str] | None = None
        probe: str | None = None
        if self.guard is not None:  # keyspace notifications on its own channels, or no cache
            if self.is_cluster:
                return
            db = int(self.client.connection_pool.connection_kwargs.get("db") or 0)
            subscription = self.guard.cache_subscription(self.namespace, self.keyspace.partitions, db)
            if subscription is None:
                return
            invalidation, (channels, probe) = "keyspace", subscription
        cache = EntityCache(max_entries=size, max_bytes=nbytes)
        feed = InvalidationFeed(
            self.client,
            self.keyspace,
            cache,
            mode=invalidation,
            is_cluster=self.is_cluster,
            channels=channels,
            probe=probe,
        )
        if feed.start() is not None:
            self._cache, self._invalidation = cache, feed
            self._refresher = Refresher(self, cache)

    def _stop_cache(self) -> None:
        if self._invalidation is not None:
            self._invalidation.close()
        if self._refresher is not None:
            self._refresher.close()

    @property
    def cache(self) -> EntityCache | None:
        """The local read cache (``stats()``, ``clear()``), or None when caching is off.

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> agents.get("a1").name
            'planner'
            >>> stats = store.cache.stats()  # a hit once the invalidation feed is connected
            >>> stats.hits + stats.misses + stats.bypassed
            1
        """
        return self._cache

    # -- transactions and batches ------------------------------------------------------------------
    def transaction(self, *, retries: int = 0, ttl: float = 5.0, two_phase: bool | None = None) -> Transaction:
        """A transaction: reads with versions, buffered writes, one all-or-nothing commit.

        Use it in a ``with`` block (commit at the end, discard on an exception), or, with ``retries``, as a
        decorator or ``.run(fn, ...)`` that re-runs ``fn(tx, ...)`` on conflict.

        Args:
            retries: re-runs of a decorated / ``run`` function on ``ConflictError``.
            ttl: seconds a cross-partition commit may hold its locks before others may abort it.
            two_phase: force (True) the two-phase protocol even where one script could commit (standalone);
                default: only when the transaction spans partitions of a cluster.

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> with store.transaction() as tx:
            ...     _ = tx.update(agents, "a1", status="busy")
            ...     _ = tx.put(tasks, "t9", Task(title="review", owner="a1"))
            >>> agents.get("a1").status, tasks.get("t9").owner
            ('busy', 'a1')
        """
        self._check_writable("start a transaction")
        return Transaction(self, retries=retries, ttl=ttl, two_phase=two_phase)

    def batch(self, *, atomic: bool = False) -> Batch:
        """Group writes to any collections into the fewest round trips, each with its own result.

        Args:
            atomic: all-or-nothing per partition (one script call per partition) instead of per write.

        Example:
            >>> with store.batch() as batch:
            ...     created = batch.put(agents, "a1", Agent(name="planner"))
            ...     _ = batch.put(tasks, "t9", Task(title="review"))
            >>> created.result().version
            1
        """
        self._check_writable("start a batch")
        return Batch(self, atomic=atomic)

    def resolve_transactions(self) -> int:
        """Settle cross-partition transactions abandoned past their deadline; returns how many.

        The background upkeep does this every ``reap_interval``; readers and writers settle the ones they meet.

        Example:
            >>> store.resolve_transactions()
            0
        """
        return sweep(self)

    # -- locks (lock.py) ---------------------------------------------------------------------------
    @functools.cached_property
    def _lock_owner_id(self) -> str:
        """This store's identity as a lock owner (reentrant locks add the thread)."""
        return uuid.uuid4().hex

    def lock(
        self,
        name: str,
        ttl: float = 10.0,
        *,
        blocking: bool = True,
        timeout: float | None = None,
        reentrant: bool = False,
    ) -> Lock:
        """A lease lock with fencing tokens.

        Args:
            name: the lock's name (any id-like string).
            ttl: the lease, in seconds; the lock frees itself when it ends unless extended.
            blocking: whether acquiring waits for the holder to release.
            timeout: seconds to wait at most (None: forever).
            reentrant: the same thread (of this store) may acquire it again; it frees on the last release.

        Example:
            >>> _ = tasks.put("t1", Task(title="print"))
            >>> with store.lock("printer", ttl=10) as lease:
            ...     tasks.update("t1", owner="a1", fence=lease).version
            2
        """
        self._check_writable("take a lock")
        return Lock(self, name, ttl, blocking=blocking, timeout=timeout, reentrant=reentrant)

    def rwlock(self, name: str, ttl: float = 10.0, *, timeout: float | None = None) -> ReadWriteLock:
        """A read/write lease lock: many readers or one writer.

        Example:
            >>> with store.rwlock("agents", ttl=5).read():
            ...     agents.count()
            0
        """
        self._check_writable("take a lock")
        return ReadWriteLock(self, name, ttl, timeout=timeout)


def _check_client(client: Any) -> None:
    if inspect.iscoroutinefunction(getattr(client, "execute_command", None)):
        kind = f"{type(client).__module__}.{type(client).__qualname__}"
        raise ValidationError(
            f"{kind} is an asyncio client; rxstate's store API is synchronous and has no asyncio "
            "version yet (only change feeds can be read with `async for`, via store.changes().aiter()): "
            "pass a synchronous client such as redis.Redis or fakeredis.FakeRedis"
        )
    if not hasattr(client, "evalsha"):
        raise ValidationError(f"{client!r} is not a redis-py (or fakeredis) client")
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}) or {}
    decode = kwargs.get("decode_responses")
    if decode is None and hasattr(client, "get_encoder"):
        decode = client.get_encoder().decode_responses
    if decode:
        raise ValidationError("rxstate needs a client with decode_responses=False (values may be binary)")
