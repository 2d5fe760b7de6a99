"""How the commands print: ``rich`` tables and lines for people, JSON for programs.

User data is always passed to ``rich`` as ``Text`` (never as markup), so a value such as ``[red]`` prints
as it is.

Example:
    >>> print_json({"a": 1})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pydantic
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rxstate.cli.history import Why, plain_fields
from rxstate.cli.inspector import CollectionInfo, EntityView, NamespaceUsage
from rxstate.cli.serverinfo import LockView
from rxstate.core.redaction import REDACTED, format_ms, redact_mapping, short
from rxstate.events.types import RecordedEvent
from rxstate.feed.change import Change
from rxstate.store.audit import AuditReport

__all__ = [
    "change_json",
    "change_text",
    "event_json",
    "print_json",
    "print_json_line",
    "show_collections",
    "show_entities",
    "show_entity",
    "show_history",
    "show_info",
    "show_locks",
    "show_namespaces",
    "show_stats",
    "show_why",
    "why_json",
]


def _default(value: Any) -> Any:
    if isinstance(value, pydantic.Secret):
        return REDACTED
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (secrets redacted)."""
    sys.stdout.write(json.dumps(data, indent=2, default=_default, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_json_line(data: Any) -> None:
    """``data`` as one line of JSON on stdout (JSON Lines, for streams of records)."""
    sys.stdout.write(json.dumps(data, default=_default, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "n/a"
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{nbytes} B"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, justify="right" if column in ("entities", "keys", "memory", "version") else "left")
    return table


def _row(table: Table, *cells: Any) -> None:
    table.add_row(*(Text("" if c is None else str(c)) for c in cells))


def _fields(data: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={short(v, 40)}" for k, v in redact_mapping(data).items())


def show_namespaces(console: Console, names: Sequence[str], usage: Mapping[str, NamespaceUsage]) -> None:
    table = _table("namespaces", "namespace", "collections", "entities", "keys", "memory")
    for name in names:
        used = usage.get(name, NamespaceUsage())
        _row(table, name, len(used.collections), used.total.entities, used.total.keys, _size(used.total.memory))
    console.print(table)


def show_collections(console: Console, namespace: str, infos: Iterable[CollectionInfo], usage: NamespaceUsage) -> None:
    table = _table(f"collections of {namespace!r}", "collection", "kind", "model", "indexes", "entities", "memory")
    for c in infos:
        model = f"{c.model} v{c.version}" if c.model else ""
        _row(table, c.name, c.kind, model, ", ".join(c.indexes), c.entities, _size(c.memory))
    console.print(table)
    others = ", ".join(f"{kind} {u.keys} keys / {_size(u.memory)}" for kind, u in sorted(usage.kinds.items()))
    console.print(
        Text(f"total {usage.total.keys} keys, {_size(usage.total.memory)}" + (f" ({others})" if others else ""))
    )


def show_info(console: Console, data: Mapping[str, Any]) -> None:
    title = f"namespace {data['namespace']!r}: {data['partitions']} partitions"
    table = _table(title, "collection", "model", "version", "indexes", "partition key", "fields", "secrets")
    for name, schema in data["collections"].items():
        _row(
            table,
            name,
            schema.get("model"),
            schema.get("version"),
            ", ".join(schema.get("indexes", [])),
            schema.get("partition_key"),
            ", ".join(schema.get("fields", [])),
            ", ".join(schema.get("secrets", [])),
        )
    console.print(table)


def show_entity(console: Console, view: EntityView) -> None:
    table = Table(show_header=False, show_edge=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    head = [
        ("entity", f"{view.collection}/{view.id}"),
        ("version", str(view.version)),
        ("writer", view.writer),
        ("time", view.time),
        ("schema", f"v{view.schema_version}"),
        ("key", view.key),
    ]
    if view.expires_ms:
        head.append(("expires", format_ms(view.expires_ms)))
    if view.pending_transaction:
        head.append(("pending", "a transaction is settling this entity; shown as before it"))
    for name, value in head:
        table.add_row(Text(name), Text(value))
    for name, value in view.value.items():
        table.add_row(Text(f"  .{name}"), Text(json.dumps(value, ensure_ascii=False, default=_default)))
    console.print(table)


def show_entities(console: Console, title: str, views: Sequence[EntityView]) -> None:
    table = _table(title, "id", "version", "writer", "time", "value")
    for v in views:
        _row(table, v.id, v.version, v.writer, v.time, _fields(v.value))
    console.print(table)
    console.print(Text(f"{len(views)} match(es)"))


def change_json(change: Change) -> dict[str, Any]:
    """A change record as JSON-ready data."""
    return {
        "collection": change.collection,
        "id": change.id,
        "op": change.op,
        "version": change.version,
        "fields": plain_fields(change.fields),
        "actor": change.actor,
        "txid": change.txid,
        "partitions": change.partitions,
        "timestamp_ms": change.timestamp_ms,
        "time": format_ms(change.timestamp_ms),
        "partition": change.partition,
        "offset": change.offset,
    }


def change_text(change: Change) -> Text:
    """One line for a change record."""
    line = Text(format_ms(change.timestamp_ms)[11:] + " ", style="dim")
    line.append(f"{change.collection}/{change.id}", style="bold")
    line.append(f" {change.op} v{change.version}", style="red" if change.is_removal else "green")
    line.append(f" by {change.actor or '(server)'}")
    if change.txid:
        line.append(f" tx {change.txid[:8]}", style="dim")
    if change.fields:
        line.append(": " + _fields(change.fields))
    return line


def event_json(event: RecordedEvent) -> dict[str, Any]:
    """An event as JSON-ready data."""
    return {
        "collection": event.collection,
        "id": event.aggregate_id,
        "version": event.version,
        "type": event.type,
        "schema_version": event.schema_version,
        "data": plain_fields(redact_mapping(event.data())),
        "event_id": event.event_id,
        "actor": event.actor,
        "causation_id": event.causation_id,
        "correlation_id": event.correlation_id,
        "timestamp_ms": event.timestamp_ms,
        "time": format_ms(event.timestamp_ms),
        "position": event.position,
    }


def _event_text(event: RecordedEvent) -> Text:
    line = Text(format_ms(event.timestamp_ms) + " ", style="dim")
    line.append(f"#{event.version} {event.type}", style="bold")
    line.append(f" by {event.actor}")
    if event.causation_id:
        line.append(f" <- {event.causation_id}", style="dim")
    return line.append(": " + _fields(event.data()))


def show_history(console: Console, items: Sequence[Change] | Sequence[RecordedEvent]) -> None:
    for item in items:
        if isinstance(item, Change):
            console.print(Text(format_ms(item.timestamp_ms)[:11]).append(change_text(item)))
        else:
            console.print(_event_text(item))
    console.print(Text(f"{len(items)} record(s)", style="dim"))


def show_why(console: Console, why: Why) -> None:
    last = why.last
    about = f"{why.collection}/{why.id}" + (f".{why.field_name}" if why.field_name else "")
    if why.current is None:
        console.print(Text(f"{about} does not exist now"))
    else:
        console.print(
            Text(f"{about} is at version {why.current.version}, written by {why.current.writer} at {why.current.time}")
        )
    if last is None:
        console.print(Text("the change feed no longer holds the record of that change (trimmed)"))
        return
    if isinstance(last, Change):
        console.print(Text("last changed by: ").append(change_text(last)))
        if last.txid:
            console.print(Text(f"in transaction {last.txid} across {last.partitions} partition(s), with:"))
            for other in why.transaction or ():
                console.print(Text("  ").append(change_text(other)))
            if not why.transaction:
                console.print(Text("  (no other records)"))
        return
    console.print(Text("last event: ").append(_event_text(last)))
    for cause in why.causes:
        text = (
            cause
            if isinstance(cause, str)
            else f"{cause.collection}/{cause.aggregate_id}#{cause.version} {cause.type} by {cause.actor}"
        )
        console.print(Text(f"  caused by {text}"))


def why_json(why: Why) -> dict[str, Any]:
    last = why.last
    return {
        "collection": why.collection,
        "id": why.id,
        "kind": why.kind,
        "field": why.field_name,
        "current": None if why.current is None else why.current.as_json(),
        "last": None if last is None else change_json(last) if isinstance(last, Change) else event_json(last),
        "transaction": [change_json(c) for c in why.transaction],
        "causes": [c if isinstance(c, str) else event_json(c) for c in why.causes],
    }


def show_stats(console: Console, data: Mapping[str, Any]) -> None:
    server, clients, streams, memory = data["server"], data["clients"], data["streams"], data["memory"]
    table = Table(show_header=False, show_edge=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    version = server.get("valkey_version") or server.get("redis_version") or server.get("unavailable", "?")
    rows = [
        ("namespace", data["namespace"]),
        (
            "server",
            f"{version}, up {server.get('uptime_in_seconds', '?')} s, {server.get('used_memory_human', '?')} used",
        ),
        ("clients", f"{clients.get('connected', 'n/a')} connected"),
        (
            "caches",
            f"{clients.get('caches', 'n/a')} local caches follow this namespace "
            f"({_modes(clients.get('caches_by_mode', {}))}); server keyspace hits "
            f"{server.get('keyspace_hits', 'n/a')}, misses {server.get('keyspace_misses', 'n/a')}",
        ),
        (
            "streams",
            f"{streams['records']} change records in {streams['partitions']} partitions "
            f"(longest {streams['longest']}), {streams['events']} events",
        ),
        ("memory", f"{memory['keys']} keys, {_size(memory['bytes'])}"),
    ]
    for group, g in sorted(streams["groups"].items()):
        rows.append(("group", f"{group}: {g['consumers']} consumer(s), {g['pending']} pending, lag {g['lag']}"))
    for name, value in rows:
        table.add_row(Text(name), Text(value))
    console.print(table)


def _modes(modes: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {m}" for m, n in modes.items() if n) or "none"


def show_locks(console: Console, held: Sequence[LockView]) -> None:
    table = _table("held locks", "lock", "mode", "token", "holder", "expires in", "tokens issued")
    for lock in held:
        holder = lock.owner if lock.mode == "exclusive" else f"{len(lock.readers)} reader(s)"
        _row(table, lock.name, lock.mode, lock.token, holder, f"{lock.expires_in_ms / 1000:.1f} s", lock.tokens_issued)
    console.print(table)
    console.print(Text(f"{len(held)} lock(s) held"))


def show_audit_report(console: Console, namespace: str, report: AuditReport) -> None:
    """The result of ``rxstate audit verify``: a line when every chain holds, else a table of problems."""
    if report.ok:
        console.print(Text(f"audit of {namespace!r}: {report.entries} entries, every chain holds"))
        return
    table = _table(
        f"audit of {namespace!r}: {len(report.problems)} broken chain(s)",
        "partition",
        "position",
        "entry",
        "kind",
        "detail",
    )
    for p in report.problems:
        _row(table, p.partition, p.position, p.entry_id or "-", p.kind, p.detail)
    console.print(table)
