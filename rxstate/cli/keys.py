"""What a raw ``rx:`` key is: its namespace, partition, collection and role (for listings and memory).

The layout is the one ``rxstate.core.keys`` builds (see there); this module only reads names back.

Example:
    >>> classify_key("rx:{crew:3}:agents:a1")
    KeyInfo(namespace='crew', partition=3, collection='agents', role='entity')
    >>> classify_key("rx:{crew:3}:_idx:agents:status").role
    'index'
    >>> classify_key("rx:{crew}:_lock:printer").role
    'lock'
"""

from __future__ import annotations

from dataclasses import dataclass

from rxstate.core.errors import ValidationError
from rxstate.core.keys import validate_namespace

__all__ = ["KeyInfo", "classify_key", "namespace_of_meta"]

# Per-collection keys of a partition (``rx:{ns:p}:_<kind>:<collection>...``) and the role they play.
_COLLECTION_KEYS = {
    "ids": "index",
    "idx": "index",
    "exp": "index",
    "ttlidx": "index",
    "ver": "index",
    "refby": "index",
    "esv": "events",
    "es": "aggregate",
    "snap": "events",
}
_PARTITION_KEYS = {"changes": "changes", "events": "event-log", "audit": "audit"}


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key's place in the layout.

    Attributes:
        namespace: the namespace it belongs to.
        partition: its partition, or None for the namespace's own keys (meta, schemas, locks).
        collection: the collection it belongs to, if any.
        role: ``entity``, ``aggregate`` (an aggregate's event stream), ``index`` (ids, indexes, expiry
            bookkeeping), ``events`` (stream versions, snapshots), ``changes``, ``event-log``, ``audit``,
            ``lock``, ``meta`` or ``internal`` (transactions, fences, checkpoints, probes).
    """

    namespace: str
    partition: int | None
    collection: str | None
    role: str


def classify_key(key: str) -> KeyInfo | None:
    """The ``KeyInfo`` of an rxstate key, or None if ``key`` is not one."""
    if not key.startswith("rx:{"):
        return None
    end = key.find("}:", 4)
    if end < 0:
        return None
    tag, rest = key[4:end], key[end + 2 :]
    namespace, sep, part = tag.rpartition(":")
    if not sep:
        namespace = tag
    if not _valid_namespace(namespace):
        return None
    if not sep:
        role = "lock" if rest.startswith(("_lock:", "_lockr:", "_lockseq:")) else "meta"
        return KeyInfo(namespace, None, None, role)
    if not part.isdigit():
        return None
    partition = int(part)
    if rest in _PARTITION_KEYS:
        return KeyInfo(namespace, partition, None, _PARTITION_KEYS[rest])
    if rest.startswith("_"):
        kind, _, tail = rest[1:].partition(":")
        if kind in _COLLECTION_KEYS and tail:
            return KeyInfo(namespace, partition, tail.split(":", 1)[0], _COLLECTION_KEYS[kind])
        return KeyInfo(namespace, partition, None, "internal")
    collection, sep, entity_id = rest.partition(":")
    if not sep or not entity_id:
        return KeyInfo(namespace, partition, None, "internal")
    return KeyInfo(namespace, partition, collection, "entity")


def namespace_of_meta(key: str) -> str | None:
    """The namespace whose metadata hash ``key`` is (``rx:{<ns>}:meta``), or None."""
    if key.startswith("rx:{") and key.endswith("}:meta"):
        namespace = key[4:-6]
        if _valid_namespace(namespace):
            return namespace
    return None


def _valid_namespace(name: str) -> bool:
    try:
        validate_namespace(name)
    except ValidationError:
        return False
    return True
