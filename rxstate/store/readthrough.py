"""Collection reads and writes through the local cache (``EntityCache``).

Reads: a hit is served from the cache; a miss reads the hash and its TTL in one round trip and fills the
cache with the decoded value, unless the key was invalidated meanwhile. Writes: the value the script
wrote (or the full hash it returned) replaces the cached one if it is newer; a delete, and any write
whose outcome is unknown (an error), invalidates the key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from rxstate.cache.lru import EntityCache
from rxstate.core.errors import NotFound, RxStateError
from rxstate.core.versioned import Versioned
from rxstate.core.writes import KEEP_TTL, PERSIST, WriteOp, WriteResult

if TYPE_CHECKING:
    from rxstate.core.model import Model
    from rxstate.store.collection_ops import CollectionOps as Collection
    from rxstate.store.store import Store

__all__ = ["Refresher", "fetch_many", "read_one", "write_many", "write_one", "write_value"]

log = logging.getLogger("rxstate.cache")
M = TypeVar("M", bound="Model")
_META_BYTES = 64  # reserved fields (_v _sv _ts _by _o) of a hash, roughly
REFRESH_WINDOW = 0.5  # seconds after an own write during which evictions of its (read) key are re-read


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
        pipe.hgetall(key)
        pipe.pttl(key)
        raw, pttl = pipe.execute()
    else:
        raw, pttl = client.hgetall(key), -2
    raw = coll._settled(key, raw)
    if not raw:
        raise NotFound(f"{coll.name} {entity_id!r} does not exist ({key})", key=key)
    value = coll._decode(entity_id, raw, key)
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
            pipe.hgetall(key)
            if token:
                pipe.pttl(key)
        replies = pipe.execute()
        step = 2 if token else 1
        for n, (entity_id, key) in enumerate(missing):
            raw = coll._settled(key, replies[n * step])
            if not raw:
                continue
            value = coll._decode(entity_id, raw, key)
            found[key] = value
            deadline = _deadline(int(replies[n * step + 1]), started) if token else None
            if deadline is not None:
                until = refresh.get(key, 0.0) if refresh is not None else 0.0
                cache.fill(key, value, token=token, nbytes=_hash_bytes(raw), deadline=deadline, refresh_until=until)
    return [found[key] for _, key in pairs if key in found]


def _write_deadline(cache: EntityCache, op: WriteOp, key: str, sent: float) -> float | None:
    if op.ttl == PERSIST:
        return 0.0
    if op.ttl == KEEP_TTL:
        return cache.deadline_of(key)  # unknown (None) unless the older value is cached
    return sent + int(op.ttl) / 1000


def _after_write(
    coll: Collection[Any],
    cache: EntityCache,
    op: WriteOp,
    result: WriteResult,
    value: Versioned[Any] | None,
    token: int,
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
        deadline = _write_deadline(cache, op, key, sent)
        if value is not None and deadline is not None:
            nbytes = _hash_bytes(result.full) if result.full else sum(len(n) + len(v) for n, v in op.sets)
            nbytes += _META_BYTES * (not result.full)
            cache.fill(key, value, token=token, nbytes=nbytes, deadline=deadline, refresh_until=until)
        elif hot:  # the TTL is unknown here: read value and TTL back
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
    store = coll._store
    cache: EntityCache | None = store._cache
    if cache is None:
        result = store.writer.mutate([op], forget=False)[0]
        return result, (build(result) if build else None)
    key = coll._ks.entity(op.collection, op.id, op.partition)
    token = cache.token()
    hot = key in cache
    sent = time.monotonic()
    try:
        result = store.writer.mutate([op], forget=False)[0]
    except BaseException:
        cache.invalidate(key)  # outcome unknown, or the cached value was stale
        raise
    value = build(result) if build else None
    if token:
        _after_write(coll, cache, op, result, value, token, sent, hot)
    return result, value


def write_many(
    coll: Collection[Any], ops: Sequence[WriteOp]
) -> tuple[list[WriteResult | RxStateError], Callable[[WriteOp, WriteResult, Versioned[Any]], None]]:
    """Run operations each on its own (one round trip); returns the results and a cache updater.

    Call the updater with each op, its result and the ``Versioned`` built from it.
    """
    store = coll._store
    cache: EntityCache | None = store._cache
    token = cache.token() if cache is not None else 0
    sent = time.monotonic()
    try:
        results = store.writer.mutate_each(ops, forget=False)
    except BaseException:
        if cache is not None:
            cache.invalidate_many([coll._ks.entity(op.collection, op.id, op.partition) for op in ops])
        raise
    if cache is not None:
        for op, result in zip(ops, results, strict=True):
            if isinstance(result, RxStateError):
                cache.invalidate(coll._ks.entity(op.collection, op.id, op.partition))

    def update(op: WriteOp, result: WriteResult, value: Versioned[Any]) -> None:
        if cache is not None and token:
            _after_write(coll, cache, op, result, value, token, sent, False)

    return results, update


class Refresher:
    """Re-reads, in the background, cached keys that this store wrote and its own invalidation evicted.

    Every write produces an invalidation, also for the store that made it; which invalidation is the echo
    of which write cannot be told (a foreign write may come in between), so an own write cannot keep its
    entry. For keys that were cached when written (someone reads them), this thread reads the new value
    back so that the next ``get`` is a hit again; the read fills the cache under the usual epoch rule.
    For ``REFRESH_WINDOW`` seconds after the write, a later eviction (a late echo) is re-read again.
    """

    def __init__(self, store: Store, cache: EntityCache) -> None:
        self._store = store
        self._cache = cache
        self._closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rxstate-cache-refresh", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        cache, ks = self._cache, self._store.keyspace
        while not self._closed.is_set():
            if not cache.refresh_wanted.wait(0.5):
                continue
            by_collection: dict[str, list[tuple[str, str]]] = {}
            wanted = cache.take_refresh()
            for key in wanted:
                parsed = ks.parse_entity(key)
                if parsed is not None:
                    by_collection.setdefault(parsed[1], []).append((parsed[2], key))
            for name, pairs in by_collection.items():
                coll = self._store.collections.get(name)
                if coll is None or self._closed.is_set():
                    continue
                try:
                    fetch_many(coll, cache, pairs, refresh=wanted)
                except Exception as exc:  # a refresh is an optimisation: the next read will retry
                    log.debug("cache refresh of %s failed: %s", name, exc)

    def close(self) -> None:
        self._closed.set()
        self._cache.refresh_wanted.set()
        self.thread.join(timeout=5)
