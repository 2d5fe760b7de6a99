"""Point-in-time recovery: a restored backup, brought forward by replaying a change archive.

``recover`` restores a backup (``rxstate.admin.restore``, with expiries held back), then replays the
archived entries (``rxstate.admin.archive``) written after it, up to a time or a stream offset:

- change records through ``lua/replay.lua``, which sets what the write path set for each one (values,
  versions, ``_ts``/``_by``/``_o``, ids, indexes, versions of deleted ids, TTL bookkeeping) and appends
  the record under its original id, so the replayed change stream, the entities' ``_o`` and their
  versions are those of the original;
- audit entries, appended as they were (their hash chain is the original's, so ``audit verify`` passes
  when the namespace is restored under its own name), with the chain head set to the last one;
- events, to the partition's event log and to their aggregate's stream under the same id, with the
  aggregate's stream version.

Where to start is read from the restored streams themselves (what each holds last), so a replay that
stopped can simply be run again: it goes on where it stopped. The cut is by stream id: an entry is
replayed when its id's time is at most ``until_ms`` (ids are server milliseconds), or when its id is at
most ``until_offset``. Not replayed, for no stream records them: aggregate snapshots (``_snap``, a
cache that a later snapshot rewrites), projection checkpoints, and two-phase transactions still in
their prepared state at the cut.

Example:
    >>> report = recover(client, "crew.rxb", "crew.changes", until_ms=1764690000000)  # doctest: +SKIP
    >>> report.replayed["changes"]  # doctest: +SKIP
    1830
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rxstate.admin.archive import ArchivedEntry, read_archive
from rxstate.admin.backup import raw
from rxstate.admin.restore import RestoreReport, deferred_key, restore
from rxstate.core.errors import ValidationError
from rxstate.core.keys import Keyspace
from rxstate.core.scripts import ScriptLibrary
from rxstate.feed.change import OFFSET_PATTERN, offset_key

__all__ = ["RecoveryReport", "recover", "replay"]

_BATCH = 200


@dataclass(frozen=True)
class RecoveryReport:
    """What a recovery did: the restore, then how many entries of each stream it replayed."""

    restore: RestoreReport | None
    replayed: dict[str, int] = field(default_factory=dict)
    until_ms: int | None = None
    until_offset: str | None = None


def recover(
    client: Any,
    backup_path: str | os.PathLike[str],
    archive_path: str | os.PathLike[str],
    *,
    namespace: str | None = None,
    until_ms: int | None = None,
    until_offset: str | None = None,
) -> RecoveryReport:
    """Restore ``backup_path`` into ``namespace`` (default: its own), then replay ``archive_path`` up to the cut.

    With neither ``until_ms`` nor ``until_offset`` the whole archive is replayed.

    Raises:
        BackupError: the backup fails its checks, the target is not empty, or the archive is malformed.
        ValidationError: a malformed ``until_offset``.
    """
    _check_cut(until_offset)
    restored = restore(client, backup_path, namespace=namespace, keep_expiry=False)
    counts = replay(
        client,
        restored.namespace,
        archive_path,
        partitions=restored.manifest.partitions,
        until_ms=until_ms,
        until_offset=until_offset,
    )
    return RecoveryReport(restored, counts, until_ms, until_offset)


def _check_cut(until_offset: str | None) -> None:
    if until_offset is not None and not OFFSET_PATTERN.match(until_offset):
        raise ValidationError(
            f"until_offset {until_offset!r} is not a stream id like 1700000000000-0", field="until_offset"
        )


def replay(
    client: Any,
    namespace: str,
    archive_path: str | os.PathLike[str],
    *,
    partitions: int,
    until_ms: int | None = None,
    until_offset: str | None = None,
) -> dict[str, int]:
    """Replay the archive's entries newer than what ``namespace``'s streams hold, up to the cut; then set
    the deadlines a ``keep_expiry=False`` restore held back. Returns the number replayed per stream.

    Example:
        >>> replay(client, "crew", "crew.changes", partitions=16)  # doctest: +SKIP
        {'changes': 12, 'audit': 0, 'events': 3}
    """
    _check_cut(until_offset)
    ks = Keyspace(namespace, partitions)
    schemas = {k.decode(): json.loads(v) for k, v in client.hgetall(ks.schemas()).items()}
    cut = offset_key(until_offset) if until_offset is not None else None
    starts = _starts(client, ks)
    todo: dict[tuple[int, str], list[ArchivedEntry]] = defaultdict(list)
    for entry in read_archive(archive_path):
        if entry.partition >= partitions:
            continue
        start = starts[(entry.partition, entry.stream)]
        if start is not None and offset_key(entry.id) <= start:
            continue
        if until_ms is not None and entry.ms > until_ms:
            continue
        if cut is not None and offset_key(entry.id) > cut:
            continue
        todo[(entry.partition, entry.stream)].append(entry)
    counts = {"changes": 0, "audit": 0, "events": 0}
    script = ScriptLibrary().get("replay")
    for (p, stream), entries in sorted(todo.items()):
        if stream == "changes":
            for first in range(0, len(entries), _BATCH):
                batch = entries[first : first + _BATCH]
                counts["changes"] += int(script(client, *_replay_call(ks, p, schemas, batch)))
        elif stream == "audit":
            counts["audit"] += _append_audit(client, ks, p, entries)
        elif stream == "events":
            counts["events"] += _append_events(client, ks, p, entries)
    _set_deadlines(client, ks)
    return counts


def _starts(client: Any, ks: Keyspace) -> dict[tuple[int, str], tuple[int, int] | None]:
    """Per partition stream: the id of the last entry it holds (None: empty)."""
    names = {"changes": ks.changes, "audit": ks.audit, "events": ks.event_log}
    pipe = client.pipeline(transaction=False)
    order = [(p, s) for p in range(ks.partitions) for s in names]
    for p, s in order:
        pipe.xrevrange(names[s](p), "+", "-", count=1)
    return {
        ps: (offset_key(last[0][0].decode()) if last else None) for ps, last in zip(order, pipe.execute(), strict=True)
    }


def _fields(entry: ArchivedEntry) -> dict[str, str]:
    f = entry.fields
    return {f[i]: f[i + 1] for i in range(0, len(f), 2)}


def _replay_call(
    ks: Keyspace, p: int, schemas: dict[str, Any], entries: Sequence[ArchivedEntry]
) -> tuple[list[Any], list[Any]]:
    keys: list[Any] = [ks.changes(p)]
    args: list[Any] = []
    for entry in entries:
        rec = _fields(entry)
        coll, entity_id = rec.get("c", ""), raw(rec.get("i", "")).decode()
        indexes = list(schemas.get(coll, {}).get("indexes", ()))
        keys += [
            ks.entity(coll, entity_id, p),
            ks.ids(coll, p),
            ks.versions(coll, p),
            ks.expiry(coll, p),
            ks.ttl_index(coll, p),
            *(ks.index(coll, f, p) for f in indexes),
        ]
        args += [entry.id, len(entry.fields) // 2, *(raw(x) for x in entry.fields), len(indexes), *indexes]
    return keys, args


def _append_audit(client: Any, ks: Keyspace, p: int, entries: Iterable[ArchivedEntry]) -> int:
    pipe = client.pipeline(transaction=False)
    n = 0
    last: dict[str, str] = {}
    for entry in entries:
        pipe.xadd(ks.audit(p), _mapping(entry), id=entry.id)
        last = _fields(entry)
        n += 1
    if n:
        pipe.hset(ks.audit_chain(p), mapping={"h": raw(last["h"]), "n": raw(last["s"])})
    pipe.execute()
    return n


def _append_events(client: Any, ks: Keyspace, p: int, entries: Iterable[ArchivedEntry]) -> int:
    pipe = client.pipeline(transaction=False)
    n = 0
    for entry in entries:
        rec = _fields(entry)
        coll, aggregate = rec["g"], raw(rec["i"]).decode()
        pipe.xadd(ks.event_log(p), _mapping(entry), id=entry.id)
        own = {raw(k): raw(rec[k]) for k in ("y", "s", "d", "m")}
        pipe.xadd(ks.event_stream(coll, aggregate, p), own, id=entry.id)
        pipe.hincrby(ks.stream_versions(coll, p), aggregate, 1)
        n += 1
    pipe.execute()
    return n


def _mapping(entry: ArchivedEntry) -> dict[bytes, bytes]:
    f = entry.fields
    return {raw(f[i]): raw(f[i + 1]) for i in range(0, len(f), 2)}


def _set_deadlines(client: Any, ks: Keyspace) -> None:
    """Give keys their deadlines back: entities from their ``_x`` field (which the replay kept exact),
    other keys from what the restore held back."""
    for p in range(-1, ks.partitions):
        held = deferred_key(ks.namespace, p)
        pending = {k: int(v) for k, v in client.hgetall(held).items()}
        pipe = client.pipeline(transaction=False)
        for key, deadline in pending.items():
            if ks.parse_entity(key.decode()) is None:
                pipe.pexpireat(key, deadline)
        pipe.delete(held)
        pipe.execute()
    for p in range(ks.partitions):
        for collection in _expiring_collections(client, ks, p):
            ids = [m.decode() for m in client.zrange(ks.expiry(collection, p), 0, -1)]
            pipe = client.pipeline(transaction=False)
            for entity_id in ids:
                pipe.hget(ks.entity(collection, entity_id, p), "_x")
            deadlines = pipe.execute()
            pipe = client.pipeline(transaction=False)
            for entity_id, x in zip(ids, deadlines, strict=True):
                if x is not None:
                    pipe.pexpireat(ks.entity(collection, entity_id, p), int(x))
            pipe.execute()


def _expiring_collections(client: Any, ks: Keyspace, p: int) -> list[str]:
    schemas = client.hkeys(ks.schemas())
    return [name.decode() for name in schemas if client.exists(ks.expiry(name.decode(), p))]
