"""The single write path: entity operations, packed for ``mutate.lua`` and run atomically.

Every mutation (put, create, update, incr, delete; later transactions, events, fenced writes) is a
``WriteOp``; a list of them runs as one script call, so all happen or none does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rxstate.core.errors import ValidationError
from rxstate.core.keys import Keyspace

__all__ = ["KEEP_TTL", "PERSIST", "WriteOp", "WriteResult", "pack_ops"]

KEEP_TTL = "-"
PERSIST = "0"


@dataclass(slots=True)
class WriteOp:
    """One entity operation.

    Attributes:
        kind: "put", "create", "update", "incr", "delete", or "check" (verify `expected`, write nothing).
        collection: collection name.
        id: entity id.
        partition: the entity's partition.
        expected: expected current version (0 = must not exist), or None for no check.
        schema_version: the model's schema version, stored as ``_sv``.
        ttl: ``KEEP_TTL``, ``PERSIST`` or a number of milliseconds as a string.
        want_full: return the whole stored hash after the write.
        sets: (field, encoded value) pairs to write.
        incrs: (field, amount, min, max) integer increments; min/max are bounds ("" for none).
        indexes: names of the collection's indexed fields.
        fence: (lock name, fencing token, lease deadline in server ms) of a fenced write, or None.
        constraint_keys: extra KEYS of the declared integrity constraints checked by this op.
        constraint_args: the constraints section of the op's ARGV (count first; empty: none).
    """

    kind: str
    collection: str
    id: str
    partition: int
    expected: int | None = None
    schema_version: int = 1
    ttl: str = KEEP_TTL
    want_full: bool = False
    sets: Sequence[tuple[str, bytes]] = ()
    incrs: Sequence[tuple[str, int, str, str]] = ()
    indexes: Sequence[str] = field(default_factory=tuple)
    fence: tuple[str, int, int] | None = None
    constraint_keys: Sequence[str] = ()
    constraint_args: Sequence[Any] = ()

    def __post_init__(self) -> None:
        # Every op is built through here (collections, transactions, batches, events), so the checks of
        # what the script cannot check well exist once.
        expected = self.expected
        if expected is not None and (type(expected) is not int or expected < 0):
            raise ValidationError(
                f"expected_version must be a non-negative int or None, not {expected!r}", field="expected_version"
            )

    def keys(self, ks: Keyspace) -> list[str]:
        p, c = self.partition, self.collection
        return [
            ks.entity(c, self.id, p),
            *ks.write_keys(c, p, tuple(self.indexes)),
            *((ks.fences(p),) if self.fence else ()),
            *self.constraint_keys,
        ]

    def args(self) -> list[Any]:
        out: list[Any] = [
            self.kind,
            self.collection,
            self.id,
            "" if self.expected is None else self.expected,
            self.schema_version,
            self.ttl,
            "1" if self.want_full else "0",
            len(self.sets),
        ]
        for name, value in self.sets:
            out += (name, value)
        out.append(len(self.incrs))
        for name, amount, low, high in self.incrs:
            out += (name, amount, low, high)
        out.append(len(self.indexes))
        out += self.indexes
        out += ("1", *self.fence) if self.fence else ("0",)
        out += self.constraint_args or (0,)
        return out


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What the script reports for one operation."""

    version: int
    offset: str
    timestamp_ms: int
    full: dict[bytes, bytes]

    @classmethod
    def from_reply(cls, reply: Sequence[Any]) -> WriteResult:
        flat = reply[3]
        offset = reply[1]
        return cls(
            version=int(reply[0]),
            offset=offset.decode() if isinstance(offset, bytes) else str(offset),
            timestamp_ms=int(reply[2]),
            full=dict(zip(flat[::2], flat[1::2], strict=True)),
        )


def pack_ops(
    ks: Keyspace, ops: Sequence[WriteOp], *, actor: str, txid: str, maxlen: int, nparts: int | None = None
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of one ``mutate.lua`` call running ``ops``.

    ``nparts`` (default: the partitions of ``ops``) is recorded in change records as the number of
    partitions the transaction touched.
    """
    keys: list[str] = []
    if nparts is None:
        nparts = len({op.partition for op in ops})
    args: list[Any] = [actor, txid, maxlen, len(ops), nparts]
    for op in ops:
        keys += op.keys(ks)
        args += op.args()
    return keys, args
