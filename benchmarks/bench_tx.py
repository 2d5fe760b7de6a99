"""Transaction throughput and latency: rxstate vs raw redis-py MULTI/EXEC of the same writes.

Each transaction reads one entity and writes three (the read one included): in one partition, or spread
over three partitions. rxstate verifies the read version and writes values, versions, an index and a change
record per entity in one script call (or, across partitions of a cluster, with the two-phase protocol).
The baseline does the same read (``HGETALL``) and the same value writes and version bumps with redis-py in
one ``MULTI``/``EXEC``, in the same run against the same server. A cluster cannot ``MULTI`` across slots, so
there the cross-partition baseline is one non-atomic pipeline: the cheapest the raw client can do at all.

Runs against an embedded standalone server and a local 3-master cluster; prints median and p99 latency,
throughput of one client thread and of several threads (each on its own entities, so without conflicts),
and the ratio of each rxstate figure to its baseline.

    python -m benchmarks.bench_tx [--n 2000] [--threads 4] [--skip-cluster]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import rxstate
from benchmarks.timing import median_p99, per_call_us
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
    start = time.perf_counter()
    samples = per_call_us(fn, n, warmup=0)
    return samples, n / (time.perf_counter() - start)


def pick_ids(store: rxstate.Store, spread: bool, prefix: str = "x", count: int = 3) -> list[str]:
    """``count`` ids in one partition (``spread=False``) or in ``count`` different partitions."""
    ks = store.keyspace
    out: list[str] = []
    first = ks.partition_of(f"{prefix}0")
    i = 0
    while len(out) < count:
        candidate = f"{prefix}{i}"
        p = ks.partition_of(candidate)
        if (not spread and p == first) or (spread and all(ks.partition_of(o) != p for o in out)):
            out.append(candidate)
        i += 1
    return out


Workload = Callable[[int], None]


def workloads(
    store: rxstate.Store, raw: Any, agents: Any, spread: bool, prefix: str, cluster: bool
) -> tuple[Workload, Workload, Workload]:
    """rxstate's transaction (auto protocol), the same forced two-phase, and the raw baseline, on fresh ids."""
    ids = pick_ids(store, spread, prefix)
    for i in ids:
        agents.put(i, Agent(name=i))
    keys = [agents.key(i).replace("agents:", "raw:") for i in ids]
    for k in keys:
        raw.hset(k, mapping={"name": '"x"', "status": '"idle"', "load": "0", "_v": "1"})
    atomic = not (cluster and spread)

    def rx_tx(i: int, two_phase: bool | None = None) -> None:
        status = "busy" if i % 2 else "idle"
        with store.transaction(two_phase=two_phase) as tx:
            load = tx.get(agents, ids[0]).load
            tx.update(agents, ids[0], load=load + 1, status=status)
            tx.update(agents, ids[1], status=status)
            tx.incr(agents, ids[2], "load", 1)

    def raw_tx(i: int) -> None:
        status = '"busy"' if i % 2 else '"idle"'
        load = int(raw.hgetall(keys[0])[b"load"])
        pipe = raw.pipeline(transaction=atomic)
        pipe.hset(keys[0], mapping={"load": str(load + 1), "status": status})
        pipe.hincrby(keys[0], "_v", 1)
        pipe.hset(keys[1], "status", status)
        pipe.hincrby(keys[1], "_v", 1)
        pipe.hincrby(keys[2], "load", 1)
        pipe.hincrby(keys[2], "_v", 1)
        pipe.execute()

    return rx_tx, (lambda i: rx_tx(i, two_phase=True)), raw_tx


def threaded_rate(fns: list[Workload], per_thread: int) -> float:
    """Transactions per second of ``len(fns)`` threads, each running its own workload ``per_thread`` times."""

    def loop(fn: Workload) -> None:
        for i in range(per_thread):
            fn(i)

    threads = [threading.Thread(target=loop, args=(fn,)) for fn in fns]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(fns) * per_thread / (time.perf_counter() - start)


def run_backend(label: str, client_factory: Callable[[], Any], n: int, threads: int, cluster: bool) -> None:
    store = rxstate.connect(client_factory(), namespace=f"bench{uuid.uuid4().hex[:6]}", reap_interval=None)
    raw = client_factory()
    agents = store.collection("agents", Agent, indexes=["status"])
    rows: list[tuple[str, str, list[float], float, float]] = []
    for spread in (False, True):
        shape = "3 partitions" if spread else "1 partition"
        base_name = "raw pipeline (not atomic)" if cluster and spread else "raw MULTI/EXEC"
        rx_tx, rx_2pc, raw_tx = workloads(store, raw, agents, spread, "x", cluster)
        sets = [workloads(store, raw, agents, spread, f"t{t}_", cluster) for t in range(threads)]
        candidates = [(f"{base_name}, {shape}", raw_tx, 2), (f"transaction, {shape}", rx_tx, 0)]
        if spread and not cluster:
            candidates.append((f"transaction, {shape}, two-phase", rx_2pc, 1))
        for name, fn, which in candidates:
            samples, rate = measure(fn, n)
            many = threaded_rate([s[which] for s in sets], max(1, n // threads))
            rows.append((name, shape, samples, rate, many))
    store.close()
    raw.close()
    print(f"\n== {label} ==")
    print(f"{'operation':44} {'median µs':>10} {'p99 µs':>9} {'tx/s (1 thread)':>16} {f'tx/s ({threads} threads)':>17}")
    for name, _shape, samples, rate, many in rows:
        med, p99 = median_p99(samples)
        print(f"{name:44} {med:10.1f} {p99:9.1f} {rate:16.0f} {many:17.0f}")
    print("ratios, rxstate / raw (latency median; throughput 1 thread; throughput threaded):")
    for name, shape, samples, rate, many in rows:
        if not name.startswith("transaction"):
            continue
        base = next(r for r in rows if r[1] == shape and not r[0].startswith("transaction"))
        med = statistics.median(samples) / statistics.median(base[2])
        print(f"  {name:42} / {base[0]:36} {med:5.2f}x  {rate / base[3]:5.2f}x  {many / base[4]:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--skip-cluster", action="store_true")
    args = parser.parse_args()
    with EmbeddedServer() as server:
        run_backend(f"standalone ({server.url})", server.client, args.n, args.threads, cluster=False)
    if not args.skip_cluster:
        with LocalCluster(masters=3) as cluster:
            run_backend("local cluster, 3 masters", cluster.client, args.n, args.threads, cluster=True)


if __name__ == "__main__":
    main()
