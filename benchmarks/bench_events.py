"""Event sourcing throughput: rxstate event collections vs the ``eventsourcing`` library vs raw redis-py.

Runs an embedded server on a loopback port. Every contender does the same work in the same run:
- append, one event per call: ``append`` (with and without a projection) vs one raw ``XADD`` vs
  ``eventsourcing`` saving after each event (in-memory POPO and SQLite);
- append, 100 events per call: ``append`` vs a raw ``MULTI`` of 100 ``XADD`` vs ``eventsourcing``;
- replay of one long stream: ``replay(use_snapshots=False)`` (decode, validate, reduce each event) vs raw
  ``XRANGE`` + ``json.loads`` (no model, no reducer) vs ``eventsourcing``'s ``repository.get``;
- load cost vs history length with snapshots every 100 events: an aggregate with a few hundred events
  vs one with 100,000 (and the 100,000 without snapshots).

    python -m benchmarks.bench_events [--replay 50000] [--big 100000] [--appends 2000]

The ``eventsourcing`` contender needs the ``bench`` extra (``pip install rxstate[bench]``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import rxstate
from benchmarks.timing import median_p99, per_call_us, seconds_each
from rxstate.server import EmbeddedServer

try:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event
except ImportError:  # pragma: no cover - the bench extra is missing
    Application = None  # type: ignore[assignment,misc]


class Counter(rxstate.Model):
    total: int = 0
    count: int = 0
    last: str = ""


class Added(rxstate.Model):
    n: int
    tag: str = ""


def apply(state: Counter, e: Added) -> Counter:
    return state.model_copy(update={"total": state.total + e.n, "count": state.count + 1, "last": e.tag or state.last})


if Application is not None:

    class EsCounter(Aggregate):
        @event("Created")
        def __init__(self) -> None:
            self.total = 0
            self.count = 0
            self.last = ""

        @event("Added")
        def add(self, n: int, tag: str) -> None:
            self.total += n
            self.count += 1
            self.last = tag or self.last

    class EsApp(Application):
        pass


def es_apps(tmp: str) -> dict[str, Any]:
    if Application is None:
        return {}
    return {
        "eventsourcing POPO": lambda: EsApp(env={}),
        "eventsourcing SQLite": lambda: EsApp(
            env={
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": os.path.join(tmp, f"{time.time_ns()}.db"),
            }
        ),
    }


def es_appender(app: Any, aggregates: int = 50) -> Callable[[int], None]:
    """A function saving one new event of one of ``aggregates`` aggregates per call, with ``app``."""
    aggs = [EsCounter() for _ in range(aggregates)]
    for a in aggs:
        app.save(a)

    def es_one(i: int) -> None:
        a = aggs[i % aggregates]
        a.add(1, "x")
        app.save(a)

    return es_one


def raw_event(client: Any, key: str) -> Callable[[int], object]:
    """A function appending one event the way rxstate stores it, with one raw ``XADD``, per call."""
    payload = json.dumps({"n": 1, "tag": "x"})
    return lambda _i: client.xadd(key, {"y": "Added", "s": "1", "d": payload, "m": "[]"})


def lat(samples: list[float]) -> str:
    median, p99 = median_p99(samples)
    return f"{median:.0f} / {p99:.0f} us"


def row(name: str, events_per_s: float, base: float, extra: str = "") -> None:
    print(f"  {name:<42} {events_per_s:>12,.0f} ev/s   x{events_per_s / base:5.2f} vs baseline  {extra}")


def bench_append(store: rxstate.Store, raw: Any, tmp: str, n: int) -> None:
    plain = store.events("counters", state=Counter, events=[Added], reducer=apply, snapshot_every=100)
    bare = store.events("bare", state=Counter, events=[Added], reducer=apply, snapshot_every=None)
    projected = store.events(
        "pcounters", state=Counter, events=[Added], reducer=apply, snapshot_every=100, project_to="counter_view"
    )
    ev = Added(n=1, tag="x")
    payload = json.dumps({"n": 1, "tag": "x"})

    print(f"\nappend, one event per call ({n} calls; median / p99 per call)")
    raw_s = per_call_us(raw_event(raw, "raw:single"), n, warmup=100)
    base = 1e6 / median_p99(raw_s)[0]
    row("raw XADD (baseline)", base, base, lat(raw_s))
    contenders = (
        ("rxstate append (no snapshots)", bare),
        ("rxstate append (snapshot every 100)", plain),
        ("rxstate append + projection", projected),
    )
    for name, coll in contenders:
        s = per_call_us(lambda i, c=coll: c.append(f"a{i % 50}", [ev]), n, warmup=100)
        row(name, 1e6 / median_p99(s)[0], base, lat(s))
    for name, make in es_apps(tmp).items():
        s = per_call_us(es_appender(make()), n, warmup=100)
        row(name, 1e6 / median_p99(s)[0], base, lat(s))

    batch = 100
    calls = max(20, n // 20)
    print(f"\nappend, {batch} events per call ({calls} calls)")
    events = [ev] * batch

    def raw_batch(i: int) -> None:
        pipe = raw.pipeline(transaction=True)
        for _ in range(batch):
            pipe.xadd("raw:batch", {"y": "Added", "s": "1", "d": payload, "m": "[]"})
        pipe.execute()

    raw_b = per_call_us(raw_batch, calls, warmup=5)
    base = batch * 1e6 / median_p99(raw_b)[0]
    row("raw MULTI of 100 XADD (baseline)", base, base)
    contenders = (
        ("rxstate append (no snapshots)", bare),
        ("rxstate append (snapshot every 100)", plain),
        ("rxstate append + projection", projected),
    )
    for name, coll in contenders:
        s = per_call_us(lambda i, c=coll: c.append(f"b{i % 10}", events), calls, warmup=5)
        row(name, batch * 1e6 / median_p99(s)[0], base)
    for name, make in es_apps(tmp).items():
        app = make()
        agg = EsCounter()

        def es_batch(i: int, app: Any = app, agg: Any = agg) -> None:
            for _ in range(batch):
                agg.add(1, "x")
            app.save(agg)

        s = per_call_us(es_batch, calls, warmup=5)
        row(name, batch * 1e6 / median_p99(s)[0], base)


def fill(coll: rxstate.EventCollection[Counter], aggregate_id: str, count: int) -> None:
    chunk = [Added(n=i % 1000, tag=f"t{i % 7}") for i in range(500)]
    done = 0
    while done < count:
        step = min(500, count - done)
        coll.append(aggregate_id, chunk[:step])
        done += step


def replay_contenders(
    store: rxstate.Store, tmp: str, n: int, *, peers: bool = True
) -> dict[str, tuple[Callable[[], object], int]]:
    """Replays of one stream of ``n`` events by each contender: name -> (replay function, events read).

    The first is the baseline: raw ``XRANGE`` + ``json.loads`` (no model, no reducer); ``peers=False``
    leaves out ``eventsourcing``.
    """
    coll = store.events("replay", state=Counter, events=[Added], reducer=apply, snapshot_every=None)
    fill(coll, "r", n)
    key = coll.key("r")
    client = store.client

    def raw_replay() -> None:
        lo: Any = "-"
        while rows := client.xrange(key, lo, "+", count=10_000):
            for _sid, fields in rows:
                json.loads(fields[b"d"])
            lo = b"(" + rows[-1][0]

    def raw_replay_unparsed() -> None:
        lo: Any = "-"
        while rows := client.execute_command(b"XRANGE", key, lo, "+", "COUNT", 10_000):
            for _sid, fields in rows:
                json.loads(fields[5])
            lo = b"(" + rows[-1][0]

    assert coll.replay("r", use_snapshots=False).value.count == n
    light = store.events("replay_light", state=Counter, events=[Added], reducer=lambda s, e: s, snapshot_every=None)
    fill(light, "r", n)
    contenders: dict[str, tuple[Callable[[], object], int]] = {
        "raw XRANGE (unparsed) + json.loads (baseline)": (raw_replay_unparsed, n),
        "raw XRANGE (redis-py dicts) + json.loads": (raw_replay, n),
        "rxstate replay (decode + validate + reduce)": (lambda: coll.replay("r", use_snapshots=False), n),
        "rxstate replay, no-op reducer (library cost)": (lambda: light.replay("r", use_snapshots=False), n),
    }
    for name, make in (es_apps(tmp) if peers else {}).items():
        app = make()
        agg = EsCounter()
        for i in range(n):
            agg.add(i % 1000, f"t{i % 7}")
            if i % 500 == 499:
                app.save(agg)
        app.save(agg)
        assert app.repository.get(agg.id).count == n
        contenders[name] = (lambda app=app, agg=agg: app.repository.get(agg.id), n + 1)
    return contenders


def replay_times(contenders: dict[str, tuple[Callable[[], object], int]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each replay, ``rounds`` each, the rounds interleaving the contenders (so a change of
    machine load hits them all alike)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _round in range(rounds):
        for name, (fn, _count) in contenders.items():
            times[name] += seconds_each(lambda _i, fn=fn: fn(), range(1))
    return times


def bench_replay(store: rxstate.Store, tmp: str, n: int, rounds: int = 7) -> None:
    print(f"\nreplay of one stream of {n:,} events (median of {rounds} rounds; baseline: no model, no reducer)")
    contenders = replay_contenders(store, tmp, n)
    times = replay_times(contenders, rounds)
    speed = {name: count / statistics.median(times[name]) for name, (_fn, count) in contenders.items()}
    best = {name: count / min(times[name]) for name, (_fn, count) in contenders.items()}
    base = speed["raw XRANGE (unparsed) + json.loads (baseline)"]
    for name, value in speed.items():
        row(name, value, base, f"(best round {best[name]:,.0f} ev/s)")
    rx = speed["rxstate replay (decode + validate + reduce)"]
    rx_best = best["rxstate replay (decode + validate + reduce)"]
    verdict = "met" if rx >= 200_000 else "NOT met"
    print(f"  target >= 200,000 ev/s: {verdict} (median {rx:,.0f}, best round {rx_best:,.0f})")


def bench_snapshots(store: rxstate.Store, big: int, loads: int) -> None:
    # cache_size=0: every load reads the snapshot and the events after it, as a fresh process does
    coll = store.events("snaps", state=Counter, events=[Added], reducer=apply, snapshot_every=100, cache_size=0)
    small = 350
    fill(coll, "small", small)
    fill(coll, "big", big)
    coll.snapshot("small")
    coll.snapshot("big")
    coll.append("small", [Added(n=1)] * 37)  # a tail after the snapshot, as in real use
    coll.append("big", [Added(n=1)] * 37)
    print(f"\nload() with snapshots every 100 events ({loads} loads; median / p99)")
    for _ in range(20):  # warm up
        coll.load("small")
        coll.load("big")
    samples: dict[str, list[float]] = {"small": [], "big": []}
    for _ in range(loads):  # alternate, so a change of machine load hits both alike
        for name in samples:
            t0 = time.perf_counter_ns()
            coll.load(name)
            samples[name].append((time.perf_counter_ns() - t0) / 1000)
    results = {name: median_p99(values) for name, values in samples.items()}
    for name in samples:
        v = coll.load(name).version
        print(f"  {v:>7,} events: {results[name][0]:8.0f} / {results[name][1]:6.0f} us per load")
    print(f"  ratio big/small (median): {results['big'][0] / results['small'][0]:.2f}")
    warm = store.events("snaps_warm", state=Counter, events=[Added], reducer=apply, snapshot_every=100)
    fill(warm, "big", big)
    warm.append("big", [Added(n=1)] * 37)
    cached = median_p99(per_call_us(lambda i: warm.load("big"), loads, warmup=20))
    print(f"  {big + 37:>7,} events, state kept by this process: {cached[0]:6.0f} / {cached[1]:6.0f} us per load")
    full = statistics.median(seconds_each(lambda _i: coll.replay("big", use_snapshots=False), range(3)))
    print(f"  {big + 37:>7,} events without snapshots: {full * 1e6:8.0f} us per load ({(big + 37) / full:,.0f} ev/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replay", type=int, default=50_000, help="events in the replayed stream")
    parser.add_argument("--big", type=int, default=100_000, help="events of the long aggregate")
    parser.add_argument("--appends", type=int, default=2_000, help="single-event append calls")
    parser.add_argument("--loads", type=int, default=300, help="load() calls per aggregate")
    args = parser.parse_args()
    if Application is None:
        print("(eventsourcing is not installed: pip install 'rxstate[bench]' to compare with it)")
    with EmbeddedServer() as server, tempfile.TemporaryDirectory() as tmp:
        raw = server.client()
        store = rxstate.connect(server.client(), namespace="bench", reap_interval=None)
        print(f"server: {server.url}")
        bench_append(store, raw, tmp, args.appends)
        bench_replay(store, tmp, args.replay)
        bench_snapshots(store, args.big, args.loads)
        store.close()


if __name__ == "__main__":
    main()
