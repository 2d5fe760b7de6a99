"""Lock and constraint costs: rxstate vs redis-py doing the same work, against one real server.

Runs an embedded server on a loopback port. Measures each pair call by call, alternating the two
sides, so that drift on a busy machine hits both alike:

- acquire + release of rxstate's fenced lease lock vs redis-py's ``Lock`` (SET NX PX + a release script);
- an update fenced by a lease vs the same update unfenced;
- a put checked by four constraints (unique, reference, bounds, one_of) vs the same put unchecked.

Prints median and p99 (µs) per operation and the ratio to its baseline.

    python -m benchmarks.bench_locks [--n 5000] [--rounds 4]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import rxstate
from benchmarks.timing import interleaved_us, median_p99
from rxstate.server import EmbeddedServer


class Team(rxstate.Model):
    name: str = "t"


class Member(rxstate.Model):
    email: str | None = None
    team_id: str | None = None
    load: int = 0
    max_load: int = 5
    status: str = "idle"


def acquire_releases(store: rxstate.Store, raw: Any) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """Functions doing one acquire + release per call: of rxstate's lock, of redis-py's ``Lock``."""
    rx_lock = store.lock("bench-lock", ttl=10)
    redis_lock = raw.lock("raw-bench-lock", timeout=10)

    def rx_acquire_release(_i: int) -> None:
        rx_lock.acquire().release()

    def redis_acquire_release(_i: int) -> None:
        redis_lock.acquire()
        redis_lock.release()

    return rx_acquire_release, redis_acquire_release


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    n, rounds = args.n, args.rounds
    with EmbeddedServer() as server:
        raw = server.client()
        store = rxstate.connect(server.client(), namespace="bench", reap_interval=None)
        rx_acquire_release, redis_acquire_release = acquire_releases(store, raw)
        plain = store.collection("plain", Member)
        checked = store.collection(
            "checked",
            Member,
            constraints=[
                rxstate.unique("email"),
                rxstate.references("team_id", "teams"),
                rxstate.bounds("load", 0, "max_load"),
                rxstate.one_of("status", {"idle", "busy"}),
            ],
        )
        store.collection("teams", Team).put("t1", Team())
        plain.put("m", Member())
        lease = store.lock("fence", ttl=3600).acquire()

        pairs: dict[str, tuple[Callable[[int], object], Callable[[int], object]]] = {
            "lock acquire+release": (rx_acquire_release, redis_acquire_release),
            "update fenced": (
                lambda i: plain.update("m", load=i % 5, fence=lease),
                lambda i: plain.update("m", load=i % 5),
            ),
            "put with 4 constraints": (
                lambda i: checked.put(f"m{i}", Member(email=f"{i}@x", team_id="t1", load=1)),
                lambda i: plain.put(f"m{i}", Member(email=f"{i}@x", team_id="t1", load=1)),
            ),
        }
        baselines = {
            "lock acquire+release": "redis-py Lock",
            "update fenced": "update",
            "put with 4 constraints": "put",
        }
        results: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pairs}
        for r in range(rounds):
            for name, (ours, theirs) in pairs.items():
                offset = r * (n + 200)
                times = interleaved_us(
                    {"ours": lambda i, f=ours, o=offset: f(i + o), "theirs": lambda i, f=theirs, o=offset: f(i + o)}, n
                )
                results[name][0].extend(times["ours"])
                results[name][1].extend(times["theirs"])
        print(f"{server.binary}, {n} x {rounds} rounds per operation\n")
        print(f"{'operation':<26}{'median µs':>10}{'p99 µs':>9}   {'baseline':<16}{'median':>8}{'p99':>8}{'ratio':>8}")
        for name, (ours, theirs) in results.items():
            m, p = median_p99(ours)
            bm, bp = median_p99(theirs)
            print(f"{name:<26}{m:>10.1f}{p:>9.1f}   {baselines[name]:<16}{bm:>8.1f}{bp:>8.1f}{m / bm:>8.2f}")
        store.close()


if __name__ == "__main__":
    main()
