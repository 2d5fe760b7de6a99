"""Erasure of a data subject: their entities, change records, events and snapshots, and their key.

A model names whose personal data an entity holds with ``__subject__`` (a field, or ``"id"``: the entity
id is the subject). ``erase(store, subject, collections)`` then, in each given collection:

1. **Entities** of the subject are deleted through the one write path (so indexes, constraints, tenant
   usage, the cache of every process and the audit follow, like any delete).
2. **Change records** of those entities are removed from their partitions' change streams (they carry
   the field values of every write). The delete's own record is kept: it holds the id and no value, and
   it is how feed consumers learn that the entity is gone.
3. **Events** of the subject's aggregates (event collections whose state declares ``__subject__ = "id"``)
   go with ``lua/erase_events.lua``: the stream, its copies in the partition's event log, its version and
   its snapshot, atomically per aggregate; an event collection's projection is erased as a collection.
4. **The subject's data key is destroyed** (crypto-shredding, ``rxstate.security.subjects``): secret
   fields of the subject's entities were sealed under it, so every copy that cannot be deleted one by one
   — backups, archives, change records already read by consumers, replicas' logs — is unreadable from then
   on. (Without ``keys=``, secret fields are stored in clear and nothing is shredded: the report says so.)

What is kept, and said in the report: audit entries (a hash chain: removing entries would break it) and
the public (unencrypted) fields inside backups and archives written before the erasure. So that nothing
personal stays there, classify every personal field ``confidential`` or ``secret`` (an audit entry never
shows their values, and in backups they are sealed under the subject's key) and give the subject's
entities ids that identify no one (the audit names them by id): what is left is pseudonymous, and after
the erasure nothing links it to the person. Another process
that loaded one of the subject's aggregates keeps the state it folded in memory until it calls
``events.forget(id)`` or restarts (entity caches need nothing: the delete invalidates them everywhere).

Example:
    >>> class User(rxstate.Model):
    ...     __subject__ = "id"
    ...     name: str
    >>> users = store.collection("users", User)
    >>> _ = users.put("u-17", User(name="Ada"))
    >>> report = erase(store, "u-17", [users])
    >>> report.entities, "u-17" in users
    ({'users': ['u-17']}, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rxstate.core.errors import SchemaError, ValidationError
from rxstate.core.scripts import ScriptLibrary
from rxstate.core.writes import tenant_keys
from rxstate.events.collection import EventCollection
from rxstate.security.subjects import destroy, key_of
from rxstate.store.collection import Collection

__all__ = ["ErasureReport", "erase"]

_CHUNK = 1000


@dataclass
class ErasureReport:
    """What an erasure removed (or, in a dry run, would remove).

    Attributes:
        subject: the data subject.
        dry_run: whether nothing was changed.
        entities: collection -> ids of the subject's entities deleted.
        change_records: change records of those entities removed from the change streams.
        event_streams: event collection -> ids of the subject's aggregates whose events were removed.
        events: events removed from those streams (each also had a copy in its partition's event log).
        event_log_copies: those copies removed.
        snapshots: snapshots removed.
        key: id of the subject's data key destroyed (None: the subject had none).
        audit_entries: audit entries that name the subject's entities: kept (see ``retained``).
        retained: what is kept, and why.
    """

    subject: str
    dry_run: bool
    entities: dict[str, list[str]] = field(default_factory=dict)
    change_records: int = 0
    event_streams: dict[str, list[str]] = field(default_factory=dict)
    events: int = 0
    event_log_copies: int = 0
    snapshots: int = 0
    key: int | None = None
    audit_entries: int = 0
    retained: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The report as plain data (for ``--json`` and files)."""
        return asdict(self)


def _routing(coll: Collection[Any], value: Any) -> str | None:
    return None if coll.partition_key is None else str(getattr(value, coll.partition_key))


def _entities(store: Any, coll: Collection[Any], subject: str) -> list[tuple[str, int, str | None]]:
    """(id, partition, routing value) of each entity of ``subject`` in ``coll``."""
    field_name = coll.model.__subject__
    if field_name is None:
        raise SchemaError(
            f"collection {coll.name!r}: its model {coll.model.__name__} declares no __subject__, so erasure "
            "cannot tell whose entities are whose",
            name=coll.name,
        )
    ks = store.keyspace
    if field_name == "id" and coll.partition_key is None:
        p = ks.partition_of(subject)
        return [(subject, p, None)] if store.client.sismember(ks.ids(coll.name, p), subject) else []
    found = []
    # only the subject field and the partition key are read (not secret fields, which need keys=)
    wanted = [f for f in (field_name, coll.partition_key) if f is not None and f != "id"]
    for entity_id, p, values in coll.scan_fields(wanted):
        if (entity_id if field_name == "id" else str(values.get(field_name))) == subject:
            routing = None if coll.partition_key is None else str(values.get(coll.partition_key))
            found.append((entity_id, p, routing))
    return found


def _scan(client: Any, stream: str, targets: set[tuple[bytes, bytes]]) -> tuple[list[bytes], int]:
    """Entries of ``stream`` naming one of ``targets`` (collection, id): the ids of those to remove
    (every one but deletes) and the number of all of them."""
    removable: list[bytes] = []
    naming = 0
    start = "-"
    while True:
        page = client.xrange(stream, start, "+", count=_CHUNK)
        for entry_id, fields in page:
            if (fields.get(b"c"), fields.get(b"i")) in targets:
                naming += 1
                if fields.get(b"o") != b"delete":
                    removable.append(entry_id)
        if len(page) < _CHUNK:
            return removable, naming
        start = "(" + page[-1][0].decode()


def _purge(client: Any, stream: str, entry_ids: Sequence[bytes]) -> int:
    removed = 0
    for start in range(0, len(entry_ids), _CHUNK):
        removed += int(client.xdel(stream, *entry_ids[start : start + _CHUNK]))
    return removed


def erase(
    store: Any,
    subject: str,
    collections: Iterable[Collection[Any] | EventCollection[Any]],
    *,
    dry_run: bool = False,
) -> ErasureReport:
    """Erase the data subject ``subject`` from ``collections`` and destroy their data key.

    Args:
        store: the store the collections belong to.
        subject: the subject's identifier, as their entities hold it (``Model.__subject__``).
        collections: entity and event collections whose models declare ``__subject__``.
        dry_run: only find and count; change nothing.

    Raises:
        SchemaError: a collection's model declares no ``__subject__`` (an event collection's state must
            declare ``"id"``: the aggregate id is the subject).
        ValidationError: ``subject`` is empty, or a collection belongs to another store.
    """
    if not isinstance(subject, str) or not subject:
        raise ValidationError(f"erase needs a subject (a non-empty string), not {subject!r}", field="subject")
    client, ks = store.client, store.keyspace
    report = ErasureReport(subject=subject, dry_run=dry_run)
    entity_colls: list[Collection[Any]] = []
    event_colls: list[EventCollection[Any]] = []
    for coll in collections:
        if coll._store is not store:
            raise ValidationError(f"collection {coll.name!r} belongs to another store", field="collections")
        if isinstance(coll, EventCollection):
            if coll.state.__subject__ != "id":
                raise SchemaError(
                    f"event collection {coll.name!r}: its state {coll.state.__name__} must declare "
                    '__subject__ = "id" (the aggregate id is the subject) to be erased',
                    name=coll.name,
                )
            event_colls.append(coll)
            if coll.projection is not None and coll.projection not in entity_colls:
                entity_colls.append(coll.projection)
        elif coll not in entity_colls:
            entity_colls.append(coll)
    found = {
        coll.name: _entities(store, coll, subject) for coll in entity_colls
    }  # find everything before changing anything

    erase_events = ScriptLibrary().get("erase_events")
    for ev in event_colls:
        p = ks.partition_of(subject)
        keys = [
            ks.event_stream(ev.name, subject, p),
            ks.event_log(p),
            ks.stream_versions(ev.name, p),
            ks.snapshot(ev.name, subject, p),
            tenant_keys(ks, p)[0],
        ]
        n, copies, snaps = (int(x) for x in erase_events(client, keys, [subject, "1" if dry_run else "0"]))
        if n or snaps:
            report.event_streams.setdefault(ev.name, []).append(subject)
            report.events += n
            report.event_log_copies += copies
            report.snapshots += snaps
        if not dry_run:
            ev.forget(subject)

    targets: dict[int, set[tuple[bytes, bytes]]] = {}
    for coll in entity_colls:
        for entity_id, p, routing in found[coll.name]:
            report.entities.setdefault(coll.name, []).append(entity_id)
            targets.setdefault(p, set()).add((coll.name.encode(), entity_id.encode()))
            if not dry_run:
                coll.delete(entity_id, partition=routing)
    for p, named in sorted(targets.items()):
        removable, _ = _scan(client, ks.changes(p), named)
        report.change_records += len(removable) if dry_run else _purge(client, ks.changes(p), removable)
        report.audit_entries += _scan(client, ks.audit(p), named)[1]

    subjects = ks.subject_keys()
    if dry_run:
        report.key = key_of(client, subjects, ks.namespace, subject)
    elif store.keys is not None:
        report.key = store.keys.subjects.destroy(subject)
    else:  # a store without keys= may still erase: destroying a key needs no KEK
        report.key = destroy(client, subjects, ks.namespace, subject)
    if report.key is None and not client.exists(subjects):
        report.retained.append(
            "no secret field was sealed under a subject's key (the stores had no keys=): secret fields "
            "written in clear stay in clear in backups and archives written before now"
        )
    else:
        report.retained.append(
            "backups and archives written before now keep the subject's public fields; their secret fields "
            "were sealed under the subject's key and can no longer be read"
        )
    if event_colls:
        report.retained.append(
            "backups and archives written before now hold the subject's events as they were: event payloads "
            "are not encrypted, so delete or rewrite those files to finish the erasure"
        )
    if report.audit_entries:
        report.retained.append(
            f"{report.audit_entries} audit entries name the subject's entities by id, with field names and the "
            "values of public fields only: kept, because the audit is a hash chain that removing entries would break"
        )
    return report
