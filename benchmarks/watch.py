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
from multiprocessing.connection import Connection
from typing import Any

import redis

import rxstate
from benchmarks.harness import Context, Result, at_most
from benchmarks.timing import median_p99

__all__ = ["latency"]

_WAIT = 10.0  # seconds a change may take before the bench gives up


class Item(rxstate.Model):
    n: int = 0


def _watcher(url: str, namespace: str, out: Connection, stop: Any) -> None:
    """Child: watch ``items/x`` and send ``(version, stamp_ns)`` for each change (the snapshot too)."""
    store = rxstate.connect(url, namespace=namespace, reap_interval=None, cache=False)
    items = store.collection("items", Item)
    sub = items.watch("x").subscribe(lambda c: out.send((c.version, time.perf_counter_ns())))
    stop.wait()
    sub.dispose()
    store.close()


def _xreader(url: str, key: str, out: Connection, stop: Any) -> None:
    """Child: block in ``XREAD`` on ``key`` and send ``(entry id, stamp_ns)`` for each entry, from the
    first (written before the child starts: its arrival says the child is ready)."""
    client = redis.Redis.from_url(url)
    last: Any = "0"
    while not stop.is_set():
        reply = client.xread({key: last}, block=100, count=100)
        for _key, entries in reply or ():
            now = time.perf_counter_ns()
            for entry_id, _fields in entries:
                out.send((entry_id, now))
            last = entries[-1][0]
    client.close()


def _measure(
    target: Callable[..., None], args: tuple[Any, ...], write: Callable[[int], Any], rounds: int
) -> list[float]:
    """Start the child, wait for its first message, then time ``rounds`` writes (µs to the child's stamp)."""
    mp = multiprocessing.get_context("spawn")
    receive, send = mp.Pipe(duplex=False)
    stop = mp.Event()
    child = mp.Process(target=target, args=(*args, send, stop), daemon=True)
    child.start()
    try:
        if not receive.poll(60):
            raise RuntimeError("the watcher process did not start within 60 s")
        receive.recv()
        samples = []
        for i in range(rounds + 20):  # the first 20 warm up
            t0 = time.perf_counter_ns()
            wanted = write(i)
            while True:
                if not receive.poll(_WAIT):
                    raise RuntimeError(f"no change {wanted!r} reached the watcher within {_WAIT} s")
                got, stamp = receive.recv()
                if got == wanted:
                    break
            if i >= 20:
                samples.append((stamp - t0) / 1000)
        return samples
    finally:
        stop.set()
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()


def latency(ctx: Context) -> list[Result]:
    """p50/p99 from a write's start to its delivery in another process: rxstate watch vs raw XREAD."""
    rounds = max(ctx.n // 2, 10) if ctx.options.quick else min(ctx.n, 3000)
    raw = ctx.client()
    key = f"raw:{ctx.namespace('watch')}"
    raw.xadd(key, {"n": -1})
    raw_samples = _measure(_xreader, (ctx.url, key), lambda i: raw.xadd(key, {"n": i}), rounds)
    store = ctx.store("watch")
    items = store.collection("items", Item)
    items.put("x", Item())
    rx_samples = _measure(
        _watcher, (ctx.url, store.keyspace.namespace), lambda i: items.update("x", n=i).version, rounds
    )
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
