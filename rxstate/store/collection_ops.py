"""What defines a collection (model, indexes, partitioning, constraints) and its pure op building.

``CollectionOps`` holds a collection's definition and builds its ``WriteOp`` s without I/O: the one
place where a write is validated (the model, ids, TTLs, integer bounds, expected versions), shared by
the collection's own writes, batches and transactions. ``CollectionReads`` (reads) and ``Collection``
(writes) build on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import annotated_types

from rxstate.core.codec import ModelCodec
from rxstate.core.errors import PermissionDenied, SchemaError, ValidationError
from rxstate.core.keys import validate_collection_name, validate_id
from rxstate.core.model import Model, defer_lazy
from rxstate.core.versioned import Versioned
from rxstate.core.writes import KEEP_TTL, PERSIST, WriteOp, WriteResult
from rxstate.store.audit import shown_fields
from rxstate.store.constraints import Constraint, Constraints, index_fields
from rxstate.store.lazy import EntityFields
from rxstate.store.lock import Lease, fence_args
from rxstate.store.twophase import INTENT_FIELD, settle

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["CollectionOps", "Ttl"]


M = TypeVar("M", bound=Model)
_MISSING: Any = object()
_FETCH_CHUNK = 500
_KEY_MEMO = 65_536
Ttl = float | int | timedelta | None


def _multiple_of(info: Any) -> int | None:
    """The integer ``multiple_of`` constraint of a field, if it has one."""
    for item in info.metadata:
        step = getattr(item, "multiple_of", None)
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            return step
    return None


def _ttl_ms(ttl: Ttl) -> int:
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds <= 0:
        raise ValidationError(f"ttl must be a positive number of seconds or a timedelta, not {ttl!r}")
    return max(1, round(seconds * 1000))


def _int_bounds(info: Any) -> tuple[str, str]:
    """Declared integer bounds of a field (``Field(ge=..., le=...)``) as script arguments."""
    low: int | None = None
    high: int | None = None
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            low = int(meta.ge)  # type: ignore[call-overload]
        elif isinstance(meta, annotated_types.Gt):
            low = int(meta.gt) + 1  # type: ignore[call-overload]
        elif isinstance(meta, annotated_types.Le):
            high = int(meta.le)  # type: ignore[call-overload]
        elif isinstance(meta, annotated_types.Lt):
            high = int(meta.lt) - 1  # type: ignore[call-overload]
    return ("" if low is None else str(low)), ("" if high is None else str(high))


class CollectionOps(Generic[M]):
    """A collection's definition and its op builders (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        name: str,
        model: type[M],
        *,
        indexes: Sequence[str] = (),
        partition_key: str | None = None,
        constraints: Sequence[Constraint] = (),
    ) -> None:
        self.name = validate_collection_name(name)
        if not (isinstance(model, type) and issubclass(model, Model)):
            raise SchemaError(f"collection {name!r}: {model!r} is not a subclass of rxstate.Model", name=name)
        self.model = model
        fields = model.model_fields
        for f in (*indexes, *([partition_key] if partition_key else [])):
            if f not in fields:
                raise SchemaError(
                    f"collection {name!r}: {model.__name__} has no field {f!r} to index or route by", name=name, field=f
                )
        self.indexes: tuple[str, ...] = tuple(dict.fromkeys((*indexes, *index_fields(constraints))))
        sealed = [f for f in self.indexes if f in model.__rxstate_secrets__ and f not in model.__rxstate_searchable__]
        if sealed:
            raise SchemaError(
                f"collection {name!r}: {model.__name__}.{sealed[0]} is secret (encrypted at rest) and cannot be "
                "indexed; classify it searchable=True to index it (equal values then have equal ciphertexts)",
                name=name,
                field=sealed[0],
            )
        lazy = [f for f in (*self.indexes, *([partition_key] if partition_key else [])) if f in model.__rxstate_lazy__]
        if lazy:
            raise SchemaError(
                f"collection {name!r}: {model.__name__}.{lazy[0]} is lazy (left out of reads) and cannot be "
                "indexed or route entities",
                name=name,
                field=lazy[0],
            )
        # a whole-entity read of a model with lazy fields: HMGET of the reserved fields and the others
        self._eager: tuple[str, ...] | None = (
            ("_v", "_sv", "_ts", "_by", "_o", "_t", *(f for f in fields if f not in model.__rxstate_lazy__))
            if model.__rxstate_lazy__
            else None
        )
        self._eager_bytes = tuple(f.encode() for f in self._eager or ())
        self.partition_key = partition_key
        self._store = store
        self._ks = store.keyspace
        constrained = (*self.indexes, *(c.field for c in constraints if isinstance(c, Constraint)))
        self._codec: ModelCodec[M] = ModelCodec(model, store.codec, uncompressed=constrained, collection=name)
        self.constraints = Constraints(store, name, self._codec, constraints, partition_key=partition_key)
        self._bounds = {n: _int_bounds(fields[n]) for n in self._codec.integer_fields}
        decorators = model.__pydantic_decorators__
        # Fields whose new value only a whole-model validation can judge: a partial write of them must
        # validate the resulting entity, which needs its current value (see ``update``).
        self._whole_checked: frozenset[str] = (
            frozenset(fields)
            if set(decorators.model_validators) - {"_mark_validated"}  # the base Model's own marker checks nothing
            else frozenset(f for v in decorators.field_validators.values() for f in v.info.fields)
        )
        if "*" in self._whole_checked:
            self._whole_checked = frozenset(fields)
        self._shown = shown_fields(model)  # the fields an audit entry may show the values of
        # reads are audited when the namespace audits and the model has classified fields (fixed at open)
        self._audit_reads = store.audit.enabled and len(self._shown) < len(fields)
        self._keys: dict[str, str] = {}  # id -> key of ids read through the cache (a key costs ~1 µs)

    def __repr__(self) -> str:
        return f"<Collection {self.name!r} of {self.model.__name__} in namespace {self._ks.namespace!r}>"

    def _partition(self, entity_id: str, partition: str | None) -> int:
        if self.partition_key is None:
            if partition is not None:
                raise ValidationError(f"collection {self.name!r} has no partition key; drop partition=")
            return self._ks.partition_of(entity_id)
        if partition is None:
            raise ValidationError(
                f"collection {self.name!r} is partitioned by {self.partition_key!r}: pass partition=<its value>"
            )
        return self._ks.partition_of(str(partition))

    def _partition_of_value(self, entity_id: str, value: M) -> int:
        if self.partition_key is None:
            return self._ks.partition_of(entity_id)
        return self._ks.partition_of(str(getattr(value, self.partition_key)))

    def key(self, entity_id: str, *, partition: str | None = None) -> str:
        """The Redis key of an entity (for inspection and tooling)."""
        validate_id(entity_id)
        return self._ks.entity(self.name, entity_id, self._partition(entity_id, partition))

    def _check_model(self, value: object) -> M:
        """``value`` validated in full: what the store accepts, it can read back.

        An instance made with ``model_copy(update=...)`` or ``model_construct`` skipped validation, so
        every value is validated again before any write is built from it.
        """
        if type(value) is not self.model:
            raise ValidationError(f"collection {self.name!r} stores {self.model.__name__}, not {type(value).__name__}")
        if value.is_validated():
            return value
        return self._codec.revalidate(value)  # type: ignore[arg-type,unused-ignore]

    # -- the principal's policy (rxstate.security): one check per read entry, one per built write op ---------
    def _authorize(
        self, action: str, entity_id: str | None = None, entity: Mapping[str, Any] | None = None, *, whole: bool = False
    ) -> None:
        """Raise ``PermissionDenied`` unless the store's principal may ``action`` (no principal: no check)."""
        guard = self._store.guard
        if guard is None:
            return
        try:
            guard.require(
                action, self.name, entity_id, entity, classified=bool(self.model.__rxstate_secrets__), whole=whole
            )
        except PermissionDenied as exc:
            audit = self._store.audit
            if audit.enabled:  # a denial is audited too (it changes nothing else)
                audit.record(action, self.name, entity_id or "*", outcome="denied", detail=str(exc))
            raise

    def _authorize_value(self, entity_id: str, value: M) -> None:
        """The check of a read entity against rules that look at its fields."""
        guard = self._store.guard
        if guard is not None:
            needed = guard.needs_entity("read", self.name)
            if needed:
                self._authorize(
                    "read", entity_id, {f: getattr(value, f) for f in needed if f in type(value).model_fields}
                )

    def _authorize_write(self, kind: str, entity_id: str, partition: int, kw: Mapping[str, Any]) -> None:
        """The check of a write op: against the stored entity and the entity it would leave, when rules
        look at entity fields (read just before; the write itself does not re-check them)."""
        guard = self._store.guard
        if guard is None:
            return
        action = {"delete": "delete", "check": "read"}.get(kind, "write")
        needed = sorted(guard.needs_entity(action, self.name))
        if not needed:
            self._authorize(action, entity_id)
            return
        key = self._ks.entity(self.name, entity_id, partition)
        stored = {
            f: self._codec.decode_value(f, v, key)
            for f, v in zip(needed, self._store.client.hmget(key, needed), strict=True)
            if v is not None
        }
        if stored:
            self._authorize(action, entity_id, stored)
        if kind != "delete":
            sets = {f: self._codec.decode_value(f, v, key) for f, v in kw.get("sets") or () if f in needed}
            incrs = {f: stored.get(f, 0) + amount for f, amount, _low, _high in kw.get("incrs") or () if f in needed}
            after = {**stored, **sets, **incrs}
            self._authorize(action, entity_id, after)
        elif not stored:
            self._authorize(action, entity_id, {})

    def _subject_of(self, entity_id: str, key: str, sets: Sequence[tuple[str, bytes]]) -> str | None:
        """The data subject whose key seals this write's secrets (``Model.__subject__``), if any.

        A subject field the write does not set is read from the stored entity (one ``HGET``, only for
        models that have a subject field and secrets to seal).
        """
        field = self.model.__subject__
        if field is None or not self._codec.seals:
            return None
        if field == "id":
            return entity_id
        raw = next((v for n, v in sets if n == field), None)
        if raw is None:
            raw = self._store.client.hget(key, field)
            if raw is None:
                return None
        value = self._codec.decode_value(field, raw, key)
        return None if value is None else str(value)

    def _op(self, kind: str, entity_id: str, partition: int, *, fence: Lease | None = None, **kw: Any) -> WriteOp:
        self._authorize_write(kind, entity_id, partition, kw)
        if kind != "delete":  # secret fields leave the process encrypted, bound to this entity's key
            key = self._ks.entity(self.name, entity_id, partition)
            sets = kw.get("sets", ())
            kw["sets"] = self._codec.seal(key, sets, self._subject_of(entity_id, key, sets))
        op = WriteOp(
            kind=kind,
            collection=self.name,
            id=entity_id,
            partition=partition,
            schema_version=self.model.__version__,
            indexes=self.indexes,
            fence=fence_args(fence),
            audit=self._store.audit.subject(self._shown),
            **kw,
        )
        self.constraints.attach(op)
        return op

    def _versioned(self, entity_id: str, value: M, result: WriteResult) -> Versioned[M]:
        return Versioned(
            id=entity_id,
            value=value,
            version=result.version,
            schema_version=self.model.__version__,
            timestamp_ms=result.timestamp_ms,
            actor=self._store.actor,
            offset=result.offset,
        )

    def _decode_full(self, entity_id: str, partition: str | None, result: WriteResult) -> Versioned[M]:
        return self._decode(entity_id, result.full, self.key(entity_id, partition=partition), checked=False)

    def _settled(self, key: str, raw: dict[bytes, bytes]) -> dict[bytes, bytes]:
        """A read entity hash with the transaction intent it may carry settled first (see ``twophase``).

        Every entity hash read from the server passes here, so a store's read meter counts it here.
        """
        meter = self._store.read_meter
        if meter is not None:
            meter.count(key, sum(len(k) + len(v) for k, v in raw.items()))
        return raw if INTENT_FIELD not in raw else settle(self._store, key, raw)

    def _queue_read(self, pipe: Any, key: str) -> None:
        """Queue the read of a whole entity: ``HGETALL``, or ``HMGET`` of all but its lazy fields."""
        if self._eager is None:
            pipe.hgetall(key)
        else:
            pipe.hmget(key, self._eager)

    def _read_now(self, key: str) -> Any:
        """The reply of a whole-entity read of ``key`` (see ``_queue_read``)."""
        client = self._store.client
        return client.hgetall(key) if self._eager is None else client.hmget(key, self._eager)

    def _read_reply(self, entity_id: str, key: str, reply: Any) -> tuple[Versioned[M] | None, dict[bytes, bytes]]:
        """The entity of a ``_queue_read`` reply (None if absent), and the stored fields it was made of.

        A model with lazy fields comes without them (they load on access), unless the entity carries a
        pending transaction or an older schema: then it is read whole, to be settled or upcast.
        """
        if self._eager is None:
            raw = self._settled(key, reply)
            return (self._decode(entity_id, raw, key) if raw else None), raw
        raw = {n: v for n, v in zip(self._eager_bytes, reply, strict=True) if v is not None}
        if INTENT_FIELD not in raw and b"_v" not in raw:
            return None, {}
        if INTENT_FIELD in raw or int(raw.get(b"_sv", b"1")) != self.model.__version__:
            raw = self._settled(key, self._store.client.hgetall(key))
            return (self._decode(entity_id, raw, key) if raw else None), raw
        return self._decode(entity_id, raw, key, lazy=True), raw

    def _decode(
        self, entity_id: str, raw: Mapping[bytes, bytes], key: str, *, checked: bool = True, lazy: bool = False
    ) -> Versioned[M]:
        """A stored hash as a ``Versioned``; ``checked``: a read, so the principal's read rules apply;
        ``lazy``: ``raw`` was read without the lazy fields, which the value loads on access."""
        value, meta = self._codec.decode(raw, key)
        if lazy:
            value = defer_lazy(value, self.model.__rxstate_lazy__, EntityFields(self, entity_id, key, meta.version))
        if checked:
            self._authorize_value(entity_id, value)
        return Versioned(
            id=entity_id,
            value=value,
            version=meta.version,
            schema_version=meta.schema_version,
            timestamp_ms=meta.timestamp_ms,
            actor=meta.actor,
            offset=meta.offset,
        )

    def put_op(
        self,
        entity_id: str,
        value: M,
        *,
        kind: str = "put",
        expected_version: int | None = None,
        ttl: Ttl = None,
        fence: Lease | None = None,
    ) -> WriteOp:
        """The ``WriteOp`` of a ``put``/``create``, validated (for batches and transactions)."""
        validate_id(entity_id)
        return self._put_op(entity_id, self._check_model(value), kind, expected_version, ttl, fence)

    def _put_op(
        self, entity_id: str, value: M, kind: str, expected_version: int | None, ttl: Ttl, fence: Lease | None
    ) -> WriteOp:
        return self._op(
            kind,
            entity_id,
            self._partition_of_value(entity_id, value),
            expected=0 if kind == "create" else expected_version,
            ttl=PERSIST if ttl is None else str(_ttl_ms(ttl)),
            sets=self._codec.encode(value),
            fence=fence,
        )

    def _versioned_at(
        self, pairs: Sequence[tuple[str, M]], values: Sequence[M], n: int, result: WriteResult
    ) -> Versioned[M]:
        return self._versioned(pairs[n][0], values[n], result)

    def update_op(
        self,
        entity_id: str,
        *,
        expected_version: int | None = None,
        ttl: Ttl = None,
        partition: str | None = None,
        fence: Lease | None = None,
        **fields: Any,
    ) -> WriteOp:
        """The ``WriteOp`` of a partial ``update``, validated (for batches and transactions)."""
        validate_id(entity_id)
        if not fields:
            raise ValidationError("update needs at least one field to set")
        checked = sorted(self._whole_checked.intersection(fields))
        if checked:
            raise ValidationError(
                f"{self.model.__name__} validates {checked} with validators that need the whole entity: "
                "a partial update of them in a batch or transaction cannot be checked before it is written; "
                "use put, or update with a function",
                field=checked[0],
            )
        if self.partition_key in fields:
            raise ValidationError(
                f"{self.partition_key!r} is the partition key: it cannot change", field=self.partition_key
            )
        return self._op(
            "update",
            entity_id,
            self._partition(entity_id, partition),
            expected=expected_version,
            ttl=KEEP_TTL if ttl is None else str(_ttl_ms(ttl)),
            want_full=True,
            sets=self._codec.encode_fields(fields),
            fence=fence,
        )

    def incr_op(
        self,
        entity_id: str,
        field: str,
        amount: int = 1,
        *,
        expected_version: int | None = None,
        partition: str | None = None,
        fence: Lease | None = None,
    ) -> WriteOp:
        """The ``WriteOp`` of an ``incr``, validated (for batches and transactions)."""
        validate_id(entity_id)
        self._check_incr(field, amount)
        low, high = self._bounds[field]
        return self._op(
            "incr",
            entity_id,
            self._partition(entity_id, partition),
            expected=expected_version,
            want_full=True,
            incrs=[(field, amount, low, high)],
            fence=fence,
        )

    def _check_incr(self, field: str, amount: object) -> None:
        """Refuse an increment the script could not keep valid (the one check of incr, for every caller)."""
        if field not in self._codec.integer_fields:
            raise ValidationError(f"{self.model.__name__}.{field} is not an int field", field=field)
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValidationError(f"incr amount must be an int, not {amount!r}", field=field)
        if field in self._whole_checked:
            raise ValidationError(
                f"{self.model.__name__}.{field} has validators the server cannot run: "
                "use update with a function to change it",
                field=field,
            )
        step = _multiple_of(self.model.model_fields[field])
        if step is not None and amount % step:
            raise ValidationError(
                f"{self.model.__name__}.{field} must stay a multiple of {step}: incr by {amount} would not",
                field=field,
            )

    def delete_op(
        self,
        entity_id: str,
        *,
        expected_version: int | None = None,
        partition: str | None = None,
        fence: Lease | None = None,
    ) -> WriteOp:
        """The ``WriteOp`` of a ``delete``, validated (for batches and transactions)."""
        validate_id(entity_id)
        return self._op(
            "delete", entity_id, self._partition(entity_id, partition), expected=expected_version, fence=fence
        )
