"""Batches: many writes in the fewest round trips, each reporting its own result.

A batch sends its operations as pipelined ``mutate.lua`` calls: one round trip on a standalone server (one
per node on a cluster). Without ``atomic``, every operation is its own script call, atomic alone. With
``atomic``, the operations of one partition form one script call, all-or-nothing, and a refused operation
fails its partition's operations (other partitions are unaffected).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rxstate.core.errors import RxStateError
from rxstate.core.writes import WriteOp, WriteResult

if TYPE_CHECKING:
    from rxstate.core.model import Model
    from rxstate.store.collection import Collection
    from rxstate.store.collection_ops import Ttl
    from rxstate.store.store import Store

__all__ = ["Batch", "BatchItem", "run_many"]

T = TypeVar("T")
_PENDING: Any = object()


def execute(
    store: Store,
    ops: Sequence[WriteOp | RxStateError],
    converters: Sequence[Callable[[WriteResult], Any]],
    *,
    atomic: bool,
) -> list[Any]:
    """Run the valid ``ops`` in one round trip and convert each result; errors stay in place."""
    valid = [op for op in ops if isinstance(op, WriteOp)]
    writer = store.writer
    replies = iter(writer.mutate_grouped(valid) if atomic else writer.mutate_each(valid))
    results: list[Any] = []
    for op, convert in zip(ops, converters, strict=True):
        if isinstance(op, RxStateError):
            results.append(op)
            continue
        reply = next(replies)
        results.append(reply if isinstance(reply, RxStateError) else convert(reply))
    return results


def run_many(
    store: Store,
    builders: Sequence[Callable[[], WriteOp]],
    converters: Sequence[Callable[[WriteResult], Any]],
    *,
    atomic: bool,
) -> list[Any]:
    """Build every op (a bad one fails alone, or raises at once when ``atomic``), then ``execute`` them."""
    ops: list[WriteOp | RxStateError] = []
    for build in builders:
        try:
            ops.append(build())
        except RxStateError as exc:
            if atomic:
                raise
            ops.append(exc)
    return execute(store, ops, converters, atomic=atomic)


class BatchItem(Generic[T]):
    """The result of one operation of a batch, known once the batch has run.

    Example:
        >>> _ = agents.put("a1", Agent(name="planner"))
        >>> with store.batch() as batch:
        ...     item = batch.update(agents, "a1", status="busy")
        >>> item.result().version  # after the with block
        2
    """

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value: Any = _PENDING

    @property
    def done(self) -> bool:
        """Whether the batch has run."""
        return self._value is not _PENDING

    @property
    def error(self) -> RxStateError | None:
        """The error that refused this operation, if any."""
        return self._value if isinstance(self._value, RxStateError) else None

    def result(self) -> T:
        """The operation's result; raises its error if it was refused.

        Raises:
            RxStateError: the batch has not run yet, or the error that refused the operation.
        """
        if self._value is _PENDING:
            raise RxStateError("the batch has not run yet")
        if isinstance(self._value, RxStateError):
            raise self._value
        return self._value  # type: ignore[no-any-return]


class Batch:
    """Writes to any collections, sent together when the ``with`` block ends (discarded on an exception).

    Each call validates its input at once (bad input raises, nothing is queued) and returns a
    ``BatchItem``. Open one with ``store.batch()``.

    Example:
        >>> _ = tasks.put("t1", Task(title="review"))
        >>> with store.batch() as batch:
        ...     _ = batch.put(agents, "a1", Agent(name="x"))
        ...     moved = batch.update(tasks, "t1", owner="a1")
        ...     bumped = batch.incr(agents, "a2", "load", 1)  # a2 does not exist
        >>> moved.result().value.owner
        'a1'
        >>> bumped.result()  # each write has its own outcome
        Traceback (most recent call last):
        ...
        rxstate.core.errors.NotFound: ...
    """

    def __init__(self, store: Store, *, atomic: bool = False) -> None:
        self.store = store
        self.atomic = atomic
        self._ops: list[WriteOp] = []
        self._converters: list[Callable[[WriteResult], Any]] = []
        self._items: list[BatchItem[Any]] = []
        self._sent = False

    def __len__(self) -> int:
        return len(self._ops)

    def __enter__(self) -> Batch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.flush()
        else:  # discard: nothing is sent
            for item in self._items:
                item._value = RxStateError("the batch was discarded: its block raised")
            self._ops.clear()
            self._converters.clear()
            self._items.clear()
            self._sent = True

    def _add(self, op: WriteOp, convert: Callable[[WriteResult], Any]) -> BatchItem[Any]:
        if self._sent:
            raise RxStateError("this batch has already been sent")
        item: BatchItem[Any] = BatchItem()
        self._ops.append(op)
        self._converters.append(convert)
        self._items.append(item)
        return item

    def put(
        self,
        collection: Collection[Any],
        entity_id: str,
        value: Model,
        *,
        expected_version: int | None = None,
        ttl: Ttl = None,
    ) -> BatchItem[Any]:
        """Queue a ``put``; the item's result is the new ``Versioned``."""
        op = collection.put_op(entity_id, value, expected_version=expected_version, ttl=ttl)
        return self._add(op, lambda r: collection._versioned(entity_id, value, r))

    def create(self, collection: Collection[Any], entity_id: str, value: Model, *, ttl: Ttl = None) -> BatchItem[Any]:
        """Queue a ``create``; the item's result is the new ``Versioned`` (or ``AlreadyExists``)."""
        op = collection.put_op(entity_id, value, kind="create", ttl=ttl)
        return self._add(op, lambda r: collection._versioned(entity_id, value, r))

    def update(self, collection: Collection[Any], entity_id: str, **kwargs: Any) -> BatchItem[Any]:
        """Queue a partial ``update`` (same arguments as ``Collection.update``); result: the new ``Versioned``."""
        op = collection.update_op(entity_id, **kwargs)
        key = collection._ks.entity(collection.name, entity_id, op.partition)
        return self._add(op, lambda r: collection._decode(entity_id, r.full, key))

    def incr(
        self, collection: Collection[Any], entity_id: str, field: str, amount: int = 1, **kwargs: Any
    ) -> BatchItem[int]:
        """Queue an ``incr``; the item's result is the new value of the field."""
        op = collection.incr_op(entity_id, field, amount, **kwargs)
        return self._add(op, lambda r: int(r.full[field.encode()]))

    def delete(self, collection: Collection[Any], entity_id: str, **kwargs: Any) -> BatchItem[bool]:
        """Queue a ``delete``; the item's result says whether the entity existed."""
        op = collection.delete_op(entity_id, **kwargs)
        return self._add(op, lambda r: r.version > 0)

    def flush(self) -> list[Any]:
        """Send the queued operations now; returns each one's result or error, in order.

        Raises:
            ValidationError: ``atomic`` and two operations of one partition target one entity (nothing sent).
        """
        if self._sent:
            return [item._value for item in self._items]
        self._sent = True
        results = execute(self.store, self._ops, self._converters, atomic=self.atomic) if self._ops else []
        for item, result in zip(self._items, results, strict=True):
            item._value = result
        return results
