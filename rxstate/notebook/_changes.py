"""Reading the partition change streams (``rx:{ns:p}:changes``) for views and plots.

A change record's stream fields: ``c`` collection, ``i`` id, ``o`` op, ``v`` version, ``s`` schema
version, ``a`` actor, ``t`` server ms, ``x`` transaction id, ``n`` partitions of the transaction, then
``.<field>`` = the encoded new value of each changed field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rxstate.core.codec import Codec
from rxstate.core.redaction import change_line, known_secret_names, redact_mapping
from rxstate.feed.assembly import stored_secrets

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["ChangeRecord", "change_times", "read_changes", "secrets_by_collection"]


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One change record as stored; classified field values are wrapped in ``rxstate.Secret``.

    Attributes:
        collection: collection name.
        id: entity id.
        op: create, replace, update, incr, delete or expire.
        version: the entity's version after the change.
        fields: changed fields and their new values.
        actor: who made the change.
        timestamp_ms: server time in milliseconds.
        offset: the record's stream id (ordered within its partition).
        partition: the partition whose stream holds it.
        txid: transaction id ("" outside transactions).
    """

    collection: str
    id: str
    op: str
    version: int
    fields: dict[str, Any] = field(default_factory=dict)
    actor: str = ""
    timestamp_ms: int = 0
    offset: str = ""
    partition: int = 0
    txid: str = ""

    def __repr__(self) -> str:
        return f"<Change {change_line(self)}>"

    def _repr_html_(self) -> str:
        from ._html import changes_html

        return changes_html([self])


def secrets_by_collection(store: Store) -> dict[str, frozenset[str]]:
    """Secret field names of every collection opened on ``store`` or registered in its namespace."""
    out = stored_secrets(store)
    for name, c in store.collections.items():
        out[name] = out.get(name, frozenset()) | frozenset(c.model.__rxstate_secrets__)
    return out


def parse_record(
    offset: bytes | str, raw: Mapping[bytes, bytes], *, partition: int, secrets: Iterable[str]
) -> ChangeRecord:
    """A ``ChangeRecord`` from one stream entry, with ``secrets`` (field names) wrapped."""
    fields = {k[1:].decode(): Codec.plain(v) for k, v in raw.items() if k[:1] == b"."}
    return ChangeRecord(
        collection=raw.get(b"c", b"").decode(),
        id=raw.get(b"i", b"").decode(),
        op=raw.get(b"o", b"").decode(),
        version=int(raw.get(b"v", b"0") or 0),
        fields=redact_mapping(fields, secrets),
        actor=raw.get(b"a", b"").decode(),
        timestamp_ms=int(raw.get(b"t", b"0") or 0),
        offset=offset.decode() if isinstance(offset, bytes) else offset,
        partition=partition,
        txid=raw.get(b"x", b"").decode(),
    )


def _stream_ms(offset: bytes | str) -> int:
    text = offset.decode() if isinstance(offset, bytes) else offset
    return int(text.split("-", 1)[0])


def _per_partition(store: Store, command: str, *args: Any) -> list[Any]:
    ks = store.keyspace
    pipe = store.client.pipeline(transaction=False)
    for p in range(ks.partitions):
        pipe.execute_command(command, ks.changes(p), *args)
    return pipe.execute()  # type: ignore[no-any-return]


def read_changes(store: Store, *, count: int = 50, collection: str | None = None) -> list[ChangeRecord]:
    """The latest change records of every partition, merged, oldest first.

    Reads the last ``count`` records of each partition stream and keeps the newest ``count`` overall
    (of ``collection`` only, when given).
    """
    by_collection = secrets_by_collection(store)
    fallback = known_secret_names()
    records: list[tuple[int, int, ChangeRecord]] = []
    for p, entries in enumerate(_per_partition(store, "XREVRANGE", "+", "-", "COUNT", count)):
        for offset, raw in entries:
            name = raw.get(b"c", b"").decode()
            if collection is not None and name != collection:
                continue
            rec = parse_record(offset, raw, partition=p, secrets=by_collection.get(name, frozenset()) | fallback)
            seq = int(rec.offset.split("-", 1)[1]) if "-" in rec.offset else 0
            records.append((_stream_ms(rec.offset), seq, rec))
    records.sort(key=lambda r: (r[0], r[1], r[2].partition))
    return [r[2] for r in records[-count:]]


def change_times(
    store: Store, *, window_s: float | None = None, collection: str | None = None
) -> list[tuple[int, str, str]]:
    """(server ms, collection, op) of the change records still in the streams, oldest first.

    Args:
        store: the store whose partition streams to read.
        window_s: only records at most this many seconds older than the newest record.
        collection: only records of this collection.
    """
    start: str = "-"
    if window_s is not None:
        newest = [_stream_ms(e[0][0]) for e in _per_partition(store, "XREVRANGE", "+", "-", "COUNT", 1) if e]
        if not newest:
            return []
        start = str(max(0, max(newest) - int(window_s * 1000)))
    out: list[tuple[int, str, str]] = []
    for entries in _per_partition(store, "XRANGE", start, "+"):
        for offset, raw in entries:
            name = raw.get(b"c", b"").decode()
            if collection is None or name == collection:
                out.append((_stream_ms(offset), name, raw.get(b"o", b"").decode()))
    out.sort()
    return out
