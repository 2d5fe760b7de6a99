"""The Writer: the one place where a store sends a write to the server.

Every write of a store goes through its ``Writer`` (``store.writer``): single operations, batches,
transactions, both phases of a two-phase commit, event appends (with or without a projection), atomic
projections, snapshots, locks, transaction records and the expiry reaper. The Writer packs write ops into
the write script's arguments, runs the script (EVALSHA, SCRIPT LOAD on NOSCRIPT), settles the pending
intents of cross-partition transactions that refuse a call, translates error replies into typed errors,
decodes the replies, and does the post-write cache work: a call that wrote entities evicts their cached
values unless the caller updates the cache from the reply itself (single-entity writes do, in
``readthrough``), and a call whose outcome is unknown evicts them whatever the caller asked.

So a new stage of the write path (an audit entry, a quota check) is added once, here and in the script,
and every kind of write gets it. Everything the Writer sends passes through ``_send`` (one call) or
``_send_many`` (one pipelined round trip): wrap those two to observe every write of a store. A durable
write (``connect(durability="replicated"|"fsynced")``, inside ``writer.durable()``, or a write method
called with ``durable=True``, see ``durable_option``) goes out with a ``WAIT``/``WAITAOF`` on the same
connection and raises ``NotReplicated`` when too few confirmations come (``rxstate.store.durability``).

**Exactly once.** Every call carries a fresh write id: the script runs inside ``lua/once.lua``, which
records the call's reply under ``rxw:{ns:p}:<write id>`` (in the slot of the call's keys, kept
``write_record_ms``) and answers a repeated id with the recorded reply instead of writing again. So a
resend after a lost or late reply — by the client's own retry policy or by the Writer's — takes effect
once. When the connection fails, the Writer retries the same call ``write_retries`` times (backoff
from 50 ms); after that it raises ``UnknownOutcome``, whose ``resolve()`` tells whether the write took
effect and, if it did not, makes sure it never will.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import redis
from redis.exceptions import ResponseError

from rxstate.core.errors import (
    ClusterError,
    RxStateError,
    ServerError,
    TransactionPending,
    UnknownOutcome,
    ValidationError,
)
from rxstate.core.scripts import translate_error
from rxstate.core.waiting import pause
from rxstate.core.writes import HeaderSection, WriteOp, WriteResult, pack_ops, tenant_keys
from rxstate.store.durability import Durability
from rxstate.store.twophase import run_past_intents

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["WriteCall", "Writer", "durable_option"]

WriteCall = tuple[str, Sequence[Any], Sequence[Any]]
"""One write script call: the script's name, its KEYS and its ARGV."""

_PENDING: Any = object()
_LOST = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)
"""What a lost or late reply raises: the call may have run or not."""
_UNRECORDED = frozenset({"reap"})  # idempotent by design and run in the background: nothing to record
_BACKOFF = 0.05
_DURABLE: ContextVar[bool | None] = ContextVar("rxstate_durable", default=None)
_EACH: HeaderSection = ((), ("each",))
EACH_CHUNK = 100
"""The most independent ops one ``mutate_each`` call carries (so one call never holds the server long)."""


class Writer:
    """Sends every write of one store; see the module docstring.

    Example:
        >>> store.writer.mutate([agents.put_op("a1", Agent(name="x"))])[0].version  # doctest: +SKIP
        1
    """

    def __init__(self, store: Store, *, record_ms: int = 60_000, retries: int = 3) -> None:
        if type(record_ms) is not int or record_ms < 1:
            raise ValidationError(f"write_record_ms must be a positive int, not {record_ms!r}", field="write_record_ms")
        if type(retries) is not int or retries < 0:
            raise ValidationError(f"write_retries must be a non-negative int, not {retries!r}", field="write_retries")
        self._store = store
        self.record_ms = record_ms
        """How long the server remembers each write's id and reply (ms)."""
        self.retries = retries
        """How many times a call whose reply was lost is sent again (with the same write id)."""
        self.durability = Durability()
        """How many replicas confirm each write (``connect(durability=...)``; see ``durable()``)."""
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)
        self.tenant: str | None = None
        """For a tenant's store, the principal its writes are checked and counted as (``rxstate.tenancy``):
        every write-path call then carries the tenant stage. None: not a tenant store."""

    def reap_keys(self, partition: int) -> list[str]:
        """The keys ``reap.lua`` takes after the index zsets: a tenant's usage counters lose what expires."""
        return [] if self.tenant is None else tenant_keys(self._store.keyspace, partition)

    # -- the two ways out ---------------------------------------------------------------------------
    def _send(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run one write script call, exactly once; a server error reply raises its typed error."""
        store = self._store
        if script in _UNRECORDED:
            return store.scripts.get(script)(store.client, keys, args)
        wrapped = store.scripts.once(script)
        record = self._record(keys)
        full_keys, full_args = [record, *keys], [self.record_ms, *args]
        if self.is_durable():
            return self._retrying([(script, record, keys)], lambda: self._durably([(wrapped, full_keys, full_args)])[0])
        return self._retrying([(script, record, keys)], lambda: wrapped(store.client, full_keys, full_args))

    def _send_many(self, calls: Sequence[WriteCall]) -> list[Any]:
        """Run write script calls in one pipelined round trip, each exactly once; each reply, or its typed
        error, in place."""
        store = self._store
        library = store.scripts
        batch: list[tuple[Any, Sequence[Any], Sequence[Any]]] = []
        sent: list[tuple[str, str, Sequence[Any]]] = []
        for name, keys, args in calls:
            if name in _UNRECORDED:
                batch.append((library.get(name), keys, args))
                sent.append((name, "", keys))
                continue
            record = self._record(keys)
            batch.append((library.once(name), [record, *keys], [self.record_ms, *args]))
            sent.append((name, record, keys))
        durable = self.is_durable() and not any(name in _UNRECORDED for name, _r, _k in sent)  # not upkeep
        run = (lambda: self._durably(batch, in_place=True)) if durable else None
        replies: list[Any] = self._retrying(sent, run or (lambda: library.run_batch(store.client, batch)))
        for i, reply in enumerate(replies):
            if isinstance(reply, _LOST):  # a cluster pipeline reports a lost node in place
                replies[i] = self._unknown(*sent[i], reply)
        return replies

    # -- durability (rxstate.store.durability) --------------------------------------------------------
    def is_durable(self) -> bool:
        """Whether a write sent now waits for replicas (the store's durability, or a ``durable()`` block)."""
        scoped = _DURABLE.get()
        return self.durability.waits if scoped is None else scoped

    @contextlib.contextmanager
    def durable(self, on: bool | None = True) -> Iterator[None]:
        """Make the writes of this block (this thread or task) wait for confirmations in the store's mode
        (``"replicated"`` on a store opened without one), or not (``on=False``); None changes nothing.

        Example:
            >>> with store.writer.durable():  # doctest: +SKIP
            ...     agents.put("a1", Agent(name="planner"))  # returns once a replica holds it
        """
        if on is None:
            yield
            return
        if type(on) is not bool:
            raise ValidationError(f"durable must be True, False or None, not {on!r}", field="durable")
        token = _DURABLE.set(on)
        try:
            yield
        finally:
            _DURABLE.reset(token)

    def _durably(self, calls: Sequence[Any], *, in_place: bool = False) -> list[Any]:
        replies = self.durability.run(self._store.client, calls, cluster=self._store.is_cluster)
        if not in_place and isinstance(replies[0], BaseException):
            raise replies[0]
        return replies

    # -- exactly once -------------------------------------------------------------------------------
    def _record(self, keys: Sequence[Any]) -> str:
        """A fresh write record key in the slot of ``keys``."""
        if not keys:
            raise ValidationError("a write script call needs at least one key (its slot holds the write record)")
        return self._store.keyspace.write_record(str(keys[0]), f"{self._prefix}{next(self._counter):x}")

    def _retrying(self, sent: Sequence[tuple[str, str, Sequence[Any]]], run: Callable[[], Any]) -> Any:
        """``run()``, sent again after a lost reply (same write ids) up to ``retries`` times."""
        delay = _BACKOFF
        for attempt in range(self.retries + 1):
            try:
                return run()
            except _LOST as exc:
                if attempt == self.retries or not sent:
                    name, record, keys = sent[0] if sent else ("?", "", [])
                    raise self._unknown(name, record, keys, exc, calls=len(sent)) from exc
                pause(delay)
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    def _unknown(
        self, script: str, record: str, keys: Sequence[Any], exc: BaseException, *, calls: int = 1
    ) -> UnknownOutcome:
        others = f" (and {calls - 1} other calls sent with it)" if calls > 1 else ""
        return UnknownOutcome(
            f"{script} write to {list(keys)[:3]}{others}: no reply after {self.retries + 1} attempts ({exc}); "
            f"it took effect once or not at all — call .resolve() on this error when the server is back "
            f"(within {self.record_ms} ms of the write) to learn which",
            write_id=record.rpartition(":")[2],
            record=record,
            keys=[str(k) for k in keys],
            script=script,
            remembered_ms=self.record_ms,
            resolver=self._resolve,
        )

    def _resolve(self, error: UnknownOutcome) -> bool:
        store = self._store
        try:
            return bool(store.scripts.get("write_outcome")(store.client, [error.record], [self.record_ms]))
        except _LOST as exc:
            raise ServerError(f"cannot resolve write {error.write_id} yet: {exc}") from exc

    # -- script calls -------------------------------------------------------------------------------
    def call(
        self,
        script: str,
        keys: Sequence[Any],
        args: Sequence[Any],
        *,
        writes: Sequence[WriteOp] = (),
        settle: bool = True,
        patience: float = 30.0,
    ) -> Any:
        """Run one write script call atomically and return its reply.

        Args:
            script: the script's name (a ``lua/`` file).
            keys: its KEYS.
            args: its ARGV.
            writes: the entity ops the call may write; their cached values are evicted afterwards (also
                when the call fails: its outcome may be unknown, or the cached value was stale).
            settle: settle or wait out cross-partition transactions whose intents refuse the call.
            patience: seconds to wait for such a transaction before raising ``TransactionPending``.

        Raises:
            RxStateError: the script refused the call (typed by its error prefix).
        """
        try:
            if not settle:
                return self._send(script, keys, args)
            return run_past_intents(self._store, lambda: self._send(script, keys, args), patience=patience)
        finally:
            if writes:
                self.forget(writes)

    def call_many(self, calls: Sequence[WriteCall], *, writes: Sequence[WriteOp] = ()) -> list[Any]:
        """Run write script calls in one pipelined round trip (each atomic on its own).

        Returns each call's reply, or its typed error in place; the cached values of ``writes`` are
        evicted afterwards. Intents are not settled here: a ``TransactionPending`` in place says which
        calls to run again with ``call``.
        """
        try:
            return self._send_many(calls)
        finally:
            if writes:
                self.forget(writes)

    # -- entity operations (mutate.lua) --------------------------------------------------------------
    def pack(
        self,
        ops: Sequence[WriteOp],
        *,
        txid: str = "",
        nparts: int | None = None,
        header: Sequence[HeaderSection] = (),
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of one write-path call running ``ops`` (see ``rxstate.core.writes.pack_ops``)."""
        store = self._store
        return pack_ops(
            store.keyspace,
            ops,
            actor=store.actor,
            txid=txid,
            maxlen=store.change_retention,
            nparts=nparts,
            header=header,
            tenant=self.tenant,
        )

    def mutate(
        self,
        ops: Sequence[WriteOp],
        *,
        txid: str = "",
        nparts: int | None = None,
        forget: bool = True,
        script: str = "mutate",
        header: Sequence[HeaderSection] = (),
    ) -> list[WriteResult]:
        """Run ``ops`` as one atomic call: all happen or none does; one result per op.

        Args:
            ops: the operations.
            txid: the transaction id recorded in their change records.
            nparts: partitions the transaction touched (default: those of ``ops``).
            forget: evict the written entities' cached values afterwards (False: the caller updates the
                cache from the results; on failure they are evicted regardless).
            script: the write-path script (``"txn"`` for a step of a two-phase commit).
            header: header sections of that script (``txn.lua``'s "txn").

        Raises:
            ClusterError: on a cluster, the ops span partitions (one call reaches one slot).
            RxStateError: a check failed (conflict, missing entity, constraint, fence, ...).
        """
        store = self._store
        if store.is_cluster and len({op.partition for op in ops}) > 1:
            partitions = sorted({op.partition for op in ops})
            raise ClusterError(
                f"one script call cannot span partitions on a cluster (partitions {partitions})",
                name=ops[0].collection,
                partitions=partitions,
            )
        keys, args = self.pack(ops, txid=txid, nparts=nparts, header=header)
        try:
            replies = self.call(script, keys, args)
        except BaseException:
            if not forget:
                self.forget(ops)
            raise
        finally:
            if forget:
                self.forget(ops)
        return [WriteResult.from_reply(r) for r in replies]

    def mutate_each(self, ops: Sequence[WriteOp], *, forget: bool = True) -> list[WriteResult | RxStateError]:
        """Run each op on its own (atomic alone; one refused op leaves the others alone); a result or error
        per op, in order.

        Ops are sent as one ``mutate.lua`` call per partition in "each" mode (at most ``EACH_CHUNK`` ops a
        call), all pipelined in one round trip; an op refused by another transaction's intent runs again
        alone once the intent is settled.
        """
        chunks: list[list[int]] = []
        open_chunks: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            chunk = open_chunks.get(op.partition)
            if chunk is None or len(chunk) >= EACH_CHUNK:
                chunk = open_chunks[op.partition] = []
                chunks.append(chunk)
            chunk.append(i)
        calls: list[WriteCall] = [("mutate", *self.pack([ops[i] for i in chunk], header=[_EACH])) for chunk in chunks]
        try:
            replies = self._send_many(calls)
        except BaseException:
            self.forget(ops)
            raise
        out: list[WriteResult | RxStateError] = [_PENDING] * len(ops)
        failed: list[WriteOp] = []
        for chunk, reply in zip(chunks, replies, strict=True):
            if isinstance(reply, RxStateError):  # the whole call was refused
                for i in chunk:
                    out[i] = reply
                continue
            if isinstance(reply, BaseException):
                self.forget(ops)
                raise reply
            for i, entry in zip(chunk, reply, strict=True):
                out[i] = self._each_result(ops[i], entry)
        for op, result in zip(ops, out, strict=True):
            if isinstance(result, RxStateError):
                failed.append(op)
        self.forget(ops if forget else failed)
        return out

    def _each_result(self, op: WriteOp, entry: Sequence[Any]) -> WriteResult | RxStateError:
        if entry[0] != b"ERR":
            return WriteResult.from_reply(entry)
        error = translate_error(ResponseError(entry[1].decode()))
        if isinstance(error, TransactionPending):
            try:
                return self.mutate([op], forget=False)[0]
            except RxStateError as exc:
                return exc
        if not isinstance(error, RxStateError):
            return RxStateError(str(error))
        return error

    def mutate_grouped(self, ops: Sequence[WriteOp], *, forget: bool = True) -> list[WriteResult | RxStateError]:
        """Run ``ops`` as one atomic call per partition, pipelined; a result (or its group's error) per op.

        Raises:
            ValidationError: two ops of one partition target the same entity.
        """
        groups: dict[int, list[int]] = {}
        seen: set[tuple[str, int, str]] = set()
        for i, op in enumerate(ops):
            key = (op.collection, op.partition, op.id)
            if key in seen:
                raise ValidationError(f"{op.collection} {op.id!r} appears twice in one atomic batch", field="id")
            seen.add(key)
            groups.setdefault(op.partition, []).append(i)
        grouped = [[ops[i] for i in indexes] for indexes in groups.values()]
        calls: list[WriteCall] = [("mutate", *self.pack(group)) for group in grouped]
        per_group = self._settled(
            calls, grouped, lambda reply: [WriteResult.from_reply(r) for r in reply], forget, flat=False
        )
        out: list[WriteResult | RxStateError] = [_PENDING] * len(ops)
        for indexes, results in zip(groups.values(), per_group, strict=True):
            for n, i in enumerate(indexes):
                out[i] = results if isinstance(results, RxStateError) else results[n]
        return out

    def _settled(
        self,
        calls: Sequence[WriteCall],
        groups: Sequence[Sequence[WriteOp]],
        decode: Callable[[Any], list[WriteResult]],
        forget: bool,
        *,
        flat: bool = True,
    ) -> list[Any]:
        """Pipeline ``calls``; a call refused by an intent runs again alone after the intent is settled."""
        everything = [op for group in groups for op in group]
        try:
            replies = self._send_many(calls)
        except BaseException:
            self.forget(everything)
            raise
        out: list[Any] = []
        failed: list[WriteOp] = []
        for (script, keys, args), group, reply in zip(calls, groups, replies, strict=True):
            if isinstance(reply, TransactionPending):
                try:
                    reply = self.call(script, keys, args)
                except RxStateError as exc:
                    reply = exc
            if isinstance(reply, RxStateError):
                failed += group
                out.append(reply)
            elif isinstance(reply, BaseException):
                self.forget(everything)
                raise reply
            else:
                results = decode(reply)
                out.append(results[0] if flat else results)
        self.forget(everything if forget else failed)
        return out

    # -- post-write cache work ----------------------------------------------------------------------
    def forget(self, ops: Sequence[WriteOp]) -> None:
        """Evict the cached values of the entities ``ops`` may have written.

        A write made without per-entity cache bookkeeping (a batch, a transaction, a projection) must not
        leave its writer reading the older cached value while the invalidation is still on its way.
        """
        cache = self._store._cache
        if cache is not None:
            ks = self._store.keyspace
            cache.invalidate_many([ks.entity(op.collection, op.id, op.partition) for op in ops if op.kind != "check"])


P = ParamSpec("P")
R = TypeVar("R")


def durable_option(method: Callable[P, R]) -> Callable[P, R]:
    """Give a write method of a collection (anything with ``_store``) its ``durable=`` keyword: True makes
    that one write wait for confirmations (``Writer.durable``), False makes it not wait on a durable
    store, None (the default) leaves it to the store. The method declares ``durable`` in its signature
    for its callers and documentation; this wrapper is what acts on it.
    """

    @functools.wraps(method)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        on = kwargs.get("durable")
        if on is None:
            return method(*args, **kwargs)
        with args[0]._store.writer.durable(on):  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    return run
