"""``Change``: one entity change as the feed delivers it, and the helpers that order and merge them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from rxstate.core import display
from rxstate.core.redaction import change_line

if TYPE_CHECKING:
    pass


__all__ = ["ENTITY_OPS", "OFFSET_PATTERN", "REMOVALS", "Change", "coalesce_changes", "offset_key"]


ENTITY_OPS = frozenset({"create", "replace", "update", "incr", "delete", "expire"})
REMOVALS = frozenset({"delete", "expire"})
OFFSET_PATTERN = re.compile(r"^\d+(-\d+)?$")


def offset_key(offset: str) -> tuple[int, int]:
    """A stream offset (``"<ms>-<seq>"``) as a tuple that sorts like the stream does.

    Example:
        >>> offset_key("1700000000000-3") < offset_key("1700000000001-0")
        True
    """
    ms, _, seq = offset.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class Change:
    """One change of one entity, as read from its partition's change stream.

    Attributes:
        collection: the collection name.
        id: the entity id.
        op: ``create``, ``replace``, ``update``, ``incr``, ``delete`` or ``expire`` (and, from ``watch``
            and ``watch_all``, ``snapshot`` for a current value emitted first and ``leave`` for an
            entity that stopped matching ``where``).
        version: the entity's version after the change (0 after an expiry).
        fields: changed field -> new value, decoded by the collection's model when this store has the
            collection open (else the JSON-decoded value).
        actor: who made the change ("" for an expiry).
        txid: the transaction id ("" if none).
        partitions: how many partitions the transaction touched (1 without a transaction).
        timestamp_ms: server time of the change, in ms since the epoch.
        partition: the partition whose stream holds the record.
        offset: the record's stream id: offsets of one partition are totally ordered.
        schema_version: the schema version the writer used (0 for an expiry).
        value: the entity's whole value after the change, where known: ``watch``, ``watch_all`` and
            ``store.changes(values=True)`` fill it in; otherwise None.

    Example:
        >>> change = Change("agents", "a1", "update", 2, {"status": "busy"})
        >>> change.op, change.id, dict(change.fields), change.is_removal
        ('update', 'a1', {'status': 'busy'}, False)
    """

    collection: str
    id: str
    op: str
    version: int
    fields: Mapping[str, Any]
    actor: str = ""
    txid: str = ""
    partitions: int = 1
    timestamp_ms: int = 0
    partition: int = 0
    offset: str = "0-0"
    schema_version: int = 0
    value: Any = None

    def __repr__(self) -> str:
        return f"<Change {change_line(self)}>"

    def _repr_html_(self) -> str:
        return display.html(self)

    @property
    def key(self) -> tuple[str, str]:
        """``(collection, id)``: the entity this change is about."""
        return (self.collection, self.id)

    @property
    def is_removal(self) -> bool:
        """Whether the entity is gone after this change (deleted or expired)."""
        return self.op in REMOVALS

    def then(self, later: Change) -> Change:
        """This change followed by ``later`` of the same entity, folded into one.

        Example:
            >>> a = Change("agents", "a1", "create", 1, {"name": "x", "load": 0})
            >>> a.then(Change("agents", "a1", "update", 2, {"load": 3})).fields["load"]
            3
        """
        if later.op in REMOVALS or later.op in ("create", "replace", "snapshot"):
            return later
        if self.op in REMOVALS:
            return later
        op = self.op if self.op in ("create", "replace", "snapshot") else later.op
        merged = {**self.fields, **later.fields}
        return replace(later, op=op, fields=MappingProxyType(merged))


def coalesce_changes(changes: Iterable[Change]) -> list[Change]:
    """The latest change per entity (earlier ones folded in), in order of each entity's last change.

    Example:
        >>> len(coalesce_changes([Change("a", "1", "update", 1, {}), Change("a", "1", "update", 2, {})]))
        1
    """
    latest: dict[tuple[str, str], Change] = {}
    for change in changes:
        key = (change.collection, change.id)
        before = latest.pop(key, None)
        latest[key] = change if before is None else before.then(change)
    return list(latest.values())
