"""Reactive layer benchmark: change propagation, fan-out, and the derived-value engine.

One run on a real embedded server (loopback TCP), each figure beside a baseline measured in the same run:

1. propagation: a writer's ``update`` returns -> a subscriber of another store has the change
   (p50/p99), beside raw redis-py (``XADD`` -> a thread blocked in ``XREAD``) on the same server;
2. fan-out: one change -> 1, 100 and 10,000 subscribers of one store: time until the last one has it,
   per subscriber, beside a reactivex ``Subject`` calling the same number of observers in-process;
3. the propagation engine alone on a diamond (a -> b, c -> d -> effect), per update, beside reaktiv
   (glitch-free signals) and reactivex ``combine_latest``; counts the intermediate wrong values each emits.

Targets: diamond < 10 us per update, fan-out < 1 us per subscriber, propagation p50 < 0.5 ms and p99 < 2 ms.

Run: ``python -m benchmarks.bench_reactive [--quick]`` (needs the ``bench`` extra: reaktiv).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import threading
import time

import reactivex
from reactivex import operators as rx_ops
from reactivex.scheduler import ImmediateScheduler
from reactivex.subject import BehaviorSubject, Subject

import rxstate
from benchmarks.timing import percentile, seconds_each
from rxstate.core import tracking
from rxstate.feed.change import Change
from rxstate.reactive.graph import DerivedGraph
from rxstate.server import EmbeddedServer


class Item(rxstate.Model):
    n: int = 0


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:9.2f} us"


def row(label: str, values: list[float], baseline: list[float] | None = None) -> None:
    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
    line = f"  {label:<46} p50 {fmt_us(p50)}   p99 {fmt_us(p99)}"
    if baseline and percentile(baseline, 0.5) > 0:
        line += f"   ratio p50 {p50 / percentile(baseline, 0.5):5.2f}x  p99 {p99 / percentile(baseline, 0.99):5.2f}x"
    print(line)


# -- 1. propagation ---------------------------------------------------------------------------------


def bench_raw_xread(server: EmbeddedServer, rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Baseline: raw redis-py XADD, and a thread blocked in XREAD on the same stream."""
    writer, reader = server.client(), server.client()
    key = "bench:raw"
    writer.delete(key)
    arrived = threading.Event()
    stamp = [0.0]
    stop = [False]

    def follow() -> None:
        last = "$"
        while not stop[0]:
            reply = reader.xread({key: last}, block=200, count=100)
            if reply:
                stamp[0] = time.perf_counter()
                last = reply[0][1][-1][0]
                arrived.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    time.sleep(0.05)
    since_start, since_return, calls = [], [], []
    for i in range(rounds):
        arrived.clear()
        start = time.perf_counter()
        writer.xadd(key, {"n": i})
        returned = time.perf_counter()
        arrived.wait(2)
        since_start.append(stamp[0] - start)
        since_return.append(max(0.0, stamp[0] - returned))
        calls.append(returned - start)
    stop[0] = True
    thread.join()
    return since_start, since_return, calls


def bench_propagation(server: EmbeddedServer, rounds: int) -> tuple[list[float], list[float], list[float]]:
    writer = rxstate.connect(server.client(), namespace="bench-prop", reap_interval=None)
    reader = rxstate.connect(server.client(), namespace="bench-prop", reap_interval=None)
    items = writer.collection("items", Item)
    items.put("x", Item())
    arrived = threading.Event()
    stamp = [0.0]

    def on_change(_c: Change) -> None:
        stamp[0] = time.perf_counter()
        arrived.set()

    reader.changes(collection="items").subscribe(on_change)
    reader.change_feed.start()
    time.sleep(0.05)
    since_start, since_return, calls = [], [], []
    for i in range(rounds):
        arrived.clear()
        start = time.perf_counter()
        items.update("x", n=i)
        returned = time.perf_counter()
        arrived.wait(2)
        since_start.append(stamp[0] - start)
        # A change can reach the subscriber before the writer has parsed its own reply: count that as 0.
        since_return.append(max(0.0, stamp[0] - returned))
        calls.append(returned - start)
    writer.close()
    reader.close()
    return since_start, since_return, calls


# -- 2. fan-out ---------------------------------------------------------------------------------------


def bench_fanout(server: EmbeddedServer, n: int, rounds: int) -> list[float]:
    writer = rxstate.connect(server.client(), namespace=f"bench-fan{n}", reap_interval=None)
    reader = rxstate.connect(server.client(), namespace=f"bench-fan{n}", reap_interval=None)
    items = writer.collection("items", Item)
    items.put("x", Item())
    done = threading.Event()
    lock = threading.Lock()
    count = [0]
    stamp = [0.0]

    def on_change(_c: Change) -> None:
        with lock:
            count[0] += 1
            if count[0] == n:
                stamp[0] = time.perf_counter()
                done.set()

    for _ in range(n):
        reader.changes(collection="items").subscribe(on_change)
    reader.change_feed.start()
    time.sleep(0.1)
    out = []
    for i in range(rounds):
        done.clear()
        count[0] = 0
        start = time.perf_counter()
        items.update("x", n=i)
        if not done.wait(10):
            raise RuntimeError(f"fan-out to {n}: only {count[0]} subscribers got the change")
        out.append(stamp[0] - start)
    writer.close()
    reader.close()
    return out


def bench_subject_fanout(n: int, rounds: int) -> list[float]:
    """Baseline: a reactivex Subject calling n observers (the same counting callback), in-process."""
    subject: Subject[int] = Subject()
    lock = threading.Lock()
    count = [0]

    def on_next(_v: int) -> None:
        with lock:
            count[0] += 1

    for _ in range(n):
        subject.subscribe(on_next)
    out = []
    for i in range(rounds):
        count[0] = 0
        t0 = time.perf_counter()
        subject.on_next(i)
        out.append(time.perf_counter() - t0)
    return out


# -- 3. diamond ---------------------------------------------------------------------------------------


def bench_diamond_plain(updates: int) -> tuple[list[float], int, int]:
    """Baseline: a hand-written callback recomputing b, c and d once per update (no library)."""
    seen: list[tuple[int, int]] = []

    def set_a(v: int) -> None:
        seen.append((v * 2, v + 10))

    times = seconds_each(set_a, range(1, updates + 1))
    wrong = sum(1 for bv, cv in seen if bv // 2 != cv - 10)
    return times, len(seen), wrong


def bench_diamond_ours(updates: int) -> tuple[list[float], int, int]:
    graph = DerivedGraph()
    state = {"a": 0}
    change = Change("bench", "a", "update", 0, {"a": 0})
    batch = (change,)

    def read_a() -> int:
        tracking.track("bench", "a")
        return state["a"]

    b = graph.derived(lambda: read_a() * 2, name="b")
    c = graph.derived(lambda: read_a() + 10, name="c")
    d = graph.derived(lambda: (b.value, c.value), name="d")
    seen: list[tuple[int, int]] = []
    d.subscribe(seen.append, scheduler=ImmediateScheduler())
    seen.clear()

    def step(i: int) -> None:
        state["a"] = i
        graph.apply(batch)

    times = seconds_each(step, range(1, updates + 1))
    wrong = sum(1 for bv, cv in seen if bv // 2 != cv - 10)
    return times, len(seen), wrong


def bench_diamond_reaktiv(updates: int) -> tuple[list[float], int, int]:
    from reaktiv import Computed, Effect, Signal

    a = Signal(0)
    b = Computed(lambda: a() * 2)
    c = Computed(lambda: a() + 10)
    d = Computed(lambda: (b(), c()))
    seen: list[tuple[int, int]] = []
    effect = Effect(lambda: seen.append(d()))
    seen.clear()
    times = seconds_each(a.set, range(1, updates + 1))
    wrong = sum(1 for bv, cv in seen if bv // 2 != cv - 10)
    del effect
    return times, len(seen), wrong


def bench_diamond_combine_latest(updates: int) -> tuple[list[float], int, int]:
    a: BehaviorSubject[int] = BehaviorSubject(0)
    b = a.pipe(rx_ops.map(lambda v: v * 2))
    c = a.pipe(rx_ops.map(lambda v: v + 10))
    d = reactivex.combine_latest(b, c)
    seen: list[tuple[int, int]] = []
    d.subscribe(seen.append)
    seen.clear()
    times = seconds_each(a.on_next, range(1, updates + 1))
    wrong = sum(1 for bv, cv in seen if bv // 2 != cv - 10)
    return times, len(seen), wrong


# -- main ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    rounds = int(2000 * scale)
    gc.collect()

    print(f"rxstate reactive benchmark (python {sys.version.split()[0]})")
    with EmbeddedServer() as server:
        print(f"server: {server.binary} on {server.url}\n")

        print("1. change propagation: writer's return -> subscriber in another store")
        raw_start, raw, raw_calls = bench_raw_xread(server, rounds)
        ours_start, ours, ours_calls = bench_propagation(server, rounds)
        print("  the write call alone:")
        row("raw redis-py XADD", raw_calls)
        row("rxstate update (script: version, hash, stream)", ours_calls, raw_calls)
        print("  measured from the write call's start:")
        row("raw redis-py XADD -> XREAD thread (baseline)", raw_start)
        row("rxstate update -> store.changes() subscriber", ours_start, raw_start)
        print("  measured from the write call's return (0 when the change arrived first):")
        row("raw redis-py XADD -> XREAD thread (baseline)", raw)
        row("rxstate update -> store.changes() subscriber", ours)
        p50, p99 = percentile(ours, 0.5), percentile(ours, 0.99)
        verdict50 = "met" if p50 < 5e-4 else "MISSED"
        verdict99 = "met" if p99 < 2e-3 else "MISSED"
        print(f"  target p50 < 500 us: {verdict50};  p99 < 2 ms: {verdict99}\n")

        print("2. fan-out of one change: write call's start -> the last of N subscribers has it")
        fan_rounds = {1: int(500 * scale), 100: int(300 * scale), 10_000: max(10, int(40 * scale))}
        single = None
        last_marginal = 0.0
        for n, r in fan_rounds.items():
            total = bench_fanout(server, n, r)
            subject = bench_subject_fanout(n, r)
            med = percentile(total, 0.5)
            single = med if single is None else single
            marginal = (med - single) / (n - 1) if n > 1 else 0.0
            last_marginal = marginal
            print(
                f"  N={n:>6}: total p50 {fmt_us(med)}  p99 {fmt_us(percentile(total, 0.99))}  "
                f"marginal per subscriber {marginal * 1e6:6.3f} us  | "
                f"reactivex Subject per observer {percentile(subject, 0.5) / n * 1e6:6.3f} us"
            )
        print("  marginal = (p50 at N - p50 at 1) / (N - 1); the Subject column calls the same counting callback")
        print(f"  target < 1 us per subscriber at N=10,000: {'met' if last_marginal < 1e-6 else 'MISSED'}\n")

    print("3. propagation engine alone: diamond a -> (b, c) -> d -> effect, per update")
    updates = int(20_000 * scale)
    results = {
        "rxstate DerivedGraph": bench_diamond_ours(updates),
        "reaktiv (signals)": bench_diamond_reaktiv(updates),
        "reactivex combine_latest": bench_diamond_combine_latest(updates),
    }
    base = results["rxstate DerivedGraph"][0]
    for name, (times, emitted, wrong) in results.items():
        p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
        print(
            f"  {name:<26} p50 {fmt_us(p50)}  p99 {fmt_us(p99)}  "
            f"({percentile(times, 0.5) / percentile(base, 0.5):5.2f}x ours)  "
            f"emissions/update {emitted / updates:4.2f}  wrong intermediate values {wrong}"
        )
    ours_p50 = percentile(base, 0.5)
    print(f"  target < 10 us per update: {'met' if ours_p50 < 1e-5 else 'MISSED'}")
    _times, _e, ours_wrong = results["rxstate DerivedGraph"]
    _times, _e, rx_wrong = results["reactivex combine_latest"]
    print(f"  glitches: rxstate {ours_wrong}, reactivex combine_latest {rx_wrong} (one per update)")
    statistics.mean(base)


if __name__ == "__main__":
    main()
