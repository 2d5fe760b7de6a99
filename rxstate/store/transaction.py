"""Transactions: read with versions, buffer writes, commit all or nothing.

Reads through a transaction record the version they saw; writes are validated at once and buffered.
``commit`` (the end of a ``with`` block) sends everything as one ``mutate.lua`` call that re-checks every
read version and applies every write, index update and change record, or nothing, raising a
``ConflictError`` that names every stale key. A transaction that spans partitions on a cluster commits with
the two-phase protocol of ``rxstate.twophase`` instead, with the same guarantees. On a standalone server
one script reaches every partition, so it takes the single-call path.
"""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from rxstate.core.errors import ConflictError, IntegrityError, NotFound, RxStateError, ValidationError
from rxstate.core.keys import validate_id
from rxstate.core.model import Model
from rxstate.core.versioned import Versioned
from rxstate.core.waiting import pause
from rxstate.core.writes import KEEP_TTL, WriteOp, WriteResult
from rxstate.store import twophase
from rxstate.store.collection import Collection
from rxstate.store.collection_ops import Ttl, _ttl_ms

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["Transaction"]

P = ParamSpec("P")
R = TypeVar("R")
_MISSING: Any = object()
_Key = tuple[str, int, str]  # (collection, partition, id)


@dataclass(slots=True)
class _Pending:
    """The net effect of a transaction's writes on one entity."""

    collection: Collection[Any]
    id: str
    partition: int
    kind: str  # "put" | "create" | "update" | "delete"
    sets: dict[str, bytes] = field(default_factory=dict)
    incrs: dict[str, int] = field(default_factory=dict)
    ttl: str = KEEP_TTL


class Transaction:
    """An all-or-nothing unit of reads and writes over any entities of a store.

    Open one with ``store.transaction()``. Use it as a context manager (commit on normal exit, discard on
    an exception), or as a decorator / ``run`` to re-execute a function on conflict.

    Attributes:
        txid: the transaction id, recorded as ``x`` in each of its change records.
        state: ``"open"``, ``"committed"``, ``"rolled back"`` or ``"failed"``.
        versions: after the commit, the new version of each written entity, by (collection, id).

    Example:
        >>> _ = agents.put("a1", Agent(name="planner"))
        >>> with store.transaction() as tx:
        ...     a = tx.get(agents, "a1")
        ...     tx.update(agents, "a1", load=a.load + 1)
        ...     tx.put(tasks, "t9", Task(title="review", owner="a1"))
        >>> agents.get("a1").load, tasks.get("t9").owner
        (1, 'a1')
    """

    def __init__(self, store: Store, *, retries: int = 0, ttl: float = 5.0, two_phase: bool | None = None) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValidationError(f"retries must be a non-negative int, not {retries!r}")
        self.store = store
        self.retries = retries
        self.ttl_ms = _ttl_ms(ttl)
        self.two_phase = two_phase
        self.txid = uuid.uuid4().hex
        self.state = "open"
        self.versions: dict[tuple[str, str], int] = {}
        self._reads: dict[_Key, tuple[int, dict[bytes, bytes]]] = {}
        self._checks: list[tuple[_Key, Collection[Any], int]] = []
        self._writes: dict[_Key, _Pending] = {}

    def __repr__(self) -> str:
        return f"<Transaction {self.txid[:8]} {self.state} reads={len(self._reads)} writes={len(self._writes)}>"

    # -- context manager, runner -------------------------------------------------------------------
    def __enter__(self) -> Transaction:
        if self.retries:
            raise ValidationError("retries= re-runs a function: use the transaction as a decorator or .run(fn)")
        self._require_open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None or self.state != "open":
            self.rollback()
            return
        self.commit()

    def __call__(self, fn: Callable[Concatenate[Transaction, P], R]) -> Callable[P, R]:
        """Decorate ``fn(tx, *args)``: each call runs it in a fresh transaction, re-run on conflict.

        Example:
            >>> _ = tasks.put("t9", Task(title="review"))
            >>> @store.transaction(retries=5)
            ... def claim(tx, task_id):
            ...     if tx.get(tasks, task_id).owner is None:
            ...         tx.update(tasks, task_id, owner="a1")
            >>> claim("t9")
            >>> tasks.get("t9").owner
            'a1'
        """

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.run(fn, *args, **kwargs)

        return wrapper

    def run(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Run ``fn(tx, *args, **kwargs)`` in a fresh transaction and commit; on conflict, run it again.

        Raises:
            ConflictError: still conflicting after ``retries`` re-runs.

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> store.transaction(retries=3).run(lambda tx: tx.incr(agents, "a1", "load"))
            >>> agents.get("a1").load
            1
        """
        for attempt in range(self.retries + 1):
            tx = Transaction(self.store, ttl=self.ttl_ms / 1000, two_phase=self.two_phase)
            try:
                with tx:
                    return fn(tx, *args, **kwargs)
            except ConflictError:
                if attempt >= self.retries:
                    raise
                pause(random.uniform(0, 0.002 * (attempt + 1)))  # de-synchronise the racers
        raise AssertionError("unreachable")

    # -- reads ---------------------------------------------------------------------------------------
    def get_versioned(
        self, collection: Collection[Any], entity_id: str, *, partition: str | None = None
    ) -> Versioned[Any]:
        """The entity as this transaction sees it (its own buffered writes applied), version recorded.

        Raises:
            NotFound: no such entity (its absence is recorded too: a concurrent create conflicts).

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> with store.transaction() as tx:
            ...     tx.get_versioned(agents, "a1").version
            1
        """
        coll = self._collection(collection)
        validate_id(entity_id)
        coll._authorize("read", entity_id)
        key = (coll.name, coll._partition(entity_id, partition), entity_id)
        raw = self._view(coll, key)
        entity_key = self.store.keyspace.entity(coll.name, entity_id, key[1])
        if not raw:
            raise NotFound(f"{coll.name} {entity_id!r} does not exist ({entity_key})", key=entity_key)
        return coll._decode(entity_id, raw, entity_key)

    def get(
        self, collection: Collection[Any], entity_id: str, default: Any = _MISSING, *, partition: str | None = None
    ) -> Any:
        """The entity's value as this transaction sees it; ``default`` (if given) when absent.

        Example:
            >>> _ = agents.put("a1", Agent(name="planner", load=2))
            >>> with store.transaction() as tx:
            ...     tx.get(agents, "a1").load, tx.get(agents, "a2", None)
            (2, None)
        """
        try:
            return self.get_versioned(collection, entity_id, partition=partition).value
        except NotFound:
            if default is _MISSING:
                raise
            return default

    def _base(self, coll: Collection[Any], key: _Key) -> tuple[int, dict[bytes, bytes]]:
        seen = self._reads.get(key)
        if seen is None:
            self._require_open()
            entity_key = self.store.keyspace.entity(coll.name, key[2], key[1])
            raw = coll._settled(entity_key, self.store.client.hgetall(entity_key))
            seen = self._reads[key] = (int(raw.get(b"_v", b"0")), raw)
            self._checks.append((key, coll, seen[0]))
        return seen

    def _view(self, coll: Collection[Any], key: _Key) -> dict[bytes, bytes]:
        version, raw = self._base(coll, key)
        pending = self._writes.get(key)
        if pending is None:
            return raw
        if pending.kind == "delete" or (pending.kind == "update" and not raw):
            return {}
        view = dict(raw) if pending.kind == "update" else {b"_sv": str(coll.model.__version__).encode()}
        view[b"_v"] = str(version + 1).encode()
        for name, amount in pending.incrs.items():
            view[name.encode()] = str(int(view.get(name.encode(), b"0")) + amount).encode()
        for name, value in pending.sets.items():
            view[name.encode()] = value
        return view

    # -- writes --------------------------------------------------------------------------------------
    def put(
        self,
        collection: Collection[Any],
        entity_id: str,
        value: Model,
        *,
        expected_version: int | None = None,
        ttl: Ttl = None,
    ) -> None:
        """Buffer a put (a whole new value); validated now, written at commit.

        Example:
            >>> with store.transaction() as tx:
            ...     tx.put(tasks, "t9", Task(title="review"))
            ...     tasks.exists("t9")  # buffered until the commit
            False
            >>> tasks.exists("t9")
            True
        """
        self._put("put", collection, entity_id, value, expected_version, ttl)

    def create(self, collection: Collection[Any], entity_id: str, value: Model, *, ttl: Ttl = None) -> None:
        """Buffer the creation of a new entity; the commit fails with ``AlreadyExists`` if it exists.

        Example:
            >>> _ = tasks.put("t10", Task(title="ship"))
            >>> with store.transaction() as tx:
            ...     tx.create(tasks, "t10", Task(title="ship again"))
            Traceback (most recent call last):
            ...
            rxstate.core.errors.AlreadyExists: ...
        """
        self._put("create", collection, entity_id, value, None, ttl)

    def _put(
        self, kind: str, collection: Collection[Any], entity_id: str, value: Model, expected: int | None, ttl: Ttl
    ) -> None:
        coll = self._collection(collection)
        op = coll.put_op(entity_id, value, kind=kind, expected_version=expected, ttl=ttl)
        key = (coll.name, op.partition, entity_id)
        self._require_open()
        self._expect(coll, key, expected)
        before = self._writes.get(key)
        if kind == "create" and before is not None and before.kind != "delete":
            raise ValidationError(f"{coll.name} {entity_id!r} is already written in this transaction")
        # create after a delete in this transaction: the entity exists now, so it is a put of a new value
        kind = "put" if kind == "create" and before is not None else kind
        self._writes[key] = _Pending(coll, entity_id, op.partition, kind, dict(op.sets), {}, op.ttl)

    def update(
        self,
        collection: Collection[Any],
        entity_id: str,
        fn: Callable[[Any], Any] | None = None,
        /,
        *,
        expected_version: int | None = None,
        ttl: Ttl = None,
        partition: str | None = None,
        **fields: Any,
    ) -> None:
        """Buffer a partial update (field values), or a function of the value this transaction sees.

        Raises:
            ValidationError: bad field names or values (nothing is buffered).
            NotFound: with ``fn``, or after ``tx.delete``: the entity does not exist.

        Example:
            >>> _ = agents.put_many({"a1": Agent(name="planner"), "a2": Agent(name="coder")})
            >>> with store.transaction() as tx:
            ...     tx.update(agents, "a1", status="busy")
            ...     tx.update(agents, "a2", lambda a: a.model_copy(update={"load": a.load + 1}))
            >>> agents.get("a1").status, agents.get("a2").load
            ('busy', 1)
        """
        coll = self._collection(collection)
        validate_id(entity_id)
        key = (coll.name, coll._partition(entity_id, partition), entity_id)
        ttl_arg = KEEP_TTL if ttl is None else str(_ttl_ms(ttl))
        if fn is None and coll._whole_checked.intersection(fields):
            coll._codec.encode_fields(fields)  # each value on its own first: the clearest error
            updates = dict(fields)
            fields = {}

            def fn(current: Any) -> Any:  # the whole entity is validated, from the value this transaction reads
                return current.model_copy(update=updates)

        if fn is not None:
            if fields:
                raise ValidationError("update takes either a function or field values, not both")
            current = self.get_versioned(coll, entity_id, partition=partition)
            new = coll._check_model(fn(current.value))
            if coll.partition_key and getattr(new, coll.partition_key) != getattr(current.value, coll.partition_key):
                raise ValidationError(f"{coll.partition_key!r} is the partition key: it cannot change")
            old = dict(coll._codec.encode(current.value))
            sets = [(n, v) for n, v in coll._codec.encode(new) if old.get(n) != v]
            if not sets and ttl_arg == KEEP_TTL:
                return  # unchanged: nothing to write (the read stays checked)
        else:
            if not fields:
                raise ValidationError("update needs at least one field to set")
            if coll.partition_key in fields:
                raise ValidationError(f"{coll.partition_key!r} is the partition key: it cannot change")
            sets = coll._codec.encode_fields(fields)
        self._require_open()
        self._expect(coll, key, expected_version)
        pending = self._pending_for_update(coll, key)
        for name, value in sets:
            pending.sets[name] = value
            pending.incrs.pop(name, None)
        if ttl_arg != KEEP_TTL:
            pending.ttl = ttl_arg

    def incr(
        self,
        collection: Collection[Any],
        entity_id: str,
        field: str,
        amount: int = 1,
        *,
        expected_version: int | None = None,
        partition: str | None = None,
    ) -> None:
        """Buffer an increment of an integer field (bounds are checked at commit, or now if the value is known).

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> with store.transaction() as tx:
            ...     tx.incr(agents, "a1", "load", 2)
            >>> agents.get("a1").load
            2
        """
        coll = self._collection(collection)
        validate_id(entity_id)
        coll._check_incr(field, amount)
        key = (coll.name, coll._partition(entity_id, partition), entity_id)
        self._require_open()
        pending = self._pending_for_update(coll, key)
        if field in pending.sets:  # the value is known here: add to it, within the declared bounds
            after = int(pending.sets[field]) + amount
            low, high = coll._bounds[field]
            if (low and after < int(low)) or (high and after > int(high)):
                entity_key = self.store.keyspace.entity(coll.name, entity_id, key[1])
                raise IntegrityError(
                    f"constraint 'bounds:{field}' violated on {entity_key}: {field}={after} outside [{low}, {high}]",
                    constraint=f"bounds:{field}",
                    key=entity_key,
                )
            pending.sets[field] = str(after).encode()
        else:
            pending.incrs[field] = pending.incrs.get(field, 0) + amount
        self._expect(coll, key, expected_version)

    def delete(
        self,
        collection: Collection[Any],
        entity_id: str,
        *,
        expected_version: int | None = None,
        partition: str | None = None,
    ) -> None:
        """Buffer the deletion of an entity.

        The entity is read (its version recorded): deleting one that does not exist writes nothing, and the
        recorded read makes the commit fail if it appears meanwhile. So every write of a committed
        transaction leaves a change record, and ``n`` counts exactly the partitions that have one.

        Example:
            >>> _ = tasks.put("t9", Task(title="review"))
            >>> with store.transaction() as tx:
            ...     tx.delete(tasks, "t9")
            >>> tasks.exists("t9")
            False
        """
        coll = self._collection(collection)
        validate_id(entity_id)
        key = (coll.name, coll._partition(entity_id, partition), entity_id)
        self._require_open()
        self._expect(coll, key, expected_version)
        self._base(coll, key)
        self._writes[key] = _Pending(coll, entity_id, key[1], "delete")

    def _pending_for_update(self, coll: Collection[Any], key: _Key) -> _Pending:
        pending = self._writes.get(key)
        if pending is None:
            pending = self._writes[key] = _Pending(coll, key[2], key[1], "update")
        elif pending.kind == "delete":
            entity_key = self.store.keyspace.entity(coll.name, key[2], key[1])
            raise NotFound(f"{coll.name} {key[2]!r} is deleted in this transaction", key=entity_key)
        return pending

    def _expect(self, coll: Collection[Any], key: _Key, expected: int | None) -> None:
        if expected is not None:
            if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
                raise ValidationError(f"expected_version must be a non-negative integer, not {expected!r}")
            self._checks.append((key, coll, expected))

    # -- outcome -------------------------------------------------------------------------------------
    def rollback(self) -> None:
        """Discard every buffered write; nothing of this transaction is stored.

        Example:
            >>> tx = store.transaction()
            >>> tx.put(tasks, "t9", Task(title="review"))
            >>> tx.rollback()
            >>> tx.state, tasks.exists("t9")
            ('rolled back', False)
        """
        if self.state == "open":
            self.state = "rolled back"
        self._writes.clear()
        self._reads.clear()
        self._checks.clear()

    def commit(self) -> dict[tuple[str, str], int]:
        """Verify every read version and apply every write, atomically; returns the new versions.

        Raises:
            ConflictError: a read entity changed since it was read (``key``, ``expected`` and ``actual`` are
                lists naming every stale entity); nothing is written.
            NotFound, AlreadyExists, IntegrityError: a write was refused; nothing is written.

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> tx = store.transaction()
            >>> tx.update(agents, "a1", status="busy")
            >>> tx.commit()
            {('agents', 'a1'): 2}
        """
        self._require_open()
        ops = self._ops()
        groups: dict[int, list[WriteOp]] = {}
        for op in ops:
            groups.setdefault(op.partition, []).append(op)
        writers = len({op.partition for op in ops if op.kind != "check"})
        try:
            if not ops:
                results: list[tuple[WriteOp, WriteResult]] = []
            elif len(groups) == 1 or not (self.store.is_cluster or self.two_phase):
                replies = self.store.writer.mutate(ops, txid=self.txid, nparts=writers)
                results = list(zip(ops, replies, strict=True))
            else:
                by_partition = twophase.commit(self.store, self.txid, groups, ttl_ms=self.ttl_ms)
                results = [
                    pair
                    for p, replies in by_partition.items()
                    if len(replies) == len(groups[p])
                    for pair in zip(groups[p], replies, strict=True)
                ]
        except ConflictError as exc:
            self.state = "failed"
            raise _listed(exc) from None
        except BaseException:
            self.state = "failed"
            raise
        finally:
            self.store.writer.forget(ops)  # a two-phase commit may have written some partitions
        self.state = "committed"
        self.versions = {(op.collection, op.id): r.version for op, r in results if op.kind != "check"}
        return self.versions

    def _ops(self) -> list[WriteOp]:
        ops = [
            WriteOp(kind="check", collection=coll.name, id=key[2], partition=key[1], expected=version)
            for key, coll, version in self._checks
        ]
        for key, p in self._writes.items():
            if p.kind == "delete" and self._reads[key][0] == 0:
                continue  # nothing to delete; the recorded read keeps it so until the commit
            coll = p.collection
            kind = "incr" if p.kind == "update" and p.incrs and not p.sets else p.kind
            incrs = [(f, amount, *coll._bounds[f]) for f, amount in p.incrs.items()]
            ops.append(
                coll._op(
                    kind,
                    p.id,
                    p.partition,
                    expected=0 if kind == "create" else None,
                    ttl=p.ttl,
                    sets=list(p.sets.items()),
                    incrs=incrs if p.kind == "update" else (),
                )
            )
        return ops

    # -- helpers -------------------------------------------------------------------------------------
    def _collection(self, collection: Collection[Any] | str) -> Collection[Any]:
        if isinstance(collection, Collection):
            if collection._store is not self.store:
                raise ValidationError(f"{collection!r} belongs to another store")
            return collection
        if isinstance(collection, str) and collection in self.store.collections:
            return self.store.collections[collection]
        raise ValidationError(f"{collection!r} is not a collection opened on this store")

    def _require_open(self) -> None:
        if self.state != "open":
            raise RxStateError(f"transaction {self.txid[:8]} is {self.state}")


def _listed(exc: ConflictError) -> ConflictError:
    """A transaction's conflict always lists its stale keys (``key``, ``expected``, ``actual`` are lists)."""
    if type(exc) is not ConflictError or isinstance(exc.key, list) or exc.key is None:
        return exc
    return ConflictError(str(exc), key=[exc.key], expected=[exc.expected], actual=[exc.actual])
