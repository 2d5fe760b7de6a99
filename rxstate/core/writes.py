"""Entity write operations and their packing into the write-path format of ``lua/write_path.lua``.

Every mutation of an entity (put, create, update, incr, delete, the checks of a transaction) is a
``WriteOp``; a list of them runs as one script call (``mutate.lua``, or ``txn.lua`` for a step of a
two-phase commit), so all happen or none does. Building ops is pure: no I/O happens here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rxstate.core.errors import ValidationError
from rxstate.core.keys import Keyspace

__all__ = [
    "KEEP_TTL",
    "PERSIST",
    "SECTIONS",
    "HeaderSection",
    "WriteOp",
    "WriteResult",
    "pack_ops",
    "tenant_keys",
]

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
        full_unless: return the whole stored hash only if the version before the write is not this one
            (the caller holds that version's value and builds the new one itself).
        sets: (field, encoded value) pairs to write.
        incrs: (field, amount, min, max) integer increments; min/max are bounds ("" for none).
        indexes: names of the collection's indexed fields.
        fence: (lock name, fencing token, lease deadline in server ms) of a fenced write, or None.
        constraint_keys: extra KEYS of the declared integrity constraints checked by this op.
        constraint_args: the constraints section of the op's ARGV (count first; empty: none).
        audit: (principal, names of the fields whose values the audit entry may show) to audit the
            write in its partition's hash-chained audit stream, or None.
        events: the events the call appends to the op's partition (an event append's one op): for a
            tenant's store, counted against its events quota in the same check as the write.
    """

    kind: str
    collection: str
    id: str
    partition: int
    expected: int | None = None
    schema_version: int = 1
    ttl: str = KEEP_TTL
    want_full: bool = False
    full_unless: int | None = None
    sets: Sequence[tuple[str, bytes]] = ()
    incrs: Sequence[tuple[str, int, str, str]] = ()
    indexes: Sequence[str] = field(default_factory=tuple)
    fence: tuple[str, int, int] | None = None
    constraint_keys: Sequence[str] = ()
    constraint_args: Sequence[Any] = ()
    audit: tuple[str, Sequence[str]] | None = None
    events: int = 0

    def __post_init__(self) -> None:
        # Every op is built through here (collections, transactions, batches, events), so the checks of
        # what the script cannot check well exist once.
        expected = self.expected
        if expected is not None and (type(expected) is not int or expected < 0):
            raise ValidationError(
                f"expected_version must be a non-negative int or None, not {expected!r}", field="expected_version"
            )

    def pack(self, ks: Keyspace) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of this op: its "op" section, then each section of ``SECTIONS`` it needs."""
        c, p = self.collection, self.partition
        keys = [ks.entity(c, self.id, p), *ks.write_keys(c, p, ())]
        args = _op_args(self)
        for section in SECTIONS:
            section(self, ks, keys, args)
        return keys, args


def _op_args(op: WriteOp) -> list[Any]:
    return [
        "op",
        op.kind,
        op.collection,
        op.id,
        "" if op.expected is None else op.expected,
        op.schema_version,
        op.ttl,
        "1" if op.want_full else ("0" if op.full_unless is None else f"v{op.full_unless}"),
    ]


# -- sections of an op ----------------------------------------------------------------------------
# Each appends its tagged section (tag, fields) to ARGV and the keys it names to KEYS, only when the op
# needs it; lua/write_path.lua has the parser of each tag. A new stage of the write path adds one
# function here, one entry in SECTIONS, and its parser and stage function in write_path.lua.
Section = Callable[["WriteOp", Keyspace, list[str], list[Any]], None]


def _set_section(op: WriteOp, ks: Keyspace, keys: list[str], args: list[Any]) -> None:
    if op.sets:
        args += ("set", len(op.sets))
        for name, value in op.sets:
            args += (name, value)


def _incr_section(op: WriteOp, ks: Keyspace, keys: list[str], args: list[Any]) -> None:
    if op.incrs:
        args += ("incr", len(op.incrs))
        for name, amount, low, high in op.incrs:
            args += (name, amount, low, high)


def _index_section(op: WriteOp, ks: Keyspace, keys: list[str], args: list[Any]) -> None:
    if op.indexes:
        indexes = tuple(op.indexes)
        args += ("index", len(indexes), *indexes)
        keys += ks.write_keys(op.collection, op.partition, indexes)[_FIXED_KEYS:]


def _fence_section(op: WriteOp, ks: Keyspace, keys: list[str], args: list[Any]) -> None:
    if op.fence:
        args += ("fence", *op.fence)
        keys.append(ks.fences(op.partition))


def _audit_section(op: WriteOp, ks: Keyspace, keys: list[str], args: list[Any]) -> None:
    if op.audit:
        principal, shown = op.audit
        args += ("audit", principal, len(shown), *shown)
        keys += (ks.audit(op.partition), ks.audit_chain(op.partition))


def _constraint_section(op: WriteOp, ks: Keyspace, keys: list[str], args: list[Any]) -> None:
    if op.constraint_args and op.constraint_args[0]:
        args += ("cons", *op.constraint_args)
        keys += op.constraint_keys


_FIXED_KEYS = 5  # ids, expiry, ttl-index, changes, versions: the write keys before the indexes
SECTIONS: tuple[Section, ...] = (
    _set_section,
    _incr_section,
    _index_section,
    _fence_section,
    _audit_section,
    _constraint_section,
)
"""The optional sections of an op, in the order they are sent (the script accepts any order)."""


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


def tenant_keys(ks: Keyspace, partition: int) -> list[str]:
    """The tenant hash (limits, usage, costs, buckets) and entity-size hash of a tenant's partition.

    Example:
        >>> tenant_keys(Keyspace("crew/acme", 1), 0)
        ['rx:{crew/acme:0}:_tenant', 'rx:{crew/acme:0}:_tsz']
    """
    prefix = ks.prefix(partition)
    return [f"{prefix}_tenant", f"{prefix}_tsz"]


def _tenant_section(op: WriteOp, ks: Keyspace, keys: list[str], args: list[Any], principal: str) -> None:
    """The "tenant" section: the write of a tenant store is checked against the tenant's limits and counted."""
    args += ("tenant", principal, op.events)
    keys += tenant_keys(ks, op.partition)


HeaderSection = tuple[Sequence[str], Sequence[Any]]
"""A tagged section of the whole call (its KEYS, its ARGV starting with its tag), e.g. txn.lua's "txn"."""


def pack_ops(
    ks: Keyspace,
    ops: Sequence[WriteOp],
    *,
    actor: str,
    txid: str,
    maxlen: int,
    nparts: int | None = None,
    header: Sequence[HeaderSection] = (),
    tenant: str | None = None,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of one write-path call (``mutate.lua``, ``txn.lua``) running ``ops``.

    The format (``lua/write_path.lua`` documents it in full): the header (actor, transaction id,
    change stream MAXLEN, partitions touched), the header sections, then per op its "op" section and
    the tagged sections it needs (``SECTIONS``). ``nparts`` (default: the partitions of ``ops``) is
    recorded in change records as the number of partitions the transaction touched. ``tenant`` (the
    principal writing, for a tenant store) adds each op's "tenant" section.

    Example:
        >>> keys, args = pack_ops(Keyspace("demo", 4), [WriteOp("update", "agents", "a1", 0, sets=[("load", b"2")])],
        ...                       actor="", txid="", maxlen=1000)
        >>> args[4:]
        ['op', 'update', 'agents', 'a1', '', 1, '-', '0', 'set', 1, 'load', b'2']
        >>> len(keys)
        6
    """
    if nparts is None:
        nparts = len({op.partition for op in ops})
    keys: list[str] = []
    args: list[Any] = [actor, txid, maxlen, nparts]
    for section_keys, section_args in header:
        keys += section_keys
        args += section_args
    for op in ops:
        op_keys, op_args = op.pack(ks)
        if tenant is not None:
            _tenant_section(op, ks, op_keys, op_args, tenant)
        keys += op_keys
        args += op_args
    return keys, args
