"""Consistent logical backups of a namespace: one compressed file with a manifest and checksums.

A namespace's keys fall into groups that each sit in one hash slot: every partition
(``rx:{ns:p}:*``: entities, ids, indexes, change stream, event log and streams, snapshots, audit) and
the namespace's own keys (``rx:{ns}:*``: metadata, schema registry, key ring, lock counters). Each group
is read **atomically** by ``lua/freeze.lua``, which COPYs the group's keys to frozen twins in one script
call; the twins are then read in bounded chunks (``HSCAN``, ``ZRANGE``, ``XRANGE`` ... ``COUNT``) while
writers go on, and deleted. Why a copy and not a script returning the keys' ``DUMP``s: one script reply
would hold the whole partition (unbounded, and a ``DUMP`` payload is tied to the server's RDB version,
so a Redis 7.0 server refuses a Valkey 8 one); a replica would need one. The copy costs the group's
memory once, for one group at a time, and the backup is **logical** (values by type), so it restores
into any server, fakeredis included, and into another namespace.

File format (a ZIP archive, deflate-compressed): ``manifest.json`` (namespace, partition count, and per
group: its member name, the instant it was frozen, its change-stream offset, its key count and the
SHA-256 of its member) and one JSON-lines member per group, one line per key::

    {"k": key after the group's tag, "t": type, "at": its expiry (server ms) or -1, "d": data}

Byte strings are stored as the ``latin-1`` text of their bytes, which round-trips any value (compressed
and encrypted values included). The zip format was picked over a hand-made container: the standard
library reads and writes it in streams, and its members can be checked one by one.

Example:
    >>> manifest = backup(client, "crew.rxb", namespace="crew")  # doctest: +SKIP
    >>> manifest.partitions, manifest.total_keys  # doctest: +SKIP
    (16, 1204)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rxstate.core.errors import BackupError, NotFound
from rxstate.core.keys import Keyspace, is_cache_probe
from rxstate.core.scripts import ScriptLibrary

__all__ = [
    "FORMAT",
    "NAMESPACE_GROUP",
    "BackupManifest",
    "GroupEntry",
    "backup",
    "group_prefix",
    "iter_member",
    "raw",
    "read_manifest",
    "server_ms",
    "text",
]

FORMAT = "rxstate-backup/1"
NAMESPACE_GROUP = -1
"""The group number of the namespace's own keys (partitions are 0..n-1)."""

_MANIFEST = "manifest.json"
_CHUNK = 1000


def text(value: bytes) -> str:
    """Bytes as the text the backup stores them as (latin-1 maps each byte to one character).

    Example:
        >>> raw(text(b"\\x00\\xff{}")) == b"\\x00\\xff{}"
        True
    """
    return value.decode("latin-1")


def raw(value: str) -> bytes:
    """The bytes a stored text stands for (the inverse of ``text``)."""
    return value.encode("latin-1")


def group_prefix(namespace: str, group: int) -> str:
    """The common prefix of a group's keys: ``rx:{ns:p}:`` for a partition, ``rx:{ns}:`` for the namespace.

    Example:
        >>> group_prefix("crew", 3), group_prefix("crew", NAMESPACE_GROUP)
        ('rx:{crew:3}:', 'rx:{crew}:')
    """
    return f"rx:{{{namespace}}}:" if group == NAMESPACE_GROUP else f"rx:{{{namespace}:{group}}}:"


@dataclass(frozen=True)
class GroupEntry:
    """One group (a partition, or the namespace's own keys) in a backup's manifest."""

    group: int
    member: str
    frozen_ms: int
    offset: str
    keys: int
    sha256: str
    bytes: int


@dataclass(frozen=True)
class BackupManifest:
    """What a backup file holds: read it with ``read_manifest``.

    Attributes:
        namespace: the namespace backed up.
        partitions: its partition count (a restore keeps it).
        created_ms: when the backup started (server time, ms).
        groups: one entry per group; ``offset`` is a partition's change-stream id at its freeze, the
            point from which a point-in-time recovery replays (``rxstate.admin.replay``).
    """

    namespace: str
    partitions: int
    created_ms: int
    groups: tuple[GroupEntry, ...] = field(default=())
    format: str = FORMAT

    @property
    def total_keys(self) -> int:
        """How many keys the backup holds."""
        return sum(g.keys for g in self.groups)

    def offsets(self) -> dict[int, str]:
        """Each partition's change-stream offset at its freeze (``"0-0"`` for an empty stream)."""
        return {g.group: g.offset or "0-0" for g in self.groups if g.group != NAMESPACE_GROUP}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["groups"] = [asdict(g) for g in self.groups]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], path: str) -> BackupManifest:
        try:
            if data["format"] != FORMAT:
                raise BackupError(
                    f"{path}: format {data['format']!r} is not {FORMAT!r}", path=path, member=_MANIFEST, reason="format"
                )
            groups = tuple(GroupEntry(**g) for g in data["groups"])
            return cls(data["namespace"], int(data["partitions"]), int(data["created_ms"]), groups)
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(
                f"{path}: malformed manifest ({exc})", path=path, member=_MANIFEST, reason="manifest"
            ) from exc


def read_manifest(path: str | os.PathLike[str]) -> BackupManifest:
    """The manifest of a backup file (its members are not checked: ``rxstate.admin.restore.verify`` does).

    Raises:
        BackupError: not a backup file, or its manifest is malformed.
    """
    where = os.fspath(path)
    try:
        with zipfile.ZipFile(where) as archive:
            data = json.loads(archive.read(_MANIFEST))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
        raise BackupError(
            f"{where}: not a readable backup ({exc})", path=where, member=_MANIFEST, reason="manifest"
        ) from exc
    return BackupManifest.from_json(data, where)


def backup(
    client: Any,
    path: str | os.PathLike[str],
    *,
    namespace: str,
    hold_ms: int = 600_000,
    chunk: int = _CHUNK,
    progress: Any = None,
    subject_keys: bool = False,
) -> BackupManifest:
    """Write a consistent backup of ``namespace`` to ``path``: each group read atomically.

    Args:
        client: a redis-py client (standalone or cluster) of the server.
        path: the file to write (replaced only once complete: written to ``<path>.part`` first).
        namespace: the namespace to back up.
        hold_ms: how long the frozen copies may live if the backup dies before deleting them.
        chunk: the most elements read per command (hash fields, stream entries, ...).
        progress: called with ``(groups done, groups in all)`` after each group, if given.
        subject_keys: include the data subjects' keys (``rxstate.security.subjects``). Left out by
            default so that erasing a subject (destroying its key) also makes the copies of its secret
            fields in earlier backups unreadable; a backup with them defeats that until it is deleted,
            so keep such backups for less time than you have to honour an erasure.

    Raises:
        NotFound: the namespace does not exist.

    Example:
        >>> backup(client, "crew.rxb", namespace="crew").groups[0].member  # doctest: +SKIP
        'namespace.jsonl'
    """
    ks = Keyspace(namespace, 1)
    stored = client.hget(ks.meta(), "partitions")
    if stored is None:
        raise NotFound(f"namespace {namespace!r} does not exist ({ks.meta()})", key=ks.meta())
    partitions = int(stored)
    ks = Keyspace(namespace, partitions)
    freeze = ScriptLibrary().get("freeze")
    token = secrets.token_hex(6)
    target = Path(path)
    partial = target.with_name(target.name + ".part")
    created = server_ms(client)
    entries: list[GroupEntry] = []
    groups = [NAMESPACE_GROUP, *range(partitions)]
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for done, group in enumerate(groups, 1):
            prefix = group_prefix(namespace, group)
            anchor = ks.meta() if group == NAMESPACE_GROUP else ks.changes(group)
            twin = f"rxb:{prefix[3:-1]}:{token}:"
            reply = freeze(client, [anchor], [prefix + "*", twin, hold_ms])
            frozen_ms, offset = int(reply[0]), _str(reply[1])
            ttls = {_str(reply[i]): int(reply[i + 1]) for i in range(2, len(reply), 2)}
            if not subject_keys:
                ttls.pop(ks.subject_keys(), None)
            kept = sorted(key for key in ttls if not is_cache_probe(key))  # a probe holds no state
            member = "namespace.jsonl" if group == NAMESPACE_GROUP else f"p{group:05d}.jsonl"
            digest = hashlib.sha256()
            size = count = 0
            try:
                with archive.open(member, "w") as out:
                    for line in _group_lines(client, twin, prefix, kept, ttls, chunk):
                        data = line.encode() + b"\n"
                        digest.update(data)
                        size += len(data)
                        count += 1
                        out.write(data)
            finally:
                _drop(client, [twin + key for key in ttls])
            entries.append(GroupEntry(group, member, frozen_ms, offset, count, digest.hexdigest(), size))
            if progress is not None:
                progress(done, len(groups))
        manifest = BackupManifest(namespace, partitions, created, tuple(entries))
        archive.writestr(_MANIFEST, json.dumps(manifest.to_json(), indent=1))
    os.replace(partial, target)
    return manifest


def iter_member(archive: zipfile.ZipFile, entry: GroupEntry) -> Iterator[dict[str, Any]]:
    """The key records of one group member, as stored."""
    with archive.open(entry.member) as member:
        for line in io.TextIOWrapper(member, encoding="utf-8"):
            yield json.loads(line)


def server_ms(client: Any) -> int:
    """The server's clock, in ms since the epoch (on a cluster: its default node's)."""
    if hasattr(client, "get_default_node"):
        seconds, micros = client.time(target_nodes=client.get_default_node())
    else:
        seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _drop(client: Any, keys: Sequence[str]) -> None:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.delete(key)
    pipe.execute()


def _group_lines(
    client: Any, twin: str, prefix: str, keys: Sequence[str], ttls: dict[str, int], chunk: int
) -> Iterator[str]:
    """One JSON line per frozen key: small keys read whole in pipelines, large ones in chunks."""
    for start in range(0, len(keys), chunk):
        batch = keys[start : start + chunk]
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.type(twin + key)
        kinds = [_str(k) for k in pipe.execute()]
        sizes = _sizes(client, twin, batch, kinds)
        pipe = client.pipeline(transaction=False)
        whole: list[int] = []
        for i, (key, kind, size) in enumerate(zip(batch, kinds, sizes, strict=True)):
            if size <= chunk and kind != "stream":
                _read_whole(pipe, kind, twin + key)
                whole.append(i)
        replies = dict(zip(whole, pipe.execute(), strict=True))
        for i, (key, kind) in enumerate(zip(batch, kinds, strict=True)):
            if kind == "none":
                continue  # an expired twin: its source had expired too when frozen
            data = _decode(kind, replies[i]) if i in replies else _read_chunked(client, kind, twin + key, chunk)
            record = {"k": text(key.encode())[len(prefix) :], "t": kind, "at": ttls[key], "d": data}
            yield json.dumps(record, ensure_ascii=True, separators=(",", ":"))


def _sizes(client: Any, twin: str, keys: Sequence[str], kinds: Sequence[str]) -> list[int]:
    pipe = client.pipeline(transaction=False)
    for key, kind in zip(keys, kinds, strict=True):
        size = {"hash": pipe.hlen, "set": pipe.scard, "zset": pipe.zcard, "stream": pipe.xlen}.get(kind)
        if size is None:
            pipe.exists(twin + key)
        else:
            size(twin + key)
    return [int(n) for n in pipe.execute()]


def _read_whole(pipe: Any, kind: str, key: str) -> None:
    if kind == "hash":
        pipe.hgetall(key)
    elif kind == "set":
        pipe.smembers(key)
    elif kind == "zset":
        pipe.zrange(key, 0, -1, withscores=True, score_cast_func=bytes)
    elif kind == "string":
        pipe.get(key)
    else:
        raise BackupError(f"cannot back up {key}: keys of type {kind!r} are not rxstate's", member=key, reason="type")


def _decode(kind: str, reply: Any) -> Any:
    if kind == "hash":
        return [[text(f), text(v)] for f, v in reply.items()]
    if kind == "set":
        return sorted(text(m) for m in reply)
    if kind == "zset":
        return [[text(m), _str(s)] for m, s in reply]
    return text(reply)


def _read_chunked(client: Any, kind: str, key: str, chunk: int) -> Any:
    if kind == "hash":
        return [[text(f), text(v)] for f, v in client.hscan_iter(key, count=chunk)]
    if kind == "set":
        return sorted(text(m) for m in client.sscan_iter(key, count=chunk))
    if kind == "zset":
        out: list[list[str]] = []
        for start in range(0, int(client.zcard(key)), chunk):
            page = client.zrange(key, start, start + chunk - 1, withscores=True, score_cast_func=bytes)
            out.extend([text(m), _str(s)] for m, s in page)
        return out
    if kind == "stream":
        return _read_stream(client, key, chunk)
    raise BackupError(f"cannot back up {key}: keys of type {kind!r} are not rxstate's", member=key, reason="type")


def _read_stream(client: Any, key: str, chunk: int) -> dict[str, Any]:
    entries: list[list[Any]] = []
    start = "-"
    while True:
        page = client.xrange(key, start, "+", count=chunk)
        for sid, fields in page:
            entries.append([_str(sid), [text(x) for kv in fields.items() for x in kv]])
        if len(page) < chunk:
            break
        start = "(" + _str(page[-1][0])
    groups = [[_str(g["name"]), _str(g["last-delivered-id"])] for g in client.xinfo_groups(key)]
    last = entries[-1][0] if entries else "0-0"
    return {"e": entries, "last": last, "groups": groups}
