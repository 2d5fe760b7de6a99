"""A replica: one independent server taking part in coordinator-free sync, and its replicated collections.

Each partition of a replica has a sync meta hash (replica id, epoch, last sequence number, hybrid
logical clock), a version vector (origin -> highest sequence number applied) and a log stream of the
deltas it applied, its own and those it received (so gossip carries them on). A local change to a
replicated collection runs ``lua/sync_write.lua`` through the store's Writer: the HLC tick, the dot,
the CRDT merge, the entity's stored values with their version bump and change record, and the log entry
are one script call. The entity hash holds the merged values, so ``store.collection(name, Model)`` and
the change feed read a replicated collection like any other.

Keys (all in the partition's hash slot ``rx:{ns:p}:``): ``_sync:meta``, ``_sync:vv``, ``_sync:log``,
``_sync:from`` (how far this replica has read each peer's log), ``_sync:acks`` (how far each peer has
read this one's), ``_sync:quarantine``, and ``_crdt:<collection>:<id>`` (the CRDT state of each field).

Example:
    >>> replica = Replica(store, "eu")  # doctest: +SKIP
    >>> docs = replica.collection("docs", Doc)  # doctest: +SKIP
    >>> token = docs.incr("d1", "views", 2)  # doctest: +SKIP
    >>> docs.get("d1").views  # doctest: +SKIP
    2
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from rxstate.core.codec import ModelCodec
from rxstate.core.errors import SessionLagging, SyncError, ValidationError
from rxstate.core.keys import validate_collection_name, validate_id
from rxstate.core.model import Model
from rxstate.core.scripts import register_error
from rxstate.core.writes import WriteOp
from rxstate.store.store import Store
from rxstate.sync.crdt import canonical, field_types, load_state
from rxstate.sync.session import Session

__all__ = ["ReplicatedCollection", "Replica", "Resolver", "WriteToken"]

M = TypeVar("M", bound=Model)
Resolver = Callable[[str, list[Any]], Any]
"""Chooses a multi-value register's value from its siblings: ``resolver(field, siblings) -> value``."""
_REPLICA_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_POLL = 0.005

register_error("RXSYNC", lambda d: SyncError(f"{d[0]}: {' '.join(d[1:])}" if d[1:] else d[0], key=d[0]))


class WriteToken(dict[int, dict[str, int]]):
    """What a replicated write returns: partition -> {origin: sequence number} of the change (its dot),
    with ``hlc`` and ``version`` of the entity after it."""

    hlc: str = ""
    version: int = 0


def decode_vector(raw: Mapping[bytes, bytes]) -> dict[str, int]:
    """A version-vector hash as ``{origin: sequence number}``.

    Example:
        >>> decode_vector({b"a.1": b"3"})
        {'a.1': 3}
    """
    return {k.decode(): int(v) for k, v in raw.items()}


class Replica:
    """One replica: a store (its own server) with a replica id and an epoch.

    Args:
        store: the replica's store; every replica of one system uses the same namespace and partition count.
        replica_id: this replica's id (letters, digits, ``_``, ``-``), unique among the replicas.
        max_offset: seconds a remote HLC may be ahead of this server's clock before its change is
            quarantined instead of adopted.

    Raises:
        SyncError: the store is a replica under another id already.
        ValidationError: a bad id or offset.

    Example:
        >>> Replica(store, "eu").origin  # doctest: +SKIP
        'eu.1'
    """

    def __init__(self, store: Store, replica_id: str, *, max_offset: float = 0.5) -> None:
        if not isinstance(replica_id, str) or not _REPLICA_ID.match(replica_id):
            raise ValidationError(
                f"replica id must match {_REPLICA_ID.pattern}, not {replica_id!r}", field="replica_id"
            )
        if not isinstance(max_offset, (int, float)) or max_offset < 0:
            raise ValidationError(f"max_offset must be a non-negative number, not {max_offset!r}", field="max_offset")
        self.store = store
        self.replica_id = replica_id
        self.max_offset_ms = int(max_offset * 1000)
        self.partitions = store.keyspace.partitions
        client = store.client
        pipe = client.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.hsetnx(self.key(p, "meta"), "id", replica_id)
            pipe.hsetnx(self.key(p, "meta"), "epoch", 1)
        pipe.execute()
        ids = {client.hget(self.key(p, "meta"), "id") for p in range(self.partitions)}
        if ids != {replica_id.encode()}:
            found = sorted(i.decode() for i in ids if i)
            raise SyncError(
                f"namespace {store.keyspace.namespace!r} of this store is replica {found} already, not {replica_id!r}",
                key=self.key(0, "meta"),
            )

    # -- keys ---------------------------------------------------------------------------------------
    def key(self, partition: int, name: str) -> str:
        """The sync key ``name`` (meta, vv, log, from, acks, quarantine) of a partition."""
        return f"{self.store.keyspace.prefix(partition)}_sync:{name}"

    def state_key(self, collection: str, entity_id: str, partition: int) -> str:
        """The hash of an entity's CRDT states (field -> JSON ``{"k": type, "s": state}``)."""
        return f"{self.store.keyspace.prefix(partition)}_crdt:{collection}:{entity_id}"

    # -- identity -----------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The current epoch (raised by ``bump_epoch``)."""
        return int(self.store.client.hget(self.key(0, "meta"), "epoch") or 1)

    @property
    def origin(self) -> str:
        """The origin of this replica's dots: ``"<id>.<epoch>"``."""
        return f"{self.replica_id}.{self.epoch}"

    def bump_epoch(self) -> int:
        """Start a new epoch, so this replica's next changes use dots of a new origin.

        A replica whose data was restored from an old backup must never hand out a sequence number its
        peers have seen already (they would take the new change for one they applied); a sync agent
        calls this itself when a peer has seen more of this replica's origin than the replica has.

        Example:
            >>> replica.bump_epoch()  # doctest: +SKIP
            2
        """
        epoch = self.epoch + 1
        pipe = self.store.client.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.hset(self.key(p, "meta"), mapping={"epoch": epoch, "seq": 0})
        pipe.execute()
        return epoch

    def set_clock_offset(self, ms: int) -> None:
        """Add ``ms`` to this replica's physical clock (the server's TIME) in every sync script.

        For tests and demonstrations of clock skew and clock jumps only: production replicas run with
        their server's own clock.
        """
        if type(ms) is not int:
            raise ValidationError(f"the clock offset is an int of ms, not {ms!r}", field="ms")
        pipe = self.store.client.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.hset(self.key(p, "meta"), "skew", ms)
        pipe.execute()

    # -- what a replica knows ---------------------------------------------------------------------
    def version_vector(self, partition: int | None = None) -> dict[int, dict[str, int]]:
        """The version vector of each partition (or of one).

        Example:
            >>> replica.version_vector(3)  # doctest: +SKIP
            {3: {'eu.1': 12, 'us.1': 7}}
        """
        parts = range(self.partitions) if partition is None else [partition]
        pipe = self.store.client.pipeline(transaction=False)
        for p in parts:
            pipe.hgetall(self.key(p, "vv"))
        return {p: decode_vector(raw) for p, raw in zip(parts, pipe.execute(), strict=True)}

    def quarantined(self) -> dict[int, dict[str, Any]]:
        """Changes held back because their HLC was too far ahead: partition -> peer -> what was held.

        Example:
            >>> replica.quarantined()  # doctest: +SKIP
            {5: {'us': {'origin': 'us.1', 'seq': 3, 'ahead_ms': 3600004, ...}}}
        """
        pipe = self.store.client.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.hgetall(self.key(p, "quarantine"))
        out: dict[int, dict[str, Any]] = {}
        for p, raw in enumerate(pipe.execute()):
            if raw:
                out[p] = {k.decode(): json.loads(v) for k, v in raw.items()}
        return out

    def collections_in(self, partition: int) -> list[str]:
        """The replicated collections with entities in ``partition``."""
        names = self.store.client.hkeys(self.key(partition, "meta"))
        return sorted(n.decode()[5:] for n in names if n.startswith(b"coll:"))

    def states(self, partition: int) -> dict[tuple[str, str], dict[str, bytes]]:
        """Every entity's CRDT state hash in ``partition``: (collection, id) -> field -> JSON."""
        client = self.store.client
        pipe = client.pipeline(transaction=False)
        colls = self.collections_in(partition)
        for c in colls:
            pipe.smembers(self.store.keyspace.ids(c, partition))
        wanted = [(c, i.decode()) for c, ids in zip(colls, pipe.execute(), strict=True) for i in sorted(ids)]
        pipe = client.pipeline(transaction=False)
        for c, i in wanted:
            pipe.hgetall(self.state_key(c, i, partition))
        return {
            w: {k.decode(): v for k, v in raw.items()} for w, raw in zip(wanted, pipe.execute(), strict=True) if raw
        }

    def digest(self, partitions: Iterable[int] | None = None) -> dict[int, str]:
        """A hash of each partition's CRDT states: equal digests mean equal replicated data.

        Example:
            >>> a.digest() == b.digest()  # doctest: +SKIP
            True
        """
        out: dict[int, str] = {}
        for p in range(self.partitions) if partitions is None else partitions:
            h = hashlib.sha1()
            for (c, i), fields in sorted(self.states(p).items()):
                for name in sorted(fields):
                    h.update(f"{c}\0{i}\0{name}\0{canonical(fields[name])}\n".encode())
            out[p] = h.hexdigest()
        return out

    def collection(self, name: str, model: type[M], *, resolver: Resolver | None = None) -> ReplicatedCollection[M]:
        """The replicated collection ``name`` of ``model``, whose fields merge by their declared CRDT type.

        Example:
            >>> docs = replica.collection("docs", Doc)  # doctest: +SKIP
        """
        return ReplicatedCollection(self, name, model, resolver=resolver)


class ReplicatedCollection(Generic[M]):
    """A collection whose entities merge between replicas field by field (see ``rxstate.sync.crdt``).

    Writes return a ``WriteToken``; a ``Session`` given to writes and reads carries read-your-writes and
    monotonic reads from one replica to another.
    """

    def __init__(self, replica: Replica, name: str, model: type[M], *, resolver: Resolver | None = None) -> None:
        self.replica = replica
        self.name = validate_collection_name(name)
        self.model = model
        self.types = field_types(model)
        self.resolver = resolver
        """Chooses among an mvreg field's siblings on ``get``; None: the value the stored hash shows (the
        sibling whose JSON text sorts last, chosen in the script)."""
        self._codec: ModelCodec[M] = ModelCodec(
            model, replica.store.codec, uncompressed=model.model_fields, collection=name
        )

    # -- writes -------------------------------------------------------------------------------------
    def update(self, entity_id: str, *, session: Session | None = None, **values: Any) -> WriteToken:
        """Set lww and mvreg fields.

        Raises:
            ValidationError: an unknown field, a field of another CRDT type, or an invalid value.

        Example:
            >>> docs.update("d1", title="Plan")  # doctest: +SKIP
        """
        ops = []
        for name, value in values.items():
            kind = self._kind(name, ("lww", "mvreg"), "update")
            ops.append((name, kind, "set", self._encode(name, value)))
        return self._write(entity_id, ops, session)

    def incr(self, entity_id: str, field: str, amount: int = 1, *, session: Session | None = None) -> WriteToken:
        """Add ``amount`` (negative: subtract) to a counter field.

        Example:
            >>> docs.incr("d1", "views", 2)  # doctest: +SKIP
        """
        self._kind(field, ("counter",), "incr")
        if type(amount) is not int or abs(amount) > 2**53 - 1:
            raise ValidationError(f"{self.name}.{field}: amount must be an int, not {amount!r}", field=field)
        return self._write(entity_id, [(field, "counter", "incr", str(amount))], session)

    def add(self, entity_id: str, field: str, *elements: Any, session: Session | None = None) -> WriteToken:
        """Add elements to an OR-set field (an add concurrent with a remove wins).

        Example:
            >>> docs.add("d1", "tags", "draft")  # doctest: +SKIP
        """
        return self._set_op(entity_id, field, "add", elements, session)

    def remove(self, entity_id: str, field: str, *elements: Any, session: Session | None = None) -> WriteToken:
        """Remove elements (as this replica has observed them) from an OR-set field.

        Example:
            >>> docs.remove("d1", "tags", "draft")  # doctest: +SKIP
        """
        return self._set_op(entity_id, field, "remove", elements, session)

    def _set_op(
        self, entity_id: str, field: str, action: str, elements: Sequence[Any], session: Session | None
    ) -> WriteToken:
        self._kind(field, ("orset",), action)
        if not elements:
            raise ValidationError(f"{self.name}.{field}: {action} needs at least one element", field=field)
        encoded = self._encode(field, list(elements))
        texts = [json.dumps(json.loads(encoded)[i], separators=(",", ":")) for i in range(len(elements))]
        return self._write(entity_id, [(field, "orset", action, t) for t in texts], session)

    def _kind(self, field: str, allowed: tuple[str, ...], what: str) -> str:
        kind = self.types.get(field)
        if kind is None:
            raise ValidationError(f"{self.model.__name__} has no field {field!r}", field=field)
        if kind not in allowed:
            raise ValidationError(
                f"{self.model.__name__}.{field} is a {kind} field: {what} works on {'/'.join(allowed)} fields",
                field=field,
            )
        return kind

    def _encode(self, field: str, value: Any) -> str:
        ((_, raw),) = self._codec.encode_fields({field: value})
        return raw.decode()

    def _write(
        self, entity_id: str, changes: Sequence[tuple[str, str, str, str]], session: Session | None
    ) -> WriteToken:
        if not changes:
            raise ValidationError(f"{self.name}: a write needs at least one field")
        replica, store = self.replica, self.replica.store
        entity_id = validate_id(entity_id)
        p = store.keyspace.partition_of(entity_id)
        op = WriteOp("update", self.name, entity_id, p, schema_version=self.model.__version__)
        section = ["sync", len(changes)]
        for change in changes:
            section += change
        keys = [
            replica.key(p, "meta"),
            replica.key(p, "log"),
            replica.key(p, "vv"),
            replica.state_key(self.name, entity_id, p),
        ]
        all_keys, args = store.writer.pack([op], header=[(keys, section)])
        reply = store.writer.call("sync_write", all_keys, args, writes=[op])
        token = WriteToken({p: {reply[3].decode(): int(reply[4])}})
        token.hlc, token.version = reply[5].decode(), int(reply[0])
        if session is not None:
            session.observe(p, token[p])
        return token

    # -- reads --------------------------------------------------------------------------------------
    def get(self, entity_id: str, *, session: Session | None = None, wait: float = 1.0) -> M | None:
        """The entity's merged value (mvreg fields chosen by the resolver), or None.

        With a session, the replica first covers the session's token in the entity's partition (waiting
        up to ``wait`` seconds), and the session then covers what this read saw.

        Raises:
            SessionLagging: the replica did not catch up with the session within ``wait`` seconds.

        Example:
            >>> docs.get("d1", session=session)  # doctest: +SKIP
        """
        replica, store = self.replica, self.replica.store
        entity_id = validate_id(entity_id)
        p = store.keyspace.partition_of(entity_id)
        ekey = store.keyspace.entity(self.name, entity_id, p)
        mv = [f for f, k in self.types.items() if k == "mvreg"] if self.resolver is not None else []
        start = time.monotonic()
        while True:
            pipe = store.client.pipeline(transaction=True)
            pipe.hgetall(replica.key(p, "vv"))
            pipe.hgetall(ekey)
            if mv:
                pipe.hmget(replica.state_key(self.name, entity_id, p), mv)
            replies = pipe.execute()
            vector = decode_vector(replies[0])
            missing = session.missing(p, vector) if session is not None else {}
            if not missing:
                break
            waited = time.monotonic() - start
            if waited >= wait:
                raise SessionLagging(
                    f"replica {replica.replica_id!r} has not applied {missing} (origin: (needed, present)) "
                    f"of partition {p} after {waited:.2f}s",
                    partition=p,
                    missing=missing,
                    waited=waited,
                )
            time.sleep(_POLL)
        if session is not None:
            session.observe(p, vector)
        if not replies[1]:
            return None
        value, _ = self._codec.decode(replies[1], ekey)
        if not mv or self.resolver is None:
            return value
        chosen = {}
        for name, raw in zip(mv, replies[2], strict=True):
            siblings = self._siblings(raw)
            if len(siblings) > 1:
                chosen[name] = self.resolver(name, siblings)
        return self.model.model_validate(value.model_dump() | chosen) if chosen else value

    def siblings(self, entity_id: str, field: str) -> list[Any]:
        """The concurrent values of an mvreg field (one value once the writes are ordered).

        Example:
            >>> docs.siblings("d1", "owner")  # doctest: +SKIP
            ['ann', 'bob']
        """
        self._kind(field, ("mvreg",), "siblings")
        entity_id = validate_id(entity_id)
        p = self.replica.store.keyspace.partition_of(entity_id)
        return self._siblings(self.replica.store.client.hget(self.replica.state_key(self.name, entity_id, p), field))

    @staticmethod
    def _siblings(raw: bytes | None) -> list[Any]:
        if not raw:
            return []
        entries = load_state(raw)["s"].get("e", {})
        return sorted((json.loads(v) for v in entries.values()), key=lambda v: json.dumps(v, sort_keys=True))
