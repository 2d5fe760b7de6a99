"""The key ring of a namespace: data keys wrapped by a key-encryption key, in one hash in Redis.

Layout of ``rx:{ns}:_keys`` (the namespace's own slot, outside every partition)::

    kek           id of the KEK every data key is wrapped under
    active        id of the data key new values are sealed with
    seq           the last data key id handed out
    dk:<id>       a data key wrapped by the KEK (context: namespace and id)
    gone:<id>     when data key <id> was shredded or retired (ms since the epoch)
    reenc         re-encryption in progress: {"target": id, "from": [ids], "started_ms": t}
    re:<c>:<p>    its progress in collection c, partition p: an SSCAN cursor, or "done"

Every change of the ring is one ``MULTI``/``EXEC`` under ``WATCH``, so two processes creating, rotating
or shredding keys at once never leave it half changed. Each process keeps the data keys it unwrapped and
re-reads the ring at most every ``refresh`` seconds before sealing (so a new active key reaches every
writer within that time) and whenever a value names a key it does not know.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from cryptography.exceptions import InvalidTag

from rxstate.core.codec import SEALED_MARKER
from rxstate.core.errors import ConflictError, DecryptionError, ValidationError
from rxstate.security.cipher import HEADER_BYTES, DataKey, entity_binding, key_id_of, search_binding
from rxstate.security.providers import KEY_BYTES, KeyProvider
from rxstate.security.subjects import SUBJECT_KEY_BASE, SubjectKeys

if TYPE_CHECKING:
    from rxstate.security.reencrypt import Progress

__all__ = ["KeyRing", "RingState"]

T = TypeVar("T")
_ATTEMPTS = 50


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class RingState:
    """What the ring hash holds, parsed."""

    kek: str | None
    active: int | None
    seq: int
    wrapped: Mapping[int, bytes]
    gone: Mapping[int, int]
    reencrypt: Mapping[str, Any] | None
    progress: Mapping[str, str]

    @classmethod
    def parse(cls, raw: Mapping[bytes, bytes]) -> RingState:
        wrapped: dict[int, bytes] = {}
        gone: dict[int, int] = {}
        progress: dict[str, str] = {}
        for name, value in raw.items():
            field = name.decode()
            if field.startswith("dk:"):
                wrapped[int(field[3:])] = value
            elif field.startswith("gone:"):
                gone[int(field[5:])] = int(value)
            elif field.startswith("re:"):
                progress[field[3:]] = value.decode()
        active = raw.get(b"active")
        reenc = raw.get(b"reenc")
        return cls(
            kek=_text(raw.get(b"kek")),
            active=int(active) if active else None,
            seq=int(raw.get(b"seq") or 0),
            wrapped=wrapped,
            gone=gone,
            reencrypt=json.loads(reenc) if reenc else None,
            progress=progress,
        )


class KeyRing:
    """The data keys of one namespace, and the ``FieldCipher`` that seals secret fields with them.

    Reach it as ``store.keys`` on a store opened with ``rxstate.connect(..., keys=provider)``.

    Example:
        >>> store = rxstate.connect(keys=rxstate.security.EnvKeyProvider("RXSTATE_KEK"))  # doctest: +SKIP
        >>> store.keys.rotate(rxstate.security.FileKeyProvider("/run/secrets/kek-2"))  # doctest: +SKIP
        >>> store.keys.reencrypt().done  # doctest: +SKIP
        True
    """

    def __init__(self, store: Any, provider: KeyProvider | None, *, refresh: float = 1.0) -> None:
        self._store = store
        self._client = store.client
        self.namespace: str = store.keyspace.namespace
        self.key: str = store.keyspace.keyring()
        self.provider = provider
        self.refresh = refresh
        self._keys: dict[int, DataKey] = {}
        self._unreadable: dict[int, DecryptionError] = {}
        self._lock = threading.RLock()
        self._sealing: tuple[DataKey, float] | None = None  # the active key, and until when it is fresh
        self._state = self._load(strict=True)
        self.subjects = SubjectKeys(self)
        """The data keys of data subjects (``rxstate.security.subjects``)."""

    @classmethod
    def of(cls, store: Any, provider: KeyProvider | None) -> KeyRing | None:
        """The store's key ring; None when there is no provider and the namespace encrypts nothing.

        Raises:
            DecryptionError: the provider's KEK does not unwrap the namespace's data keys.
        """
        if provider is not None and not isinstance(provider, KeyProvider):
            raise ValidationError(f"keys= takes a rxstate.security.KeyProvider, not {provider!r}", field="keys")
        if provider is None and not store.client.exists(store.keyspace.keyring()):
            return None
        return cls(store, provider)

    def __repr__(self) -> str:
        state = self._state
        return (
            f"<KeyRing {self.namespace!r} active={state.active} keys={sorted(state.wrapped)} "
            f"provider={self.provider!r}>"
        )

    # -- reading the ring ---------------------------------------------------------------------------
    def _context(self, key_id: int) -> bytes:
        return f"rxstate:{self.namespace}:dk:{key_id}".encode()

    def _load(self, *, strict: bool = False) -> RingState:
        """Read the ring and unwrap the data keys not yet known (``strict``: raise if one cannot be)."""
        with self._lock:
            state = RingState.parse(self._client.hgetall(self.key))
            for key_id in list(self._keys):
                if key_id not in state.wrapped:
                    del self._keys[key_id]  # shredded or retired elsewhere
            if self.provider is not None:
                for key_id, wrapped in state.wrapped.items():
                    if key_id in self._keys:
                        continue
                    try:
                        self._keys[key_id] = DataKey(key_id, self.provider.unwrap(wrapped, self._context(key_id)))
                        self._unreadable.pop(key_id, None)
                    except DecryptionError as exc:
                        error = self._wrong_kek(state, key_id, str(exc))
                        if strict:
                            raise error from exc
                        self._unreadable[key_id] = error
            self._state = state
            self._loaded = time.monotonic()
            self._sealing = None
            return state

    def _wrong_kek(self, state: RingState, key_id: int, detail: str) -> DecryptionError:
        return DecryptionError(
            f"namespace {self.namespace!r}: data key {key_id} is wrapped under KEK {state.kek}, and "
            f"{self.provider!r} cannot unwrap it ({detail}); was the KEK rotated?",
            key=self.key,
            key_id=key_id,
            reason="wrong-kek",
        )

    def _fresh(self) -> RingState:
        if time.monotonic() - self._loaded > self.refresh:
            return self._load()
        return self._state

    def state(self) -> RingState:
        """The ring as stored now (re-read).

        Example:
            >>> store.keys.state().active  # doctest: +SKIP
            1
        """
        return self._load()

    @property
    def active_key(self) -> int | None:
        """The id of the data key new values are sealed with (None before the first one)."""
        return self._state.active

    def _change(self, body: Callable[[RingState, Any], T], *also: str) -> T:
        """Run ``body(state, pipe)`` under WATCH of the ring (and of ``also``); it queues commands after
        ``pipe.multi()``."""
        for _attempt in range(_ATTEMPTS):
            with self._client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self.key, *also)
                    state = RingState.parse(pipe.hgetall(self.key))
                    result = body(state, pipe)
                    pipe.execute()
                except redis.WatchError:
                    continue
            self._load()
            return result
        raise ConflictError(
            f"{self.key}: the key ring kept changing under {_ATTEMPTS} attempts; try again", key=self.key
        )

    def _require_provider(self, field: str = "") -> KeyProvider:
        if self.provider is None:
            raise ValidationError(
                f"namespace {self.namespace!r} encrypts its secret fields and this store has no key-encryption "
                f"key{' to write ' + repr(field) if field else ''}: "
                "connect with keys=rxstate.security.EnvKeyProvider(...)",
                field=field or None,
            )
        return self.provider

    # -- data keys ----------------------------------------------------------------------------------
    def _new_key(self, state: RingState, pipe: Any, *, activate: bool) -> int:
        provider = self._require_provider()
        if state.kek is not None and state.kek != provider.kek_id:
            raise self._wrong_kek(state, max(state.wrapped, default=0), f"it holds KEK {provider.kek_id}")
        key_id = max([state.seq, *state.wrapped, *state.gone]) + 1  # ids are never reused
        secret = os.urandom(KEY_BYTES)
        pipe.multi()
        fields: dict[str, Any] = {f"dk:{key_id}": provider.wrap(secret, self._context(key_id)), "seq": key_id}
        fields["kek"] = provider.kek_id
        if activate:
            fields["active"] = key_id
        pipe.hset(self.key, mapping=fields)  # known here once committed: ``_change`` reloads the ring
        return key_id

    def _active(self, field: str) -> DataKey:
        self._require_provider(field)
        state = self._fresh()
        if state.active is None:

            def create(current: RingState, pipe: Any) -> int:
                if current.active is not None:
                    pipe.multi()
                    return current.active
                return self._new_key(current, pipe, activate=True)

            self._change(create)
            state = self._state
        assert state.active is not None
        return self._key(state.active, self.key, field)

    def _key(self, key_id: int, key: str, field: str) -> DataKey:
        found = self._keys.get(key_id)
        if found is None:
            state = self._load()
            found = self._keys.get(key_id)
            if found is None:
                if key_id in self._unreadable:
                    raise self._unreadable[key_id]
                if self.provider is None:
                    raise DecryptionError(
                        f"{key} field {field!r} is encrypted and this store has no key-encryption key: "
                        "connect with keys=",
                        key=key,
                        field=field,
                        key_id=key_id,
                        reason="no-keys",
                    )
                if key_id in state.gone:
                    raise DecryptionError(
                        f"{key} field {field!r} was encrypted with data key {key_id}, shredded at "
                        f"{state.gone[key_id]} ms: it can no longer be read",
                        key=key,
                        field=field,
                        key_id=key_id,
                        reason="shredded",
                    )
                raise DecryptionError(
                    f"{key} field {field!r} names data key {key_id}, which namespace {self.namespace!r} does not have",
                    key=key,
                    field=field,
                    key_id=key_id,
                    reason="unknown-key",
                )
        return found

    # -- FieldCipher ------------------------------------------------------------------------------
    def seal(
        self, key: str, collection: str, field: str, fragment: bytes, searchable: bool, subject: str | None = None
    ) -> bytes:
        """The stored form of a secret field's JSON fragment (see ``rxstate.core.codec.FieldCipher``).

        With a ``subject``, the value is sealed under that data subject's own key (``rxstate.security.subjects``).
        """
        sealing = self._sealing
        if subject is not None:
            self._require_provider(field)
            dk = self.subjects.for_subject(subject)
        elif sealing is not None and time.monotonic() < sealing[1]:
            dk = sealing[0]
        else:
            dk = self._active(field)
            self._sealing = (dk, self._loaded + self.refresh)
        if fragment[:2] == SEALED_MARKER:  # sealed before (a buffered write): keep it if under the active key
            if int.from_bytes(fragment[3:HEADER_BYTES], "big") == dk.id:
                return fragment
            fragment = self.open(key, collection, field, fragment)
        if searchable:
            return dk.seal_searchable(fragment, search_binding(self.namespace, collection, field))
        return dk.seal(fragment, entity_binding(key, field))

    def writable(self, field: str) -> None:
        """Raise ``ValidationError`` if this store has no key-encryption key (see ``FieldCipher``)."""
        self._require_provider(field)

    def open(self, key: str, collection: str, field: str, value: bytes) -> bytes:
        """The JSON fragment of a sealed value.

        Raises:
            DecryptionError: the value is bound to another entity or field, or altered (``reason="binding"``),
                its data key was shredded or is unknown, or this store has no keys.
        """
        if time.monotonic() - self._loaded > self.refresh:
            self._load()  # keys shredded or retired elsewhere stop working here within ``refresh`` seconds
        dk = self._keys.get(int.from_bytes(value[3:HEADER_BYTES], "big"))
        if dk is None:
            key_id = key_id_of(value, key, field)
            if key_id > SUBJECT_KEY_BASE:
                self._require_provider(field)
                dk = self.subjects.by_id(key_id, key, field)
            else:
                dk = self._key(key_id, key, field)
        searchable = value[2:3] == b"d"
        binding = search_binding(self.namespace, collection, field) if searchable else entity_binding(key, field)
        try:
            return dk.open(value, binding)
        except InvalidTag:
            raise DecryptionError(
                f"{key} field {field!r}: the encrypted value does not belong to this entity and field "
                "(it was moved or altered)",
                key=key,
                field=field,
                key_id=dk.id,
                reason="binding",
            ) from None

    def search_terms(self, collection: str, field: str, fragment: bytes) -> list[bytes]:
        """Ciphertexts of a searchable value under every data key readable here."""
        self._require_provider(field)
        self._fresh()
        binding = search_binding(self.namespace, collection, field)
        return [dk.seal_searchable(fragment, binding) for dk in list(self._keys.values())]

    # -- management ---------------------------------------------------------------------------------
    def rotate(self, provider: KeyProvider) -> int:
        """Re-wrap every data key under a new KEK at once (nothing else is rewritten); returns their number.

        From then on this store uses ``provider``; other processes need the new KEK when they next
        open the namespace (the data keys they already unwrapped keep working).

        Raises:
            DecryptionError: this store's KEK does not unwrap the stored data keys.

        Example:
            >>> store.keys.rotate(rxstate.security.EnvKeyProvider("RXSTATE_KEK_2"))  # doctest: +SKIP
            1
        """
        old = self._require_provider()
        if not isinstance(provider, KeyProvider):
            raise ValidationError(f"rotate takes a KeyProvider, not {provider!r}", field="keys")

        def rewrap(state: RingState, pipe: Any) -> int:
            fields: dict[str, Any] = {"kek": provider.kek_id}
            for key_id, wrapped in state.wrapped.items():
                try:
                    secret = old.unwrap(wrapped, self._context(key_id))
                except DecryptionError as exc:
                    raise self._wrong_kek(state, key_id, str(exc)) from exc
                fields[f"dk:{key_id}"] = provider.wrap(secret, self._context(key_id))
            subjects = self.subjects.rewrapped(pipe, old, provider)
            pipe.multi()
            pipe.hset(self.key, mapping=fields)
            if subjects:
                pipe.hset(self.subjects.key, mapping=subjects)
            return len(state.wrapped) + len(subjects)

        count = self._change(rewrap, self.subjects.key)
        self.provider = provider
        return count

    def shred(self, key_id: int | None = None) -> list[int]:
        """Destroy a data key (None: every one of the namespace, the data subjects' keys too); values
        encrypted with it become unreadable. (A single subject's key goes with ``subjects.destroy``.)

        Reads of such values raise ``DecryptionError`` (``reason="shredded"``); the next write of a secret
        field makes a new data key. This store's local cache is cleared; other processes drop the key
        within ``refresh`` seconds (their caches keep what they already decoded until it changes).

        Returns:
            The ids of the destroyed keys.

        Example:
            >>> store.keys.shred()  # doctest: +SKIP
            [1, 2]
        """
        now = int(time.time() * 1000)

        def destroy(state: RingState, pipe: Any) -> list[int]:
            ids = sorted(state.wrapped) if key_id is None else [key_id]
            unknown = [i for i in ids if i not in state.wrapped]
            if unknown:
                raise ValidationError(f"namespace {self.namespace!r} has no data key {unknown[0]} to shred")
            held = pipe.hgetall(self.subjects.key) if key_id is None else {}
            subject_fields = [n for n in held if n.startswith((b"k:", b"s:"))]
            subject_ids = sorted(int(n[2:]) for n in subject_fields if n.startswith(b"k:"))
            pipe.multi()
            if subject_fields:
                pipe.hdel(self.subjects.key, *subject_fields)
                pipe.hset(self.subjects.key, mapping={f"gone:{i}": now for i in subject_ids})
            if ids:
                pipe.hdel(self.key, *(f"dk:{i}" for i in ids))
                pipe.hset(self.key, mapping={f"gone:{i}": now for i in ids})
            if state.active in ids:
                pipe.hdel(self.key, "active")
            return ids + subject_ids

        ids = self._change(destroy, self.subjects.key)
        with self._lock:
            for i in ids:
                self._keys.pop(i, None)
        if key_id is None:
            self.subjects.forget()
        cache = getattr(self._store, "cache", None)
        if cache is not None:
            cache.clear()
        return ids

    def reencrypt(self, *, max_entities: int | None = None) -> Progress:
        """Rewrite every encrypted value under a new data key, online and resumably.

        See ``rxstate.security.reencrypt``: each rewrite is a compare-and-set ``put`` of the entity, so its
        version, change record and indexes move like any write's; the old keys stay readable until every
        collection is done, then they are retired (destroyed).

        Example:
            >>> store.keys.reencrypt().done  # doctest: +SKIP
            True
        """
        from rxstate.security.reencrypt import reencrypt

        return reencrypt(self._store, self, max_entities=max_entities)

    # -- re-encryption bookkeeping (used by rxstate.security.reencrypt) -----------------------------
    def begin_reencrypt(self) -> Mapping[str, Any]:
        """The re-encryption in progress, or a new one: a new active data key, the old ones to retire."""

        def begin(state: RingState, pipe: Any) -> Mapping[str, Any]:
            if state.reencrypt is not None:
                pipe.multi()
                return state.reencrypt
            old = sorted(state.wrapped)
            target = self._new_key(state, pipe, activate=True)
            plan = {"target": target, "from": old, "started_ms": int(time.time() * 1000)}
            pipe.hset(self.key, "reenc", json.dumps(plan))
            return plan

        return self._change(begin)

    def save_progress(self, collection: str, partition: int, cursor: str) -> None:
        """Record how far re-encryption got in one partition of a collection."""
        self._client.hset(self.key, f"re:{collection}:{partition}", cursor)

    def finish_reencrypt(self, retire: Iterable[int]) -> list[int]:
        """End the re-encryption: retire (destroy) the old data keys, drop the progress fields."""
        now = int(time.time() * 1000)
        wanted = set(retire)

        def finish(state: RingState, pipe: Any) -> list[int]:
            ids = sorted(wanted & set(state.wrapped) - {state.active})
            pipe.multi()
            drop = [f"dk:{i}" for i in ids] + [f"re:{p}" for p in state.progress] + ["reenc"]
            pipe.hdel(self.key, *drop)
            if ids:
                pipe.hset(self.key, mapping={f"gone:{i}": now for i in ids})
            return ids

        ids = self._change(finish)
        with self._lock:
            for i in ids:
                self._keys.pop(i, None)
        return ids
