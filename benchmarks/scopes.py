"""Scope rows: reading a key through a four-scope chain and setting one, against raw redis-py.

The baseline reads the four scope hashes raw (one pipelined round trip of ``HMGET``), which is the
least a consistent resolution of a four-deep chain must fetch; ``scope.get`` does it in one script call
and merges in Python. Writes compare a raw ``HSET`` of the record with ``scope.set`` (a compare-and-set
of the record plus version checks of its three ancestors, change record included).
"""

from __future__ import annotations

from benchmarks.harness import Contender, Context, Result, latency_group

__all__ = ["get_set"]

CHAIN = "org/acme/team-a/agent-7"


def get_set(ctx: Context) -> list[Result]:
    """One ``scope.get`` (and one ``scope.set``) per call, four scopes deep."""
    store = ctx.store("scopes")
    raw = ctx.client()
    parts = CHAIN.split("/")
    paths = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for depth, path in enumerate(paths):
        store.scope(path).set_many({"model": f"m{depth}", f"k{depth}": depth})
    records = store.scope(CHAIN)._tree.records
    keys = [records.key(p, partition="org") for p in paths]
    leaf = store.scope(CHAIN)

    def raw_chain(_i: int) -> None:
        pipe = raw.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "_v", "values", "rules")
        pipe.execute()

    reads = latency_group(
        "scope get (4 deep)",
        [
            Contender("raw pipelined HMGET x4", raw_chain),
            Contender("rxstate scope.get", lambda _i: leaf.get("k1"), note="one script call, merged client-side"),
        ],
        ctx.n,
    )
    raw_key = f"raw:{ctx.namespace('scope')}"

    writes = latency_group(
        "scope set (4 deep)",
        [
            Contender("raw HSET", lambda i: raw.hset(raw_key, "values", f'{{"n": {{"v": {i}}}}}')),
            Contender("rxstate scope.set", lambda i: leaf.set("n", i), note="chain read + CAS write with checks"),
        ],
        ctx.n,
    )
    return reads + writes
