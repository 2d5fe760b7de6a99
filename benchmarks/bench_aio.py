"""The asyncio front's throughput: 100 concurrent tasks doing updates on one event loop.

Compared in the same run, on the same server and transport, against:

- raw ``redis.asyncio`` ``HSET``s from 100 tasks on one loop (the baseline: the bytes alone);
- the synchronous API driven by 100 threads doing the same updates (what one would do without asyncio).

Each round does ``n`` operations in all (``n // 100`` per worker); rounds alternate the three sides so
that drift on a busy machine hits them alike. The rate is operations per second of the median round.

    python -m benchmarks.bench_aio [--quick]      # same as: python -m benchmarks --only aio
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import redis.asyncio

import rxstate
import rxstate.aio
from benchmarks.harness import Context, Result, rate_result

__all__ = ["throughput"]

WORKERS = 100


class Worker(rxstate.Model):
    name: str = "w"
    status: str = "idle"
    steps: int = 0


def throughput(ctx: Context) -> list[Result]:
    """Rows: raw redis.asyncio HSETs, rxstate.aio updates, sync-API updates from threads."""
    per_worker = max(ctx.n // WORKERS, 5)
    total = per_worker * WORKERS
    rounds = ctx.options.scaled(5, 3)
    sync_store = ctx.store("aio-sync")
    sync_workers = sync_store.collection("workers", Worker)
    sync_workers.put_many({f"w{i}": Worker() for i in range(WORKERS)})
    times: dict[str, list[float]] = {"raw": [], "aio": [], "threads": []}

    def threads_round() -> float:
        def work(i: int) -> None:
            for step in range(per_worker):
                sync_workers.update(f"w{i}", steps=step, status="busy")

        pool = [threading.Thread(target=work, args=(i,)) for i in range(WORKERS)]
        start = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return time.perf_counter() - start

    async def async_rounds() -> None:
        raw = redis.asyncio.Redis.from_url(ctx.url, max_connections=WORKERS + 10)
        async with rxstate.aio.connect(ctx.url, namespace=ctx.namespace("aio"), reap_interval=None) as store:
            workers = await store.collection("workers", Worker)
            await workers.put_many({f"w{i}": Worker() for i in range(WORKERS)})
            keys = [f"bench-aio-raw:{i}" for i in range(WORKERS)]

            async def raw_worker(i: int) -> None:
                for step in range(per_worker):
                    await raw.hset(keys[i], mapping={"steps": step, "status": "busy"})

            async def aio_worker(i: int) -> None:
                for step in range(per_worker):
                    await workers.update(f"w{i}", steps=step, status="busy")

            async def timed(worker: Any) -> float:
                start = time.perf_counter()
                await asyncio.gather(*(worker(i) for i in range(WORKERS)))
                return time.perf_counter() - start

            await timed(raw_worker)  # warm up connections on both sides
            await timed(aio_worker)
            for _ in range(rounds):
                times["raw"].append(await timed(raw_worker))
                times["aio"].append(await timed(aio_worker))
                times["threads"].append(await asyncio.to_thread(threads_round))
            await raw.delete(*keys)
        await raw.aclose()

    threads_round()  # warm up the thread side's pool
    asyncio.run(async_rounds())
    group = f"{WORKERS} concurrent updaters"
    base = rate_result(group, "redis.asyncio HSET (100 tasks)", times["raw"], total, None, unit="ops/s")
    return [
        base,
        rate_result(
            group,
            "rxstate.aio update (100 tasks)",
            times["aio"],
            total,
            base.median,
            unit="ops/s",
            baseline=base.name,
            note="versioned, indexed, change-recorded write through the greenlet bridge",
        ),
        rate_result(
            group,
            "rxstate sync update (100 threads)",
            times["threads"],
            total,
            base.median,
            unit="ops/s",
            baseline=base.name,
            note="the synchronous API from threads",
        ),
    ]


if __name__ == "__main__":
    from benchmarks.__main__ import main

    sys.exit(main(["--only", "aio", *sys.argv[1:]]))
