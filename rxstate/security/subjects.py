"""Data keys of data subjects: one per subject, so that erasing a subject is destroying one key.

Entities of a model that declares ``__subject__`` have their secret fields sealed under the key of the
subject they belong to rather than the namespace's active key. Copies of those values that nobody can
delete one by one — change records already read by consumers, backups, archives, replicas' logs — then
become unreadable everywhere at once when ``erase`` destroys the key (crypto-shredding).

Layout of ``rx:{ns}:_subjects`` (the namespace's own slot)::

    seq           the last subject key id handed out (ids start above ``SUBJECT_KEY_BASE``, so a value's
                  header tells a subject key from one of the ring's)
    s:<digest>    the id of a subject's key; the digest is SHA-256 of the namespace and the subject, so
                  the hash does not list subjects in clear (whoever can read it can still confirm a guess)
    k:<id>        the key, wrapped by the namespace's KEK (context: namespace and id)
    gone:<id>     when the key was destroyed (ms since the epoch); nothing says whose it was

A subject's key is made by the first write that needs it: ``lua/subject_key.lua`` keeps the first of two
racing candidates. Each process keeps the keys it used and, after ``refresh`` seconds, checks that a key
still exists before it seals or opens with it again, so an erasure stops every process within that time.

Written here rather than taken from a library: the keys live next to the data in Redis and are wrapped
by the same pluggable KEK as the namespace's ring (``rxstate.security.keyring``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import redis
from cachetools import LRUCache

from rxstate.core.errors import DecryptionError
from rxstate.core.scripts import ScriptLibrary
from rxstate.security.cipher import DataKey
from rxstate.security.providers import KEY_BYTES, KeyProvider

if TYPE_CHECKING:
    from rxstate.security.keyring import KeyRing

__all__ = ["SUBJECT_KEY_BASE", "SubjectKeys", "destroy", "key_of", "subject_digest"]

SUBJECT_KEY_BASE = 1 << 31
"""Subject key ids are above this; the namespace ring's ids are below it."""
_CACHED = 4096


def subject_digest(namespace: str, subject: str) -> str:
    """The name a subject's key is filed under.

    Example:
        >>> subject_digest("crew", "alice")[:12]
        '5bf221920b5d'
    """
    return hashlib.sha256(f"rxstate-subject\0{namespace}\0{subject}".encode()).hexdigest()


class SubjectKeys:
    """The subject keys of one namespace (reach them as ``store.keys.subjects``)."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring
        self._client = ring._client
        self.namespace = ring.namespace
        self.key: str = ring._store.keyspace.subject_keys()
        self._script = ScriptLibrary().get("subject_key")
        self._lock = threading.Lock()
        self._by_digest: LRUCache[str, tuple[DataKey, float]] = LRUCache(_CACHED)
        self._by_id: LRUCache[int, tuple[DataKey, float]] = LRUCache(_CACHED)

    def _context(self, key_id: int) -> bytes:
        return f"rxstate:{self.namespace}:sk:{key_id}".encode()

    def _unwrap(self, key_id: int, wrapped: bytes) -> DataKey:
        provider = self._ring._require_provider()
        return DataKey(key_id, provider.unwrap(wrapped, self._context(key_id)))

    def _remember(self, digest: str | None, dk: DataKey) -> DataKey:
        entry = (dk, time.monotonic() + self._ring.refresh)
        with self._lock:
            self._by_id[dk.id] = entry
            if digest is not None:
                self._by_digest[digest] = entry
        return dk

    def _alive(self, key_id: int) -> bool:
        return bool(self._client.hexists(self.key, f"k:{key_id}"))

    # -- sealing and opening ----------------------------------------------------------------------
    def for_subject(self, subject: str) -> DataKey:
        """The data key of ``subject``, made on first use."""
        digest = subject_digest(self.namespace, subject)
        with self._lock:
            cached = self._by_digest.get(digest)
        if cached is not None:
            if time.monotonic() < cached[1]:
                return cached[0]
            if self._alive(cached[0].id):  # not erased meanwhile
                return self._remember(digest, cached[0])
        held = self._script(self._client, [self.key], [digest])
        if held is None:
            provider = self._ring._require_provider()
            key_id = SUBJECT_KEY_BASE + int(self._client.hincrby(self.key, "seq", 1))
            wrapped = provider.wrap(os.urandom(KEY_BYTES), self._context(key_id))
            held = self._script(self._client, [self.key], [digest, key_id, wrapped])
        return self._remember(digest, self._unwrap(int(held[0]), held[1]))

    def by_id(self, key_id: int, key: str, field: str) -> DataKey:
        """The subject key ``key_id`` a sealed value of ``key``'s ``field`` names.

        Raises:
            DecryptionError: the key was destroyed (``reason="shredded"``: its subject was erased) or is unknown.
        """
        with self._lock:
            cached = self._by_id.get(key_id)
        now = time.monotonic()
        if cached is not None and now < cached[1]:
            return cached[0]
        wrapped, gone = self._client.hmget(self.key, f"k:{key_id}", f"gone:{key_id}")
        if wrapped is None:
            with self._lock:
                self._by_id.pop(key_id, None)
            if gone is not None:
                raise DecryptionError(
                    f"{key} field {field!r} was encrypted with the key of a data subject erased at "
                    f"{int(gone)} ms: it can no longer be read",
                    key=key,
                    field=field,
                    key_id=key_id,
                    reason="shredded",
                )
            raise DecryptionError(
                f"{key} field {field!r} names subject key {key_id}, which namespace {self.namespace!r} does not have",
                key=key,
                field=field,
                key_id=key_id,
                reason="unknown-key",
            )
        return self._remember(None, cached[0] if cached is not None else self._unwrap(key_id, wrapped))

    # -- management -------------------------------------------------------------------------------
    def key_of(self, subject: str) -> int | None:
        """The id of ``subject``'s key, or None if it has none (never written, or erased).

        Example:
            >>> store.keys.subjects.key_of("alice")  # doctest: +SKIP
            2147483649
        """
        return key_of(self._client, self.key, self.namespace, subject)

    def destroy(self, subject: str) -> int | None:
        """Destroy ``subject``'s key (see the module function ``destroy``) and forget it here."""
        digest = subject_digest(self.namespace, subject)
        key_id = destroy(self._client, self.key, self.namespace, subject)
        with self._lock:
            self._by_digest.pop(digest, None)
            if key_id is not None:
                self._by_id.pop(key_id, None)
        return key_id

    def rewrapped(self, pipe: Any, old: KeyProvider, new: KeyProvider) -> dict[str, bytes]:
        """Every subject key wrapped under ``new`` (read through ``pipe`` while it ``WATCH``es this hash).

        ``KeyRing.rotate`` writes the result in the same transaction as the ring's own keys.

        Raises:
            DecryptionError: ``old`` does not unwrap a subject key.
        """
        fields: dict[str, bytes] = {}
        for name, wrapped in pipe.hgetall(self.key).items():
            if name.startswith(b"k:"):
                context = self._context(int(name[2:]))
                fields[name.decode()] = new.wrap(old.unwrap(wrapped, context), context)
        return fields

    def forget(self) -> None:
        """Drop every key this process holds (after a namespace-wide shred)."""
        with self._lock:
            self._by_digest.clear()
            self._by_id.clear()


def key_of(client: Any, key: str, namespace: str, subject: str) -> int | None:
    """The id of ``subject``'s key in the subjects hash ``key`` of ``namespace``, or None."""
    held = client.hget(key, "s:" + subject_digest(namespace, subject))
    return int(held) if held is not None else None


def destroy(client: Any, key: str, namespace: str, subject: str) -> int | None:
    """Destroy ``subject``'s key in the subjects hash ``key``: every value sealed with it, wherever a
    copy is, becomes unreadable. Needs no key-encryption key.

    Returns:
        The id of the destroyed key, or None if the subject had none.
    """
    digest = subject_digest(namespace, subject)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                held = pipe.hget(key, "s:" + digest)
                pipe.multi()
                if held is not None:
                    pipe.hdel(key, "s:" + digest, f"k:{int(held)}")
                    pipe.hset(key, f"gone:{int(held)}", int(time.time() * 1000))
                pipe.execute()
                return int(held) if held is not None else None
            except redis.WatchError:
                continue
