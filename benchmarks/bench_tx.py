"""Transaction throughput and latency: rxstate vs raw redis-py MULTI/EXEC of the same writes.

Each transaction reads one entity and writes three (the read one included): in one partition, or spread
over three partitions. rxstate verifies the read version and writes values, versions, an index and a change
record per entity in one script call (or, across partitions of a cluster, with the two-phase protocol).
The baseline does the same read (``HGETALL``) and the same value writes and version bumps with redis-py in
one ``MULTI``/``EXEC``, in the same run against the same server. A cluster cannot ``MULTI`` across slots, so
there the cross-partition baseline is one non-atomic pipeline: the cheapest the raw client can do at all.

Runs against an embedded standalone server and a local 3-master cluster; prints median and p99 latency,
sequential throughput (one client), and the ratio of each rxstate figure to its baseline.

    python benchmarks/bench_tx.py [--n 2000] [--skip-cluster]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import rxstate
from rxstate.server import EmbeddedServer
from rxstate.testing.servers import LocalCluster


class Agent(rxstate.Model):
    name: str
    status: Literal["idle", "busy", "failed"] = "idle"
    load: int = 0
    team: str = "core"
    notes: str = ""


def measure(fn: Callable[[int], object], n: int, warmup: int = 200) -> tuple[list[float], float]:
    """Per-call latencies (µs) and throughput (calls/s) of ``fn`` over ``n`` sequential calls."""
    for i in range(warmup):
        fn(i)
    samples = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples, n / (time.perf_counter() - start)


def pick_ids(store: rxstate.Store, spread: bool, count: int = 3) -> list[str]:
    """``count`` ids in one partition (``spread=False``) or in ``count`` different partitions."""
    ks = store.keyspace
    out: list[str] = []
    first = ks.partition_of("x0")
    i = 0
    while len(out) < count:
        candidate = f"x{i}"
        p = ks.partition_of(candidate)
        if (not spread and p == first) or (spread and all(ks.partition_of(o) != p for o in out)):
            out.append(candidate)
        i += 1
    return out


def run_backend(label: str, client_factory: Callable[[], Any], n: int, cluster: bool) -> dict[str, Any]:
    store = rxstate.connect(client_factory(), namespace=f"bench{uuid.uuid4().hex[:6]}", reap_interval=None)
    raw = client_factory()
    agents = store.collection("agents", Agent, indexes=["status"])
    results: dict[str, Any] = {}
    for spread in (False, True):
        ids = pick_ids(store, spread)
        for i in ids:
            agents.put(i, Agent(name=i))
        raw_keys = [agents.key(i).replace("agents:", "raw:") for i in ids]
        for k in raw_keys:
            raw.hset(k, mapping={"name": '"x"', "status": '"idle"', "load": "0", "_v": "1"})
        shape = "3 partitions" if spread else "1 partition"

        def rx_tx(i: int, ids: list[str] = ids, two_phase: bool | None = None) -> None:
            with store.transaction(two_phase=two_phase) as tx:
                load = tx.get(agents, ids[0]).load
                tx.update(agents, ids[0], load=load + 1, status="busy" if i % 2 else "idle")
                tx.update(agents, ids[1], status="busy" if i % 2 else "idle")
                tx.incr(agents, ids[2], "load", 1)

        def raw_tx(i: int, keys: list[str] = raw_keys, atomic: bool = not (cluster and spread)) -> None:
            load = int(raw.hgetall(keys[0])[b"load"])
            pipe = raw.pipeline(transaction=atomic)
            status = '"busy"' if i % 2 else '"idle"'
            pipe.hset(keys[0], mapping={"load": str(load + 1), "status": status})
            pipe.hincrby(keys[0], "_v", 1)
            pipe.hset(keys[1], "status", status)
            pipe.hincrby(keys[1], "_v", 1)
            pipe.hincrby(keys[2], "load", 1)
            pipe.hincrby(keys[2], "_v", 1)
            pipe.execute()

        base = "raw pipeline (not atomic)" if cluster and spread else "raw MULTI/EXEC"
        results[f"{base}, {shape}"] = measure(raw_tx, n)
        results[f"transaction, {shape}"] = measure(rx_tx, n)
        if spread and not cluster:
            results[f"transaction, {shape}, two-phase"] = measure(lambda i: rx_tx(i, two_phase=True), n)
    store.close()
    raw.close()
    print(f"\n== {label} ==")
    print(f"{'operation':46} {'median µs':>10} {'p99 µs':>10} {'tx/s':>9}")
    for name, (samples, rate) in results.items():
        ordered = sorted(samples)
        print(f"{name:46} {statistics.median(ordered):10.1f} {ordered[int(len(ordered) * 0.99) - 1]:10.1f} {rate:9.0f}")
    print("ratios (rxstate / raw, latency medians and throughput):")
    for ours in [k for k in results if k.startswith("transaction")]:
        shape = "3 partitions" if "3 partitions" in ours else "1 partition"
        base = next(k for k in results if k.startswith("raw") and k.endswith(shape))
        med = statistics.median(results[ours][0]) / statistics.median(results[base][0])
        rate = results[ours][1] / results[base][1]
        print(f"  {ours:44} / {base:36} latency {med:5.2f}x  throughput {rate:5.2f}x")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--skip-cluster", action="store_true")
    args = parser.parse_args()
    with EmbeddedServer() as server:
        run_backend(f"standalone ({server.url})", server.client, args.n, cluster=False)
    if not args.skip_cluster:
        with LocalCluster(masters=3) as cluster:
            run_backend("local cluster, 3 masters", cluster.client, args.n, cluster=True)


if __name__ == "__main__":
    main()
