"""Watch latency across processes: a write here -> ``collection.watch(id)`` delivers it in another process.

The watcher is a separate Python process (``multiprocessing``, spawn) that stamps each change with
``time.perf_counter_ns`` (``CLOCK_MONOTONIC``, one clock for every process of the machine) and sends
the stamp back over a pipe. The baseline is raw redis-py doing the same: ``XADD`` here, a process
blocked in ``XREAD`` there. Latency runs from the start of the write call to the stamp.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

import redis

import rxstate
from benchmarks.harness import Context, Result, at_most
from benchmarks.timing import median_p99

__all__ = ["latency"]

_WAIT = 10.0  # seconds a change may take before the bench gives up


class Item(rxstate.Model):
    n: int = 0


def _follower(url: str, key: str, namespace: str, out: Connection, switch: Any, stop: Any) -> None:
    """Child: first block in ``XREAD`` on ``key``, sending ``(entry id, stamp_ns)`` per entry (from the
    first, written before the child starts: its arrival says the child is ready); once ``switch`` is
    set, watch ``items/x`` of ``namespace`` and send ``(version, stamp_ns)`` per change (the snapshot
    first) until ``stop`` is set. One process for both saves a second interpreter start."""
    client = redis.Redis.from_url(url)
    last: Any = "0"
    while not switch.is_set():
        reply = client.xread({key: last}, block=50, count=100)
        for _key, entries in reply or ():
            now = time.perf_counter_ns()
            for entry_id, _fields in entries:
                out.send((entry_id, now))
            last = entries[-1][0]
    client.close()
    store = rxstate.connect(url, namespace=namespace, reap_interval=None, cache=False)
    items = store.collection("items", Item)
    sub = items.watch("x").subscribe(lambda c: out.send((c.version, time.perf_counter_ns())))
    stop.wait()
    sub.dispose()
    store.close()


def _next(receive: Connection, child: Any, what: str) -> tuple[Any, int]:
    """The child's next message, or ``RuntimeError`` if none comes in time or the child died."""
    if receive not in wait([receive, child.sentinel], _WAIT) and not receive.poll():
        raise RuntimeError(f"no {what} from the watcher process within {_WAIT} s (exit code {child.exitcode})")
    got, stamp = receive.recv()
    return got, stamp


def _time_writes(receive: Connection, child: Any, write: Callable[[int], Any], rounds: int) -> list[float]:
    """µs from the start of each write to the child's stamp of it (after 20 untimed writes)."""
    samples = []
    for i in range(rounds + 20):
        t0 = time.perf_counter_ns()
        wanted = write(i)
        while True:
            got, stamp = _next(receive, child, f"change {wanted!r}")
            if got == wanted:
                break
        if i >= 20:
            samples.append((stamp - t0) / 1000)
    return samples


def latency(ctx: Context) -> list[Result]:
    """p50/p99 from a write's start to its delivery in another process: rxstate watch vs raw XREAD."""
    rounds = max(ctx.n // 2, 10) if ctx.options.quick else min(ctx.n, 3000)
    raw = ctx.client()
    key = f"raw:{ctx.namespace('watch')}"
    raw.xadd(key, {"n": -1})
    store = ctx.store("watch")
    items = store.collection("items", Item)
    items.put("x", Item())
    mp = multiprocessing.get_context("spawn")
    receive, send = mp.Pipe(duplex=False)
    switch, stop = mp.Event(), mp.Event()
    child = mp.Process(target=_follower, args=(ctx.url, key, store.keyspace.namespace, send, switch, stop), daemon=True)
    child.start()
    try:
        _next(receive, child, "first entry")
        raw_samples = _time_writes(receive, child, lambda i: raw.xadd(key, {"n": i}), rounds)
        switch.set()
        while not isinstance(_next(receive, child, "snapshot")[0], int):
            pass
        rx_samples = _time_writes(receive, child, lambda i: items.update("x", n=i).version, rounds)
    finally:
        stop.set()
        switch.set()
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
    group = "write -> watch in another process"
    base, base_p99 = median_p99(raw_samples)
    median, p99 = median_p99(rx_samples)
    return [
        Result(group, "raw XADD -> XREAD process", "µs", base, base_p99, 1.0, "raw XADD -> XREAD process"),
        Result(
            group,
            "rxstate update -> collection.watch(id)",
            "µs",
            median,
            p99,
            median / base,
            "raw XADD -> XREAD process",
            at_most(500, "p50 ≤0.5 ms, p99 ≤2 ms", p99=2000),
            "from the write call's start",
        ),
    ]
