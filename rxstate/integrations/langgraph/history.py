"""A LangGraph thread's checkpoints, read from the server alone (no collection opened, no write).

So ``rxstate langgraph history`` can read a thread on a read-only store, and ``RxCheckpointSaver.history``
is the same code. The thread index of a collection holds ``<encoded thread>\\0<id>`` members; the
encoded thread is what the write path stored (its JSON, compressed above the codec's threshold), built
here by ``index_term``.

Example:
    >>> index_term(rxstate.Codec(), "t1")
    b'"t1"'
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from rxstate.core.codec import Codec
from rxstate.integrations.langgraph.rows import CheckpointRow, decode_bytes, escape, row_id

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["ThreadCheckpoint", "checkpoint_ids", "config_of", "index_term", "thread_history", "unescape"]

TOP = b"\xff"
"""Above every byte of an escaped id component: the end of an id-prefix range."""


def unescape(part: str) -> str:
    """One row-id component as it was before ``rows.escape``."""
    return part.replace("%7C", "|").replace("%25", "%")


def config_of(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    """The LangGraph config naming one checkpoint."""
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}


def index_term(codec: Codec, value: str) -> bytes:
    """How an index stores a string field's value (``Codec`` JSON, packed as the write path packs it)."""
    return codec.pack(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


@dataclass(frozen=True, slots=True)
class ThreadCheckpoint:
    """One checkpoint of a thread as ``history`` lists it and ``watch`` emits it (no channel values).

    Attributes:
        thread_id: the thread.
        checkpoint_ns: its namespace ("" for the root graph, ``"node:task"`` for a subgraph).
        checkpoint_id: the checkpoint.
        parent_id: the checkpoint it continues ("" for the first one).
        step: the graph step (``metadata["step"]``), when recorded.
        source: ``"input"``, ``"loop"``, ``"update"`` or ``"fork"`` (``metadata["source"]``).
        run_id: the run that wrote it ("" if unknown).
        metadata: the whole checkpoint metadata.
    """

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str
    step: int | None
    source: str
    run_id: str
    metadata: dict[str, Any]

    @property
    def config(self) -> RunnableConfig:
        """The config that names this checkpoint (pass it to ``graph.invoke`` or ``get_state``)."""
        return config_of(self.thread_id, self.checkpoint_ns, self.checkpoint_id)

    @classmethod
    def from_row(cls, row: CheckpointRow, serde: SerializerProtocol) -> ThreadCheckpoint:
        """The checkpoint a stored row describes (its metadata decoded by ``serde``)."""
        metadata = serde.loads_typed((row.metadata_type, decode_bytes(row.metadata)))
        return cls(
            thread_id=row.thread,
            checkpoint_ns=row.ns,
            checkpoint_id=row.checkpoint_id,
            parent_id=row.parent,
            step=row.step,
            source=row.source,
            run_id=row.run_id,
            metadata=dict(metadata),
        )

    def as_json(self) -> dict[str, Any]:
        """Plain data for ``--json`` output."""
        return {
            "thread_id": self.thread_id,
            "checkpoint_ns": self.checkpoint_ns,
            "checkpoint_id": self.checkpoint_id,
            "parent_id": self.parent_id,
            "step": self.step,
            "source": self.source,
            "run_id": self.run_id,
            "metadata": self.metadata,
        }


def checkpoint_ids(
    store: Store,
    collection: str,
    thread: str,
    prefix: str,
    *,
    below: str | None = None,
    desc: bool = False,
    count: int | None = None,
    pipe: Any = None,
) -> Any:
    """Ids of ``collection`` in ``thread`` that start with ``prefix`` (and, with ``below``, sort before
    ``prefix + below``), in id order, from the collection's ``thread`` index. With ``pipe``, the read is
    queued there and a function decoding its reply is returned instead.
    """
    ks = store.keyspace
    key = ks.index(collection, "thread", ks.partition_of(thread))
    head = index_term(store.codec, thread) + b"\0"
    low = b"[" + head + prefix.encode()
    high = b"(" + head + prefix.encode() + (below.encode() if below is not None else TOP)
    args: list[Any] = [high, low] if desc else [low, high]
    if count is not None:
        args += ["LIMIT", 0, count]
    command = "ZREVRANGEBYLEX" if desc else "ZRANGEBYLEX"

    def decode(members: Any) -> list[str]:
        return [bytes(m)[len(head) :].decode() for m in members]

    if pipe is not None:
        pipe.execute_command(command, key, *args)
        return decode
    return decode(store.client.execute_command(command, key, *args))


def _newest_first(ids: Sequence[str]) -> list[str]:
    return sorted(ids, key=lambda i: unescape(i.rsplit("|", 1)[1]), reverse=True)


def thread_history(
    store: Store,
    thread_id: str,
    *,
    checkpoint_ns: str | None = None,
    limit: int | None = None,
    prefix: str = "lg",
    serde: SerializerProtocol | None = None,
) -> list[ThreadCheckpoint]:
    """A thread's checkpoints newest first (all namespaces unless one is named), without channel values.

    Works on a read-only store: it reads the checkpoint collection's index and hashes directly.

    Example:
        >>> [(c.step, c.source) for c in thread_history(store, "t1")]  # doctest: +SKIP
        [(1, 'loop'), (0, 'loop'), (-1, 'input')]
    """
    thread = str(thread_id)
    collection = f"{prefix}_checkpoints"
    start = escape(thread) + "|" if checkpoint_ns is None else row_id(thread, checkpoint_ns) + "|"
    ids = _newest_first(checkpoint_ids(store, collection, thread, start))
    if limit is not None:
        ids = ids[:limit]
    ks = store.keyspace
    p = ks.partition_of(thread)
    pipe = store.client.pipeline(transaction=False)
    for i in ids:
        pipe.hgetall(ks.entity(collection, i, p))
    fields = CheckpointRow.model_fields
    decoder = serde or JsonPlusSerializer()
    out = []
    for raw in pipe.execute():
        if b"_v" not in raw:
            continue  # deleted or expired since the index was read
        data = {k.decode(): Codec.plain(v) for k, v in raw.items() if k.decode() in fields}
        out.append(ThreadCheckpoint.from_row(CheckpointRow.model_validate(data), decoder))
    return out
