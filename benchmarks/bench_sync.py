"""Sync rows: what replication costs, against a plain rxstate write measured in the same run.

- a write to a replicated LWW map (HLC tick, dot, CRDT merge, log entry, in one script) and a
  replicated counter increment vs a plain ``Collection.update`` of the same field;
- merge cost per delta on the server (``INFO commandstats`` µs per EVALSHA), applying a peer's deltas
  one call each, vs the server time of a plain update;
- delta size per change (bytes of a log entry's fields), by CRDT type;
- convergence time after a partition heals, by number of replicas (each its own embedded server),
  vs two replicas.

    python -m benchmarks --only sync --quick
    python -m benchmarks.bench_sync [--n 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from typing import Any

import rxstate
from benchmarks.harness import Contender, Context, Options, Result, latency_group, server
from rxstate.server import EmbeddedServer
from rxstate.sync import Gossip, Replica, SyncAgent, crdt

__all__ = ["rows"]


class Doc(rxstate.Model):
    title: str = crdt.lww(default="")
    views: int = crdt.counter()
    tags: list[str] = crdt.orset()
    owner: str | None = crdt.mvreg()


class Plain(rxstate.Model):
    title: str = ""
    views: int = 0


def _server_us(client: Any, calls: int, run: Any) -> float:
    """Server µs per EVALSHA over ``calls`` calls of ``run(i)``."""
    client.config_resetstat()
    for i in range(calls):
        run(i)
    stats = client.info("commandstats")["cmdstat_evalsha"]
    return float(stats["usec"]) / int(stats["calls"])


def writes(ctx: Context) -> list[Result]:
    store = ctx.store("sync", cache=False)
    plain = store.collection("plain", Plain)
    plain.put("p", Plain())
    docs = Replica(store, "bench").collection("docs", Doc)
    docs.update("d", title="x")
    contenders = [
        Contender("rxstate update (plain)", lambda i: plain.update("p", title=f"t{i}")),
        Contender("replicated LWW-map write", lambda i: docs.update("d", title=f"t{i}"), note="HLC + dot + log"),
        Contender("replicated counter incr", lambda i: docs.incr("d", "views", 1)),
    ]
    return latency_group("sync write", contenders, ctx.n)


def merges(ctx: Context) -> list[Result]:
    calls = ctx.options.scaled(2000, 200)
    source_store = ctx.store("sync-src", cache=False)
    source = Replica(source_store, "src")
    docs = source.collection("docs", Doc)
    for i in range(calls):
        docs.incr(f"d{i % 50}", "views", 1)
    entries = [e for p in range(source.partitions) for e in source_store.client.xrange(source.key(p, "log"))]
    sizes: dict[str, list[int]] = {}
    probe = source.collection("probe", Doc)
    for kind, write in (
        ("lww", lambda: probe.update("s", title="a title")),
        ("counter", lambda: probe.incr("s", "views", 3)),
        ("orset", lambda: probe.add("s", "tags", "a-tag")),
        ("mvreg", lambda: probe.update("s", owner="ann")),
    ):
        for _ in range(5):
            (p,) = write()
            last = source_store.client.xrevrange(source.key(p, "log"), count=1)[0][1]
            sizes.setdefault(kind, []).append(sum(len(k) + len(v) for k, v in last.items()))
    with EmbeddedServer() as other:  # the peer: its own server, as in a deployment
        target_store = rxstate.connect(other.url, namespace=source_store.keyspace.namespace, cache=False)
        try:
            agent = SyncAgent(Replica(target_store, "dst"), source)
            client = target_store.client
            plain = target_store.collection("plain", Plain)
            plain.put("p", Plain())
            base = _server_us(client, calls, lambda i: plain.update("p", title=f"t{i}"))
            merge = _server_us(client, len(entries), lambda i: agent.merge_deltas([entries[i]]))
        finally:
            target_store.close()
    group = "sync merge (server µs per call)"
    out = [
        Result(group, "plain update script", "µs", base, base, 1.0, "plain update script"),
        Result(
            group, "apply one delta", "µs", merge, merge, merge / base, "plain update script", note="join + write path"
        ),
    ]
    lww_size = statistics.median(sizes["lww"])
    for kind, values in sizes.items():
        size = statistics.median(values)
        out.append(Result("sync delta size per change", kind, "bytes", size, max(values), size / lww_size, "lww"))
    return out


def convergence(options: Options) -> list[Result]:
    sizes = (2, 3) if options.quick else (2, 3, 5)
    writes_each = options.scaled(50, 10)
    servers = [EmbeddedServer().start() for _ in range(max(sizes))]
    out: list[Result] = []
    try:
        base = None
        for n in sizes:
            ns = f"conv{uuid.uuid4().hex[:6]}"
            stores = [rxstate.connect(s.url, namespace=ns, cache=False) for s in servers[:n]]
            try:
                replicas = [Replica(st, f"r{i}") for i, st in enumerate(stores)]
                gossip = Gossip(replicas, seed=n)
                ids = [r.replica_id for r in replicas]
                for a in ids:
                    for b in ids:
                        if a < b:
                            gossip.pause(a, b)
                for r in replicas:
                    docs = r.collection("docs", Doc)
                    for i in range(writes_each):
                        docs.incr(f"d{i % 10}", "views", 1)
                gossip.heal()
                start = time.perf_counter()
                rounds = gossip.run_until_converged(max_rounds=100)
                ms = (time.perf_counter() - start) * 1000
                base = base or ms
                out.append(
                    Result(
                        "sync convergence after a heal",
                        f"{n} replicas",
                        "ms",
                        ms,
                        ms,
                        ms / base,
                        "2 replicas",
                        note=f"{rounds} rounds, {writes_each} writes each",
                    )
                )
            finally:
                for st in stores:
                    st.close()
    finally:
        for s in servers:
            s.stop()
    return out


def rows(ctx: Context) -> list[Result]:
    """Every sync row (convergence once, on its own servers, on the first transport only)."""
    out = writes(ctx) + merges(ctx)
    if ctx.transport == ctx.options.transports[0]:
        out += convergence(ctx.options)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    options = Options(n=args.n, peers=False, transports=("tcp",))
    with server() as (_, transports):
        url, factory = transports["tcp"]
        ctx = Context("tcp", url, options, "/tmp", factory)
        try:
            for r in rows(ctx):
                print(f"{r.group:36} {r.name:28} {r.median:10.1f} {r.unit:6} x{r.ratio:5.2f} {r.note}")
        finally:
            ctx.close()


if __name__ == "__main__":
    main()
