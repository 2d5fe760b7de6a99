"""Online, resumable re-encryption of a namespace's secret fields under a new data key.

1. ``begin``: a new data key becomes the active one (new writes use it at once here, and in every
   other process within the key ring's ``refresh`` seconds: re-encryption waits that long before it
   starts), and the keys in use until then are listed for retirement.
2. Each collection with secret fields, partition by partition: ``SSCAN`` its ids; every entity with a
   secret value not sealed under the new key (or still in clear, written before encryption was on) is
   written again with ``put(..., expected_version=<the version read>)``, keeping its TTL: a normal write,
   so versions, change records and indexes stay right, and a concurrent change simply wins (the entity
   is read again). Values under a data subject's own key (``rxstate.security.subjects``) stay under it.
   The scan cursor is stored in the key ring after every page, so a re-encryption that
   was interrupted continues where it stopped.
3. When every partition is done, the old data keys are retired: destroyed, like ``shred``. Change
   records written under them can no longer be decrypted (readers see them as redacted values).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rxstate.core.codec import SEALED_MARKER
from rxstate.core.errors import ConflictError, NotFound, SchemaError
from rxstate.security.cipher import key_id_of
from rxstate.security.subjects import SUBJECT_KEY_BASE

if TYPE_CHECKING:
    from rxstate.security.keyring import KeyRing

__all__ = ["Progress", "reencrypt"]

_PAGE = 100
_DONE = "done"
_CAS_ATTEMPTS = 8


@dataclass(frozen=True)
class Progress:
    """Where a re-encryption stands.

    Attributes:
        done: every encrypted value is under ``target``, and the old keys are retired.
        target: the data key values are re-encrypted under.
        rewritten: entities this call wrote again.
        retired: the data keys destroyed at the end (empty until done).
        remaining: ``collection:partition`` pairs not finished yet.
    """

    done: bool
    target: int
    rewritten: int
    retired: tuple[int, ...] = ()
    remaining: tuple[str, ...] = ()


def _encrypted_collections(store: Any) -> list[Any]:
    """Open collections with secret fields; every registered collection that has some must be open."""
    opened = {name: c for name, c in store.collections.items() if c.model.__rxstate_secrets__}
    missing = []
    for name, raw in store.client.hgetall(store.keyspace.schemas()).items():
        entry = json.loads(raw)
        cname = name.decode()
        if entry.get("secrets") and cname not in opened:
            missing.append(cname)
    if missing:
        raise SchemaError(
            f"open the collections {sorted(missing)} on this store before re-encrypting: their secret fields "
            "would become unreadable when the old data keys are retired"
        )
    return [opened[name] for name in sorted(opened)]


def _stale(raw: dict[bytes, bytes], fields: frozenset[bytes], target: int) -> bool:
    for name in fields:
        value = raw.get(name)
        if value is None:
            continue
        if value[:2] != SEALED_MARKER:
            return True
        key_id = key_id_of(value)
        if key_id != target and key_id <= SUBJECT_KEY_BASE:  # a data subject's key is its own, not rotated
            return True
    return False


def _rewrite(coll: Any, entity_id: str, partition: int, fields: frozenset[bytes], target: int) -> bool:
    """Write one entity again if a secret value of it is not under ``target``; whether it was written."""
    store = coll._store
    key = store.keyspace.entity(coll.name, entity_id, partition)
    for _attempt in range(_CAS_ATTEMPTS):
        pipe = store.client.pipeline(transaction=False)
        pipe.hgetall(key)
        pipe.pttl(key)
        raw, pttl = pipe.execute()
        raw = coll._settled(key, raw)
        if not raw or not _stale(raw, fields, target):
            return False
        current = coll._decode(entity_id, raw, key)
        ttl = int(pttl) / 1000 if int(pttl) > 0 else None
        try:
            coll.put(entity_id, current.value, expected_version=current.version, ttl=ttl)
        except ConflictError:
            continue  # changed meanwhile: look again
        except NotFound:
            return False
        return True
    raise ConflictError(f"{key}: kept changing while being re-encrypted; run reencrypt() again", key=key)


def reencrypt(store: Any, ring: KeyRing, *, max_entities: int | None = None) -> Progress:
    """Re-encrypt every secret field of the namespace under a new data key (see the module docstring).

    Args:
        store: the store (its collections with secret fields must all be open).
        ring: its key ring.
        max_entities: stop after the page in which this many entities were rewritten (run again to go on).

    Raises:
        SchemaError: a collection with secret fields is registered but not open on this store.

    Example:
        >>> progress = store.keys.reencrypt(max_entities=10_000)  # doctest: +SKIP
        >>> progress.done, progress.rewritten  # doctest: +SKIP
        (False, 10000)
    """
    collections = _encrypted_collections(store)
    plan = ring.begin_reencrypt()
    target = int(plan["target"])
    wait = plan["started_ms"] / 1000 + ring.refresh - time.time()
    if wait > 0:
        time.sleep(wait)  # every writer has seen the new active key by now
    progress = dict(ring.state().progress)
    rewritten = 0
    remaining: list[str] = []
    for coll in collections:
        fields = frozenset(f.encode() for f in coll.model.__rxstate_secrets__)
        for p in range(store.keyspace.partitions):
            slot = f"{coll.name}:{p}"
            cursor = progress.get(slot, "0")
            while cursor != _DONE:
                if max_entities is not None and rewritten >= max_entities:
                    remaining.append(slot)
                    break
                next_cursor, members = store.client.sscan(store.keyspace.ids(coll.name, p), int(cursor), count=_PAGE)
                for member in members:
                    rewritten += _rewrite(coll, member.decode(), p, fields, target)
                cursor = _DONE if int(next_cursor) == 0 else str(int(next_cursor))
                ring.save_progress(coll.name, p, cursor)
    if remaining:
        return Progress(done=False, target=target, rewritten=rewritten, remaining=tuple(remaining))
    retired = ring.finish_reencrypt(int(i) for i in plan["from"])
    return Progress(done=True, target=target, rewritten=rewritten, retired=tuple(retired))
