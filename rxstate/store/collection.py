"""Collections: typed, versioned CRUD over one model, with secondary indexes and TTLs.

``Collection`` adds the writes (put, create, update, incr, delete and their many-entity forms) to its
reads (``rxstate.store.collection_reads``) and its definition and pure op building
(``rxstate.store.collection_ops``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar

from rxstate.core import display
from rxstate.core.errors import ConflictError, LazyFieldStale, RxStateError, ValidationError
from rxstate.core.keys import validate_id
from rxstate.core.model import Model, rebind_lazy
from rxstate.core.versioned import Versioned
from rxstate.core.writes import KEEP_TTL, WriteOp, WriteResult
from rxstate.store.batch import run_many
from rxstate.store.collection_ops import Ttl, _ttl_ms
from rxstate.store.collection_reads import CollectionReads
from rxstate.store.constraints import StaleDeclarations
from rxstate.store.lock import Lease
from rxstate.store.readthrough import write_one, write_value
from rxstate.store.writer import durable_option

__all__ = ["Collection"]

M = TypeVar("M", bound=Model)


class Collection(CollectionReads[M]):
    """Entities of one model in a store, addressed by id.

    Every write is one atomic script call that checks the expected version (when given), bumps the
    version, maintains indexes and appends a change record. Open one with ``store.collection``.

    Example:
        >>> agents = store.collection("agents", Agent, indexes=["status"])
        >>> agents.put("a1", Agent(name="planner")).version
        1
    """

    @durable_option
    def put(
        self,
        entity_id: str,
        value: M,
        *,
        expected_version: int | None = None,
        ttl: Ttl = None,
        fence: Lease | None = None,
        durable: bool | None = None,
    ) -> Versioned[M]:
        """Store ``value`` under ``entity_id``, replacing any previous value.

        Args:
            entity_id: the entity id.
            value: an instance of the collection's model.
            expected_version: only write if the current version is this (0: only if absent).
            ttl: seconds (or a timedelta) after which the entity expires; None keeps it forever.
            fence: a lease of ``store.lock``: the write is refused (``LockError``) if a newer lease of
                that lock has already written to this partition, or the lease has expired.
            durable: True: return only once this write is confirmed as the store's durability asks
                (``connect(durability=...)``; replicas' memory on a store opened without one), else
                ``NotReplicated``; False: do not wait on a durable store; None: as the store does.

        Raises:
            ValidationError: bad id, value or ttl (nothing is written).
            ConflictError: ``expected_version`` did not match.
            IntegrityError: a declared constraint would be violated.

        Example:
            >>> agents.put("a1", Agent(name="planner")).version
            1
            >>> agents.put("a1", Agent(name="coder"), expected_version=3)
            Traceback (most recent call last):
            ...
            rxstate.core.errors.ConflictError: ... expected version 3, found 1
        """
        validate_id(entity_id)
        checked = self._check_model(value)
        op = self._put_op(entity_id, checked, "put", expected_version, ttl, fence)
        return write_value(self, op, lambda r: self._versioned(entity_id, checked, r))

    @durable_option
    def create(
        self, entity_id: str, value: M, *, ttl: Ttl = None, fence: Lease | None = None, durable: bool | None = None
    ) -> Versioned[M]:
        """Store a new entity; fails with ``AlreadyExists`` if the id is taken (``durable`` as in ``put``).

        Example:
            >>> agents.create("a2", Agent(name="coder")).version
            1
        """
        validate_id(entity_id)
        checked = self._check_model(value)
        op = self._put_op(entity_id, checked, "create", None, ttl, fence)
        return write_value(self, op, lambda r: self._versioned(entity_id, checked, r))

    @durable_option
    def put_many(
        self,
        items: Mapping[str, M] | Iterable[tuple[str, M]],
        *,
        ttl: Ttl = None,
        atomic: bool = False,
        durable: bool | None = None,
    ) -> list[Versioned[M] | RxStateError]:
        """Store many entities in one round trip, reporting each item's result.

        Args:
            items: ``{id: value}`` or ``(id, value)`` pairs.
            ttl: TTL of every item.
            atomic: all-or-nothing per partition (one script call per partition, pipelined across
                partitions; a refused item fails its partition's items); invalid input then raises at once.
                Otherwise each item is atomic alone and a bad item fails alone.
            durable: as in ``put``, for the whole round trip.

        Returns:
            One entry per item, in order: its ``Versioned`` or the error that refused it.

        Example:
            >>> [v.version for v in agents.put_many({"a1": Agent(name="x"), "a2": Agent(name="y")})]
            [1, 1]
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

    @durable_option
    def update_many(
        self,
        updates: Mapping[str, Mapping[str, Any]] | Iterable[tuple[str, Mapping[str, Any]]],
        *,
        ttl: Ttl = None,
        partition: str | None = None,
        atomic: bool = False,
        durable: bool | None = None,
    ) -> list[Versioned[M] | RxStateError]:
        """Partial updates of many entities in one round trip, reporting each item's result.

        Args:
            updates: ``{id: {field: value}}`` or ``(id, {field: value})`` pairs.
            ttl: a new TTL for every item (None keeps each one's).
            partition: the partition-key value of every item, for a collection that has one.
            atomic: all-or-nothing per partition, as in ``put_many``.
            durable: as in ``put``, for the whole round trip.

        Returns:
            One entry per item, in order: its new ``Versioned`` or the error that refused it.

        Example:
            >>> _ = agents.put_many({"a1": Agent(name="x"), "a2": Agent(name="y")})
            >>> results = agents.update_many({"a1": {"status": "busy"}, "a2": {"load": 3}}, atomic=True)
            >>> [(v.id, v.version) for v in results]
            [('a1', 2), ('a2', 2)]
        """
        pairs = list(updates.items() if isinstance(updates, Mapping) else updates)
        return run_many(
            self._store,
            [partial(self.update_op, i, ttl=ttl, partition=partition, **f) for i, f in pairs],
            [partial(self._decode_full, i, partition) for i, _f in pairs],
            atomic=atomic,
        )

    @durable_option
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
        durable: bool | None = None,
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
            durable: wait for confirmations or not (see ``put``).
            **fields: field values to set.

        Raises:
            NotFound: no such entity.
            ConflictError: ``expected_version`` did not match, or retries ran out.
            ValidationError: bad field name or value (nothing is written).

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> agents.update("a1", status="busy", expected_version=1).version
            2
            >>> agents.update("a1", lambda a: a.model_copy(update={"load": a.load + 1})).value.load
            1
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
        cache = self._store._cache
        before = cache.peek(key) if cache is not None else None
        if before is None:
            return write_value(self, op, lambda r: self._decode(entity_id, r.full, key))
        # The cached value is the base: the script returns the whole hash only if the entity was not at
        # that version (another write came between), so the common case neither sends nor decodes it.
        op.want_full, op.full_unless = False, before.version
        changed = {name: self._codec.decode_value(name, value, key) for name, value in op.sets}

        def build(result: WriteResult) -> Versioned[M]:
            if result.full:
                return self._decode(entity_id, result.full, key)
            # no full reply: the write came right on top of ``before``; lazy fields it left unread stay so
            after = rebind_lazy(before.value.model_copy(update=changed), result.version)
            return self._versioned(entity_id, after, result)

        return write_value(self, op, build)

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
        consistent = False
        for _attempt in range(max(1, retries)):
            current = self.get_versioned(entity_id, partition=partition, consistent=consistent)
            if expected is not None and current.version != expected:
                raise ConflictError(
                    f"{self.key(entity_id, partition=partition)}: expected version {expected}, found {current.version}",
                    key=self.key(entity_id, partition=partition),
                    expected=expected,
                    actual=current.version,
                )
            # lazy fields read neither before nor after are left out: the write, on top of this very
            # version, keeps their stored values
            base = (self.key(entity_id, partition=partition), current.version)
            try:
                new = self._check_model(fn(current.value))
                encoded = self._codec.encode(new, keep=base)
            except LazyFieldStale:
                if expected is not None:
                    raise
                consistent = True  # the value read (from the cache) was already stale: ask the server
                continue
            if self.partition_key and getattr(new, self.partition_key) != getattr(current.value, self.partition_key):
                raise ValidationError(f"{self.partition_key!r} is the partition key: it cannot change")
            old = dict(self._codec.encode(current.value, keep=base))
            changed = [(n, v) for n, v in encoded if old.get(n) != v]
            if not changed and ttl == KEEP_TTL:
                return current
            op = self._op("update", entity_id, p, expected=current.version, ttl=ttl, sets=changed, fence=fence)
            try:
                return write_value(self, op, partial(self._rebound, entity_id, new))
            except ConflictError:
                if expected is not None:
                    raise
                continue
        raise ConflictError(
            f"{self.key(entity_id, partition=partition)}: still changing after {retries} attempts",
            key=self.key(entity_id, partition=partition),
        )

    def _rebound(self, entity_id: str, value: M, result: WriteResult) -> Versioned[M]:
        """The ``Versioned`` a write on top of the version ``value`` was read at leaves (its unloaded lazy
        fields are as they were)."""
        return self._versioned(entity_id, rebind_lazy(value, result.version), result)

    @durable_option
    def incr(
        self,
        entity_id: str,
        field: str,
        amount: int = 1,
        *,
        expected_version: int | None = None,
        partition: str | None = None,
        fence: Lease | None = None,
        durable: bool | None = None,
    ) -> int:
        """Add ``amount`` to an integer field on the server, atomically; returns the new value
        (``durable`` as in ``put``).

        Declared bounds (``Field(ge=0, le=10)``) are enforced by the script.

        Raises:
            ValidationError: not an integer field, or a non-integer amount.
            IntegrityError: the result would leave the field's bounds.
            NotFound: no such entity.

        Example:
            >>> _ = agents.put("a1", Agent(name="planner", load=1))
            >>> agents.incr("a1", "load", 2)
            3
        """
        op = self.incr_op(entity_id, field, amount, expected_version=expected_version, partition=partition, fence=fence)
        return int(write_one(self, op).full[field.encode()])

    @durable_option
    def delete(
        self,
        entity_id: str,
        *,
        expected_version: int | None = None,
        partition: str | None = None,
        fence: Lease | None = None,
        durable: bool | None = None,
    ) -> bool:
        """Delete an entity; returns whether it existed (``durable`` as in ``put``).

        Raises:
            ConflictError: ``expected_version`` did not match.
            IntegrityError: a live entity still references it (a declared ``references``).

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> agents.delete("a1"), agents.delete("a1")
            (True, False)
        """
        op = self.delete_op(entity_id, expected_version=expected_version, partition=partition, fence=fence)
        try:
            return write_one(self, op).version > 0
        except StaleDeclarations:
            self.constraints.refresh_delete(op)  # references were declared elsewhere since we looked
            return write_one(self, op).version > 0

    def _repr_html_(self) -> str:
        return display.html(self)
