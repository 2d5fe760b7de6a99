"""The one place that builds Redis key names.

Layout (every key starts with ``rx:`` and carries the hash tag ``{<ns>:<p>}`` of its partition, so
all keys a script touches sit in one cluster slot)::

    rx:{ns:p}:<collection>:<id>        entity hash
    rx:{ns:p}:_ids:<collection>        ids of a collection in this partition (set)
    rx:{ns:p}:_idx:<collection>:<f>    secondary index on field f (zset, members "<value>\\0<id>")
    rx:{ns:p}:_exp:<collection>        expiry deadlines of entities with a TTL (zset)
    rx:{ns:p}:_ttlidx:<collection>     indexed values of entities with a TTL (hash)
    rx:{ns:p}:changes                  change stream of the partition
    rx:{ns:p}:_fences                  highest fencing token each lock has written with here (hash)
    rx:{ns:p}:_refby:<collection>      declared references to a collection: "<referrer>\\0<field>\\0<name>" (set)
    rx:{ns:p}:events                   event log of the partition (every event of every event collection)
    rx:{ns:p}:_es:<collection>:<id>    event stream of one aggregate
    rx:{ns:p}:_esv:<collection>        stream versions of a collection's aggregates (hash id -> version)
    rx:{ns:p}:_snap:<collection>:<id>  latest snapshot of one aggregate (hash, entity layout)
    rx:{ns:p}:_ckpt:<projection>       checkpoint of a projection in this partition (last event id)
    rx:{ns:p}:_probe                   probe written by the local cache's invalidation feed (expires)
    rx:{ns:p}:_tx:<txid>               decision record of a cross-partition transaction (primary partition)
    rx:{ns:p}:_txw:<txid>              a prepared transaction's writes in this partition (hash)
    rx:{ns:p}:_txi                     transactions holding intents in this partition (hash)
    rx:{ns}:meta, rx:{ns}:schemas      namespace metadata and schema registry
    rx:{ns}:_keys                      wrapped data keys of encrypted fields, the active key, re-encryption progress
    rx:{ns}:_subjects                  data keys of data subjects (erasing a subject destroys its key)
    rx:{ns}:_lock:<name>               a lock's current holder (hash, expires with the lease)
    rx:{ns}:_lockr:<name>              a read/write lock's readers and their deadlines (zset)
    rx:{ns}:_lockseq:<name>            a lock's fencing-token counter (never reset, never expires)

Locks sit in the namespace's own slot, outside every partition: their churn is nobody's cached data,
so it stays out of the partitions' invalidation feeds (which follow the prefix ``rx:{ns:``).
"""

from __future__ import annotations

import re
import zlib

from rxstate.core.errors import ValidationError

__all__ = ["Keyspace", "validate_collection_name", "validate_id", "validate_namespace"]

_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-/]{1,128}")
_COLLECTION = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,127}")
# C0 controls, DEL, C1 controls (with U+0085 NEL) and the line/paragraph separators.
_ID_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ID_MAX = 512
_RESERVED_COLLECTIONS = frozenset({"changes", "audit", "meta", "schemas", "events", "snapshots"})


def _offending(value: str, allowed: re.Pattern[str]) -> str:
    """Where ``value`` first breaks the single-character class ``allowed``: ``" (U+XXXX at position i)"``."""
    for i, ch in enumerate(value):
        if not allowed.fullmatch(ch):
            return f" (U+{ord(ch):04X} at position {i})"
    return ""


def is_cache_probe(key: str | bytes) -> bool:
    """Whether ``key`` is a local cache's probe (``...}:_probe`` or ``...}:_probe:<principal>``): a short-lived
    key that holds no state, so backups leave it out and a restore does not count it."""
    text = key.decode(errors="replace") if isinstance(key, bytes) else key
    _, _, tail = text.rpartition("}:")
    return tail == "_probe" or tail.startswith("_probe:")


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is a valid namespace name, else raise ``ValidationError``."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        where = _offending(namespace, re.compile(r"[A-Za-z0-9_.\-/]")) if isinstance(namespace, str) else ""
        raise ValidationError(
            f"invalid namespace {namespace!r}{where}: use 1-128 letters, digits, '_', '.', '-' or '/'",
            field="namespace",
        )
    return namespace


def validate_collection_name(name: str) -> str:
    """Return ``name`` if it is a valid collection name, else raise ``ValidationError``."""
    if not isinstance(name, str) or not _COLLECTION.fullmatch(name):
        where = ""
        if isinstance(name, str) and name:
            first = re.compile(r"[A-Za-z]")
            where = _offending(name[0], first) or _offending(name, re.compile(r"[A-Za-z0-9_\-]"))
        raise ValidationError(
            f"invalid collection name {name!r}{where}: start with a letter, then letters, digits, '_' or '-'",
            field="collection",
        )
    if name in _RESERVED_COLLECTIONS:
        raise ValidationError(f"collection name {name!r} is reserved", field="collection")
    return name


def validate_id(entity_id: object, what: str = "id") -> str:
    """Return ``entity_id`` if it is a valid entity id, else raise ``ValidationError``.

    Ids are 1-512 characters of any kind but control characters (C0, DEL, C1 with U+0085) and the line
    and paragraph separators U+2028/U+2029; spaces and other printable characters are allowed. Actors
    (who writes) follow the same rule (``what="actor"``).
    """
    if not isinstance(entity_id, str) or not 1 <= len(entity_id) <= _ID_MAX:
        raise ValidationError(f"invalid {what} {entity_id!r}: a string of 1-{_ID_MAX} characters", field=what)
    bad = _ID_FORBIDDEN.search(entity_id)
    if bad is not None:
        raise ValidationError(
            f"invalid {what} {entity_id!r}: control character U+{ord(bad.group()):04X} at position {bad.start()}",
            field=what,
        )
    return entity_id


class Keyspace:
    """Key names of one namespace with a fixed number of partitions.

    Example:
        >>> ks = Keyspace("crew", 16)
        >>> ks.entity("agents", "a1", ks.partition_of("a1"))
        'rx:{crew:3}:agents:a1'
    """

    __slots__ = ("_tags", "_write_keys", "namespace", "partitions")

    def __init__(self, namespace: str, partitions: int) -> None:
        self.namespace = validate_namespace(namespace)
        if not isinstance(partitions, int) or not 1 <= partitions <= 16384:
            raise ValidationError(f"partitions must be an integer in 1..16384, not {partitions!r}")
        self.partitions = partitions
        self._tags = [f"rx:{{{namespace}:{p}}}:" for p in range(partitions)]
        self._write_keys: dict[tuple[str, int, tuple[str, ...]], list[str]] = {}

    def partition_of(self, routing_value: str) -> int:
        """The partition of a routing value (an entity id, or its partition-key value)."""
        return zlib.crc32(routing_value.encode()) % self.partitions

    def prefix(self, partition: int) -> str:
        """The common prefix ``rx:{ns:p}:`` of every key in a partition."""
        return self._tags[partition]

    def entity(self, collection: str, entity_id: str, partition: int) -> str:
        return f"{self._tags[partition]}{collection}:{entity_id}"

    def ids(self, collection: str, partition: int) -> str:
        return f"{self._tags[partition]}_ids:{collection}"

    def index(self, collection: str, field: str, partition: int) -> str:
        return f"{self._tags[partition]}_idx:{collection}:{field}"

    def expiry(self, collection: str, partition: int) -> str:
        return f"{self._tags[partition]}_exp:{collection}"

    def ttl_index(self, collection: str, partition: int) -> str:
        return f"{self._tags[partition]}_ttlidx:{collection}"

    def versions(self, collection: str, partition: int) -> str:
        """Hash of the last versions of deleted entities, so a re-created entity's versions continue."""
        return f"{self._tags[partition]}_ver:{collection}"

    def write_record(self, near: str, write_id: str) -> str:
        """The record of one write call (its reply, kept a while) in the slot of the key ``near``.

        It lies outside the ``rx:`` prefix that caches track (``CLIENT TRACKING`` prefixes, keyspace
        channel patterns), so recording a reply makes no invalidation traffic.

        Example:
            >>> Keyspace("crew", 4).write_record("rx:{crew:2}:agents:a1", "w1")
            'rxw:{crew:2}:w1'
        """
        return f"rxw:{near[near.index('{') : near.index('}') + 1]}:{write_id}"

    def write_keys(self, collection: str, partition: int, indexes: tuple[str, ...]) -> list[str]:
        """The keys a write touches besides the entity: ids, expiry, ttl-index, changes, versions of deleted
        entities, indexes (memoised)."""
        memo_key = (collection, partition, indexes)
        keys = self._write_keys.get(memo_key)
        if keys is None:
            keys = [
                self.ids(collection, partition),
                self.expiry(collection, partition),
                self.ttl_index(collection, partition),
                self.changes(partition),
                self.versions(collection, partition),
                *(self.index(collection, f, partition) for f in indexes),
            ]
            self._write_keys[memo_key] = keys
        return keys

    def changes(self, partition: int) -> str:
        return f"{self._tags[partition]}changes"

    def event_stream(self, collection: str, aggregate_id: str, partition: int) -> str:
        return f"{self._tags[partition]}_es:{collection}:{aggregate_id}"

    def event_log(self, partition: int) -> str:
        return f"{self._tags[partition]}events"

    def stream_versions(self, collection: str, partition: int) -> str:
        return f"{self._tags[partition]}_esv:{collection}"

    def snapshot(self, collection: str, aggregate_id: str, partition: int) -> str:
        return f"{self._tags[partition]}_snap:{collection}:{aggregate_id}"

    def checkpoint(self, projection: str, partition: int) -> str:
        return f"{self._tags[partition]}_ckpt:{projection}"

    def tx_record(self, partition: int, txid: str) -> str:
        return f"{self._tags[partition]}_tx:{txid}"

    def tx_payload(self, partition: int, txid: str) -> str:
        return f"{self._tags[partition]}_txw:{txid}"

    def tx_index(self, partition: int) -> str:
        return f"{self._tags[partition]}_txi"

    # -- locks and constraints --------------------------------------------------------------------
    def lock(self, name: str) -> str:
        return f"rx:{{{self.namespace}}}:_lock:{name}"

    def lock_readers(self, name: str) -> str:
        return f"rx:{{{self.namespace}}}:_lockr:{name}"

    def lock_sequence(self, name: str) -> str:
        return f"rx:{{{self.namespace}}}:_lockseq:{name}"

    def audit(self, partition: int) -> str:
        """The partition's audit stream: hash-chained entries of its writes (see ``rxstate.store.audit``)."""
        return f"{self._tags[partition]}audit"

    def audit_chain(self, partition: int) -> str:
        """The head of the partition's audit chain: the last entry's hash ``h`` and number ``n``."""
        return f"{self._tags[partition]}_audit"

    def fences(self, partition: int) -> str:
        return f"{self._tags[partition]}_fences"

    def refby(self, collection: str, partition: int) -> str:
        return f"{self._tags[partition]}_refby:{collection}"

    def cache_probe(self, partition: int) -> str:
        """A short-lived key the local cache writes to check that invalidations reach it."""
        return f"{self._tags[partition]}_probe"

    def meta(self) -> str:
        return f"rx:{{{self.namespace}}}:meta"

    def schemas(self) -> str:
        return f"rx:{{{self.namespace}}}:schemas"

    def keyring(self) -> str:
        """The namespace's key ring: data keys wrapped by the key-encryption key (``rxstate.security``)."""
        return f"rx:{{{self.namespace}}}:_keys"

    def subject_keys(self) -> str:
        """The namespace's data keys of data subjects, wrapped by the KEK (``rxstate.security.subjects``)."""
        return f"rx:{{{self.namespace}}}:_subjects"

    def parse_entity(self, key: str) -> tuple[int, str, str] | None:
        """Split an entity key into (partition, collection, id); None if it is not one."""
        head = f"rx:{{{self.namespace}:"
        if not key.startswith(head):
            return None
        tag_end = key.find("}:", len(head))
        if tag_end < 0:
            return None
        try:
            partition = int(key[len(head) : tag_end])
        except ValueError:
            return None
        rest = key[tag_end + 2 :]
        collection, sep, entity_id = rest.partition(":")
        if not sep or collection.startswith("_") or not entity_id:
            return None
        return partition, collection, entity_id
