"""Collection reads and writes through the local cache (``EntityCache``).

Reads: a hit is served from the cache; a miss reads the hash and its TTL in one round trip and fills the
cache with the decoded value, unless the key was invalidated meanwhile. Writes are registered with the
cache before they are sent (``begin_write``, so that their echo is recognised); the value the script
wrote (or the full hash it returned) then replaces the cached one if it is newer and raises the key's
floor (read your writes); a delete, and any write whose outcome is unknown (an error), invalidates the
key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from rxstate.cache.lru import EntityCache, OwnWrite
from rxstate.core.errors import NotFound
from rxstate.core.versioned import Versioned
from rxstate.core.writes import KEEP_TTL, PERSIST, WriteOp, WriteResult

if TYPE_CHECKING:
    from rxstate.core.model import Model
    from rxstate.store.collection_ops import CollectionOps as Collection
    from rxstate.store.store import Store

__all__ = ["Refresher", "fetch_many", "read_one", "write_one", "write_value"]

log = logging.getLogger("rxstate.cache")
M = TypeVar("M", bound="Model")
_META_BYTES = 64  # reserved fields (_v _sv _ts _by _o) of a hash, roughly
REFRESH_WINDOW = 0.5  # seconds after an own write during which evictions of its (read) key are re-read
_ECHOED = frozenset({"put", "create", "update", "incr"})  # kinds whose success always writes the key


def _hash_bytes(raw: Mapping[bytes, bytes]) -> int:
    return sum(len(k) + len(v) for k, v in raw.items())


def _deadline(pttl: int, started: float) -> float | None:
    """Cache deadline from a PTTL reply: 0.0 for none, None if the key is gone."""
    if pttl == -1:
        return 0.0
    if pttl < 0:
        return None
    return started + pttl / 1000  # measured from before the read: never later than the server's


def read_one(coll: Collection[Any], cache: EntityCache, entity_id: str, key: str) -> Versioned[Any]:
    """The value of one entity after a cache miss, filling the cache when allowed.

    Raises:
        NotFound: no such entity.
    """
    client = coll._store.client
    token = cache.token()
    started = time.monotonic()
    if token:
        pipe = client.pipeline(transaction=False)
        coll._queue_read(pipe, key)
        pipe.pttl(key)
        reply, pttl = pipe.execute()
    else:
        reply, pttl = coll._read_now(key), -2
    value, raw = coll._read_reply(entity_id, key, reply)
    if value is None:
        raise NotFound(f"{coll.name} {entity_id!r} does not exist ({key})", key=key)
    deadline = _deadline(int(pttl), started) if token else None
    if deadline is not None:
        cache.fill(key, value, token=token, nbytes=_hash_bytes(raw), deadline=deadline)
    return value


def fetch_many(
    coll: Collection[Any],
    cache: EntityCache,
    pairs: Sequence[tuple[str, str]],
    *,
    refresh: Mapping[str, float] | None = None,
) -> list[Versioned[Any]]:
    """Values of ``(id, key)`` pairs in order (absent ones left out): hits first, misses in one pipeline.

    With ``refresh`` (key -> refresh window, see ``EntityCache.fill``), every pair is read from the server
    and the lookups count as neither hits nor misses.
    """
    found: dict[str, Versioned[Any]] = {}
    missing: list[tuple[str, str]] = []
    for entity_id, key in pairs:
        hit = None if refresh is not None else cache.get(key)
        if hit is None:
            missing.append((entity_id, key))
        else:
            found[key] = hit
    if missing:
        token = cache.token()
        started = time.monotonic()
        pipe = coll._store.client.pipeline(transaction=False)
        for _, key in missing:
            coll._queue_read(pipe, key)
            if token:
                pipe.pttl(key)
        replies = pipe.execute()
        step = 2 if token else 1
        for n, (entity_id, key) in enumerate(missing):
            value, raw = coll._read_reply(entity_id, key, replies[n * step])
            if value is None:
                if refresh is not None:
                    cache.invalidate(key)  # gone: drop what was held for it
                continue
            found[key] = value
            deadline = _deadline(int(replies[n * step + 1]), started) if token else None
            if deadline is not None:
                until = refresh.get(key, 0.0) if refresh is not None else 0.0
                cache.fill(key, value, token=token, nbytes=_hash_bytes(raw), deadline=deadline, refresh_until=until)
    return [found[key] for _, key in pairs if key in found]


def _write_deadline(op: WriteOp, own: OwnWrite | None, sent: float) -> float | None:
    """The cache deadline of the value a write leaves; None when unknown."""
    if op.ttl == PERSIST:
        return 0.0
    if op.ttl == KEEP_TTL:
        return None if own is None else own.deadline  # that of the entry it replaced, if it was cached
    return sent + int(op.ttl) / 1000


def _after_write(
    coll: Collection[Any],
    cache: EntityCache,
    op: WriteOp,
    result: WriteResult,
    value: Versioned[Any] | None,
    own: OwnWrite | None,
    sent: float,
    hot: bool,
) -> None:
    key = coll._ks.entity(op.collection, op.id, op.partition)
    returned = time.monotonic()
    until = returned + REFRESH_WINDOW if hot else 0.0
    if op.kind == "delete":
        cache.invalidate(key)
    else:
        if value is None and result.full:
            value = coll._decode(op.id, result.full, key)
        deadline = _write_deadline(op, own, sent)
        if value is not None and deadline is not None:
            nbytes = _hash_bytes(result.full) if result.full else sum(len(n) + len(v) for n, v in op.sets)
            nbytes += _META_BYTES * (not result.full)
            cache.end_write(own, key, result.offset, value, nbytes=nbytes, deadline=deadline, refresh_until=until)
        else:
            cache.end_write(own, key, result.offset)
            if hot:  # the TTL is unknown here: read value and TTL back
                cache.request_refresh(key, until)
    cache.note_write(key, sent=sent, returned=returned)


def write_one(coll: Collection[Any], op: WriteOp) -> WriteResult:
    """Run one operation atomically and bring the cache up to date (from the full hash, if returned)."""
    return _write(coll, op, None)[0]


def write_value(coll: Collection[M], op: WriteOp, build: Callable[[WriteResult], Versioned[M]]) -> Versioned[M]:
    """Run one operation atomically; ``build`` makes the written ``Versioned``, which the cache keeps."""
    value = _write(coll, op, build)[1]
    assert value is not None
    return value


def _write(
    coll: Collection[M], op: WriteOp, build: Callable[[WriteResult], Versioned[M]] | None
) -> tuple[WriteResult, Versioned[M] | None]:
    """Run ``op``; the cache learns of it before it is sent (its echo) and from its result after."""
    store = coll._store
    cache: EntityCache | None = store._cache
    if cache is None:
        result = store.writer.mutate([op], forget=False)[0]
        return result, (build(result) if build else None)
    key = coll._ks.entity(op.collection, op.id, op.partition)
    own = cache.begin_write(key) if op.kind in _ECHOED else None
    hot = key in cache
    sent = time.monotonic()
    try:
        result = store.writer.mutate([op], forget=False)[0]
    except BaseException:
        cache.abort_write(own, key)  # outcome unknown, or the cached value was stale
        raise
    value = build(result) if build else None
    _after_write(coll, cache, op, result, value, own, sent, hot)
    return result, value


class Refresher:
    """Re-reads keys in the background, for the cache (``EntityCache.take_refresh``).

    Two kinds: a key this store wrote whose entry an invalidation evicted while someone reads it (so
    the next ``get`` is a hit again; for ``REFRESH_WINDOW`` seconds after the write), and a key whose
    own-write echo came in a ``CLIENT TRACKING`` message that may also cover another client's write (the
    read confirms the entry, or replaces it). Every read fills the cache under the usual epoch rule; a
    confirmation that fails drops its keys instead.
    """

    def __init__(self, store: Store, cache: EntityCache) -> None:
        self._store = store
        self._cache = cache
        self._closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rxstate-cache-refresh", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        cache, ks = self._cache, self._store.keyspace
        wake: float | None = None
        while not self._closed.is_set():
            if not cache.refresh_wanted.wait(0.5 if wake is None else wake) and wake is None:
                continue
            wanted, wake = cache.take_refresh()
            by_collection: dict[str, list[tuple[str, str]]] = {}
            for key in wanted:
                parsed = ks.parse_entity(key)
                if parsed is not None:
                    by_collection.setdefault(parsed[1], []).append((parsed[2], key))
            for name, pairs in by_collection.items():
                coll = self._store.collections.get(name)
                if self._closed.is_set():
                    return
                try:
                    if coll is None:
                        raise LookupError(f"collection {name!r} is not open in this store")
                    fetch_many(coll, cache, pairs, refresh=wanted)
                except Exception as exc:  # unconfirmed: drop the entries rather than risk a stale hit
                    cache.invalidate_many([key for _, key in pairs])
                    log.debug("cache re-read of %s failed: %s", name, exc)

    def close(self) -> None:
        self._closed.set()
        self._cache.refresh_wanted.set()
        self.thread.join(timeout=5)
