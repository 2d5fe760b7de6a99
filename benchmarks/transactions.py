"""Transaction rows: read one entity and write three, in one partition or across three, against one raw
``MULTI``/``EXEC`` of the same reads and writes. The workloads are those of ``bench_tx`` (the detailed
script, which also runs them threaded and on a local cluster).
"""

from __future__ import annotations

from benchmarks.bench_tx import Agent, workloads
from benchmarks.harness import Contender, Context, Result, latency_group

__all__ = ["read_write"]


def read_write(ctx: Context) -> list[Result]:
    """Latency per transaction (µs), each contender on its own entities."""
    store = ctx.store("tx")
    raw = ctx.client()
    agents = store.collection("agents", Agent, indexes=["status"])
    one, _two_phase_one, raw_one = workloads(store, raw, agents, False, "x", False)
    spread, two_phase, _raw_spread = workloads(store, raw, agents, True, "y", False)
    contenders = [
        Contender("raw HGETALL + MULTI/EXEC of 3 HSET + HINCRBY _v", raw_one),
        Contender("rxstate transaction, 1 partition", one, note="one script call"),
        Contender("rxstate transaction, 3 partitions", spread, note="one script call on one server"),
        Contender("rxstate transaction, 3 partitions, two-phase", two_phase, note="the protocol a cluster uses"),
    ]
    return latency_group("transaction: read 1, write 3", contenders, ctx.n)
