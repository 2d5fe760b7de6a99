"""Online migrations: rewrite stored entities through their model's upcasters; build indexes live.

``migrate`` walks a collection partition by partition (``SSCAN`` of its ids, so it can stop and resume
from a cursor) and rewrites every entity stored under an older schema version with the current one:
it reads the entity (the read upcasts it), then writes it back with ``put`` and
``expected_version``, through the one write path (change record, audit entry, indexes, constraints).
A writer that changed the entity meanwhile makes the write a conflict; the entity is read again and,
if still old, migrated again. It throttles to a rate, reports progress, and a dry run only reads:
it reports what would change and which entities fail to upcast or validate.

``build_index`` makes an index complete while writers keep writing: the collection (opened with the
index, which registers it in the schema registry) maintains it for every write from then on, and
``lua/index_fill.lua`` adds, a batch at a time and atomically per batch, the current value of every
other entity, then sweeps out members whose entity no longer holds their value (what a rebuild of a
damaged index needs).

Example:
    >>> report = migrate(store.collection("agents", Agent))  # doctest: +SKIP
    >>> report.migrated, report.cursor  # doctest: +SKIP
    (1200, None)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from rxstate.core.errors import ConflictError, MigrationError, NotFound, RxStateError, SchemaError
from rxstate.core.model import Model
from rxstate.core.scripts import ScriptLibrary
from rxstate.core.writes import PERSIST
from rxstate.store.collection import Collection

__all__ = ["IndexReport", "MigrationReport", "build_index", "downcaster", "migrate", "rollback"]

_DOWNCAST_MARK = "__rxstate_downcast_from__"

Progress = Callable[[int, int], None]
"""Called with (partitions done, partitions in all)."""


@dataclass
class MigrationReport:
    """What a migration did (or, in a dry run, would do).

    Attributes:
        collection: the collection.
        to_version: the model's schema version.
        scanned: entities looked at.
        migrated: entities rewritten (dry run: that would be).
        by_version: stored schema version -> entities found at it that needed migrating.
        retried: rewrites retried after a concurrent write.
        failed: (id, error message) of entities that do not upcast or validate; left as they are.
        cursor: where to resume (``migrate(..., cursor=...)``) if it stopped early, else None.
        dry_run: whether nothing was written.
    """

    collection: str
    to_version: int
    scanned: int = 0
    migrated: int = 0
    by_version: Counter[int] = field(default_factory=Counter)
    retried: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    cursor: str | None = None
    dry_run: bool = False


def _parse_cursor(collection: str, cursor: str | None, partitions: int) -> tuple[int, int]:
    if cursor is None:
        return 0, 0
    p, sep, c = cursor.partition(":")
    if not sep or not p.isdigit() or not c.isdigit() or int(p) >= partitions:
        raise MigrationError(
            f"cursor {cursor!r} is not one of a migration of {collection!r} (expected '<partition>:<cursor>' "
            f"with a partition below {partitions})",
            collection=collection,
            reason="cursor",
        )
    return int(p), int(c)


class _Throttle:
    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = time.monotonic()

    def __call__(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self.next > now:
            time.sleep(self.next - now)  # a deliberate pace, not a wait for a condition
        self.next = max(self.next, now) + self.interval


def migrate(
    collection: Collection[Any],
    *,
    dry_run: bool = False,
    batch: int = 200,
    rate: float | None = None,
    cursor: str | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
) -> MigrationReport:
    """Rewrite every entity of ``collection`` stored under an older schema version with the current one.

    Args:
        collection: the collection, opened with the current model.
        dry_run: only read and report.
        batch: ids read per round trip.
        rate: the most entities rewritten per second (None: no limit).
        cursor: resume where an earlier run stopped (its report's ``cursor``).
        limit: stop after this many entities scanned (the report's ``cursor`` resumes).
        progress: called with (partitions done, partitions) as it goes.

    Raises:
        MigrationError: a ``cursor`` that is not one of a migration (``reason="cursor"``).

    Example:
        >>> migrate(agents, dry_run=True).by_version  # doctest: +SKIP
        Counter({1: 120})
    """
    store = collection._store
    ks = store.keyspace
    model = collection.model
    report = MigrationReport(collection.name, model.__version__, dry_run=dry_run)
    start_p, sscan = _parse_cursor(collection.name, cursor, ks.partitions)
    throttle = _Throttle(rate)
    for p in range(start_p, ks.partitions):
        ids_key = ks.ids(collection.name, p)
        while True:
            sscan, page = store.client.sscan(ids_key, sscan, count=batch)
            ids = sorted(m.decode() for m in page)
            for entity_id in ids:
                _migrate_one(collection, entity_id, p, report, throttle)
            report.scanned += len(ids)
            if sscan == 0:
                break
            if limit is not None and report.scanned >= limit:
                report.cursor = f"{p}:{sscan}"
                return report
        sscan = 0
        if progress is not None:
            progress(p + 1, ks.partitions)
        if limit is not None and report.scanned >= limit and p + 1 < ks.partitions:
            report.cursor = f"{p + 1}:0"
            return report
    return report


def _migrate_one(
    collection: Collection[Any], entity_id: str, p: int, report: MigrationReport, throttle: _Throttle
) -> None:
    key = collection._store.keyspace.entity(collection.name, entity_id, p)
    version = collection.model.__version__
    for attempt in range(10):
        raw = collection._store.client.hmget(key, "_v", "_sv", "_x")
        if raw[0] is None:
            return  # deleted (or expired) since the ids were read
        stored_sv = int(raw[1] or 1)
        if stored_sv >= version:
            return
        try:
            current = collection._decode(entity_id, collection._store.client.hgetall(key), key, checked=False)
        except RxStateError as exc:
            report.failed.append((entity_id, str(exc)))
            return
        if attempt == 0:
            report.by_version[stored_sv] += 1
        if report.dry_run:
            report.migrated += 1
            return
        throttle()
        left = _ms_left(collection, raw[2])
        if left is not None and left <= 0:
            return  # expired: the reaper records it
        ttl = None if left is None else timedelta(milliseconds=left)
        try:
            collection.put(entity_id, current.value, expected_version=current.version, ttl=ttl)
        except ConflictError:
            report.retried += 1
            continue
        except NotFound:
            return
        report.migrated += 1
        return
    report.failed.append((entity_id, "written concurrently 10 times in a row; run the migration again"))


def _ms_left(collection: Collection[Any], deadline: bytes | None) -> int | None:
    """How long an entity with the ``_x`` deadline has left (None: it does not expire). A replacing write
    sets it again: a put replaces the hash, and with it the expiry."""
    if deadline is None:
        return None
    seconds, micros = collection._store.client.time()
    return int(deadline) - (int(seconds) * 1000 + int(micros) // 1000)


@dataclass
class IndexReport:
    """What ``build_index`` did: members added for entities, stale members removed."""

    collection: str
    field: str
    added: int = 0
    removed: int = 0


def build_index(collection: Collection[Any], field: str, *, batch: int = 500) -> IndexReport:
    """Make the index of ``field`` complete (added or rebuilt) while writers keep writing.

    The collection must be opened with ``field`` among its ``indexes``: from then on its writes maintain
    the index, and this fills in every other entity, then removes members no entity holds.

    Raises:
        MigrationError: ``field`` is not one of the collection's indexes (``reason="index"``).

    Example:
        >>> build_index(store.collection("agents", Agent, indexes=["team"]), "team").added  # doctest: +SKIP
        1200
    """
    if field not in collection.indexes:
        raise MigrationError(
            f"{collection.name!r} is not opened with an index on {field!r} (indexes={list(collection.indexes)}): "
            "open it with the index first, so that writes maintain it while it is built",
            collection=collection.name,
            reason="index",
        )
    store = collection._store
    ks = store.keyspace
    script = ScriptLibrary().get("index_fill")
    report = IndexReport(collection.name, field)
    for p in range(ks.partitions):
        index = ks.index(collection.name, field, p)
        cursor = 0
        while True:
            cursor, page = store.client.sscan(ks.ids(collection.name, p), cursor, count=batch)
            ids = [m.decode() for m in page]
            if ids:
                keys = [index, *(ks.entity(collection.name, i, p) for i in ids)]
                report.added += int(script(store.client, keys, ["fill", field, *ids]))
            if cursor == 0:
                break
        low = b"-"
        while True:
            members = store.client.zrangebylex(index, low, b"+", start=0, num=batch)
            if not members:
                break
            owners = [m[m.rindex(b"\0") + 1 :].decode() if b"\0" in m else "" for m in members]
            keys = [index, *(ks.entity(collection.name, o or "-", p) for o in owners)]
            report.removed += int(script(store.client, keys, ["sweep", field, *members]))
            low = b"(" + members[-1]
    return report


def downcaster(from_version: int) -> Callable[[Callable[[dict[str, Any]], dict[str, Any]]], Any]:
    """Mark a model's function that turns stored data of ``from_version`` back into ``from_version - 1``:
    the inverse of ``upcaster(from_version - 1)``, which lets ``rollback`` undo a migration.

    Example:
        >>> class Doc(Model):
        ...     __version__ = 2
        ...     name: str
        ...     @downcaster(2)
        ...     def _to_v1(data: dict) -> dict:
        ...         return {"title": data.pop("name"), **data}
        >>> sorted(_downcasters(Doc))
        [2]
    """
    if not isinstance(from_version, int) or from_version < 2:
        raise SchemaError(
            f"downcaster version must be an integer of at least 2, not {from_version!r}", name="downcaster"
        )

    def mark(fn: Any) -> Any:
        inner = fn.__func__ if isinstance(fn, staticmethod) else fn
        setattr(inner, _DOWNCAST_MARK, from_version)
        return staticmethod(inner)

    return mark


def _downcasters(model: type[Model]) -> dict[int, Callable[[dict[str, Any]], dict[str, Any]]]:
    found: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
    for klass in reversed(model.__mro__):
        for value in vars(klass).values():
            fn = value.__func__ if isinstance(value, staticmethod) else value
            step = getattr(fn, _DOWNCAST_MARK, None)
            if step is not None:
                found[step] = fn
    return found


def rollback(collection: Collection[Any], *, to_version: int | None = None, batch: int = 200) -> MigrationReport:
    """Rewrite ``collection``'s entities back to ``to_version`` (default: the previous schema version),
    through the model's downcasters, so that code of that version reads them again.

    Each entity is written through the write path with compare-and-set; the current code still reads
    the rolled-back data (through its upcasters). Run it once the newer code no longer writes.

    Raises:
        MigrationError: a version in the way has no downcaster (``reason="no-inverse"``), or
            ``to_version`` is not below the model's version (``reason="version"``).
    """
    model = collection.model
    target = model.__version__ - 1 if to_version is None else to_version
    if not 1 <= target < model.__version__:
        raise MigrationError(
            f"cannot roll {collection.name!r} back to v{target}: the model is v{model.__version__}",
            collection=collection.name,
            version=target,
            reason="version",
        )
    inverses = _downcasters(model)
    missing = [v for v in range(model.__version__, target, -1) if v not in inverses]
    if missing:
        raise MigrationError(
            f"{model.__name__} has no downcaster({missing[0]}): its upcaster({missing[0] - 1}) has no inverse",
            collection=collection.name,
            version=missing[0],
            reason="no-inverse",
        )
    store = collection._store
    ks = store.keyspace
    codec = collection._codec
    report = MigrationReport(collection.name, target)
    for p in range(ks.partitions):
        cursor = 0
        while True:
            cursor, page = store.client.sscan(ks.ids(collection.name, p), cursor, count=batch)
            for raw_id in sorted(page):
                entity_id = raw_id.decode()
                key = ks.entity(collection.name, entity_id, p)
                report.scanned += 1
                meta = store.client.hmget(key, "_v", "_sv", "_x")
                if meta[0] is None or int(meta[1] or 1) <= target:
                    continue
                current = collection._decode(entity_id, store.client.hgetall(key), key, checked=False)
                data = current.value.__pydantic_serializer__.to_python(current.value, mode="json")
                for name in codec._secrets:
                    data[name] = codec._reveal(name, getattr(current.value, name))
                for step in range(model.__version__, target, -1):
                    data = inverses[step](dict(data))
                left = _ms_left(collection, meta[2])
                if left is not None and left <= 0:
                    continue  # expired: the reaper records it
                ttl = PERSIST if left is None else str(left)
                op = collection._op("put", entity_id, p, expected=current.version, ttl=ttl, sets=codec._pack_all(data))
                op.schema_version = target
                try:
                    store.writer.mutate([op])
                except ConflictError:
                    report.failed.append((entity_id, "written concurrently; run the rollback again"))
                    continue
                report.by_version[int(meta[1] or 1)] += 1
                report.migrated += 1
            if cursor == 0:
                break
    return report
