"""A tamper-evident audit trail: every write's entry, hash-chained per partition, and its verification.

When a namespace audits (``rxstate.connect(..., audit=True)`` turns it on for good; every store of the
namespace then audits), each write appends an entry to its partition's audit stream
``rx:{ns:p}:audit`` **in the same script call as the write** (the ``audit`` stage of
``lua/write_path.lua``): principal, action, collection, id, version, changed field names (values only
for unclassified fields), outcome, server time, transaction id, change record id, and a sequence
number. Each entry's hash ``h`` is ``sha1hex(previous h .. canonical text of the entry)``, the first
entry's previous hash being the stream's key, so the entries of a partition form a chain whose head
(last hash and count) is kept in ``rx:{ns:p}:_audit``. Denied operations and reads of classified data
are recorded with ``Audit.record`` (``lua/audit.lua``), in the same chain.

``Audit.verify`` recomputes every chain and reports the first entry that was modified, inserted,
deleted or reordered, with its position, and a tail that was cut off (against the chain head). The
chain is written by the server; a client that may write the audit keys directly (a principal that may
write, since ACL cannot limit writes to scripts, or the server's administrator) can rebuild a whole
chain and its head consistently. Against those, anchor the chain outside the server: keep
``Audit.heads()`` somewhere they cannot write (a log, another system), and ``verify(anchors=...)`` then
also reports a chain that no longer holds an anchored entry (``rewritten``).

Auditing needs ``redis.sha1hex`` in Lua: a real Redis or Valkey server (fakeredis has none).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis

from rxstate.core.errors import ServerError, ValidationError

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["AUDIT_FLAG", "Audit", "AuditEntry", "AuditProblem", "AuditReport", "shown_fields"]

_CHUNK = 1000
AUDIT_FLAG = "audit"
"""The field of the namespace metadata hash that turns auditing on ("1")."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry of an audit stream.

    Attributes:
        partition: the partition whose stream holds it.
        id: its stream id.
        seq: its number in the partition's chain (from 1).
        principal: who acted (the store's actor or principal).
        action: ``create``, ``replace``, ``update``, ``incr``, ``delete``, or a recorded action (``read``, ...).
        collection: the collection.
        entity_id: the entity's id.
        version: the entity's version after the write (None for recorded entries).
        outcome: ``ok`` or ``denied``.
        time_ms: server time of the entry (ms since the epoch).
        txid: the transaction id, or "".
        change_id: the id of the write's change record, or "".
        fields: names of the changed fields.
        values: the changed values of unclassified fields (stored encoding).
        detail: why, for a recorded entry (e.g. the rule that denied it).
    """

    partition: int
    id: str
    seq: int
    principal: str
    action: str
    collection: str
    entity_id: str
    version: int | None
    outcome: str
    time_ms: int
    txid: str
    change_id: str
    fields: tuple[str, ...]
    values: Mapping[str, bytes] = field(default_factory=dict)
    detail: str = ""

    @property
    def time(self) -> datetime:
        """``time_ms`` as a local datetime."""
        return datetime.fromtimestamp(self.time_ms / 1000).astimezone()


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """The first place where a partition's audit chain does not hold.

    Attributes:
        partition: the partition.
        position: the 0-based position in the stream of the first entry found wrong (or, for a cut
            tail, the number of entries left).
        entry_id: that entry's stream id ("" for a cut tail).
        kind: ``modified`` (its fields no longer hash to its recorded hash), ``deleted`` (entries are
            missing before it), ``inserted`` (it does not belong to the chain where it sits, or follows
            the recorded head), ``reordered`` (it is out of sequence), ``truncated`` (the last
            entries are gone), or ``rewritten`` (the chain no longer holds an anchored entry).
        detail: what was found, in words.
    """

    partition: int
    position: int
    entry_id: str
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The result of ``Audit.verify``.

    Attributes:
        entries: how many entries were checked.
        problems: the first problem of each partition whose chain does not hold (empty: all hold).
    """

    entries: int
    problems: tuple[AuditProblem, ...]

    @property
    def ok(self) -> bool:
        """Whether every chain holds."""
        return not self.problems


def _token(value: bytes) -> bytes:
    return b"\x01%d:%s" % (len(value), value) if b"\x00" in value else value


def _link(previous: bytes, fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The hash of an entry, as ``lua/write_path.lua``'s audit_entry computes it."""
    tokens = [previous]
    for name, value in fields:
        tokens += (_token(name), _token(value))
    return hashlib.sha1(b"\x00".join(tokens)).hexdigest().encode()


class Audit:
    """The audit trail of one store's namespace (``store.audit``); see the module docstring."""

    def __init__(self, store: Store, *, enable: bool = False, stored: bool = False) -> None:
        """``enable``: turn auditing on for the namespace; ``stored``: whether its metadata says it is on."""
        self._store = store
        if enable or stored:
            self._check_server()
        if enable and not stored and not store.read_only:
            store.client.hset(store.keyspace.meta(), AUDIT_FLAG, "1")
            stored = True
        self.enabled: bool = stored
        """Whether this namespace audits its writes."""

    def _check_server(self) -> None:
        try:
            ok = self._store.client.eval("return redis.sha1hex('') == 'da39a3ee5e6b4b0d3255bfef95601890afd80709'", 0)
        except redis.RedisError as exc:  # the server has no redis.sha1hex (fakeredis)
            raise ServerError(
                f"auditing needs a real Redis or Valkey server (Lua redis.sha1hex); this one cannot: {exc}"
            ) from exc
        if ok != 1:
            raise ServerError("auditing needs a server whose Lua redis.sha1hex works; this one's does not")

    def subject(self, shown: Sequence[str]) -> tuple[str, Sequence[str]] | None:
        """The audit part of a write op: (principal, fields whose values may be shown), or None."""
        return (self._store.actor, tuple(shown)) if self.enabled else None

    def record(self, action: str, collection: str, entity_id: str, *, outcome: str, detail: str = "") -> str:
        """Append an entry no write carries (a denied operation, a read of classified data); its stream id.

        Raises:
            ValidationError: the namespace does not audit.
        """
        if not self.enabled:
            raise ValidationError(f"namespace {self._store.namespace!r} does not audit: connect with audit=True")
        ks = self._store.keyspace
        p = ks.partition_of(entity_id)
        args = [self._store.actor, action, collection, entity_id, outcome, detail]
        reply = self._store.writer.call("audit", [ks.audit(p), ks.audit_chain(p)], args, settle=False)
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def reads(self, keys: Sequence[str]) -> None:
        """Record reads of classified data: one entry per entity key read, pipelined in one round trip."""
        ks, actor = self._store.keyspace, self._store.actor
        calls: list[tuple[str, Sequence[Any], Sequence[Any]]] = []
        for key in keys:
            parsed = ks.parse_entity(key)
            if parsed is not None:
                p, collection, entity_id = parsed
                calls.append(
                    ("audit", [ks.audit(p), ks.audit_chain(p)], [actor, "read", collection, entity_id, "ok", ""])
                )
        for reply in self._store.writer.call_many(calls) if calls else ():
            if isinstance(reply, BaseException):
                raise reply

    # -- reading ------------------------------------------------------------------------------------
    def _raw(self, partition: int) -> Iterator[tuple[str, list[tuple[bytes, bytes]]]]:
        """Every entry of a partition's stream, in order, with its fields in stored order."""
        client, key = self._store.client, self._store.keyspace.audit(partition)
        start = "-"
        while True:
            batch = client.xrange(key, min=start, max="+", count=_CHUNK)
            for entry_id, fields in batch:
                yield entry_id.decode(), list(fields.items())
            if len(batch) < _CHUNK:
                return
            last = batch[-1][0].decode()
            ms, seq = last.split("-")
            start = f"{ms}-{int(seq) + 1}"

    def query(
        self,
        *,
        principal: str | None = None,
        collection: str | None = None,
        entity_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[AuditEntry]:
        """The entries matching every given filter, oldest first within each partition.

        Example:
            >>> store.audit.query(principal="agent:billing", collection="invoices")  # doctest: +SKIP
            [AuditEntry(partition=3, ..., action='create', ...)]
        """
        low = since.timestamp() * 1000 if since is not None else None
        high = until.timestamp() * 1000 if until is not None else None
        out: list[AuditEntry] = []
        ks = self._store.keyspace
        parts = [ks.partition_of(entity_id)] if entity_id is not None else range(ks.partitions)
        for p in parts:
            for entry_id, fields in self._raw(p):
                e = _entry(p, entry_id, dict(fields))
                if (
                    (principal is None or e.principal == principal)
                    and (collection is None or e.collection == collection)
                    and (entity_id is None or e.entity_id == entity_id)
                    and (low is None or e.time_ms >= low)
                    and (high is None or e.time_ms <= high)
                ):
                    out.append(e)
        return out

    # -- verification -------------------------------------------------------------------------------
    def heads(self) -> dict[int, tuple[int, str]]:
        """Each partition's chain head: (number of entries, hash of the last one); partitions without
        entries are left out. Keep them outside the server to anchor the chains (``verify(anchors=)``).

        Example:
            >>> store.audit.heads()  # doctest: +SKIP
            {3: (12, '5f1c...')}
        """
        ks = self._store.keyspace
        pipe = self._store.client.pipeline(transaction=False)
        for p in range(ks.partitions):
            pipe.hmget(ks.audit_chain(p), "n", "h")
        return {p: (int(n), h.decode()) for p, (n, h) in enumerate(pipe.execute()) if n is not None and h is not None}

    def verify(self, *, anchors: Mapping[int, tuple[int, str]] | None = None) -> AuditReport:
        """Recompute every partition's chain; the first problem of each, if any.

        Args:
            anchors: chain heads taken earlier with ``heads()`` and kept elsewhere: each partition's
                chain must still hold that entry with that hash.

        Example:
            >>> store.audit.verify().ok  # doctest: +SKIP
            True
        """
        ks = self._store.keyspace
        checked = 0
        problems: list[AuditProblem] = []
        for p in range(ks.partitions):
            n, problem = self._verify_partition(p, (anchors or {}).get(p))
            checked += n
            if problem is not None:
                problems.append(problem)
        return AuditReport(entries=checked, problems=tuple(problems))

    def _verify_partition(self, p: int, anchor: tuple[int, str] | None) -> tuple[int, AuditProblem | None]:
        ks = self._store.keyspace
        entries = list(self._raw(p))
        if anchor is not None:
            seq, digest = anchor
            held = next((e for e in entries if _seq(e) == seq), None)
            if held is None or dict(held[1]).get(b"h", b"").decode() != digest:
                where = f"entry {seq} is gone" if held is None else f"entry {seq} now has another hash"
                pos = entries.index(held) if held is not None else min(seq - 1, len(entries))
                entry_id = held[0] if held is not None else ""
                return len(entries), AuditProblem(p, pos, entry_id, "rewritten", f"{where} than anchored")
        previous = ks.audit(p).encode()
        expected_seq = 1
        for pos, (entry_id, fields) in enumerate(entries):
            body = [(k, v) for k, v in fields if k != b"h"]
            recorded = dict(fields).get(b"h", b"")
            seq = int(dict(body).get(b"s", b"0"))
            if seq > expected_seq:
                if any(_seq(later) == expected_seq for later in entries[pos + 1 :]):
                    detail = f"entry number {seq} where {expected_seq} belongs, which comes later"
                    return pos, AuditProblem(p, pos, entry_id, "reordered", detail)
                missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
                return pos, AuditProblem(p, pos, entry_id, "deleted", f"entries {missing} are missing before it")
            if seq < expected_seq:
                kind = "inserted" if _link(previous, body) != recorded else "reordered"
                return pos, AuditProblem(p, pos, entry_id, kind, f"entry number {seq} where {expected_seq} belongs")
            if _link(previous, body) != recorded:
                follows = pos + 1 < len(entries) and _follows(recorded, entries[pos + 1])
                kind = "modified" if follows else "inserted"
                what = (
                    "its fields do not hash to its recorded hash"
                    if follows
                    else "it does not link to the entry before it"
                )
                return pos, AuditProblem(p, pos, entry_id, kind, what)
            previous = recorded
            expected_seq += 1
        head = self._store.client.hmget(ks.audit_chain(p), "h", "n")
        head_hash, head_n = head[0] or b"", int(head[1] or 0)
        count = len(entries)
        if head_n > count or (head_n == count and head_n and head_hash != previous):
            return count, AuditProblem(
                p, count, "", "truncated", f"the chain head records {head_n} entries; {count} are left"
            )
        if head_n < count:
            first = entries[head_n][0]
            return count, AuditProblem(p, head_n, first, "inserted", f"entries after the recorded head ({head_n})")
        return count, None


def _seq(entry: tuple[str, list[tuple[bytes, bytes]]]) -> int:
    return int(dict(entry[1]).get(b"s", b"0"))


def _follows(recorded: bytes, nxt: tuple[str, list[tuple[bytes, bytes]]]) -> bool:
    """Whether the next entry links to ``recorded`` (so that hash is genuine, and the entry's fields changed)."""
    fields = nxt[1]
    body = [(k, v) for k, v in fields if k != b"h"]
    return _link(recorded, body) == dict(fields).get(b"h")


def _entry(partition: int, entry_id: str, f: Mapping[bytes, bytes]) -> AuditEntry:
    def text(name: bytes) -> str:
        return f.get(name, b"").decode()

    version = text(b"v")
    return AuditEntry(
        partition=partition,
        id=entry_id,
        seq=int(text(b"s") or 0),
        principal=text(b"p"),
        action=text(b"a"),
        collection=text(b"c"),
        entity_id=text(b"i"),
        version=int(version) if version else None,
        outcome=text(b"o") or "ok",
        time_ms=int(text(b"t") or 0),
        txid=text(b"x"),
        change_id=text(b"k"),
        fields=tuple(n for n in text(b"f").split(",") if n),
        values={k[1:].decode(): v for k, v in f.items() if k.startswith(b".")},
        detail=text(b"d"),
    )


def shown_fields(model: Any) -> tuple[str, ...]:
    """The fields of ``model`` whose values an audit entry may show: all but its secret (classified) ones."""
    secrets = getattr(model, "__rxstate_secrets__", {})
    return tuple(name for name in model.model_fields if name not in secrets)
