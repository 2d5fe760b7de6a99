"""Reading a collection: single entities, many, listings, counts and queries, through the cache."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, overload

from rxstate.core.errors import NotFound, ValidationError
from rxstate.core.keys import validate_id
from rxstate.core.model import Model, unloaded_lazy
from rxstate.core.tracking import track, track_members
from rxstate.core.versioned import Versioned
from rxstate.store.collection_ops import CollectionOps
from rxstate.store.observe import observed
from rxstate.store.query import Query, read_partitions
from rxstate.store.readthrough import fetch_many, read_one

__all__ = ["CollectionReads"]

M = TypeVar("M", bound=Model)
_MISSING: Any = object()
_FETCH_CHUNK = 500
_KEY_MEMO = 65_536


class CollectionReads(CollectionOps[M]):
    """The reads of a collection (see ``Collection``)."""

    @observed("get")
    def get_versioned(self, entity_id: str, *, partition: str | None = None, consistent: bool = False) -> Versioned[M]:
        """The current value with its version and metadata.

        Served from the local cache when it holds the entity; ``consistent=True`` reads from the server
        (a linearizable read: the cache may trail a write by another client by its invalidation delay).

        Raises:
            NotFound: no such entity.

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> agents.get_versioned("a1").version
            1
        """
        value = self._read_one(entity_id, partition, consistent)
        if self._audit_reads:
            self._store.audit.reads([self.key(entity_id, partition=partition)])
        return value

    def _read_one(self, entity_id: str, partition: str | None, consistent: bool) -> Versioned[M]:
        track(self.name, entity_id)
        self._authorize("read", entity_id)
        cache = None if consistent else self._store._cache
        if cache is not None:
            key = self._keys.get(entity_id) if partition is None and type(entity_id) is str else None
            if key is None:
                key = self.key(entity_id, partition=partition)
                if partition is None:
                    if len(self._keys) >= _KEY_MEMO:
                        self._keys.clear()
                    self._keys[entity_id] = key
            return cache.get(key) or read_one(self, cache, entity_id, key)
        key = self.key(entity_id, partition=partition)
        value, _raw = self._read_reply(entity_id, key, self._read_now(key) if consistent else self._read_routed(key))
        if value is None:
            raise NotFound(f"{self.name} {entity_id!r} does not exist ({key})", key=key)
        return value

    def _read_routed(self, key: str) -> Any:
        """``_read_now(key)``, from a replica when the store reads from replicas (``replica_reads``)."""
        router = self._store.replica_reads
        if router is None:
            return self._read_now(key)
        return router.execute([key], lambda pipe: self._queue_read(pipe, key))[0]

    @overload
    def get(
        self, entity_id: str, *, partition: str | None = None, consistent: bool = False, fields: None = None
    ) -> M: ...

    @overload
    def get(
        self, entity_id: str, *, partition: str | None = None, consistent: bool = False, fields: Sequence[str]
    ) -> dict[str, Any]: ...

    @overload
    def get(
        self,
        entity_id: str,
        default: Any,
        *,
        partition: str | None = None,
        consistent: bool = False,
        fields: Sequence[str] | None = None,
    ) -> M | dict[str, Any] | Any: ...

    def get(
        self,
        entity_id: str,
        default: Any = _MISSING,
        *,
        partition: str | None = None,
        consistent: bool = False,
        fields: Sequence[str] | None = None,
    ) -> Any:
        """The current value; ``default`` (if given) when absent, else ``NotFound``.

        ``fields=[...]``: only those fields, as a dict, read with one ``HMGET`` of just them (from the
        cache when it holds the entity): the way to skip a large field. A model with lazy fields
        (``rxstate.lazy``) is read without them, and loads each on first access (see ``rxstate.lazy``).

        Raises:
            ValidationError: ``fields`` names a field the model does not have.

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> agents.get("a1").name, agents.get("nope", None)
            ('planner', None)
            >>> agents.get("a1", fields=["name", "load"])
            {'name': 'planner', 'load': 0}
        """
        try:
            if fields is not None:
                return self._read_fields(entity_id, list(fields), partition, consistent)
            return self.get_versioned(entity_id, partition=partition, consistent=consistent).value
        except NotFound:
            if default is _MISSING:
                raise
            return default

    @observed("get_fields")
    def _read_fields(
        self, entity_id: str, fields: list[str], partition: str | None, consistent: bool
    ) -> dict[str, Any]:
        unknown = [f for f in fields if f not in self.model.model_fields]
        if unknown or not fields:
            raise ValidationError(
                f"{self.name}: fields= needs fields of {self.model.__name__}, not {unknown or fields!r}",
                field=(unknown or [""])[0],
            )
        key = self.key(entity_id, partition=partition)
        cache = None if consistent else self._store._cache
        cached = cache.get(key) if cache is not None else None
        if cached is not None and self._codec.lazy and set(unloaded_lazy(cached.value)[1]).intersection(fields):
            cached = None  # a lazy field the cached value has not loaded: it comes with the others
        if cached is None and self._store.guard is None:
            track(self.name, entity_id)
            self._authorize("read", entity_id)
            router = None if consistent else self._store.replica_reads
            if router is None:
                version, schema, intent, *values = self._store.client.hmget(key, "_v", "_sv", "_t", *fields)
            else:
                read = router.execute([key], lambda pipe: pipe.hmget(key, "_v", "_sv", "_t", *fields))
                version, schema, intent, *values = read[0]
            meter = self._store.read_meter
            if meter is not None:
                meter.count(key, sum(len(v) for v in (version, schema, intent, *values) if v is not None))
            if version is None and intent is None:
                raise NotFound(f"{self.name} {entity_id!r} does not exist ({key})", key=key)
            plain = intent is None and schema is not None and int(schema) == self.model.__version__
            if plain and all(v is not None for v in values):
                out = {f: self._codec.decode_value(f, v, key) for f, v in zip(fields, values, strict=True)}
                if self._audit_reads:
                    self._store.audit.reads([key])
                return out
        # a cached entity, a pending transaction, an older schema, a field left to its default, or a
        # principal whose read rules look at the whole value: the whole entity, then its fields
        if cached is None:
            value = self.get_versioned(entity_id, partition=partition, consistent=consistent).value
            return {f: getattr(value, f) for f in fields}
        track(self.name, entity_id)
        self._authorize("read", entity_id)
        if self._audit_reads:
            self._store.audit.reads([key])
        return {f: getattr(cached.value, f) for f in fields}

    @observed("exists")
    def exists(self, entity_id: str, *, partition: str | None = None) -> bool:
        """Whether an entity exists.

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> agents.exists("a1"), agents.exists("a2")
            (True, False)
        """
        track(self.name, entity_id)
        self._authorize("read", entity_id)
        key = self.key(entity_id, partition=partition)
        version, intent = self._store.client.hmget(key, "_v", "_t")
        meter = self._store.read_meter
        if meter is not None:
            meter.count(key, len(version or b"") + len(intent or b""))
        if intent is not None:
            return b"_v" in self._settled(key, self._store.client.hgetall(key))
        return version is not None

    def get_many(
        self, entity_ids: Iterable[str], *, partition: str | None = None, consistent: bool = False
    ) -> dict[str, M]:
        """Values of many ids in one round trip; absent ids are left out.

        Example:
            >>> _ = agents.put_many({"a1": Agent(name="x"), "a2": Agent(name="y")})
            >>> agents.get_many(["a1", "a2", "nope"]).keys()
            dict_keys(['a1', 'a2'])
        """
        return {v.id: v.value for v in self._fetch(list(entity_ids), partition, consistent)}

    def get_many_versioned(
        self, entity_ids: Iterable[str], *, partition: str | None = None, consistent: bool = False
    ) -> list[Versioned[M]]:
        """Like ``get_many`` but with versions, in the order of ``entity_ids``."""
        return self._fetch(list(entity_ids), partition, consistent)

    def _fetch(self, entity_ids: Sequence[str], partition: str | None, consistent: bool = False) -> list[Versioned[M]]:
        for i in entity_ids:
            track(self.name, i)
        pairs = [(i, self.key(i, partition=partition)) for i in entity_ids]
        return self._fetch_keyed(pairs, cached=not consistent, routed=not consistent)

    @observed("get_many")
    def _fetch_keyed(self, pairs: Sequence[tuple[str, str]], *, cached: bool, routed: bool) -> list[Versioned[M]]:
        """Values of ``(id, key)`` pairs in order, absent ones left out, in pipelined chunks; ``routed``:
        reads the cache does not serve may go to a replica (``replica_reads``)."""
        self._authorize("read")
        out: list[Versioned[M]] = []
        cache = self._store._cache if cached else None
        router = self._store.replica_reads if routed else None
        for start in range(0, len(pairs), _FETCH_CHUNK):
            chunk = pairs[start : start + _FETCH_CHUNK]
            if cache is not None:
                out += fetch_many(self, cache, chunk)
                continue

            def queue(pipe: Any, chunk: Sequence[tuple[str, str]] = chunk) -> None:
                for _id, key in chunk:
                    self._queue_read(pipe, key)

            if router is None:
                pipe = self._store.client.pipeline(transaction=False)
                queue(pipe)
                replies = pipe.execute()
            else:
                replies = router.execute([key for _id, key in chunk], queue)
            for (entity_id, key), reply in zip(chunk, replies, strict=True):
                value, _raw = self._read_reply(entity_id, key, reply)
                if value is not None:
                    out.append(value)
        if out and self._audit_reads:
            key_of = dict(pairs)
            self._store.audit.reads([key_of[v.id] for v in out])
        return out

    @observed("scan")
    def _per_partition(self, command: str, key_of: Callable[[int], str], *args: Any) -> list[Any]:
        return [replies[0] for replies in read_partitions(self, [(command, key_of, args)])]

    def ids(self) -> list[str]:
        """Every id in the collection, sorted.

        Example:
            >>> _ = agents.put_many({"a2": Agent(name="coder"), "a1": Agent(name="planner")})
            >>> agents.ids()
            ['a1', 'a2']
        """
        track_members(self.name)
        return [entity_id for entity_id, _p in self._routed_ids()]

    def _routed_ids(self) -> list[tuple[str, int]]:
        replies = self._per_partition("SMEMBERS", lambda p: self._ks.ids(self.name, p))
        return sorted((m.decode(), p) for p, members in enumerate(replies) for m in members)

    def _fetch_routed(self, pairs: Sequence[tuple[str, int]]) -> list[Versioned[M]]:
        return self._fetch_keyed([(i, self._ks.entity(self.name, i, p)) for i, p in pairs], cached=False, routed=True)

    def scan_fields(self, fields: Sequence[str]) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """``(id, partition, {field: value})`` of every entity, reading only ``fields`` (pipelined
        ``HMGET`` a page at a time, past the cache): for tools that look at one field of everything.

        Raises:
            ValidationError: ``fields`` names a field the model does not have.

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> list(agents.scan_fields(["name"]))  # doctest: +ELLIPSIS
            [('a1', ..., {'name': 'planner'})]
        """
        wanted = list(fields)
        unknown = [f for f in wanted if f not in self.model.model_fields]
        if unknown or not wanted:
            raise ValidationError(
                f"{self.name}: scan_fields needs fields of {self.model.__name__}, not {unknown or wanted!r}",
                field=(unknown or [""])[0],
            )
        routed = self._routed_ids()
        for start in range(0, len(routed), _FETCH_CHUNK):
            page = routed[start : start + _FETCH_CHUNK]
            keys = [self._ks.entity(self.name, i, p) for i, p in page]
            pipe = self._store.client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, wanted)
            for (entity_id, p), key, values in zip(page, keys, pipe.execute(), strict=True):
                if any(v is not None for v in values):
                    decoded = {f: self._codec.decode_value(f, v, key) for f, v in zip(wanted, values, strict=True)}
                    yield entity_id, p, {f: v for f, v in decoded.items() if v is not None}

    def all(self, *, limit: int | None = None, offset: int = 0) -> list[M]:
        """Every entity, ordered by id (``limit``/``offset``: one page of them).

        Example:
            >>> _ = agents.put_many({"a2": Agent(name="coder"), "a1": Agent(name="planner")})
            >>> [a.name for a in agents.all()]
            ['planner', 'coder']
        """
        return [v.value for v in self.all_versioned(limit=limit, offset=offset)]

    def all_versioned(self, *, limit: int | None = None, offset: int = 0) -> list[Versioned[M]]:
        """Every entity with its version, ordered by id (``limit``/``offset``: one page of them)."""
        if limit is not None or offset:
            return Query(self, {}).offset(offset).limit(limit).versioned()
        track_members(self.name, None)
        return self._fetch_routed(self._routed_ids())

    def order_by(self, field: str, *, desc: bool = False) -> Query[M]:
        """Every entity, ordered by an indexed field (see ``Query.order_by``).

        Example:
            >>> _ = agents.put_many({"a1": Agent(name="planner", status="busy"), "a2": Agent(name="coder")})
            >>> [a.name for a in agents.order_by("status")]  # "busy" before "idle"
            ['planner', 'coder']
        """
        return Query(self, {}).order_by(field, desc=desc)

    def items(self) -> Iterator[tuple[str, M]]:
        """``(id, value)`` of every entity, ordered by id, fetched a page at a time.

        Example:
            >>> for entity_id, agent in agents.items():  # doctest: +SKIP
            ...     print(entity_id, agent.name)
        """
        routed = self._routed_ids()
        track_members(self.name, None)
        for start in range(0, len(routed), _FETCH_CHUNK):
            for v in self._fetch_routed(routed[start : start + _FETCH_CHUNK]):
                yield v.id, v.value

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def __len__(self) -> int:
        return self.count()

    def __bool__(self) -> bool:
        return True  # a collection is an object, not a container to test for emptiness

    def __contains__(self, entity_id: object) -> bool:
        if not isinstance(entity_id, str):
            return False
        if self.partition_key is None:
            return self.exists(entity_id)
        track(self.name, entity_id)
        validate_id(entity_id)
        return any(v.id == entity_id for v in self._fetch_routed([(entity_id, p) for p in range(self._ks.partitions)]))

    def count(self, **conditions: Any) -> int:
        """The number of entities, or of those matching ``conditions`` (as ``where`` takes them), from the
        ids and indexes alone (expired ones are reaped first).

        Example:
            >>> agents.count(), agents.count(load=rxstate.gt(2))  # doctest: +SKIP
            (2, 1)
        """
        if conditions:
            return self.where(**conditions).count()
        self.reap()
        track_members(self.name)
        return sum(self._per_partition("SCARD", lambda p: self._ks.ids(self.name, p)))

    def where(self, **conditions: Any) -> Query[M]:
        """Entities whose indexed fields meet the conditions, ordered by id: a plain value for equality,
        ``rxstate.gt``/``ge``/``lt``/``le``/``between`` for a range, ``rxstate.any_of`` for one of several
        values. The ``Query`` reads like a list and refines with ``order_by``, ``limit`` and ``offset``.

        Raises:
            ValidationError: a condition names a field without an index, or does not fit the field.

        Example:
            >>> _ = agents.put_many({"a1": Agent(name="planner", status="busy"), "a2": Agent(name="coder")})
            >>> [a.name for a in agents.where(status="busy")]
            ['planner']
            >>> agents.where(load=rxstate.gt(2)).order_by("load", desc=True).limit(10)  # doctest: +SKIP
        """
        if not conditions:
            raise ValidationError("where() needs at least one condition")
        return Query(self, conditions)

    def where_versioned(self, **conditions: Any) -> list[Versioned[M]]:
        """Like ``where``, with versions."""
        return self.where(**conditions).versioned()

    def reap(self) -> int:
        """Record the expiry of entities whose TTL passed (index cleanup, ``expire`` change records).

        The store runs this periodically; call it to make expiries visible at once.

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"), ttl=60)
            >>> agents.reap()  # nothing has expired yet
            0
        """
        return self._store._reap(self)
