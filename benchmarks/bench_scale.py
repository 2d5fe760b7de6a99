"""Scale-out: a mixed workload against 1-, 2- and 3-master clusters from 1, 2 and 4 client processes, and a
failover under durable writes.

Mixed workload: each client process opens its own store (with its cache) on the cluster and runs, for a
fixed time, 80% cached reads (``get``) and 20% updates (``incr``) over 200 entities. The table gives the
total operations per second of every (masters, clients) cell and its ratio to 1 master with 1 client in the
same run: the scaling ratio. All processes and servers share the machine, so on a 2-core box the ratio
says what the clients and servers together get out of it, not what a cluster of real machines would.

Failover: on a cluster of 3 masters with one replica each, two writer threads put entities of master 0's
slots with ``durability="replicated"`` while master 0 is killed. Its replica is promoted; having no replica
itself, it cannot confirm a durable write until the old master is back as its replica (restarted at once
here). The rows give the time without writes (from the kill to the first acknowledged write sent after
it) and how many acknowledged writes are missing afterwards (must be 0).

    python -m benchmarks.bench_scale [--seconds 2] [--quick]
    python -m benchmarks --only scale    # (a run of every bench leaves this one out)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import time
from typing import Any

import redis
from redis.exceptions import RedisClusterException

import rxstate
from benchmarks.harness import Context, Result
from rxstate.testing.replicated import replicated_cluster
from rxstate.testing.servers import LocalCluster

__all__ = ["failover", "mixed", "rows"]

ENTITIES = 200
MASTERS = (1, 2, 3)
CLIENTS = (1, 2, 4)


class Item(rxstate.Model):
    name: str
    n: int = 0


def _client(nodes: list[tuple[str, int]], namespace: str, seconds: float, start: Any, ready: Any, out: Any) -> None:
    """One client process: warm the cache, wait for the start signal, run the mix, report the count."""
    from redis.cluster import ClusterNode, RedisCluster

    client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes])
    store = rxstate.connect(client, namespace=namespace, reap_interval=None)
    items = store.collection("items", Item)
    ids = [f"i{k}" for k in range(ENTITIES)]
    for entity_id in ids:
        items.get(entity_id)
    ready.put(1)
    start.wait()
    done, k = 0, 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(10):
            entity_id = ids[k % ENTITIES]
            if k % 5 == 0:
                items.incr(entity_id, "n", 1)
            else:
                items.get(entity_id)
            k += 7  # steps through every id (7 is prime to 200), reads and updates spread over all of them
        done += 10
    out.put(done)
    store.close()


def mixed(masters: int, clients_list: tuple[int, ...], seconds: float) -> dict[int, float]:
    """Operations per second of the 80/20 mix on a fresh ``masters``-master cluster, per client count."""
    ctx = multiprocessing.get_context("fork")  # quick to start; the parent holds no store (no threads) by then
    rates: dict[int, float] = {}
    with LocalCluster(masters=masters) as cluster:
        namespace = f"scale{masters}"
        setup = rxstate.connect(cluster.client(), namespace=namespace, reap_interval=None, cache=False)
        items = setup.collection("items", Item)
        items.put_many({f"i{k}": Item(name=f"i{k}") for k in range(ENTITIES)})
        setup.close()
        for clients in clients_list:
            start, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
            procs = [
                ctx.Process(target=_client, args=(cluster.startup_nodes, namespace, seconds, start, ready, out))
                for _ in range(clients)
            ]
            for p in procs:
                p.start()
            for _ in procs:  # every client's cache is warm: they start together
                ready.get(timeout=120)
            start.set()
            total = sum(out.get(timeout=120) for _ in procs)
            for p in procs:
                p.join(timeout=30)
            rates[clients] = total / seconds
    return rates


def failover(seconds_after: float = 2.0) -> tuple[float, int, int]:
    """(ms from the kill to the first acknowledged write sent after it, acknowledged writes, lost ones)."""
    with replicated_cluster() as cluster:
        store = rxstate.connect(cluster.client(), namespace="fo", durability="replicated", durability_timeout=0.5)
        items = store.collection("items", Item)
        victim = f"127.0.0.1:{cluster.nodes[0].port}"
        on_victim = [
            i for i in (f"w{k}" for k in range(2000)) if store.client.get_node_from_key(items.key(i)).name == victim
        ]
        acked: dict[str, int] = {}
        times: list[tuple[float, float]] = []  # (sent, acknowledged) of each acknowledged write
        stop = threading.Event()
        lock = threading.Lock()

        def write(worker: int) -> None:
            n = 0
            while not stop.is_set():
                entity_id = on_victim[(2 * n + worker) % len(on_victim)]  # only the killed master's slots
                started = time.monotonic()
                try:
                    version = items.put(entity_id, Item(name=entity_id, n=n)).version
                except (rxstate.RxStateError, redis.RedisError, RedisClusterException, OSError):
                    continue  # not acknowledged
                finally:
                    n += 1
                with lock:
                    acked[entity_id] = max(acked.get(entity_id, 0), version)
                    times.append((started, time.monotonic()))

        writers = [threading.Thread(target=write, args=(w,)) for w in range(2)]
        for t in writers:
            t.start()
        time.sleep(1.0)
        killed = time.monotonic()
        cluster.kill_node(0)
        # the promoted replica has no replica of its own: durable writes to its slots wait for the old
        # master to come back as its replica
        _until(lambda: _role(cluster, 3) == "master")
        cluster.nodes[0].restart()
        while not (times and times[-1][0] > killed) and time.monotonic() < killed + 60:
            time.sleep(0.01)  # until a write sent after the kill is acknowledged (by the promoted replica)
        time.sleep(seconds_after)
        stop.set()
        for t in writers:
            t.join()
        after = [acked_at for sent, acked_at in times if sent > killed]
        outage = (min(after) - killed) if after else float("nan")
        have = {v.id: v.version for v in items.get_many_versioned(list(acked), consistent=True)}
        lost = sum(1 for entity_id, version in acked.items() if have.get(entity_id, 0) < version)
        store.close()
        return outage * 1000, len(times), lost


def _role(cluster: LocalCluster, i: int) -> str:
    try:
        with cluster.nodes[i].client(decode_responses=True) as conn:
            return str(conn.info("replication")["role"])
    except redis.RedisError:
        return "unknown"


def _until(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def rows(ctx: Context) -> list[Result]:
    """The harness rows, only when asked for by name (``python -m benchmarks --only scale``): the bench
    builds four clusters and runs for minutes, so a run of every bench leaves it out."""
    if "scale" not in ctx.options.only:
        return []
    return _rows(seconds=0.8 if ctx.options.quick else 2.0)


def _rows(seconds: float) -> list[Result]:
    group = "scale: 80% cached reads / 20% updates, ops/s"
    grid = {m: mixed(m, CLIENTS, seconds) for m in MASTERS}
    base = grid[1][1]
    out = [
        Result(
            group,
            f"{m} master{'s' if m > 1 else ''}, {c} client{'s' if c > 1 else ''}",
            "ops/s",
            rate,
            rate,
            rate / base,
            "1 master, 1 client",
        )
        for m in MASTERS
        for c, rate in grid[m].items()
    ]
    gap_ms, writes, lost = failover()
    fo = "scale: failover of a master, durability=replicated"
    out.append(
        Result(
            fo,
            "time without writes: kill to first acknowledged write",
            "ms",
            gap_ms,
            gap_ms,
            note=f"{writes} acknowledged writes",
        )
    )
    out.append(Result(fo, "acknowledged writes lost", "writes", float(lost), float(lost), note="must be 0"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_scale", description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds each cell runs")
    parser.add_argument("--quick", action="store_true", help="0.8 s per cell")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    results = _rows(0.8 if args.quick else args.seconds)
    load = max(load, os.getloadavg()[0])
    print(f"{'':40} " + " ".join(f"{c:>2} client{'s' if c > 1 else ' '}" for c in CLIENTS) + "   (ops/s; ratio to 1x1)")
    for m in MASTERS:
        cells = [r for r in results if r.name.startswith(f"{m} master")]
        print(
            f"{m} master{'s' if m > 1 else ' '}{'':31} " + " ".join(f"{r.median:>7.0f} {r.ratio:4.2f}x" for r in cells)
        )
    for r in results[-2:]:
        print(f"{r.name}: {r.median:.0f} {r.unit} ({r.note})")
    print(f"load average up to {load:.1f} on {os.cpu_count()} cores (clients and servers share them)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
