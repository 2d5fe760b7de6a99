"""Cost of ``store.changes(values=True)``: changes with the entity's whole value, beside plain changes.

One run on a real embedded server (loopback TCP). A store writes E entities and U updates of them;
another store then replays the retained changes (``since=``) until it has them all, with and without
``values=True``, alternating, and the medians per change are compared:

1. from the start: every entity's creation is replayed, so every update applies to a known value
   (one model validation per change, no reads);
2. from after the creations, with one update per entity: every value is read from the server (one
   pipelined ``HGETALL`` per batch for its entities), as when a feed meets entities it never saw made.

Run: ``python benchmarks/bench_change_values.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rxstate
from rxstate.server import EmbeddedServer


class Agent(rxstate.Model):
    name: str
    status: str = "idle"
    load: int = 0
    skills: list[str] = []
    notes: str = ""


def replay(server: EmbeddedServer, namespace: str, since: object, expected: int, values: bool) -> tuple[float, int]:
    """Seconds for a new store to receive ``expected`` changes replayed from ``since``, and how many of
    them carried a value."""
    store = rxstate.connect(server.client(), namespace=namespace, cache=False, reap_interval=None)
    try:
        store.collection("agents", Agent)
        done = threading.Event()
        count = [0, 0]

        def take(batch: tuple[rxstate.Change, ...]) -> None:
            count[0] += len(batch)
            count[1] += sum(c.value is not None for c in batch)
            if count[0] >= expected:
                done.set()

        t0 = time.perf_counter()
        sub = store.changes(since=since, values=values, batched=True, max_buffer=expected + 1).subscribe(take)
        if not done.wait(120):
            raise RuntimeError(f"only {count[0]} of {expected} changes arrived")
        elapsed = time.perf_counter() - t0
        sub.dispose()
        return elapsed, count[1]
    finally:
        store.close()


def prepare(server: EmbeddedServer, namespace: str, entities: int, updates: int) -> dict[int, str]:
    """Write ``entities`` creations, then ``updates`` updates and increments cycling over them; return the
    stream positions between the two."""
    store = rxstate.connect(server.client(), namespace=namespace, change_retention=10 * (entities + updates))
    agents = store.collection("agents", Agent)
    agents.put_many({f"a{i}": Agent(name=f"agent {i}", skills=["plan", "code"]) for i in range(entities)})
    ks = store.keyspace
    after_creates = {}
    for p in range(ks.partitions):
        last = store.client.xrevrange(ks.changes(p), count=1)
        after_creates[p] = last[0][0].decode() if last else "0"
    with store.batch() as batch:
        for n in range(updates):
            if n % 2:
                batch.update(agents, f"a{n % entities}", status="busy" if n % 4 == 1 else "idle", notes=f"n{n}")
            else:
                batch.incr(agents, f"a{n % entities}", "load", 1)
    store.close()
    return after_creates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer changes and rounds")
    args = parser.parse_args()
    entities, updates, rounds = (200, 2000, 3) if args.quick else (1000, 20_000, 5)
    with EmbeddedServer() as server:
        print(f"server: {server.binary} on {server.url}\n")
        server.client().flushall()
        prepare(server, "bench-known", entities, updates)
        after_creates = prepare(server, "bench-read", updates // 2, updates // 2)
        cases = [
            ("1. from the start (values known)", "bench-known", "0", entities + updates),
            ("2. from after the creations (values read)", "bench-read", after_creates, updates // 2),
        ]
        for label, namespace, since, expected in cases:
            plain, valued = [], []
            carried = 0
            for _ in range(rounds):
                plain.append(replay(server, namespace, since, expected, values=False)[0] / expected)
                elapsed, carried = replay(server, namespace, since, expected, values=True)
                valued.append(elapsed / expected)
            p, v = statistics.median(plain), statistics.median(valued)
            print(f"{label}: {expected} changes, {carried} with a value")
            print(f"  plain changes        {p * 1e6:8.2f} us per change")
            print(f"  values=True          {v * 1e6:8.2f} us per change   ratio {v / p:5.2f}x")


if __name__ == "__main__":
    main()
