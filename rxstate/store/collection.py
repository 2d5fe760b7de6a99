"""Collections: typed, versioned CRUD over one model, with secondary indexes and TTLs."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import annotated_types

from rxstate.core import display
from rxstate.core.codec import ModelCodec
from rxstate.core.errors import ConflictError, NotFound, RxStateError, SchemaError, ValidationError
from rxstate.core.keys import validate_collection_name, validate_id
from rxstate.core.model import Model
from rxstate.core.tracking import track, track_members
from rxstate.core.versioned import Versioned
from rxstate.core.writes import KEEP_TTL, PERSIST, WriteOp, WriteResult
from rxstate.store.batch import run_many
from rxstate.store.constraints import Constraint, Constraints, StaleDeclarations, index_fields
from rxstate.store.lock import Lease, fence_args
from rxstate.store.readthrough import fetch_many, read_one, write_one, write_value
from rxstate.store.twophase import INTENT_FIELD, settle, settle_listed

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["Collection"]

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


class Collection(Generic[M]):
    """Entities of one model in a store, addressed by id.

    Every write is one atomic script call that checks the expected version (when given), bumps the
    version, maintains indexes and appends a change record. Open one with ``store.collection``.

    Example:
        >>> agents = store.collection("agents", Agent, indexes=["status"])  # doctest: +SKIP
        >>> agents.put("a1", Agent(name="planner")).version  # doctest: +SKIP
        1
    """

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
            raise SchemaError(f"collection {name!r}: {model!r} is not a subclass of rxstate.Model")
        self.model = model
        fields = model.model_fields
        for f in (*indexes, *([partition_key] if partition_key else [])):
            if f not in fields:
                raise SchemaError(f"collection {name!r}: {model.__name__} has no field {f!r} to index or route by")
        self.indexes: tuple[str, ...] = tuple(dict.fromkeys((*indexes, *index_fields(constraints))))
        sealed = [f for f in self.indexes if f in model.__rxstate_secrets__ and f not in model.__rxstate_searchable__]
        if sealed:
            raise SchemaError(
                f"collection {name!r}: {model.__name__}.{sealed[0]} is secret (encrypted at rest) and cannot be "
                "indexed; classify it searchable=True to index it (equal values then have equal ciphertexts)"
            )
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
        self._keys: dict[str, str] = {}  # id -> key of ids read through the cache (a key costs ~1 µs)

    def __repr__(self) -> str:
        return f"<Collection {self.name!r} of {self.model.__name__} in namespace {self._ks.namespace!r}>"

    # -- routing -----------------------------------------------------------------------------------
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

    def _op(self, kind: str, entity_id: str, partition: int, *, fence: Lease | None = None, **kw: Any) -> WriteOp:
        if kind != "delete":  # secret fields leave the process encrypted, bound to this entity's key
            kw["sets"] = self._codec.seal(self._ks.entity(self.name, entity_id, partition), kw.get("sets", ()))
        op = WriteOp(
            kind=kind,
            collection=self.name,
            id=entity_id,
            partition=partition,
            schema_version=self.model.__version__,
            indexes=self.indexes,
            fence=fence_args(fence),
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
        return self._decode(entity_id, result.full, self.key(entity_id, partition=partition))

    def _settled(self, key: str, raw: dict[bytes, bytes]) -> dict[bytes, bytes]:
        """A read entity hash with the transaction intent it may carry settled first (see ``twophase``)."""
        return raw if INTENT_FIELD not in raw else settle(self._store, key, raw)

    def _decode(self, entity_id: str, raw: Mapping[bytes, bytes], key: str) -> Versioned[M]:
        value, meta = self._codec.decode(raw, key)
        return Versioned(
            id=entity_id,
            value=value,
            version=meta.version,
            schema_version=meta.schema_version,
            timestamp_ms=meta.timestamp_ms,
            actor=meta.actor,
            offset=meta.offset,
        )

    # -- writes ------------------------------------------------------------------------------------
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

    def put(
        self,
        entity_id: str,
        value: M,
        *,
        expected_version: int | None = None,
        ttl: Ttl = None,
        fence: Lease | None = None,
    ) -> Versioned[M]:
        """Store ``value`` under ``entity_id``, replacing any previous value.

        Args:
            entity_id: the entity id.
            value: an instance of the collection's model.
            expected_version: only write if the current version is this (0: only if absent).
            ttl: seconds (or a timedelta) after which the entity expires; None keeps it forever.
            fence: a lease of ``store.lock``: the write is refused (``LockError``) if a newer lease of
                that lock has already written to this partition, or the lease has expired.

        Raises:
            ValidationError: bad id, value or ttl (nothing is written).
            ConflictError: ``expected_version`` did not match.
            IntegrityError: a declared constraint would be violated.

        Example:
            >>> agents.put("a1", Agent(name="planner")).version  # doctest: +SKIP
            1
        """
        validate_id(entity_id)
        checked = self._check_model(value)
        op = self._put_op(entity_id, checked, "put", expected_version, ttl, fence)
        return write_value(self, op, lambda r: self._versioned(entity_id, checked, r))

    def create(self, entity_id: str, value: M, *, ttl: Ttl = None, fence: Lease | None = None) -> Versioned[M]:
        """Store a new entity; fails with ``AlreadyExists`` if the id is taken.

        Example:
            >>> agents.create("a2", Agent(name="coder")).version  # doctest: +SKIP
            1
        """
        validate_id(entity_id)
        checked = self._check_model(value)
        op = self._put_op(entity_id, checked, "create", None, ttl, fence)
        return write_value(self, op, lambda r: self._versioned(entity_id, checked, r))

    def _versioned_at(
        self, pairs: Sequence[tuple[str, M]], values: Sequence[M], n: int, result: WriteResult
    ) -> Versioned[M]:
        return self._versioned(pairs[n][0], values[n], result)

    def put_many(
        self, items: Mapping[str, M] | Iterable[tuple[str, M]], *, ttl: Ttl = None, atomic: bool = False
    ) -> list[Versioned[M] | RxStateError]:
        """Store many entities in one round trip, reporting each item's result.

        Args:
            items: ``{id: value}`` or ``(id, value)`` pairs.
            ttl: TTL of every item.
            atomic: all-or-nothing per partition (one script call per partition, pipelined across
                partitions; a refused item fails its partition's items); invalid input then raises at once.
                Otherwise each item is atomic alone and a bad item fails alone.

        Returns:
            One entry per item, in order: its ``Versioned`` or the error that refused it.

        Example:
            >>> results = agents.put_many({"a1": Agent(name="x"), "a2": Agent(name="y")})  # doctest: +SKIP
        """
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        checked: list[M] = []  # the validated values, by position: those are what the cache keeps

        def build(n: int) -> WriteOp:
            entity_id, value = pairs[n]
            validate_id(entity_id)
            checked[n] = self._check_model(value)
            return self._put_op(entity_id, checked[n], "put", None, ttl, None)

        checked.extend(v for _, v in pairs)
        return run_many(
            self._store,
            [partial(build, n) for n in range(len(pairs))],
            [partial(self._versioned_at, pairs, checked, n) for n in range(len(pairs))],
            atomic=atomic,
        )

    def update_many(
        self,
        updates: Mapping[str, Mapping[str, Any]] | Iterable[tuple[str, Mapping[str, Any]]],
        *,
        ttl: Ttl = None,
        partition: str | None = None,
        atomic: bool = False,
    ) -> list[Versioned[M] | RxStateError]:
        """Partial updates of many entities in one round trip, reporting each item's result.

        Args:
            updates: ``{id: {field: value}}`` or ``(id, {field: value})`` pairs.
            ttl: a new TTL for every item (None keeps each one's).
            partition: the partition-key value of every item, for a collection that has one.
            atomic: all-or-nothing per partition, as in ``put_many``.

        Returns:
            One entry per item, in order: its new ``Versioned`` or the error that refused it.

        Example:
            >>> agents.update_many({"a1": {"status": "busy"}, "a2": {"load": 3}}, atomic=True)  # doctest: +SKIP
        """
        pairs = list(updates.items() if isinstance(updates, Mapping) else updates)
        return run_many(
            self._store,
            [partial(self.update_op, i, ttl=ttl, partition=partition, **f) for i, f in pairs],
            [partial(self._decode_full, i, partition) for i, _f in pairs],
            atomic=atomic,
        )

    def update(
        self,
        entity_id: str,
        fn: Callable[[M], M] | None = None,
        /,
        *,
        expected_version: int | None = None,
        ttl: Ttl = None,
        retries: int = 16,
        partition: str | None = None,
        fence: Lease | None = None,
        **fields: Any,
    ) -> Versioned[M]:
        """Change an existing entity: set some fields, or apply a read-modify-write function.

        With keyword fields, each value is validated against its field and written in one script call
        (no read). With ``fn``, the current value is read, ``fn(value)`` must return the new model
        (validated in full), and only changed fields are written, retried on a concurrent change
        unless ``expected_version`` was given.

        Args:
            entity_id: the entity id.
            fn: ``old -> new`` function, instead of keyword fields.
            expected_version: only write if the current version is this.
            ttl: a new TTL in seconds; None keeps the current one.
            retries: attempts of a read-modify-write before ``ConflictError``.
            partition: the partition-key value, for a collection that has one.
            fence: a lease of ``store.lock`` fencing this write (see ``put``).
            **fields: field values to set.

        Raises:
            NotFound: no such entity.
            ConflictError: ``expected_version`` did not match, or retries ran out.
            ValidationError: bad field name or value (nothing is written).

        Example:
            >>> agents.update("a1", status="busy", expected_version=1).version  # doctest: +SKIP
            2
            >>> agents.update("a1", lambda a: a.model_copy(update={"load": a.load + 1}))  # doctest: +SKIP
        """
        validate_id(entity_id)
        ttl_arg = KEEP_TTL if ttl is None else str(_ttl_ms(ttl))
        if fn is not None:
            if fields:
                raise ValidationError("update takes either a function or field values, not both")
            return self._update_with(entity_id, fn, expected_version, ttl_arg, retries, partition, fence)
        if self._whole_checked.intersection(fields):
            self._codec.encode_fields(fields)  # each value on its own first: the clearest error

            def merged(current: M) -> M:
                return current.model_copy(update=fields)

            return self._update_with(entity_id, merged, expected_version, ttl_arg, retries, partition, fence)
        op = self.update_op(
            entity_id, expected_version=expected_version, ttl=ttl, partition=partition, fence=fence, **fields
        )
        key = self._ks.entity(self.name, entity_id, op.partition)
        return write_value(self, op, lambda r: self._decode(entity_id, r.full, key))

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

    def _update_with(
        self,
        entity_id: str,
        fn: Callable[[M], M],
        expected: int | None,
        ttl: str,
        retries: int,
        partition: str | None,
        fence: Lease | None = None,
    ) -> Versioned[M]:
        p = self._partition(entity_id, partition)
        for _attempt in range(max(1, retries)):
            current = self.get_versioned(entity_id, partition=partition)
            if expected is not None and current.version != expected:
                raise ConflictError(
                    f"{self.key(entity_id, partition=partition)}: expected version {expected}, found {current.version}",
                    key=self.key(entity_id, partition=partition),
                    expected=expected,
                    actual=current.version,
                )
            new = fn(current.value)
            new = self._check_model(new)
            if self.partition_key and getattr(new, self.partition_key) != getattr(current.value, self.partition_key):
                raise ValidationError(f"{self.partition_key!r} is the partition key: it cannot change")
            encoded = self._codec.encode(new)
            old = dict(self._codec.encode(current.value))
            changed = [(n, v) for n, v in encoded if old.get(n) != v]
            if not changed and ttl == KEEP_TTL:
                return current
            op = self._op("update", entity_id, p, expected=current.version, ttl=ttl, sets=changed, fence=fence)
            try:
                return write_value(self, op, partial(self._versioned, entity_id, new))
            except ConflictError:
                if expected is not None:
                    raise
                continue
        raise ConflictError(
            f"{self.key(entity_id, partition=partition)}: still changing after {retries} attempts",
            key=self.key(entity_id, partition=partition),
        )

    def incr(
        self,
        entity_id: str,
        field: str,
        amount: int = 1,
        *,
        expected_version: int | None = None,
        partition: str | None = None,
        fence: Lease | None = None,
    ) -> int:
        """Add ``amount`` to an integer field on the server, atomically; returns the new value.

        Declared bounds (``Field(ge=0, le=10)``) are enforced by the script.

        Raises:
            ValidationError: not an integer field, or a non-integer amount.
            IntegrityError: the result would leave the field's bounds.
            NotFound: no such entity.

        Example:
            >>> agents.incr("a1", "load", 2)  # doctest: +SKIP
            3
        """
        op = self.incr_op(entity_id, field, amount, expected_version=expected_version, partition=partition, fence=fence)
        return int(write_one(self, op).full[field.encode()])

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

    def delete(
        self,
        entity_id: str,
        *,
        expected_version: int | None = None,
        partition: str | None = None,
        fence: Lease | None = None,
    ) -> bool:
        """Delete an entity; returns whether it existed.

        Raises:
            ConflictError: ``expected_version`` did not match.
            IntegrityError: a live entity still references it (a declared ``references``).

        Example:
            >>> agents.delete("a1")  # doctest: +SKIP
            True
        """
        op = self.delete_op(entity_id, expected_version=expected_version, partition=partition, fence=fence)
        try:
            return write_one(self, op).version > 0
        except StaleDeclarations:
            self.constraints.refresh_delete(op)  # references were declared elsewhere since we looked
            return write_one(self, op).version > 0

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

    # -- reads -------------------------------------------------------------------------------------
    def get_versioned(self, entity_id: str, *, partition: str | None = None, consistent: bool = False) -> Versioned[M]:
        """The current value with its version and metadata.

        Served from the local cache when it holds the entity; ``consistent=True`` reads from the server
        (a linearizable read: the cache may trail a write by another client by its invalidation delay).

        Raises:
            NotFound: no such entity.

        Example:
            >>> agents.get_versioned("a1").version  # doctest: +SKIP
            1
        """
        track(self.name, entity_id)
        cache = None if consistent else self._store._cache
        if cache is not None:
            key = self._keys.get(entity_id) if partition is None and type(entity_id) is str else None
            if key is None:
                key = self.key(entity_id, partition=partition)
                if partition is None:
                    if len(self._keys) >= _KEY_MEMO:
                        self._keys.clear()
                    self._keys[entity_id] = key
            return cache.get(key) or read_one(self, cache, entity_id, key)
        key = self.key(entity_id, partition=partition)
        raw = self._settled(key, self._store.client.hgetall(key))
        if not raw:
            raise NotFound(f"{self.name} {entity_id!r} does not exist ({key})", key=key)
        return self._decode(entity_id, raw, key)

    @overload
    def get(self, entity_id: str, *, partition: str | None = None, consistent: bool = False) -> M: ...
    @overload
    def get(
        self, entity_id: str, default: Any, *, partition: str | None = None, consistent: bool = False
    ) -> M | Any: ...

    def get(
        self, entity_id: str, default: Any = _MISSING, *, partition: str | None = None, consistent: bool = False
    ) -> Any:
        """The current value; ``default`` (if given) when absent, else ``NotFound``.

        Example:
            >>> agents.get("a1").name  # doctest: +SKIP
            'planner'
        """
        try:
            return self.get_versioned(entity_id, partition=partition, consistent=consistent).value
        except NotFound:
            if default is _MISSING:
                raise
            return default

    def exists(self, entity_id: str, *, partition: str | None = None) -> bool:
        """Whether an entity exists.

        Example:
            >>> agents.exists("a1")  # doctest: +SKIP
            True
        """
        track(self.name, entity_id)
        key = self.key(entity_id, partition=partition)
        version, intent = self._store.client.hmget(key, "_v", "_t")
        if intent is not None:
            return b"_v" in self._settled(key, self._store.client.hgetall(key))
        return version is not None

    def get_many(
        self, entity_ids: Iterable[str], *, partition: str | None = None, consistent: bool = False
    ) -> dict[str, M]:
        """Values of many ids in one round trip; absent ids are left out.

        Example:
            >>> agents.get_many(["a1", "a2", "nope"]).keys()  # doctest: +SKIP
            dict_keys(['a1', 'a2'])
        """
        return {v.id: v.value for v in self._fetch(list(entity_ids), partition, consistent)}

    def get_many_versioned(
        self, entity_ids: Iterable[str], *, partition: str | None = None, consistent: bool = False
    ) -> list[Versioned[M]]:
        """Like ``get_many`` but with versions, in the order of ``entity_ids``."""
        return self._fetch(list(entity_ids), partition, consistent)

    def _fetch(self, entity_ids: Sequence[str], partition: str | None, consistent: bool = False) -> list[Versioned[M]]:
        for i in entity_ids:
            track(self.name, i)
        pairs = [(i, self.key(i, partition=partition)) for i in entity_ids]
        return self._fetch_keyed(pairs, cached=not consistent)

    def _fetch_keyed(self, pairs: Sequence[tuple[str, str]], *, cached: bool) -> list[Versioned[M]]:
        """Values of ``(id, key)`` pairs in order, absent ones left out, in pipelined chunks."""
        out: list[Versioned[M]] = []
        cache = self._store._cache if cached else None
        for start in range(0, len(pairs), _FETCH_CHUNK):
            chunk = pairs[start : start + _FETCH_CHUNK]
            if cache is not None:
                out += fetch_many(self, cache, chunk)
                continue
            pipe = self._store.client.pipeline(transaction=False)
            for _id, key in chunk:
                pipe.hgetall(key)
            for (entity_id, key), raw in zip(chunk, pipe.execute(), strict=True):
                raw = self._settled(key, raw)
                if raw:
                    out.append(self._decode(entity_id, raw, key))
        return out

    def _per_partition(self, command: str, key_of: Callable[[int], str], *args: Any) -> list[Any]:
        for _attempt in range(3):
            pipe = self._store.client.pipeline(transaction=False)
            for p in range(self._ks.partitions):
                pipe.execute_command(command, key_of(p), *args)
                pipe.hgetall(self._ks.tx_index(p))  # transactions with intents here: see twophase
            replies = pipe.execute()
            if not any(replies[1::2]) or not settle_listed(self._store, replies[1::2]):
                break
        return replies[0::2]  # type: ignore[no-any-return]

    def ids(self) -> list[str]:
        """Every id in the collection, sorted.

        Example:
            >>> agents.ids()  # doctest: +SKIP
            ['a1', 'a2']
        """
        track_members(self.name)
        return [entity_id for entity_id, _p in self._routed_ids()]

    def _routed_ids(self) -> list[tuple[str, int]]:
        replies = self._per_partition("SMEMBERS", lambda p: self._ks.ids(self.name, p))
        return sorted((m.decode(), p) for p, members in enumerate(replies) for m in members)

    def _fetch_routed(self, pairs: Sequence[tuple[str, int]]) -> list[Versioned[M]]:
        return self._fetch_keyed([(i, self._ks.entity(self.name, i, p)) for i, p in pairs], cached=False)

    def all(self) -> list[M]:
        """Every entity, ordered by id.

        Example:
            >>> [a.name for a in agents.all()]  # doctest: +SKIP
            ['planner', 'coder']
        """
        return [v.value for v in self.all_versioned()]

    def all_versioned(self) -> list[Versioned[M]]:
        """Every entity with its version, ordered by id."""
        track_members(self.name, None)
        return self._fetch_routed(self._routed_ids())

    def count(self) -> int:
        """The number of entities (expired ones are reaped first).

        Example:
            >>> agents.count()  # doctest: +SKIP
            2
        """
        self.reap()
        track_members(self.name)
        return sum(self._per_partition("SCARD", lambda p: self._ks.ids(self.name, p)))

    def where(self, **conditions: Any) -> list[M]:
        """Entities whose indexed fields equal the given values, ordered by id.

        Raises:
            ValidationError: a condition names a field without an index.

        Example:
            >>> [a.name for a in agents.where(status="busy")]  # doctest: +SKIP
            ['planner']
        """
        return [v.value for v in self.where_versioned(**conditions)]

    def where_versioned(self, **conditions: Any) -> list[Versioned[M]]:
        """Like ``where``, with versions."""
        if not conditions:
            raise ValidationError("where() needs at least one condition")
        for f in conditions:
            if f not in self.indexes:
                raise ValidationError(
                    f"{self.name}.{f} has no index (declared: {', '.join(self.indexes) or 'none'})", field=f
                )
        encoded = dict(self._codec.encode_fields(conditions))
        track_members(self.name, encoded)
        matches: set[tuple[str, int]] | None = None
        for f, value in encoded.items():
            found: set[tuple[str, int]] = set()
            for term in self._codec.index_terms(f, value):  # a searchable secret: its ciphertext under each key
                lo, hi = b"[" + term + b"\x00", b"(" + term + b"\x01"
                replies = self._per_partition("ZRANGEBYLEX", partial(self._ks.index, self.name, f), lo, hi)
                found |= {(m[len(term) + 1 :].decode(), p) for p, members in enumerate(replies) for m in members}
            matches = found if matches is None else matches & found
        wanted = {f: self._codec.decode_value(f, v) for f, v in encoded.items()}
        for entity_id, _p in matches or ():
            track(self.name, entity_id)
        # Re-check on the fetched value: it may have changed between the index read and the fetch.
        return [
            v
            for v in self._fetch_routed(sorted(matches or ()))
            if all(getattr(v.value, f) == want for f, want in wanted.items())
        ]

    def reap(self) -> int:
        """Record the expiry of entities whose TTL passed (index cleanup, ``expire`` change records).

        The store runs this periodically; call it to make expiries visible at once.

        Example:
            >>> agents.reap()  # doctest: +SKIP
            0
        """
        return self._store._reap(self)

    # -- notebook display and pictures -------------------------------------------------------------
    def _repr_html_(self) -> str:
        return display.html(self)
