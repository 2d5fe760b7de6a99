"""Data keys and the layout of an encrypted field value.

A sealed value is ``SEALED_MARKER`` (``\\x00s``), a mode byte, the data key's id (4 bytes, big-endian),
then the ciphertext:

- mode ``r`` (randomised): a 12-byte nonce and AES-256-GCM ciphertext with its tag; the associated data
  is the header and the entity key and field name, so the value decrypts only where it was written.
- mode ``d`` (deterministic, ``searchable`` fields): AES-SIV (512-bit key derived from the data key by
  HKDF) ciphertext; the associated data is the header, namespace, collection and field name. Equal
  values give equal ciphertexts, which is what lets an index find them, and what an observer of the
  server learns: which entities share a value. Such a value can be moved to another entity of the
  same collection and field undetected.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from rxstate.core.codec import SEALED_MARKER
from rxstate.core.errors import DecryptionError

__all__ = ["HEADER_BYTES", "DataKey", "entity_binding", "key_id_of", "search_binding"]

RANDOM = b"r"
DETERMINISTIC = b"d"
HEADER_BYTES = len(SEALED_MARKER) + 1 + 4
_NONCE = 12


def entity_binding(key: str, field: str) -> bytes:
    """Associated data of a randomised value: the entity key (namespace, partition, collection, id) and field."""
    return b"e\0" + key.encode() + b"\0" + field.encode()


def search_binding(namespace: str, collection: str, field: str) -> bytes:
    """Associated data of a deterministic value: namespace, collection and field (no entity)."""
    return b"s\0" + namespace.encode() + b"\0" + collection.encode() + b"\0" + field.encode()


def key_id_of(value: bytes, key: str = "", field: str = "") -> int:
    """The data key id a sealed value names.

    Raises:
        DecryptionError: too short to be a sealed value.
    """
    if len(value) < HEADER_BYTES or value[2:3] not in (RANDOM, DETERMINISTIC):
        raise DecryptionError(f"{key} field {field!r}: truncated or unknown encrypted value", key=key, field=field)
    return int.from_bytes(value[3:HEADER_BYTES], "big")


class DataKey:
    """One data key: AES-256-GCM for randomised values, AES-SIV for searchable ones.

    Example:
        >>> dk = DataKey(1, os.urandom(32))
        >>> sealed = dk.seal(b'"x"', entity_binding("rx:{ns:0}:c:1", "f"))
        >>> dk.open(sealed, entity_binding("rx:{ns:0}:c:1", "f"))
        b'"x"'
    """

    __slots__ = ("_gcm", "_head_d", "_head_r", "_siv", "id")

    def __init__(self, key_id: int, secret: bytes) -> None:
        self.id = key_id
        self._gcm = AESGCM(secret)
        siv_key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"rxstate searchable field").derive(secret)
        self._siv = AESSIV(siv_key)
        tail = key_id.to_bytes(4, "big")
        self._head_r = SEALED_MARKER + RANDOM + tail
        self._head_d = SEALED_MARKER + DETERMINISTIC + tail

    def seal(self, fragment: bytes, binding: bytes) -> bytes:
        """``fragment`` encrypted with a fresh nonce, bound to ``binding``."""
        nonce = os.urandom(_NONCE)
        return self._head_r + nonce + self._gcm.encrypt(nonce, fragment, self._head_r + binding)

    def seal_searchable(self, fragment: bytes, binding: bytes) -> bytes:
        """``fragment`` encrypted deterministically (equal inputs, equal outputs), bound to ``binding``."""
        return self._head_d + self._siv.encrypt(fragment, [self._head_d + binding])

    def open(self, value: bytes, binding: bytes) -> bytes:
        """The fragment of a sealed value.

        Raises:
            InvalidTag: the value was altered, or is bound to another entity or field.
        """
        head = value[:HEADER_BYTES]
        if head[2:3] == RANDOM:
            nonce = value[HEADER_BYTES : HEADER_BYTES + _NONCE]
            return self._gcm.decrypt(nonce, value[HEADER_BYTES + _NONCE :], head + binding)
        if head[2:3] == DETERMINISTIC:
            return self._siv.decrypt(value[HEADER_BYTES:], [head + binding])
        raise InvalidTag
