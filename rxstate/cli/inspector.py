"""Read-only inspection of a namespace without its models: what ``rxstate ls/get/where`` show.

Everything here reads raw keys through the namespace's ``Keyspace`` and decodes field values as plain
JSON, so it works in a process that has none of the application's models. Nothing here writes: no
schema registration, no transaction settling (an entity a transaction is settling shows its state
before that transaction, flagged ``pending_transaction``), no probe keys. Fields a collection
classifies secret (in its stored schema) show as ``REDACTED`` and are never decoded.

Example:
    >>> with rxstate.connect(url, namespace="crew", read_only=True) as store:  # doctest: +SKIP
    ...     Inspector(store).get("agents", "a1").version
    3
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from rxstate.api import Store
from rxstate.cli.keys import KeyInfo, classify_key, namespace_of_meta
from rxstate.cli.progress import Steps, quiet
from rxstate.core.codec import RESERVED_FIELDS, Codec, EntityMeta
from rxstate.core.errors import NotFound, ValidationError
from rxstate.core.keys import Keyspace, validate_collection_name, validate_id
from rxstate.core.redaction import REDACTED, format_ms

__all__ = ["CollectionInfo", "EntityView", "Inspector", "Usage", "list_namespaces", "scan_usage"]

SCAN_COUNT = 1000
_BATCH = 500
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw


def scan_keys(client: Any, pattern: str) -> Iterator[str]:
    """Every key matching ``pattern``, by ``SCAN`` (on every primary of a cluster)."""
    for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
        yield _text(key)


def _dbsize(client: Any) -> int | None:
    try:
        return int(client.dbsize())
    except redis.ResponseError:
        return None


def list_namespaces(client: Any, steps: Steps = quiet) -> list[str]:
    """The namespaces on a server (those with a metadata hash), sorted.

    Example:
        >>> list_namespaces(redis.Redis())  # doctest: +SKIP
        ['crew', 'default']
    """
    found = set()
    with steps("looking for namespaces", None) as tick:
        for key in scan_keys(client, "rx:{*}:meta"):
            tick(1)
            name = namespace_of_meta(key)
            if name is not None:
                found.add(name)
    return sorted(found)


@dataclass
class Usage:
    """Keys, entities (or aggregates) and memory of a part of a namespace.

    ``memory`` is the sum of ``MEMORY USAGE`` over the keys, None when the server cannot tell.
    """

    keys: int = 0
    entities: int = 0
    memory: int | None = 0

    def add(self, info: KeyInfo, nbytes: int | None) -> None:
        self.keys += 1
        self.entities += info.role in ("entity", "aggregate")
        self.memory = None if self.memory is None or nbytes is None else self.memory + nbytes


@dataclass
class NamespaceUsage:
    """What a namespace holds: totals, per collection, and per kind of key outside collections."""

    total: Usage = field(default_factory=Usage)
    collections: dict[str, Usage] = field(default_factory=dict)
    kinds: dict[str, Usage] = field(default_factory=dict)
    event_collections: set[str] = field(default_factory=set)
    registered: bool = False
    """Whether the namespace's metadata hash was seen (it exists, rather than stray keys)."""

    def add(self, info: KeyInfo, nbytes: int | None) -> None:
        self.total.add(info, nbytes)
        if info.collection is not None:
            self.collections.setdefault(info.collection, Usage()).add(info, nbytes)
            if info.role in ("aggregate", "events"):
                self.event_collections.add(info.collection)
        else:
            self.kinds.setdefault(info.role, Usage()).add(info, nbytes)


def _memory(client: Any, keys: list[str]) -> list[int | None]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key)
    return [r if isinstance(r, int) else None for r in pipe.execute(raise_on_error=False)]


def scan_usage(client: Any, namespace: str | None = None, steps: Steps = quiet) -> dict[str, NamespaceUsage]:
    """Keys and memory of every namespace (or of one), by ``SCAN`` and pipelined ``MEMORY USAGE``.

    Example:
        >>> scan_usage(redis.Redis(), "crew")["crew"].collections["agents"].entities  # doctest: +SKIP
        12
    """
    patterns = ["rx:*"] if namespace is None else [f"rx:{{{namespace}:*", f"rx:{{{namespace}}}:*"]
    out: dict[str, NamespaceUsage] = {}
    with steps("reading keys", _dbsize(client) if namespace is None else None) as tick:
        for pattern in patterns:
            batch: list[tuple[str, KeyInfo]] = []
            for key in scan_keys(client, pattern):
                info = classify_key(key)
                if info is not None and (namespace is None or info.namespace == namespace):
                    batch.append((key, info))
                if len(batch) >= _BATCH:
                    _account(client, batch, out)
                    tick(len(batch))
                    batch = []
            _account(client, batch, out)
            tick(len(batch))
    return out


def _account(client: Any, batch: list[tuple[str, KeyInfo]], out: dict[str, NamespaceUsage]) -> None:
    if not batch:
        return
    for (key, info), nbytes in zip(batch, _memory(client, [k for k, _ in batch]), strict=True):
        usage = out.setdefault(info.namespace, NamespaceUsage())
        usage.add(info, nbytes)
        usage.registered = usage.registered or namespace_of_meta(key) is not None


@dataclass
class CollectionInfo:
    """One collection of a namespace: its stored schema (entity collections) and what it holds."""

    name: str
    kind: str
    model: str | None = None
    version: int | None = None
    indexes: list[str] = field(default_factory=list)
    partition_key: str | None = None
    entities: int = 0
    keys: int = 0
    memory: int | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EntityView:
    """One stored entity as the command line shows it (secret fields redacted)."""

    collection: str
    id: str
    version: int
    schema_version: int
    writer: str
    timestamp_ms: int
    partition: int
    key: str
    value: dict[str, Any]
    offset: str = ""
    expires_ms: int | None = None
    pending_transaction: bool = False

    @property
    def time(self) -> str:
        return format_ms(self.timestamp_ms)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "time": self.time}


class Inspector:
    """Read-only views of one namespace of a (read-only) store.

    Example:
        >>> Inspector(store).where("tasks", {"state": "open"})  # doctest: +SKIP
    """

    def __init__(self, store: Store, steps: Steps = quiet) -> None:
        self.store = store
        self.client = store.client
        self.keyspace: Keyspace = store.keyspace
        self.steps = steps
        self._schemas: dict[str, dict[str, Any]] | None = None

    @property
    def namespace(self) -> str:
        return self.keyspace.namespace

    # -- schemas and collections ------------------------------------------------------------------
    def schemas(self) -> dict[str, dict[str, Any]]:
        """The registered entity collections and their stored schemas, by name."""
        if self._schemas is None:
            raw = self.client.hgetall(self.keyspace.schemas())
            self._schemas = {_text(k): json.loads(v) for k, v in sorted(raw.items())}
        return self._schemas

    def event_collections(self) -> list[str]:
        """Names of the namespace's event collections (those with stored event streams)."""
        found = set()
        for key in scan_keys(self.client, f"rx:{{{self.namespace}:*}}:_esv:*"):
            info = classify_key(key)
            if info is not None and info.namespace == self.namespace and info.collection:
                found.add(info.collection)
        return sorted(found)

    def kind(self, collection: str) -> str:
        """``"entities"`` or ``"events"``.

        Raises:
            NotFound: the namespace has no such collection (the message lists the ones it has).
        """
        validate_collection_name(collection)
        if collection in self.schemas():
            return "entities"
        pipe = self.client.pipeline(transaction=False)
        for p in range(self.keyspace.partitions):
            pipe.exists(self.keyspace.stream_versions(collection, p))
        if any(pipe.execute()):
            return "events"
        have = sorted({*self.schemas(), *self.event_collections()})
        raise NotFound(
            f"namespace {self.namespace!r} has no collection {collection!r} (collections: {', '.join(have) or 'none'})",
            key=self.keyspace.schemas(),
        )

    def collections(self, usage: NamespaceUsage | None = None) -> list[CollectionInfo]:
        """Every collection with its schema, entity (or aggregate) count, keys and memory."""
        usage = (
            usage
            if usage is not None
            else scan_usage(self.client, self.namespace, self.steps).get(self.namespace, NamespaceUsage())
        )
        out = []
        for name in sorted({*self.schemas(), *usage.collections}):
            schema = self.schemas().get(name)
            used = usage.collections.get(name, Usage())
            info = CollectionInfo(name, "entities" if schema is not None else "events", keys=used.keys)
            info.entities, info.memory = used.entities, used.memory
            if schema is not None:
                info.model, info.version = schema.get("model"), schema.get("version")
                info.indexes, info.partition_key = list(schema.get("indexes", [])), schema.get("partition_key")
            out.append(info)
        return out

    def secrets(self, collection: str) -> frozenset[str]:
        return frozenset(self.schemas().get(collection, {}).get("secrets", ()))

    # -- entities ---------------------------------------------------------------------------------
    def _entity_collection(self, collection: str) -> dict[str, Any]:
        if self.kind(collection) != "entities":
            raise ValidationError(
                f"{collection!r} is an event collection: its state is the fold of its events "
                f"(see `rxstate history {collection} ID`)"
            )
        return self.schemas()[collection]

    def locate(self, collection: str, entity_id: str) -> int | None:
        """The partition holding an entity: by its id, or (for a collection routed by a field) the
        partition whose id set lists it; None when no partition does."""
        validate_id(entity_id)
        if not self.schemas().get(collection, {}).get("partition_key"):
            return self.keyspace.partition_of(entity_id)
        pipe = self.client.pipeline(transaction=False)
        for p in range(self.keyspace.partitions):
            pipe.sismember(self.keyspace.ids(collection, p), entity_id)
        return next((p for p, member in enumerate(pipe.execute()) if member), None)

    def view(self, collection: str, entity_id: str, partition: int, raw: Mapping[bytes, bytes]) -> EntityView:
        """An ``EntityView`` of a raw entity hash."""
        meta = EntityMeta.from_hash(raw)
        secrets = self.secrets(collection)
        value: dict[str, Any] = {}
        for name_b, stored in raw.items():
            if name_b in RESERVED_FIELDS:
                continue
            name = _text(name_b)
            value[name] = REDACTED if name in secrets else Codec.plain(stored)
        expires = raw.get(b"_x")
        return EntityView(
            collection=collection,
            id=entity_id,
            version=meta.version,
            schema_version=meta.schema_version,
            writer=meta.actor,
            timestamp_ms=meta.timestamp_ms,
            partition=partition,
            key=self.keyspace.entity(collection, entity_id, partition),
            value=dict(sorted(value.items())),
            offset=meta.offset,
            expires_ms=int(expires) if expires else None,
            pending_transaction=b"_t" in raw,
        )

    def get(self, collection: str, entity_id: str) -> EntityView:
        """One entity with its version, writer and time.

        Raises:
            NotFound: no such collection, or no such entity.
        """
        self._entity_collection(collection)
        p = self.locate(collection, entity_id)
        raw = {} if p is None else self.client.hgetall(self.keyspace.entity(collection, entity_id, p))
        if not raw or b"_v" not in raw:
            where = "" if p is None else f" ({self.keyspace.entity(collection, entity_id, p)})"
            raise NotFound(f"{collection} {entity_id!r} does not exist in namespace {self.namespace!r}{where}")
        assert p is not None
        return self.view(collection, entity_id, p, raw)

    def where(self, collection: str, conditions: Mapping[str, str]) -> list[EntityView]:
        """Entities whose indexed fields hold the given values, ordered by id.

        A value is read as JSON when it parses (``load=3``, ``done=true``), else as a string
        (``status=busy``); quote it to force a string (``name='"42"'``).

        Raises:
            NotFound: no such collection.
            ValidationError: no condition, or a field without an index.
        """
        schema = self._entity_collection(collection)
        if not conditions:
            raise ValidationError("where needs at least one field=value condition")
        indexes = list(schema.get("indexes", []))
        encoded: dict[str, bytes] = {}
        for name, text in conditions.items():
            if name in self.secrets(collection) or name not in indexes:
                raise ValidationError(
                    f"{collection}.{name} has no index (indexed: {', '.join(indexes) or 'none'})", field=name
                )
            try:
                value = json.loads(text)
            except ValueError:
                value = text
            encoded[name] = _dumps(value).encode()
        matches: set[tuple[str, int]] | None = None
        ks = self.keyspace
        for name, value_b in encoded.items():
            pipe = self.client.pipeline(transaction=False)
            for p in range(ks.partitions):
                pipe.zrangebylex(ks.index(collection, name, p), b"[" + value_b + b"\x00", b"(" + value_b + b"\x01")
            found = {(_text(m[len(value_b) + 1 :]), p) for p, ms in enumerate(pipe.execute()) for m in ms}
            matches = found if matches is None else matches & found
        pairs = sorted(matches or ())
        out = []
        for start in range(0, len(pairs), _BATCH):
            chunk = pairs[start : start + _BATCH]
            pipe = self.client.pipeline(transaction=False)
            for entity_id, p in chunk:
                pipe.hgetall(ks.entity(collection, entity_id, p))
            for (entity_id, p), raw in zip(chunk, pipe.execute(), strict=True):
                # Re-checked on the value read: it may have changed since the index was read.
                if raw and all(raw.get(n.encode()) == v for n, v in encoded.items()):
                    out.append(self.view(collection, entity_id, p, raw))
        return out
