"""The entities a LangGraph thread is stored as, and their ids.

Every row carries its ``thread`` and the collections are partitioned by it, so all of a thread's keys
share one partition, hence one cluster slot: a checkpoint, its channel blobs and its thread head are
written by one write-path call (no CROSSSLOT by construction). Each collection indexes ``thread``; its
index zset keeps ``<thread as JSON>\\0<id>`` members in lexicographic order, and ids are built so that
this order is the order LangGraph needs: ``<thread>|<ns>|<checkpoint id>`` lists a namespace's
checkpoints by id, ``<thread>|<ns>|<checkpoint id>|<task id>|<idx>`` a checkpoint's writes.

Example:
    >>> row_id("t|1", "", "1ef")
    't%7C1||1ef'
    >>> decode_bytes(encode_bytes(b"\\x00msgpack"))
    b'\\x00msgpack'
"""

from __future__ import annotations

import base64

from rxstate.core.model import Model

__all__ = [
    "BlobRow",
    "CheckpointRow",
    "HeadRow",
    "WriteRow",
    "decode_bytes",
    "encode_bytes",
    "escape",
    "row_id",
]


def escape(part: str) -> str:
    """One component of a row id: ``%`` and the separator ``|`` escaped, so ids split back uniquely."""
    return part.replace("%", "%25").replace("|", "%7C")


def row_id(*parts: str) -> str:
    """The id of a row from its components (thread, namespace, ...), each escaped."""
    return "|".join(escape(p) for p in parts)


def encode_bytes(data: bytes) -> str:
    """Serialized bytes as text a model field can hold (base64)."""
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    """The bytes ``encode_bytes`` stored."""
    return base64.b64decode(text)


class CheckpointRow(Model):
    """One checkpoint (without its channel values, which are ``BlobRow`` entities)."""

    thread: str
    ns: str = ""
    checkpoint_id: str
    parent: str = ""
    checkpoint_type: str
    checkpoint: str
    metadata_type: str
    metadata: str
    run_id: str = ""
    step: int | None = None
    source: str = ""


class BlobRow(Model):
    """One version of one channel's value in one thread namespace (``value_type`` "empty": no value)."""

    thread: str
    ns: str = ""
    channel: str
    version: str
    value_type: str
    value: str = ""


class WriteRow(Model):
    """One pending write of a task against a checkpoint."""

    thread: str
    ns: str = ""
    checkpoint_id: str
    task_id: str
    task_path: str = ""
    idx: int
    channel: str
    value_type: str
    value: str


class HeadRow(Model):
    """The last checkpoint written to a thread namespace; its version fences concurrent writers."""

    thread: str
    ns: str = ""
    checkpoint_id: str
