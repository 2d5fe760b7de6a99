"""``RxCheckpointSaver``: LangGraph checkpoints, channel blobs and pending writes kept by rxstate.

Runs on plain Redis 7.0, Valkey 8 and Redis Cluster: it needs no RedisJSON or RediSearch, only
rxstate's write path. A thread is four collections partitioned by thread id (see ``rows``), so every
key of a thread sits in one partition and one cluster slot:

* ``put`` writes the checkpoint, the blobs of the channels it changed and the thread head in ONE
  write-path call (all or nothing, with their version bumps, index entries and change records);
* ``put_writes`` writes a task's writes in one call per ``mutate_each`` chunk (100 writes): a write of a
  ``(task_id, idx)`` already stored is left alone (idempotent retries), while the special writes
  (ERROR, INTERRUPT, ...) replace theirs, as LangGraph expects; none is ever dropped;
* listings read the ``thread`` index, whose lexicographic order is checkpoint-id order, so ``list``
  pages newest first without reading what it does not return;
* ``ttl`` makes every entity of a thread expire that many seconds after it was written (the store's
  reaper cleans the index entries, as for any collection).

Fencing. Each saver remembers, per thread namespace, the checkpoint it last read as the latest
(``get_tuple`` without a checkpoint id, as a graph does when it resumes) or wrote itself, with the
thread head's version at that moment. A write continuing that checkpoint (its pending writes, its
child) carries a compare-and-set on the head in the same call: if another saver advanced the thread
meanwhile, it raises ``ThreadForkConflict`` and writes nothing, instead of forking the thread silently.
Writes from any other checkpoint (time travel, ``update_state`` on an old checkpoint) are forks asked
for and are not fenced; runs sharing one saver count as one writer. ``fencing=False`` turns it off.

``watch(thread_id)`` is an observable of a thread's checkpoints as they are written (the store's change
feed, filtered by thread); ``history(thread_id)`` lists them without loading channel values.

The async methods run the same code (``_run``). A saver made with ``await RxCheckpointSaver.on(astore)``
from an asyncio store (``rxstate.aio``) runs it on the event loop, its server calls awaited on
``redis.asyncio``; a saver of a synchronous store runs it through ``asyncio.to_thread`` (the kernel store
is thread-safe).

Example:
    >>> saver = RxCheckpointSaver(rxstate.connect(fakeredis.FakeRedis()))  # doctest: +SKIP
    >>> graph = builder.compile(checkpointer=saver)  # doctest: +SKIP
    >>> graph.invoke({"n": 1}, {"configurable": {"thread_id": "t1"}})  # doctest: +SKIP
"""

from __future__ import annotations

import builtins
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from cachetools import LRUCache
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from rxstate.core.errors import AlreadyExists, ConflictError, ThreadForkConflict, ValidationError
from rxstate.core.model import Model
from rxstate.core.writes import WriteOp
from rxstate.integrations.langgraph.history import (
    TOP,
    ThreadCheckpoint,
    checkpoint_ids,
    config_of,
    index_term,
    thread_history,
    unescape,
)
from rxstate.integrations.langgraph.offloop import run_sync
from rxstate.integrations.langgraph.rows import (
    BlobRow,
    CheckpointRow,
    HeadRow,
    WriteRow,
    decode_bytes,
    encode_bytes,
    escape,
    row_id,
)

if TYPE_CHECKING:
    from reactivex import Observable

    from rxstate.aio import AsyncStore
    from rxstate.api import Collection, Store
    from rxstate.feed.change import Change

__all__ = ["RxCheckpointSaver", "ThreadCheckpoint"]

T = TypeVar("T")
_PAGE = 64  # checkpoints fetched per round trip while listing
_DELETE_CHUNK = 1000  # delete ops per write call (one call never holds the server long)


def _thread_of(config: RunnableConfig) -> str:
    configurable = config.get("configurable") or {}
    thread_id = configurable.get("thread_id")
    if thread_id is None or thread_id == "":
        raise ValidationError("a checkpoint config needs configurable.thread_id", field="thread_id")
    return str(thread_id)


class RxCheckpointSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on an rxstate store (see the module docstring).

    Args:
        store: the rxstate store (``rxstate.connect(...)``) to keep threads in.
        serde: LangGraph's serializer (default: its ``JsonPlusSerializer``).
        ttl: seconds (or a ``timedelta``) after which each stored entity of a thread expires; None: kept.
        fencing: refuse a write that would fork a thread another writer advanced (``ThreadForkConflict``).
        prefix: collection name prefix, to keep several savers apart in one namespace.

    Example:
        >>> saver = RxCheckpointSaver(rxstate.connect(fakeredis.FakeRedis()), ttl=3600)  # doctest: +SKIP
        >>> saver.get_tuple({"configurable": {"thread_id": "t1"}}) is None  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        store: Store,
        *,
        serde: SerializerProtocol | None = None,
        ttl: float | timedelta | None = None,
        fencing: bool = True,
        prefix: str = "lg",
    ) -> None:
        super().__init__(serde=serde)
        self._bridge: AsyncStore | None = None
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float | timedelta)):
            raise ValidationError(f"ttl must be seconds, a timedelta or None, not {ttl!r}", field="ttl")
        self.store = store
        self.prefix = prefix
        self.ttl = ttl
        self.fencing = fencing
        self.checkpoints: Collection[CheckpointRow] = store.collection(
            f"{prefix}_checkpoints", CheckpointRow, indexes=["thread", "run_id"], partition_key="thread"
        )
        self.blobs: Collection[BlobRow] = store.collection(
            f"{prefix}_blobs", BlobRow, indexes=["thread"], partition_key="thread"
        )
        self.writes: Collection[WriteRow] = store.collection(
            f"{prefix}_writes", WriteRow, indexes=["thread"], partition_key="thread"
        )
        self.heads: Collection[HeadRow] = store.collection(
            f"{prefix}_heads", HeadRow, indexes=["thread"], partition_key="thread"
        )
        # (thread, ns) -> (the checkpoint this writer last read as the latest or wrote, "" for none; the
        # head version then): a write continuing that checkpoint is fenced with that version
        self._seen: LRUCache[tuple[str, str], tuple[str, int]] = LRUCache(maxsize=10_000)
        self._seen_lock = threading.Lock()
        self._write_locks = [threading.Lock() for _ in range(32)]

    # -- reading the thread index -------------------------------------------------------------------
    def _index_range(self, coll: Collection[Any], thread: str, prefix: str, **options: Any) -> Any:
        """Ids of ``coll`` in ``thread`` starting with ``prefix`` (see ``history.checkpoint_ids``)."""
        return checkpoint_ids(self.store, coll.name, thread, prefix, **options)

    def _ids(self, coll: Collection[Any], thread: str, prefix: str) -> list[str]:
        ids: list[str] = self._index_range(coll, thread, prefix)
        return ids

    def _pipeline(self) -> Any:
        return self.store.client.pipeline(transaction=False)

    # -- building tuples ------------------------------------------------------------------------------
    def _load(self, thread: str, rows: Sequence[CheckpointRow]) -> list[CheckpointTuple]:
        """Full tuples of ``rows`` (one thread): their channel values and pending writes, in two reads."""
        if not rows:
            return []
        checkpoints = [self.serde.loads_typed((r.checkpoint_type, decode_bytes(r.checkpoint))) for r in rows]
        wanted = [
            row_id(thread, r.ns, ch, str(ver))
            for r, c in zip(rows, checkpoints, strict=True)
            for ch, ver in c["channel_versions"].items()
        ]
        pipe = self._pipeline()
        decoders = [
            self._index_range(self.writes, thread, row_id(thread, r.ns, r.checkpoint_id) + "|", pipe=pipe) for r in rows
        ]
        write_ids = [decode(reply) for decode, reply in zip(decoders, pipe.execute(), strict=True)]
        blobs = self.blobs.get_many(wanted, partition=thread)
        writes = self.writes.get_many([i for ids in write_ids for i in ids], partition=thread)
        out = []
        for row, checkpoint, ids in zip(rows, checkpoints, write_ids, strict=True):
            values: dict[str, Any] = {}
            for ch, ver in checkpoint["channel_versions"].items():
                blob = blobs.get(row_id(thread, row.ns, ch, str(ver)))
                if blob is not None and blob.value_type != "empty":
                    values[ch] = self.serde.loads_typed((blob.value_type, decode_bytes(blob.value)))
            found = sorted(
                (w for w in (writes.get(i) for i in ids) if w is not None),
                key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx),
            )
            out.append(
                CheckpointTuple(
                    config=config_of(thread, row.ns, row.checkpoint_id),
                    checkpoint=cast(Checkpoint, {**checkpoint, "channel_values": values}),
                    metadata=self.serde.loads_typed((row.metadata_type, decode_bytes(row.metadata))),
                    parent_config=config_of(thread, row.ns, row.parent) if row.parent else None,
                    pending_writes=[
                        (w.task_id, w.channel, self.serde.loads_typed((w.value_type, decode_bytes(w.value))))
                        for w in found
                    ],
                )
            )
        return out

    def _rows(self, thread: str, ids: Sequence[str]) -> list[CheckpointRow]:
        """The checkpoint rows of ``ids`` that still exist, in the order of ``ids``."""
        found = self.checkpoints.get_many(ids, partition=thread)
        return [found[i] for i in ids if i in found]

    # -- the saver's interface ----------------------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the thread namespace's latest one without a checkpoint id.

        Example:
            >>> saver.get_tuple({"configurable": {"thread_id": "t1"}}).checkpoint["id"]  # doctest: +SKIP
            '1f0c...'
        """
        thread = _thread_of(config)
        ns = str(config["configurable"].get("checkpoint_ns", ""))
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            rows = self._rows(thread, [row_id(thread, ns, checkpoint_id)])
        else:
            pipe = self._pipeline()
            if self.fencing:
                pipe.hget(self.heads.key(row_id(thread, ns), partition=thread), "_v")
            decode = self._index_range(
                self.checkpoints, thread, row_id(thread, ns) + "|", desc=True, count=1, pipe=pipe
            )
            replies = pipe.execute()
            ids = decode(replies[-1])
            rows = self._rows(thread, ids)
            if self.fencing:
                with self._seen_lock:
                    self._seen[(thread, ns)] = (rows[0].checkpoint_id if rows else "", int(replies[0] or 0))
        tuples = self._load(thread, rows)
        return tuples[0] if tuples else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of one thread (and namespace, if ``config`` names one), or of all
        threads (``config=None``); filtered by metadata values, before a checkpoint, at most ``limit``.

        Example:
            >>> thread = {"configurable": {"thread_id": "t1"}}
            >>> [t.checkpoint["id"] for t in saver.list(thread, limit=2)]  # doctest: +SKIP
            ['1f0c...', '1f0b...']
        """
        if limit is not None and limit <= 0:
            return
        before_id = get_checkpoint_id(before) if before else None
        wanted_id = get_checkpoint_id(config) if config else None
        left = limit
        for thread, ids in self._candidates(config, before_id):
            for start in range(0, len(ids), _PAGE):
                page = ids[start : start + _PAGE]
                if wanted_id is not None:
                    page = [i for i in page if unescape(i.rsplit("|", 1)[1]) == wanted_id]
                for tup in self._load(thread, self._rows(thread, page)):
                    if filter and not all(tup.metadata.get(k) == v for k, v in filter.items()):
                        continue
                    yield tup
                    if left is not None:
                        left -= 1
                        if left <= 0:
                            return

    def _candidates(
        self, config: RunnableConfig | None, before_id: str | None
    ) -> Iterator[tuple[str, builtins.list[str]]]:
        """(thread, checkpoint row ids newest first) groups for ``list``."""
        if config is None:
            groups: dict[str, builtins.list[str]] = {}
            for thread, ids in self._all_checkpoint_ids():
                groups.setdefault(thread, []).extend(ids)
            every = [(i.rsplit("|", 1)[1], t, i) for t, ids in groups.items() for i in ids]
        else:
            thread = _thread_of(config)
            ns = config["configurable"].get("checkpoint_ns")
            if ns is not None:
                prefix = row_id(thread, str(ns)) + "|"
                ids = self._ids_below(thread, prefix, escape(before_id) if before_id else None)
                yield thread, ids
                return
            every = [
                (i.rsplit("|", 1)[1], thread, i) for i in self._ids(self.checkpoints, thread, escape(thread) + "|")
            ]
        every.sort(reverse=True)
        for cid, thread, i in every:
            if before_id is None or cid < before_id:
                yield thread, [i]

    def _ids_below(self, thread: str, prefix: str, before_id: str | None) -> builtins.list[str]:
        ids: builtins.list[str] = self._index_range(self.checkpoints, thread, prefix, below=before_id, desc=True)
        return ids

    def _all_checkpoint_ids(self) -> Iterator[tuple[str, builtins.list[str]]]:
        """(thread, ids) of every checkpoint in the namespace, read from each partition's thread index."""
        ks = self.store.keyspace
        pipe = self._pipeline()
        for p in range(ks.partitions):
            pipe.zrange(ks.index(self.checkpoints.name, "thread", p), 0, -1)
        for members in pipe.execute():
            for member in members:
                _, _, entity = bytes(member).partition(b"\0")
                text = entity.decode()
                yield unescape(text.split("|", 1)[0]), [text]

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint with the blobs of its changed channels and the thread head, in one call.

        Raises:
            ThreadForkConflict: the parent was read as the latest checkpoint, and another writer has
                advanced the thread since (fencing).

        Example:
            >>> stored = saver.put(config, checkpoint, {"step": 1}, {"messages": "2"})  # doctest: +SKIP
            >>> stored["configurable"]["checkpoint_id"]  # doctest: +SKIP
            '1f0c...'
        """
        thread = _thread_of(config)
        ns = str(config["configurable"].get("checkpoint_ns", ""))
        parent = str(config["configurable"].get("checkpoint_id") or "")
        stored: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = stored.pop("channel_values")
        ttl = self.ttl
        ops: list[WriteOp] = []
        for channel, version in new_versions.items():
            value_type, data = self.serde.dumps_typed(values[channel]) if channel in values else ("empty", b"")
            blob = BlobRow(
                thread=thread,
                ns=ns,
                channel=channel,
                version=str(version),
                value_type=value_type,
                value=encode_bytes(data),
            )
            ops.append(self.blobs.put_op(row_id(thread, ns, channel, str(version)), blob, ttl=ttl))
        full_metadata = get_checkpoint_metadata(config, metadata)
        checkpoint_type, checkpoint_data = self.serde.dumps_typed(stored)
        metadata_type, metadata_data = self.serde.dumps_typed(full_metadata)
        step = full_metadata.get("step")
        row = CheckpointRow(
            thread=thread,
            ns=ns,
            checkpoint_id=checkpoint["id"],
            parent=parent,
            checkpoint_type=checkpoint_type,
            checkpoint=encode_bytes(checkpoint_data),
            metadata_type=metadata_type,
            metadata=encode_bytes(metadata_data),
            run_id=str(full_metadata.get("run_id") or ""),
            step=step if isinstance(step, int) else None,
            source=str(full_metadata.get("source") or ""),
        )
        ops.append(self.checkpoints.put_op(row_id(thread, ns, checkpoint["id"]), row, ttl=ttl))
        head = HeadRow(thread=thread, ns=ns, checkpoint_id=checkpoint["id"])
        with self._writing(thread, ns):
            expected = self._expected_head(thread, ns, parent)
            ops.append(self.heads.put_op(row_id(thread, ns), head, expected_version=expected, ttl=ttl))
            try:
                results = self.store.writer.mutate(ops)
            except ConflictError as exc:
                if expected is None or isinstance(exc, AlreadyExists):
                    raise
                raise self._fork_conflict(exc, thread, ns, parent) from exc
            if self.fencing:
                with self._seen_lock:
                    self._seen[(thread, ns)] = (checkpoint["id"], results[-1].version)
        return config_of(thread, ns, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes against a checkpoint, all in one call: a regular write already stored for
        the same ``(task_id, idx)`` is kept (retries are idempotent), special writes (ERROR, INTERRUPT)
        replace theirs.

        Raises:
            ThreadForkConflict: the checkpoint was read as the latest and another writer has advanced the
                thread since (fencing): its writes would rewrite history another run has continued.

        Example:
            >>> saver.put_writes(stored_config, [("messages", "hi")], task_id="t-1")  # doctest: +SKIP
        """
        thread = _thread_of(config)
        ns = str(config["configurable"].get("checkpoint_ns", ""))
        checkpoint_id = str(config["configurable"].get("checkpoint_id") or "")
        if not checkpoint_id:
            raise ValidationError("put_writes needs configurable.checkpoint_id", field="checkpoint_id")
        rows: dict[str, tuple[WriteRow, bool]] = {}
        for idx, (channel, value) in enumerate(writes):
            n = WRITES_IDX_MAP.get(channel, idx)
            value_type, data = self.serde.dumps_typed(value)
            row = WriteRow(
                thread=thread,
                ns=ns,
                checkpoint_id=checkpoint_id,
                task_id=task_id,
                task_path=task_path,
                idx=n,
                channel=channel,
                value_type=value_type,
                value=encode_bytes(data),
            )
            rows[row_id(thread, ns, checkpoint_id, task_id, str(n))] = (row, n < 0)
        with self._writing(thread, ns):
            self._put_rows(thread, ns, checkpoint_id, task_id, rows)

    def _put_rows(
        self, thread: str, ns: str, checkpoint_id: str, task_id: str, rows: dict[str, tuple[WriteRow, bool]]
    ) -> None:
        expected = self._expected_head(thread, ns, checkpoint_id)
        fence = self._head_check(thread, ns, expected)
        for _attempt in range(3):
            pipe = self._pipeline()
            for entity in rows:
                pipe.exists(self.writes.key(entity, partition=thread))
            present = {e for e, found in zip(rows, pipe.execute(), strict=True) if found}
            ops = [*fence]
            for entity, (row, special) in rows.items():
                if special:
                    ops.append(self.writes.put_op(entity, row, ttl=self.ttl))
                elif entity not in present:
                    ops.append(self.writes.put_op(entity, row, kind="create", ttl=self.ttl))
            if len(ops) == len(fence):
                return
            try:
                self.store.writer.mutate(ops)
                return
            except AlreadyExists:
                continue  # another writer stored one of them meanwhile: read again, keep theirs
            except ConflictError as exc:
                if not fence:
                    raise
                raise self._fork_conflict(exc, thread, ns, checkpoint_id) from exc
        raise ConflictError(
            f"writes of task {task_id!r} to checkpoint {checkpoint_id} kept racing with another writer's",
            key=self.writes.key(next(iter(rows)), partition=thread),
        )

    def _writing(self, thread: str, ns: str) -> threading.Lock:
        """The lock this saver holds while it writes to a thread namespace: its own concurrent writes
        (a background checkpoint write and the next step's pending writes) read and move the head in turn."""
        return self._write_locks[hash((thread, ns)) % len(self._write_locks)]

    def _expected_head(self, thread: str, ns: str, checkpoint_id: str) -> int | None:
        """The head version to fence a write continuing ``checkpoint_id`` with (None: not fenced)."""
        if not self.fencing:
            return None
        with self._seen_lock:
            seen = self._seen.get((thread, ns))
        return seen[1] if seen is not None and seen[0] == checkpoint_id else None

    def _head_check(self, thread: str, ns: str, expected: int | None) -> builtins.list[WriteOp]:
        if expected is None:
            return []
        partition = self.store.keyspace.partition_of(thread)
        return [
            WriteOp(
                kind="check", collection=self.heads.name, id=row_id(thread, ns), partition=partition, expected=expected
            )
        ]

    def _fork_conflict(self, exc: ConflictError, thread: str, ns: str, parent: str) -> ThreadForkConflict:
        head_id = row_id(thread, ns)
        current = self.heads.get_many([head_id], partition=thread, consistent=True).get(head_id)
        latest = current.checkpoint_id if current else ""
        return ThreadForkConflict(
            f"thread {thread!r} (namespace {ns!r}) moved on to checkpoint {latest or '(deleted)'} since "
            f"checkpoint {parent or '(none)'} was read as its latest: another writer resumed it; read the "
            "thread again before writing",
            key=exc.key,
            thread_id=thread,
            checkpoint_ns=ns,
            parent_id=parent,
            head_id=latest,
            expected=exc.expected,
            actual=exc.actual,
        )

    def _delete(self, coll: Collection[Any], thread: str, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), _DELETE_CHUNK):
            chunk = ids[start : start + _DELETE_CHUNK]
            self.store.writer.mutate([coll.delete_op(i, partition=thread) for i in chunk])

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, blob, write and head of a thread.

        Example:
            >>> saver.delete_thread("t1")  # doctest: +SKIP
        """
        thread = str(thread_id)
        prefix = escape(thread) + "|"
        ops: list[WriteOp] = []
        for coll in (self.checkpoints, self.blobs, self.writes, self.heads):
            ops += [coll.delete_op(i, partition=thread) for i in self._ids(coll, thread, prefix)]
        with self._seen_lock:
            for key in [k for k in self._seen if k[0] == thread]:
                self._seen.pop(key, None)
        for start in range(0, len(ops), _DELETE_CHUNK):
            self.store.writer.mutate(ops[start : start + _DELETE_CHUNK])

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints written by these runs, with their pending writes (in every thread).

        Example:
            >>> saver.delete_for_runs(["run-1"])  # doctest: +SKIP
        """
        wanted = [str(r) for r in run_ids if r]
        if not wanted:
            return
        ks = self.store.keyspace
        pipe = self._pipeline()
        heads = [index_term(self.store.codec, r) + b"\0" for r in wanted]
        for p in range(ks.partitions):
            for head in heads:
                pipe.zrangebylex(ks.index(self.checkpoints.name, "run_id", p), b"[" + head, b"(" + head + TOP)
        by_thread: dict[str, list[str]] = {}
        for reply, head in zip(pipe.execute(), heads * ks.partitions, strict=True):
            for member in reply:
                entity = bytes(member)[len(head) :].decode()
                by_thread.setdefault(unescape(entity.split("|", 1)[0]), []).append(entity)
        for thread, ids in by_thread.items():
            ops = [self.checkpoints.delete_op(i, partition=thread) for i in ids]
            for i in ids:
                ops += [self.writes.delete_op(w, partition=thread) for w in self._ids(self.writes, thread, i + "|")]
            for start in range(0, len(ops), _DELETE_CHUNK):
                self.store.writer.mutate(ops[start : start + _DELETE_CHUNK])

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, blob and write of a thread to another thread (in one call per
        ``_DELETE_CHUNK`` entities: the target's keys share one slot, the source's may not).

        Example:
            >>> saver.copy_thread("t1", "t1-copy")  # doctest: +SKIP
        """
        source, target = str(source_thread_id), str(target_thread_id)
        prefix = escape(source) + "|"
        ops: list[WriteOp] = []
        colls: tuple[Collection[Any], ...] = (self.checkpoints, self.blobs, self.writes, self.heads)
        for coll in colls:
            ids = self._ids(coll, source, prefix)
            found: dict[str, Model] = coll.get_many(ids, partition=source)
            for i, row in found.items():
                copied = row.model_copy(update={"thread": target})
                ops.append(coll.put_op(escape(target) + i[len(prefix) - 1 :], copied, ttl=self.ttl))
        for start in range(0, len(ops), _DELETE_CHUNK):
            self.store.writer.mutate(ops[start : start + _DELETE_CHUNK])

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune threads: ``"keep_latest"`` keeps each namespace's latest checkpoint (with its writes and
        the blobs it refers to), ``"delete"`` removes everything.

        Raises:
            ValidationError: an unknown strategy.

        Example:
            >>> saver.prune(["t1"], strategy="keep_latest")  # doctest: +SKIP
        """
        if strategy not in ("keep_latest", "delete"):
            raise ValidationError(f"unknown prune strategy {strategy!r}: 'keep_latest' or 'delete'", field="strategy")
        for thread_id in thread_ids:
            thread = str(thread_id)
            if strategy == "delete":
                self.delete_thread(thread)
                continue
            prefix = escape(thread) + "|"
            latest: dict[str, str] = {}
            for i in self._ids(self.checkpoints, thread, prefix):
                latest[i.rsplit("|", 1)[0]] = i  # ids ascend: the last one per namespace is its latest
            kept = set(latest.values())
            rows = self._rows(thread, sorted(kept))
            keep_blobs = set()
            for row in rows:
                checkpoint = self.serde.loads_typed((row.checkpoint_type, decode_bytes(row.checkpoint)))
                keep_blobs |= {row_id(thread, row.ns, ch, str(v)) for ch, v in checkpoint["channel_versions"].items()}
            ops = [
                self.checkpoints.delete_op(i, partition=thread)
                for i in self._ids(self.checkpoints, thread, prefix)
                if i not in kept
            ]
            ops += [
                self.writes.delete_op(i, partition=thread)
                for i in self._ids(self.writes, thread, prefix)
                if i.rsplit("|", 2)[0] not in kept
            ]
            ops += [
                self.blobs.delete_op(i, partition=thread)
                for i in self._ids(self.blobs, thread, prefix)
                if i not in keep_blobs
            ]
            for start in range(0, len(ops), _DELETE_CHUNK):
                self.store.writer.mutate(ops[start : start + _DELETE_CHUNK])

    def get_next_version(self, current: str | None, channel: None) -> str:
        """The next channel version: a zero-padded counter (versions sort as text) and a random part, so
        two forks of one checkpoint never write the same blob id with different values."""
        if current is None:
            n = 0
        elif isinstance(current, int):
            n = current
        else:
            n = int(str(current).split(".")[0])
        return f"{n + 1:032}.{random.random():016}"

    # -- beyond the interface -------------------------------------------------------------------------
    def history(
        self, thread_id: str, *, checkpoint_ns: str | None = None, limit: int | None = None
    ) -> builtins.list[ThreadCheckpoint]:
        """A thread's checkpoints newest first (all namespaces unless one is named), without their values.

        Example:
            >>> [(c.step, c.source) for c in saver.history("t1")]  # doctest: +SKIP
            [(1, 'loop'), (0, 'loop'), (-1, 'input')]
        """
        return thread_history(
            self.store, thread_id, checkpoint_ns=checkpoint_ns, limit=limit, prefix=self.prefix, serde=self.serde
        )

    def watch(self, thread_id: str, *, since: str | None = None) -> Observable[ThreadCheckpoint]:
        """An ``Observable`` of a thread's checkpoints as they are written (all its namespaces), from the
        store's change feed; ``since="0"`` replays those still in the feed first.

        Example:
            >>> saver.watch("t1").subscribe(lambda c: print(c.step, c.checkpoint_id))  # doctest: +SKIP
        """
        from reactivex import operators as ops

        thread = str(thread_id)
        feed = self.store.changes(collection=self.checkpoints.name, where={"thread": thread}, since=since, values=True)

        def written(change: Change) -> bool:
            return isinstance(change.value, CheckpointRow)

        def checkpoint(change: Change) -> ThreadCheckpoint:
            return ThreadCheckpoint.from_row(change.value, self.serde)

        return feed.pipe(ops.filter(written), ops.map(checkpoint))

    # -- async: one code path -----------------------------------------------------------------------
    @classmethod
    async def on(cls, astore: AsyncStore, **options: Any) -> RxCheckpointSaver:
        """A saver of an asyncio store: its async methods await the store's ``redis.asyncio`` client.

        ``options`` are the constructor's (``serde``, ``ttl``, ``fencing``, ``prefix``).

        Example:
            >>> saver = await RxCheckpointSaver.on(await rxstate.aio.connect())  # doctest: +SKIP
        """
        saver = await astore.run(cls, astore.sync, **options)
        saver._bridge = astore
        return saver

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a sync method: in the asyncio store's bridge when the saver has one, else off the loop."""
        return await run_sync(self._bridge, fn, *args, **kwargs)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async ``get_tuple``."""
        return await self._run(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async ``list`` (the listing is read off the loop, then yielded)."""
        found = await self._run(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for tup in found:
            yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async ``put``."""
        return await self._run(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async ``put_writes``."""
        await self._run(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """Async ``delete_thread``."""
        await self._run(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async ``delete_for_runs``."""
        await self._run(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async ``copy_thread``."""
        await self._run(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Async ``prune``."""
        await self._run(self.prune, thread_ids, strategy=strategy)
