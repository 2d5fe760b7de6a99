"""What a write costs as a namespace grows partitions, or a collection grows indexes and constraints.

For each count the same write is timed (all counts in turn, call by call); the row gives the slope of a
least-squares line through the medians (and through the p99s), in µs per partition / index /
constraint, and the ratio of that slope to the write's median at the smallest count.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import rxstate
from benchmarks.bench_locks import Member, Team
from benchmarks.entities import Agent
from benchmarks.harness import Context, Result
from benchmarks.timing import interleaved_us, median_p99

__all__ = ["slopes"]

WIDE_FIELDS = [f"f{k}" for k in range(8)]


class Wide(rxstate.Model):
    f0: str = ""
    f1: str = ""
    f2: str = ""
    f3: str = ""
    f4: str = ""
    f5: str = ""
    f6: str = ""
    f7: str = ""
    n: int = 0
    tag: str = ""


def _slope(
    group: str, name: str, unit: str, counts: Sequence[int], fns: Sequence[Callable[[int], object]], n: int
) -> Result:
    times = interleaved_us({str(c): fn for c, fn in zip(counts, fns, strict=True)}, n)
    medians, p99s = zip(*(median_p99(times[str(c)]) for c in counts), strict=True)
    slope = statistics.linear_regression(counts, medians).slope
    slope99 = statistics.linear_regression(counts, p99s).slope
    points = ", ".join(f"{c}: {m:.0f}" for c, m in zip(counts, medians, strict=True))
    first = f"the write at {counts[0]}"
    return Result(group, name, unit, slope, slope99, slope / medians[0], first, None, f"median µs at {points}")


def slopes(ctx: Context) -> list[Result]:
    """Four slopes: update and a unique-checked put vs partitions, put vs indexes, put vs constraints."""
    n = max(20, ctx.n // 2)
    group = "write cost vs schema size (slopes)"
    pool = ctx.options.scaled(256, 32)
    ids = [f"a{i}" for i in range(pool)]

    partitions = [1, 4, 16, 64]
    updates = []
    for p in partitions:
        coll = ctx.store(f"parts{p}", partitions=p).collection("agents", Agent)
        coll.put_many({i: Agent() for i in ids})
        updates.append(lambda i, c=coll: c.update(ids[i % pool], load=i))
    rows = [_slope(group, "update 1 field vs partitions", "µs/partition", partitions, updates, n)]

    # On a standalone server a unique check searches the field's index in every partition.
    uniques = []
    for p in partitions:
        unique = [rxstate.unique("email")]
        coll = ctx.store(f"uparts{p}", partitions=p).collection("members", Member, constraints=unique)
        uniques.append(lambda i, c=coll: c.put(f"m{i % pool}", Member(email=f"{i % pool}@x", team_id="t1", load=1)))
    rows.append(_slope(group, "put with a unique field vs partitions", "µs/partition", partitions, uniques, n))

    indexes = [0, 1, 2, 4, 8]
    store = ctx.store("indexes")
    puts = []
    for k in indexes:
        coll = store.collection(f"wide{k}", Wide, indexes=WIDE_FIELDS[:k])
        puts.append(lambda i, c=coll: c.put(ids[i % pool], Wide(**dict.fromkeys(WIDE_FIELDS, str(i % 5)))))
    rows.append(_slope(group, "put vs indexes (each value changes)", "µs/index", indexes, puts, n))

    store = ctx.store("constraints")
    store.collection("teams", Team).put("t1", Team())
    declared = [
        rxstate.unique("email"),
        rxstate.bounds("load", 0, "max_load"),
        rxstate.one_of("status", {"idle", "busy"}),
        rxstate.references("team_id", "teams"),
    ]
    counts = list(range(len(declared) + 1))
    checked = []
    for k in counts:
        coll = store.collection(f"members{k}", Member, constraints=declared[:k])
        checked.append(lambda i, c=coll: c.put(f"m{i}", Member(email=f"{i}@x", team_id="t1", load=1)))
    rows.append(_slope(group, "put of a new entity vs constraints", "µs/constraint", counts, checked, n))
    return rows
