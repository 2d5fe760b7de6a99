"""Queries on indexed fields beside the brute-force way (read every entity, filter in Python).

One run on a real embedded server (loopback TCP), N entities in 16 partitions, medians of R runs:

1. a page of a string range, ordered (``where(name=between(...)).order_by("name").limit(10)``);
2. a page of a number range (``where(load=gt(90)).limit(10)``): the field's whole index is read;
3. ``count`` of a number range, and of an equality;

each beside ``all()`` filtered and sorted in Python, which reads every entity.

Run: ``python benchmarks/bench_query.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rxstate
from rxstate.server import EmbeddedServer


class Agent(rxstate.Model):
    name: str
    status: str = "idle"
    load: int = 0
    notes: str = ""


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer entities and rounds")
    args = parser.parse_args()
    n, rounds = (2000, 5) if args.quick else (20_000, 9)
    with EmbeddedServer() as server:
        print(f"server: {server.binary} on {server.url}, {n} entities\n")
        server.client().flushall()
        store = rxstate.connect(server.client(), namespace="bench-query", cache=False, reap_interval=None)
        agents = store.collection("agents", Agent, indexes=["name", "load", "status"])
        for start in range(0, n, 1000):
            agents.put_many(
                {
                    f"a{i:06d}": Agent(
                        name=f"agent {i:06d}", load=i % 100, status="busy" if i % 7 else "idle", notes="x" * 200
                    )
                    for i in range(start, min(n, start + 1000))
                }
            )
        low, high = f"agent {n // 2:06d}", f"agent {n // 2 + n // 10:06d}"
        cases = [
            (
                "1. string range, ordered page of 10",
                lambda: agents.where(name=rxstate.between(low, high)).order_by("name").limit(10).ids(),
                lambda: sorted((a.name, a) for a in agents.all() if low <= a.name <= high)[:10],
            ),
            (
                "2. number range, page of 10",
                lambda: list(agents.where(load=rxstate.gt(90)).limit(10)),
                lambda: [a for a in agents.all() if a.load > 90][:10],
            ),
            (
                "3a. count of a number range",
                lambda: agents.where(load=rxstate.gt(90)).count(),
                lambda: sum(a.load > 90 for a in agents.all()),
            ),
            (
                "3b. count of an equality",
                lambda: agents.count(status="idle"),
                lambda: sum(a.status == "idle" for a in agents.all()),
            ),
        ]
        for label, query, brute in cases:
            q, b = median_ms(query, rounds), median_ms(brute, max(3, rounds // 3))
            print(f"{label}")
            print(f"  query      {q:9.2f} ms")
            print(f"  all()+filter {b:7.2f} ms   query/brute {q / b:6.3f}x")
        store.close()


if __name__ == "__main__":
    main()
