"""Restoring a backup file (``rxstate.admin.backup``) into the same or another namespace or server.

Every member's SHA-256 is checked against the manifest, and the target namespace is checked to hold no
key, **before** the first write: a corrupt file or an occupied target raises ``BackupError`` and
leaves the server as it was. Keys are then re-written by type (``HSET``, ``SADD``, ``ZADD``, ``XADD``
with the original stream ids, ``SET``), so the restored data does not depend on the server's RDB
version; a key's expiry is restored as the absolute deadline it had (``PEXPIRETIME``), so an entity
that expired since the backup is gone after the restore too.

Restoring into another namespace renames every key's hash tag; what the keys hold names no namespace,
except the audit chain, whose first hash is seeded with its stream's key name: the chain of a
namespace restored under a new name fails ``rxstate audit verify`` at its first entry (restore under the
same name to keep the chain verifiable).

Example:
    >>> report = restore(client, "crew.rxb", namespace="crew-copy")  # doctest: +SKIP
    >>> report.keys  # doctest: +SKIP
    1204
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rxstate.admin.backup import BackupManifest, group_prefix, iter_member, raw, read_manifest, server_ms
from rxstate.core.errors import BackupError
from rxstate.core.keys import Keyspace, is_cache_probe, validate_namespace

__all__ = ["RestoreReport", "deferred_key", "namespace_keys", "restore", "verify"]

_BATCH = 500


@dataclass(frozen=True)
class RestoreReport:
    """What a restore wrote.

    Attributes:
        namespace: the namespace restored into.
        manifest: the backup's manifest (its offsets are where a point-in-time replay starts).
        keys: keys written.
        expired: keys left out because their time to live ran out since the backup.
    """

    namespace: str
    manifest: BackupManifest
    keys: int
    expired: int


def verify(path: str | os.PathLike[str]) -> BackupManifest:
    """Check every member of a backup file against its manifest's SHA-256; return the manifest.

    Raises:
        BackupError: the file is not a backup, a member is missing, or a checksum does not match.

    Example:
        >>> verify("crew.rxb").namespace  # doctest: +SKIP
        'crew'
    """
    where = os.fspath(path)
    manifest = read_manifest(where)
    with zipfile.ZipFile(where) as archive:
        for entry in manifest.groups:
            digest = hashlib.sha256()
            try:
                with archive.open(entry.member) as member:
                    for block in iter(lambda: member.read(1 << 20), b""):
                        digest.update(block)
            except (KeyError, zipfile.BadZipFile, OSError) as exc:
                raise BackupError(
                    f"{where}: member {entry.member} is unreadable ({exc})",
                    path=where,
                    member=entry.member,
                    reason="checksum",
                ) from exc
            if digest.hexdigest() != entry.sha256:
                raise BackupError(
                    f"{where}: member {entry.member} does not match its checksum "
                    f"(manifest {entry.sha256[:12]}..., file {digest.hexdigest()[:12]}...)",
                    path=where,
                    member=entry.member,
                    reason="checksum",
                )
    return manifest


def namespace_keys(
    client: Any, namespace: str, *, limit: int | None = None, besides: Sequence[bytes] = ()
) -> list[bytes]:
    """Keys of ``namespace`` (its partitions' and its own) but ``besides``, up to ``limit``: a restore wants none."""
    found: list[bytes] = []
    for pattern in (f"rx:{{{namespace}:*", f"rx:{{{namespace}}}:*"):
        for key in _scan(client, pattern):
            if key in besides or is_cache_probe(key):
                continue
            found.append(key)
            if limit is not None and len(found) >= limit:
                return found
    return found


def _scan(client: Any, pattern: str) -> Iterator[bytes]:
    if hasattr(client, "get_primaries"):
        for node in client.get_primaries():
            yield from client.scan_iter(match=pattern, count=1000, target_nodes=node)
    else:
        yield from client.scan_iter(match=pattern, count=1000)


def restore(
    client: Any,
    path: str | os.PathLike[str],
    *,
    namespace: str | None = None,
    keep_expiry: bool = True,
) -> RestoreReport:
    """Restore the backup at ``path`` into ``namespace`` (default: the one backed up) on ``client``'s server.

    Args:
        client: a redis-py client of the target server.
        path: the backup file.
        namespace: the target namespace; it must hold no key but its data subjects' keys. Those, when
            the target has them, are kept, and the backup's (if it holds any) are not restored: a
            subject erased since the backup stays erased.
        keep_expiry: give keys their deadlines back now. A point-in-time recovery passes False and lets
            ``rxstate.admin.replay`` set them after the replay, so that a key whose deadline passed
            since the backup is still there for the changes made before its deadline.

    Raises:
        BackupError: the file fails ``verify``, or the target namespace holds keys (``reason="not-empty"``).
    """
    where = os.fspath(path)
    manifest = verify(where)
    target = validate_namespace(namespace if namespace is not None else manifest.namespace)
    subjects = Keyspace(target, 1).subject_keys().encode()
    present = namespace_keys(client, target, limit=1, besides=[subjects])
    live_subjects = bool(client.exists(subjects))
    if present:
        raise BackupError(
            f"namespace {target!r} is not empty (it holds {present[0].decode(errors='replace')}, ...): "
            "restore into an empty namespace",
            path=where,
            member=present[0].decode(errors="replace"),
            reason="not-empty",
        )
    now = server_ms(client)
    written = expired = 0
    with zipfile.ZipFile(where) as archive:
        for entry in manifest.groups:
            prefix = group_prefix(target, entry.group)
            pipe = client.pipeline(transaction=False)
            pending = 0
            for record in iter_member(archive, entry):
                deadline = int(record["at"]) if int(record["at"]) >= 0 else None
                if deadline is not None and deadline <= now and keep_expiry:
                    expired += 1
                    continue
                key = prefix.encode() + raw(record["k"])
                if live_subjects and key == subjects:
                    continue
                _write(pipe, key, record["t"], record["d"])
                if deadline is not None:
                    if keep_expiry:
                        pipe.pexpireat(key, deadline)
                    else:
                        pipe.hset(deferred_key(target, entry.group), key, deadline)
                written += 1
                pending += 1
                if pending >= _BATCH:
                    pipe.execute()
                    pipe, pending = client.pipeline(transaction=False), 0
            pipe.execute()
    return RestoreReport(target, manifest, written, expired)


def deferred_key(namespace: str, group: int) -> str:
    """Where a ``keep_expiry=False`` restore keeps the deadlines it held back (one hash per group), for
    ``rxstate.admin.replay`` to set: outside the ``rx:`` prefix, so no cache tracks it.

    Example:
        >>> deferred_key("crew", 2)
        'rxr:{crew:2}:deadlines'
    """
    return f"rxr:{group_prefix(namespace, group)[3:-1]}:deadlines"


def _write(pipe: Any, key: bytes, kind: str, data: Any) -> None:
    if kind == "hash":
        for start in range(0, len(data), _BATCH):
            pipe.hset(key, mapping={raw(f): raw(v) for f, v in data[start : start + _BATCH]})
    elif kind == "set":
        for start in range(0, len(data), _BATCH):
            pipe.sadd(key, *(raw(m) for m in data[start : start + _BATCH]))
    elif kind == "zset":
        for start in range(0, len(data), _BATCH):
            pipe.zadd(key, {raw(m): float(s) for m, s in data[start : start + _BATCH]})
    elif kind == "string":
        pipe.set(key, raw(data))
    elif kind == "stream":
        for sid, flat in data["e"]:
            pipe.xadd(key, {raw(flat[i]): raw(flat[i + 1]) for i in range(0, len(flat), 2)}, id=sid)
        for name, last in data["groups"]:
            pipe.xgroup_create(key, name, id=last, mkstream=True)
    else:
        raise BackupError(f"cannot restore {key!r}: unknown type {kind!r}", member=key.decode(), reason="type")
