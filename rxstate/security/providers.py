"""Key providers: where the key-encryption key (KEK) that wraps a namespace's data keys lives.

The KEK never reaches Redis: only data keys wrapped by it are stored (``rxstate.security.keyring``).
``EnvKeyProvider`` and ``FileKeyProvider`` hold the KEK in this process; ``KeyProvider`` is the interface a
KMS-backed provider implements (``wrap``/``unwrap`` call the KMS, which keeps the KEK).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rxstate.core.errors import DecryptionError, ValidationError

__all__ = ["EnvKeyProvider", "FileKeyProvider", "KeyProvider", "StaticKeyProvider", "generate_key"]

KEY_BYTES = 32
_NONCE = 12
_HEX = re.compile(r"[0-9a-fA-F]{64}")


def generate_key() -> str:
    """A new random 256-bit key-encryption key, as base64 text (for ``RXSTATE_KEK`` or a key file).

    Example:
        >>> len(base64.b64decode(generate_key()))
        32
    """
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def parse_key(text: str | bytes, source: str) -> bytes:
    """A 256-bit key from 32 raw bytes, 64 hex digits or base64 text.

    Raises:
        ValidationError: anything else (the key itself is never quoted).
    """
    if isinstance(text, bytes) and len(text) == KEY_BYTES:
        return text
    try:
        clean = (text.decode() if isinstance(text, bytes) else text).strip()
    except UnicodeDecodeError:
        clean = ""
    if _HEX.fullmatch(clean):
        return bytes.fromhex(clean)
    try:
        urlsafe = "-" in clean or "_" in clean
        raw = base64.b64decode(clean + "=" * (-len(clean) % 4), altchars=b"-_" if urlsafe else None)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ValidationError(
            f"{source}: a key-encryption key must be 32 bytes, given as 64 hex digits or base64 text "
            "(make one with rxstate.security.generate_key())",
            field="keys",
        )
    return raw


class KeyProvider(ABC):
    """Wraps and unwraps data keys with a key-encryption key (KEK) kept outside Redis.

    Implement it for a KMS: ``wrap`` and ``unwrap`` call the KMS's encrypt and decrypt operations with
    ``context`` as the encryption context (it names the namespace and the data key), and ``kek_id``
    names the KMS key, so that a store given another KEK than the one its data keys are wrapped under
    says so (``DecryptionError`` with ``reason="wrong-kek"``).

    Example:
        >>> class Kms(KeyProvider):
        ...     kek_id = "kms:alias/rxstate"
        ...     def wrap(self, data_key, context):
        ...         return kms.encrypt(KeyId=self.kek_id, Plaintext=data_key, Context=context)  # doctest: +SKIP
        ...     def unwrap(self, wrapped, context):
        ...         return kms.decrypt(CiphertextBlob=wrapped, Context=context)  # doctest: +SKIP
    """

    kek_id: str
    """A stable, non-secret name of the KEK (stored beside the wrapped keys)."""

    @abstractmethod
    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        """``data_key`` encrypted under the KEK, bound to ``context``."""

    @abstractmethod
    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """The data key of ``wrap(data_key, context)``.

        Raises:
            DecryptionError: not wrapped by this KEK, or under another context.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kek_id={self.kek_id!r}>"


class StaticKeyProvider(KeyProvider):
    """A KEK held in this process, given as bytes or text (32 raw bytes, 64 hex digits or base64).

    Data keys are wrapped with AES-256-GCM under the KEK, with the context as associated data.

    Example:
        >>> provider = StaticKeyProvider(generate_key())
        >>> wrapped = provider.wrap(b"k" * 32, b"ns:1")
        >>> provider.unwrap(wrapped, b"ns:1") == b"k" * 32
        True
    """

    def __init__(self, key: str | bytes, *, source: str = "StaticKeyProvider") -> None:
        kek = parse_key(key, source)
        self._aead = AESGCM(kek)
        self.source = source
        self.kek_id = "local:" + hashlib.sha256(b"rxstate-kek\0" + kek).hexdigest()[:16]

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], context)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError(
                f"{self.source} (KEK {self.kek_id}) cannot unwrap the data key {context.decode(errors='replace')}: "
                "it is wrapped under another key-encryption key",
                reason="wrong-kek",
            ) from exc

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.source} kek_id={self.kek_id!r}>"


class EnvKeyProvider(StaticKeyProvider):
    """The KEK from an environment variable (read once, when the provider is made).

    Example:
        >>> os.environ["RXSTATE_KEK"] = generate_key()
        >>> EnvKeyProvider("RXSTATE_KEK").kek_id.startswith("local:")
        True
    """

    def __init__(self, variable: str = "RXSTATE_KEK") -> None:
        value = os.environ.get(variable)
        if not value:
            raise ValidationError(
                f"environment variable {variable} is not set: it should hold the key-encryption key "
                "(make one with rxstate.security.generate_key())",
                field="keys",
            )
        super().__init__(value, source=f"EnvKeyProvider({variable!r})")


class FileKeyProvider(StaticKeyProvider):
    """The KEK from a file: 32 raw bytes, or 64 hex digits or base64 text (read once).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "kek.txt"
        >>> _ = path.write_text(generate_key())
        >>> FileKeyProvider(path).kek_id.startswith("local:")
        True
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        file = Path(path)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise ValidationError(f"cannot read the key-encryption key file {file}: {exc}", field="keys") from exc
        super().__init__(data, source=f"FileKeyProvider({str(file)!r})")
