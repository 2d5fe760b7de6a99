"""LangGraph checkpointers on the same graph run: rxstate's ``RxCheckpointSaver`` against LangGraph's
``InMemorySaver`` (the baseline: no I/O at all) and its SQLite saver (``langgraph-checkpoint-sqlite``,
a local file: no network either).

Rows, each contender timed call by call in turn with the baseline:

- a whole run of the crew graph (``rxstate.integrations.langgraph.crew``): input, interrupt, resume, publish
  (8 checkpoints and their pending writes);
- ``put`` of a real checkpoint of that run (a new id each call), ``get_tuple`` of a thread's latest
  checkpoint (with its channel values and pending writes), ``list`` of a thread's last 10 checkpoints;
- ``put`` throughput (checkpoints per second on one connection);
- bytes per step: LangGraph's serialized payload of a step, and what each saver keeps for it (rxstate:
  Redis ``MEMORY USAGE`` of the namespace's keys, change stream included; SQLite: the file).

Run it alone with ``python -m benchmarks --only langgraph --transport tcp`` (it is registered only when
LangGraph is installed).
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Contender, Context, Result, latency_group, rate_result

__all__ = ["checkpointers"]


def _savers(ctx: Context) -> dict[str, Any]:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    from rxstate.integrations.langgraph import RxCheckpointSaver

    path = os.path.join(ctx.tmp, f"lg-{uuid.uuid4().hex[:6]}.sqlite")
    connection = sqlite3.connect(path, check_same_thread=False)
    ctx._closers.append(connection.close)
    sqlite = SqliteSaver(connection)
    sqlite.setup()
    return {
        "InMemorySaver": InMemorySaver(),
        "SqliteSaver": sqlite,
        "RxCheckpointSaver": RxCheckpointSaver(ctx.store("langgraph")),
        "_sqlite_path": path,
    }


def _crew_run(saver: Any) -> Callable[[int], object]:
    from langgraph.types import Command

    from rxstate.integrations.langgraph.crew import build_crew, start

    graph = build_crew(saver)
    prefix = uuid.uuid4().hex[:6]

    def run(i: int) -> object:
        config = {"configurable": {"thread_id": f"{prefix}-{i}"}}
        graph.invoke(start("the launch plan"), config)
        return graph.invoke(Command(resume="approve"), config)

    return run


def _ops(saver: Any, sample: Any) -> dict[str, Callable[[int], object]]:
    """put / get_tuple / list calls of one saver on a thread of its own, seeded with 10 checkpoints."""
    thread = f"bench-{uuid.uuid4().hex[:6]}"
    head: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    versions = sample.checkpoint["channel_versions"]

    def put(i: int) -> object:
        nonlocal head
        checkpoint = {**sample.checkpoint, "id": str(uuid.uuid1())}  # time-ordered, like LangGraph's ids
        head = saver.put(head, checkpoint, sample.metadata, versions)
        return head

    for i in range(10):
        put(i)
    latest = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    return {
        "put": put,
        "get_tuple": lambda i: saver.get_tuple(latest),
        "list": lambda i: list(saver.list(latest, limit=10)),
    }


def _stored_bytes(ctx: Context, namespace: str) -> int:
    client = ctx.client()
    total = 0
    for key in client.scan_iter(match=f"rx:{{{namespace}:*", count=1000):
        total += int(client.memory_usage(key, samples=0) or 0)
    return total


def checkpointers(ctx: Context) -> list[Result]:
    """The rows of this module's docstring."""
    savers = _savers(ctx)
    savers.pop("_sqlite_path")
    names = list(savers)
    runs = ctx.options.scaled(100, 10)
    rows = latency_group(
        "LangGraph crew run (8 checkpoints)",
        [Contender(f"{n} run", _crew_run(savers[n])) for n in names],
        runs,
        warmup=3,
        unit="µs",
    )
    sample = savers["InMemorySaver"].get_tuple({"configurable": {"thread_id": _any_thread(savers["InMemorySaver"])}})
    ops = {n: _ops(savers[n], sample) for n in names}
    for op in ("put", "get_tuple", "list"):
        rows += latency_group(f"LangGraph {op}", [Contender(f"{n} {op}", ops[n][op]) for n in names], ctx.n, warmup=50)
    puts = [r for r in rows if r.group == "LangGraph put"]
    base_rate = 1e6 / puts[0].median
    for r in puts:
        rows.append(
            rate_result(
                "LangGraph put throughput",
                r.name,
                [r.median / 1e6],
                1,
                base_rate,
                unit="checkpoints/s",
                baseline=puts[0].name,
            )
        )
    rows += _bytes_rows(ctx)
    return rows


def _any_thread(saver: Any) -> str:
    return str(next(iter(saver.storage)))


def _bytes_rows(ctx: Context) -> list[Result]:
    """Bytes per checkpoint of one fresh crew run on fresh savers (the payload, then what each keeps)."""
    from langgraph.checkpoint.memory import InMemorySaver

    fresh = _savers(ctx)
    os_path = fresh.pop("_sqlite_path")
    memory: InMemorySaver = fresh["InMemorySaver"]
    for saver in fresh.values():
        _crew_run(saver)(0)
    steps = sum(len(ns) for thread in memory.storage.values() for ns in thread.values())
    payload = sum(
        len(c[0][1]) + len(c[1][1]) for t in memory.storage.values() for ns in t.values() for c in ns.values()
    )
    payload += sum(len(v[1]) for v in memory.blobs.values()) + sum(
        len(w[2][1]) for writes in memory.writes.values() for w in writes.values()
    )
    base = payload / steps
    rx = fresh["RxCheckpointSaver"]
    rx_bytes = _stored_bytes(ctx, rx.store.namespace) / steps
    fresh["SqliteSaver"].conn.commit()
    sqlite_bytes = sum(os.path.getsize(p) for p in (os_path, os_path + "-wal") if os.path.exists(p)) / steps
    unit = "B/checkpoint"
    return [
        Result("LangGraph bytes per step", "serialized payload (InMemorySaver)", unit, base, base, 1.0, "payload"),
        Result(
            "LangGraph bytes per step",
            "RxCheckpointSaver in Redis",
            unit,
            rx_bytes,
            rx_bytes,
            rx_bytes / base,
            "payload",
            note="MEMORY USAGE, change stream and indexes included",
        ),
        Result(
            "LangGraph bytes per step",
            "SqliteSaver file",
            unit,
            sqlite_bytes,
            sqlite_bytes,
            sqlite_bytes / base,
            "payload",
            note="database file and its WAL",
        ),
    ]
