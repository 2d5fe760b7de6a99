"""Memory per entity: an rxstate entity with everything it keeps, against a raw hash of the same fields.

``MEMORY USAGE key SAMPLES 0`` (exact) of every key of a fresh namespace holding N entities of 10
small fields, divided by N: the entity hash (with ``_v``, ``_sv``, ``_ts``, ``_by``, ``_o``), its share
of the ids set, of the index on ``status`` and of the change stream (one record per entity). The
baseline is N raw hashes of the same 10 JSON-text fields.
"""

from __future__ import annotations

import math
from collections import Counter

from benchmarks.entities import Agent
from benchmarks.harness import Context, Result, ratio_at_most

__all__ = ["per_entity"]

_PARTS = (("_ids:", "ids set"), ("_idx:", "index"), (":changes", "change records"), (":agents:", "hash"))


def _usage(ctx: Context, pattern: str) -> Counter[str]:
    """Bytes of the keys matching ``pattern``, by part (see ``_PARTS``; the rest is ``other``)."""
    client = ctx.client()
    out: Counter[str] = Counter()
    keys = list(client.scan_iter(match=pattern, count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    for key, size in zip(keys, pipe.execute(), strict=True):
        name = key.decode()
        part = next((label for marker, label in _PARTS if marker in name), "other")
        out[part] += int(size or 0)
    return out


def per_entity(ctx: Context) -> list[Result]:
    """Bytes per entity: rxstate (all parts) vs a raw hash; the note splits rxstate's bytes by part."""
    n = ctx.options.scaled(5000, 500)
    store = ctx.store("memory")
    agents = store.collection("agents", Agent, indexes=["status"])
    value = Agent()
    for start in range(0, n, 1000):
        agents.put_many((f"a{i}", value) for i in range(start, min(n, start + 1000)))
    prefix = f"raw:{ctx.namespace('mem')}"
    raw = ctx.client()
    fields = dict(agents._codec.encode(value))
    pipe = raw.pipeline(transaction=False)
    for i in range(n):
        pipe.hset(f"{prefix}:a{i}", mapping=fields)
    pipe.execute()
    ours = _usage(ctx, f"rx:{{{store.keyspace.namespace}*")
    theirs = sum(_usage(ctx, f"{prefix}:*").values()) / n
    total = sum(ours.values()) / n
    parts = ", ".join(f"{label} {ours[label] / n:.0f}" for _m, label in _PARTS[::-1] if ours[label])
    if ours["other"] >= n / 2:  # namespace metadata, shared by all: shown once it rounds to a byte each
        parts += f", other {ours['other'] / n:.0f}"
    group = f"memory per entity (10 small fields, {n:,} entities)"
    base_name = "raw hash (MEMORY USAGE)"
    return [
        Result(group, base_name, "B", theirs, math.nan, 1.0, base_name),
        Result(
            group,
            "rxstate entity incl. ids set, index, change record",
            "B",
            total,
            math.nan,
            total / theirs,
            base_name,
            ratio_at_most(1.6, "raw hash"),
            f"B per entity: {parts}",
        ),
    ]
