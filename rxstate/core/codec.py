"""Field encoding: one hash field per model field.

Every field value is stored as its JSON text, so an integer is plain decimal and ``HINCRBY`` works
on it, and a whole entity decodes in one pass by pydantic's JSON parser. A value larger than the
compression threshold is stored lz4-compressed behind a marker that JSON text can never start with.
Secret fields are encrypted at rest by a ``FieldCipher`` (``rxstate.security.KeyRing``) when the store
has one: ``seal`` encrypts them, bound to their entity key, just before a write leaves the process, and
decoding opens every value that starts with ``SEALED_MARKER``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Generic, Protocol, TypeVar

import lz4.frame
import pydantic
from pydantic import TypeAdapter

from rxstate.core.errors import CorruptDataError, DecryptionError, SchemaError, ValidationError
from rxstate.core.model import Model, _secret_inner_type, defer_lazy, load_lazy, unloaded_lazy
from rxstate.core.redaction import error_reason

__all__ = ["RESERVED_FIELDS", "SEALED_MARKER", "Codec", "EntityMeta", "FieldCipher", "ModelCodec"]

M = TypeVar("M", bound=Model)

LZ4_MARKER = b"\x00z"
SEALED_MARKER = b"\x00s"  # an encrypted value (see rxstate.security.cipher for the rest of its layout)
RESERVED_FIELDS = frozenset({b"_v", b"_sv", b"_ts", b"_by", b"_o", b"_x", b"_t"})
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_quote: Any = getattr(json.encoder, "c_encode_basestring", None) or json.encoder.py_encode_basestring
_LITERALS = {True: b"true", False: b"false"}


def _fragment(value: Any) -> bytes:
    """The JSON text of a value other than a str or int, exactly as ``_dumps`` writes it.

    Literals skip the encoder object, whose ``encode`` walks a general Python-level path for
    anything but a string (``ModelCodec._pack_all`` writes strings and integers itself).
    """
    kind = type(value)
    if kind is bool:
        return _LITERALS[value]
    if value is None:
        return b"null"
    return _dumps(value).encode()


@dataclass(frozen=True, slots=True)
class EntityMeta:
    """The reserved fields stored beside an entity's data."""

    version: int
    schema_version: int
    timestamp_ms: int
    actor: str
    offset: str

    @classmethod
    def from_hash(cls, raw: Mapping[bytes, bytes]) -> EntityMeta:
        return cls(
            version=int(raw.get(b"_v", b"0")),
            schema_version=int(raw.get(b"_sv", b"1")),
            timestamp_ms=int(raw.get(b"_ts", b"0")),
            actor=raw.get(b"_by", b"").decode(),
            offset=raw.get(b"_o", b"").decode(),
        )


class FieldCipher(Protocol):
    """Encrypts secret field values at rest; ``rxstate.security.KeyRing`` is the implementation."""

    def seal(
        self, key: str, collection: str, field: str, fragment: bytes, searchable: bool, subject: str | None = None
    ) -> bytes:
        """The stored form of a field's JSON ``fragment`` (or of a value sealed before), starting with
        ``SEALED_MARKER``; sealed under the data ``subject``'s own key when there is one."""
        ...

    def open(self, key: str, collection: str, field: str, value: bytes) -> bytes:
        """The JSON fragment of a sealed value (raises ``DecryptionError``, never returns garbage)."""
        ...

    def writable(self, field: str) -> None:
        """Raise ``ValidationError`` if this store cannot write entities with the secret ``field``."""
        ...

    def search_terms(self, collection: str, field: str, fragment: bytes) -> list[bytes]:
        """The stored forms a searchable field's value may have (one per readable data key)."""
        ...


@dataclass(frozen=True)
class Codec:
    """Encoding settings shared by every collection of a store.

    Attributes:
        compress_threshold: values whose JSON is longer than this many bytes are lz4-compressed.
        max_entity_bytes: the largest encoded entity (before compression) a write accepts.
        cipher: encrypts secret fields at rest (None: they are stored in clear).
    """

    compress_threshold: int = 1024
    max_entity_bytes: int = 8 * 1024 * 1024
    cipher: FieldCipher | None = dataclasses.field(default=None, compare=False, repr=False)

    def pack(self, fragment: bytes, compressible: bool = True) -> bytes:
        """Compress a JSON fragment when that pays off."""
        if compressible and len(fragment) > self.compress_threshold:
            packed: bytes = LZ4_MARKER + lz4.frame.compress(fragment)
            if len(packed) < len(fragment):
                return packed
        return fragment

    @staticmethod
    def plain(value: bytes) -> Any:
        """A stored value as plain data, without its model: its JSON (decompressed), else its text.

        Example:
            >>> Codec.plain(b'{"a":1}'), Codec.plain(b"bare text")
            ({'a': 1}, 'bare text')
        """
        fragment = Codec.unpack(value)
        try:
            return json.loads(fragment)
        except ValueError:
            return fragment.decode("utf-8", "replace")

    @staticmethod
    def unpack(value: bytes, key: str = "", field: str = "") -> bytes:
        """The JSON fragment of a stored value (decompressing it if needed)."""
        if value[:2] == LZ4_MARKER:
            try:
                return lz4.frame.decompress(value[2:])  # type: ignore[no-any-return]
            except RuntimeError as exc:
                raise CorruptDataError(f"{key} field {field!r}: broken lz4 value: {exc}", key=key, field=field) from exc
        return value


class ModelCodec(Generic[M]):
    """Encodes and decodes entities of one model class.

    Example:
        >>> codec = ModelCodec(Agent, Codec())
        >>> fields = codec.encode(Agent(name="planner"))
        >>> fields[:2]
        [('name', b'"planner"'), ('status', b'"idle"')]
        >>> stored = {name.encode(): value for name, value in fields} | {b"_v": b"1", b"_sv": b"1"}
        >>> value, meta = codec.decode(stored)
        >>> value.name, meta.version
        ('planner', 1)
    """

    def __init__(
        self, model: type[M], settings: Codec, uncompressed: Iterable[str] = (), *, collection: str = ""
    ) -> None:
        if not (isinstance(model, type) and issubclass(model, Model)):
            raise SchemaError(f"{model!r} is not a subclass of rxstate.Model", name=getattr(model, "__name__", None))
        self.model = model
        self.settings = settings
        self.collection = collection
        self.fields = tuple(model.model_fields)
        self._json_prefix = {name.encode(): b'"' + name.encode() + b'":' for name in self.fields}
        self._secrets = model.__rxstate_secrets__
        # Sealed values are not compressed: the length of a compressed plaintext tells about its content.
        self._uncompressed = frozenset(uncompressed) | frozenset(self._secrets if settings.cipher else ())
        self._adapters: dict[str, TypeAdapter[Any]] = {}
        self.lazy: frozenset[str] = model.__rxstate_lazy__
        validators = set(model.__pydantic_decorators__.model_validators) - {"_mark_validated"}
        # without model validators, a lazy field left unloaded needs no checking when the others change
        self._lazy_unchecked = self.lazy if not validators else frozenset()

    @cached_property
    def _classified_plain(self) -> frozenset[str]:
        """Secret fields by classification whose type is not ``Secret`` (their values are plain)."""
        fields = self.model.model_fields
        return frozenset(n for n in self._secrets if _secret_inner_type(fields[n].annotation) is None)

    def model_input(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Field values of a change record as model input: the change feed wraps every secret value in
        ``Secret``; a field classified secret but typed plainly takes the value inside.

        Example:
            >>> codec.model_input({"ssn": Secret("078-05-1120")})  # doctest: +SKIP
            {'ssn': '078-05-1120'}
        """
        plain = self._classified_plain
        return {
            n: v.get_secret_value() if n in plain and isinstance(v, pydantic.Secret) else v for n, v in fields.items()
        }

    @cached_property
    def integer_fields(self) -> frozenset[str]:
        """Fields declared as plain ``int`` (the ones ``incr`` accepts); secret fields never are."""
        return frozenset(
            n for n, f in self.model.model_fields.items() if f.annotation is int and n not in self._secrets
        )

    # -- encryption at rest ---------------------------------------------------------------------
    def seal(
        self, key: str, sets: Sequence[tuple[str, bytes]], subject: str | None = None
    ) -> Sequence[tuple[str, bytes]]:
        """Encoded fields of the entity ``key`` with its secret ones encrypted (when the store has keys).

        A value sealed before (a transaction's buffered write) is passed to the cipher too: it keeps it,
        or re-seals it if the active data key changed meanwhile. ``subject``: the data subject the entity
        belongs to (``Model.__subject__``), whose own data key seals its secrets.

        Raises:
            ValidationError: the namespace encrypts its secrets but this store has no key-encryption key
                (then it writes no entity of a model with secret fields: it could not read the result).
        """
        cipher = self.settings.cipher
        if cipher is None or not self._secrets:
            return sets
        secrets, searchable = self._secrets, self.model.__rxstate_searchable__
        cipher.writable(next(iter(secrets)))
        return [
            (n, cipher.seal(key, self.collection, n, v, n in searchable, subject)) if n in secrets else (n, v)
            for n, v in sets
        ]

    @property
    def seals(self) -> bool:
        """Whether writes of this model encrypt something (the store has keys and the model secrets)."""
        return self.settings.cipher is not None and bool(self._secrets)

    def index_terms(self, name: str, fragment: bytes) -> list[bytes]:
        """What an index holds for a field's encoded value: the value, or its ciphertexts if it is sealed."""
        cipher = self.settings.cipher
        if cipher is None or name not in self._secrets:
            return [fragment]
        return cipher.search_terms(self.collection, name, fragment)

    def _unpack(self, value: bytes, key: str, name: str) -> bytes:
        if value[:2] == SEALED_MARKER:
            cipher = self.settings.cipher
            if cipher is None:
                raise DecryptionError(
                    f"{key} field {name!r} is encrypted and this store has no keys: connect with keys=",
                    key=key,
                    field=name,
                    reason="no-keys",
                )
            value = cipher.open(key, self.collection, name, value)
        return self.settings.unpack(value, key, name)

    # -- encoding -------------------------------------------------------------------------------
    def _reveal(self, name: str, value: Any) -> Any:
        """JSON value of a secret field, in clear (pydantic's JSON mode would mask it)."""
        if isinstance(value, pydantic.Secret):
            return self._adapter_for(name, secret_inner=True).dump_python(value.get_secret_value(), mode="json")
        return self._adapter_for(name).dump_python(value, mode="json")

    def encode(self, model: M, *, keep: tuple[str, int] | None = None) -> list[tuple[str, bytes]]:
        """All fields of a model as (field, stored bytes) pairs.

        A lazy field not loaded yet is loaded first, unless ``keep`` is ``(entity key, version)`` of
        where and when the model was read: then it is left out (a write on top of that version keeps
        the stored value).

        Raises:
            ValidationError: ``model`` is not an instance of this codec's model, or is too large.
            LazyFieldStale: a lazy field to load changed since the model was read.
        """
        if type(model) is not self.model:
            raise ValidationError(f"expected a {self.model.__name__}, got {type(model).__name__}")
        skipped: list[str] = []
        if self.lazy:
            loader, skipped = unloaded_lazy(model)
            if loader is not None and skipped and keep != (loader.key, loader.version):
                load_lazy(model)
                skipped = []
        data = model.__pydantic_serializer__.to_python(model, mode="json")  # leaves out unloaded fields
        for name in self._secrets:
            if name in skipped:
                continue
            value = getattr(model, name)
            if isinstance(value, pydantic.Secret):
                data[name] = self._reveal(name, value)
        return self._pack_all(data)

    def revalidate(self, model: M) -> M:
        """Validate a model built without validation (``model_copy(update=...)``).

        Raises:
            ValidationError: a field value breaks the model's types, constraints or validators.
        """
        loader, unloaded = unloaded_lazy(model) if self.lazy else (None, [])
        if loader is not None and unloaded and not set(unloaded) <= self._lazy_unchecked:
            load_lazy(model)  # a model validator may look at them
            loader, unloaded = None, []
        try:
            if loader is None or not unloaded:
                return self.model.model_validate(dict(model))
            # the unloaded fields take their defaults for validation, then are unloaded again
            data = {k: v for k, v in model.__dict__.items() if k not in unloaded}
            return defer_lazy(self.model.model_validate(data), unloaded, loader)
        except pydantic.ValidationError as exc:
            reason = error_reason(exc, self._secrets)
        # Raised outside the handler so that pydantic's error, which quotes the input, is not its context.
        raise ValidationError(f"{self.model.__name__}: {reason}")

    def encode_fields(self, fields: Mapping[str, Any]) -> list[tuple[str, bytes]]:
        """Validate and encode some fields of a model (a partial update).

        Each value is validated against its field's type and constraints.

        Raises:
            ValidationError: an unknown field or an invalid value; nothing is written.
        """
        data: dict[str, Any] = {}
        for name, value in fields.items():
            if name not in self.model.model_fields:
                raise ValidationError(f"{self.model.__name__} has no field {name!r}", field=name)
            adapter = self._adapter_for(name)
            try:
                checked = adapter.validate_python(value)
            except pydantic.ValidationError as exc:
                reason = error_reason(exc, self._secrets, within=name)
            else:
                data[name] = (
                    self._reveal(name, checked) if name in self._secrets else adapter.dump_python(checked, mode="json")
                )
                continue
            raise ValidationError(f"{self.model.__name__}.{name}: {reason}", field=name)
        return self._pack_all(data)

    def _pack_all(self, data: Mapping[str, Any]) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        total = 0
        threshold, uncompressed = self.settings.compress_threshold, self._uncompressed
        for name, value in data.items():
            # Strings and integers inline: this loop runs once per field of every write.
            kind = type(value)
            if kind is str:
                raw: bytes = _quote(value).encode()
            elif kind is int:
                raw = int.__repr__(value).encode()
            else:
                try:
                    raw = _fragment(value)
                except ValueError as exc:  # NaN/inf
                    raise ValidationError(f"{self.model.__name__}.{name}: {exc}", field=name) from exc
            total += len(raw)
            out.append((name, self.settings.pack(raw) if len(raw) > threshold and name not in uncompressed else raw))
        if total > self.settings.max_entity_bytes:
            raise ValidationError(
                f"{self.model.__name__} encodes to {total} bytes, over the limit of "
                f"{self.settings.max_entity_bytes} (Codec.max_entity_bytes)"
            )
        return out

    def _adapter_for(self, name: str, secret_inner: bool = False) -> TypeAdapter[Any]:
        cache_key = name + ("/secret" if secret_inner else "")
        adapter = self._adapters.get(cache_key)
        if adapter is None:
            info = self.model.model_fields[name]
            if secret_inner:
                adapter = TypeAdapter(self._secrets[name])
            else:
                adapter = TypeAdapter(Annotated[info.annotation, info])  # type: ignore[arg-type,unused-ignore]
            self._adapters[cache_key] = adapter
        return adapter

    # -- decoding -------------------------------------------------------------------------------
    def decode(self, raw: Mapping[bytes, bytes], key: str = "") -> tuple[M, EntityMeta]:
        """Decode a stored hash (``HGETALL`` reply) into a model and its metadata.

        Older schema versions are upcast; a newer one raises ``SchemaError``.
        """
        meta = EntityMeta.from_hash(raw)
        if meta.schema_version == self.model.__version__:
            prefixes, unpack = self._json_prefix, self._unpack
            parts = [
                prefixes[field] + (value if value[:1] != b"\x00" else unpack(value, key, field.decode()))
                for field, value in raw.items()
                if field in prefixes
            ]
            try:
                return self.model.model_validate_json(b"{" + b",".join(parts) + b"}"), meta
            except pydantic.ValidationError:
                pass  # foreign writes (e.g. a bare string from redis-cli): take the lenient path below
        data = self._loose_dict(raw, key)
        if meta.schema_version != self.model.__version__:
            data = self.model.upcast(data, meta.schema_version)
        else:
            data = {k: v for k, v in data.items() if k in self.model.model_fields}
        try:
            return self.model.model_validate(data), meta
        except pydantic.ValidationError as exc:
            reason = error_reason(exc, self._secrets)
        raise CorruptDataError(f"{key}: stored data does not fit {self.model.__name__}: {reason}", key=key)

    def decode_value(self, name: str, value: bytes, key: str = "") -> Any:
        """Decode and validate one stored field value (of the entity ``key``, which a sealed value needs)."""
        fragment = self._unpack(value, key, name)
        return self._adapter_for(name).validate_json(fragment)

    def _loose_dict(self, raw: Mapping[bytes, bytes], key: str) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for field, value in raw.items():
            if field in RESERVED_FIELDS:
                continue
            name = field.decode()
            fragment = self._unpack(value, key, name)
            try:
                data[name] = json.loads(fragment)
            except ValueError:
                data[name] = fragment.decode("utf-8", "replace")
        return data
