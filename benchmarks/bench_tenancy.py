"""Tenancy costs and performance isolation, against one real server.

- **Overhead**: a put to a tenant's store (the write script's tenant stage: suspension, quotas, token
  buckets, usage and cost counters) against the same put to a plain store; and, for comparison, the
  ``limits`` library's sliding-window check (its own Lua script, one more round trip) before a plain put.
- **Append overhead**: an event append to a tenant's store with the events quota (checked and counted
  in the append's own script call) against the same append to a plain store, without a projection
  and with one.
- **Read overhead**: a read from the server (no local cache) of a tenant's store, whose read meter
  counts it for the read-cost flush, against the same read of a plain store.
- **Isolation**: a noisy tenant saturating writes from several threads while a quiet tenant does
  steady reads and writes, both through one ``FairScheduler`` over a bounded pool; the quiet tenant's
  p99 latency alone and with the noise. The same without the scheduler (every thread straight onto
  the store) shows what the scheduler buys.

    python -m benchmarks.bench_tenancy [--n 3000] [--seconds 2]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import rxstate
from benchmarks.harness import Contender, Context, Result, latency_group
from benchmarks.timing import median_p99
from rxstate.server import EmbeddedServer
from rxstate.tenancy import FairScheduler, Limits, Tenants

__all__ = ["append_overhead", "isolation", "overhead", "read_overhead", "tenancy"]

NOISY_THREADS = 6
WORKERS = 4


class Item(rxstate.Model):
    name: str = "item"
    n: int = 0


class Added(rxstate.Model):
    n: int = 1


class Tally(rxstate.Model):
    n: int = 0


def _tally(state: Tally | None, event: Added) -> Tally:
    return Tally(n=(state.n if state is not None else 0) + event.n)


def _tenant_items(parent: rxstate.Store, name: str, limits: Limits | None = None) -> Any:
    Tenants(parent).create(name, limits=limits)
    return parent.tenant(name).collection("items", Item)


def overhead_contenders(parent: rxstate.Store, url: str, with_limits_library: bool) -> list[Contender]:
    """Put functions: plain (the baseline), tenant without limits, tenant with quota + rate limits."""
    plain = parent.collection("items", Item)
    bare = _tenant_items(parent, f"b{uuid.uuid4().hex[:6]}")
    limited = _tenant_items(
        parent,
        f"l{uuid.uuid4().hex[:6]}",
        Limits(max_entities=10**9, max_bytes=10**12, rate=1e9, burst=10**9, principal_rate=1e9),
    )
    item = Item(name="x")
    contenders = [
        Contender("plain put", lambda i: plain.put(f"p{i % 1000}", item)),
        Contender("tenant put", lambda i: bare.put(f"p{i % 1000}", item), note="tenant stage, no limits"),
        Contender(
            "tenant put, quotas + rate limits",
            lambda i: limited.put(f"p{i % 1000}", item),
            note="checked and counted in the same script",
        ),
    ]
    if with_limits_library:
        from limits import RateLimitItemPerSecond
        from limits.storage import RedisStorage
        from limits.strategies import SlidingWindowCounterRateLimiter

        storage = RedisStorage(url.replace("unix://", "redis+unix://").split("?")[0])
        window = SlidingWindowCounterRateLimiter(storage)
        rule = RateLimitItemPerSecond(10**9)
        key = uuid.uuid4().hex

        def limits_then_put(i: int) -> None:
            if window.hit(rule, key):
                plain.put(f"p{i % 1000}", item)

        contenders.append(
            Contender("limits sliding window + plain put", limits_then_put, note="a second round trip per write")
        )
    return contenders


def append_contenders(parent: rxstate.Store) -> list[Contender]:
    """Append functions: a plain store's (the baseline), then a tenant's with the events quota; each
    without a projection and with one (the projected entity written in the same call)."""
    name = uuid.uuid4().hex[:6]
    Tenants(parent).create(f"e{name}", limits=Limits(max_events=10**12, max_entities=10**9))
    Tenants(parent).create(f"u{name}")
    tenant, unlimited = parent.tenant(f"e{name}"), parent.tenant(f"u{name}")
    event = [Added()]

    def events(store: rxstate.Store, projected: bool) -> Any:
        return store.events(
            "tallies" if not projected else "ptallies",
            state=Tally,
            events=[Added],
            reducer=_tally,
            snapshot_every=None,
            project_to="tally_view" if projected else None,
        )

    plain, stage, quota = events(parent, False), events(unlimited, False), events(tenant, False)
    plain_p, quota_p = events(parent, True), events(tenant, True)
    return [
        Contender("plain append", lambda i: plain.append(f"a{i % 100}", event)),
        Contender("tenant append, no limits", lambda i: stage.append(f"a{i % 100}", event), note="the tenant stage"),
        Contender(
            "tenant append, events quota",
            lambda i: quota.append(f"a{i % 100}", event),
            note="quota checked and counted in the append's call",
        ),
        Contender("plain append, projected", lambda i: plain_p.append(f"a{i % 100}", event)),
        Contender(
            "tenant append, projected, events quota",
            lambda i: quota_p.append(f"a{i % 100}", event),
            note="events and entity quotas, one call",
        ),
    ]


def append_overhead(ctx: Context) -> list[Result]:
    """Rows of the append overhead of the events quota (ratios to a plain append)."""
    appends = append_contenders(ctx.store("tenancy-append"))
    return latency_group("tenant append overhead", appends[:3], ctx.n, warmup=300) + latency_group(
        "tenant projected append overhead", appends[3:], ctx.n, warmup=300
    )


def read_contenders(parent: rxstate.Store) -> tuple[list[Contender], list[rxstate.Store]]:
    """Get functions of stores without a local cache: a plain store's (the baseline), a tenant's; and
    the two stores, to close after the run (they share the parent's client)."""
    name = f"r{uuid.uuid4().hex[:6]}"
    Tenants(parent).create(name)
    plain = rxstate.connect(parent.client, namespace=parent.namespace, cache=False, reap_interval=None)
    tenant = rxstate.connect(parent.client, namespace=f"{parent.namespace}/{name}", cache=False, reap_interval=None)
    for store in (plain, tenant):
        store.borrowed_client = True
        items = store.collection("items", Item)
        for i in range(100):
            items.put(f"g{i}", Item(name="x" * 40, n=i))
    a, b = plain.collection("items", Item), tenant.collection("items", Item)
    return [
        Contender("plain get (no cache)", lambda i: a.get(f"g{i % 100}")),
        Contender("tenant get (no cache)", lambda i: b.get(f"g{i % 100}"), note="read costs counted, flushed each s"),
    ], [plain, tenant]


def read_overhead(ctx: Context) -> list[Result]:
    """Rows of the read overhead of a tenant's read meter (ratio to a plain read)."""
    contenders, stores = read_contenders(ctx.store("tenancy-read"))
    try:
        return latency_group("tenant read overhead", contenders, ctx.n, warmup=300)
    finally:
        for store in stores:
            store.close()


def overhead(ctx: Context) -> list[Result]:
    """Rows of the put overhead of the tenant stage (ratios to a plain put)."""
    parent = ctx.store("tenancy")
    return latency_group("tenant put overhead", overhead_contenders(parent, ctx.url, _has_limits()), ctx.n, warmup=300)


def _has_limits() -> bool:
    import importlib.util

    return importlib.util.find_spec("limits") is not None


def _quiet_latencies(run: Callable[[str, Callable[[], object]], object], quiet: Any, seconds: float) -> list[float]:
    """The quiet tenant: one read or write every 2 ms; each call's latency (µs)."""
    out: list[float] = []
    deadline = time.perf_counter() + seconds
    i = 0
    item = Item()
    read: Callable[[], object] = lambda: quiet.get("q")  # noqa: E731
    write: Callable[[], object] = lambda: quiet.put("q", item)  # noqa: E731
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        run("quiet", read if i % 2 else write)
        out.append((time.perf_counter() - t0) * 1e6)
        i += 1
        time.sleep(0.002)
    return out


def _alone_and_noisy(
    scheduler: FairScheduler | None, quiet: Any, noisy: Any, seconds: float
) -> list[tuple[float, float]]:
    """Quiet-tenant (median, p99) µs alone, then while ``NOISY_THREADS`` threads write as fast as they can."""

    def via(tenant: str, op: Callable[[], object]) -> object:
        return op() if scheduler is None else scheduler.submit(tenant, op).result()

    alone = median_p99(_quiet_latencies(via, quiet, seconds))
    stop = threading.Event()

    def noise(t: int) -> None:
        j = 0
        while not stop.is_set():
            item = Item(n=j)
            via("noisy", lambda: noisy.put(f"n{t}-{j % 100}", item))  # noqa: B023 - called before the next j
            j += 1

    threads = [threading.Thread(target=noise, args=(t,), daemon=True) for t in range(NOISY_THREADS)]
    for thread in threads:
        thread.start()
    loud = median_p99(_quiet_latencies(via, quiet, seconds))
    stop.set()
    for thread in threads:
        thread.join()
    return [alone, loud]


def isolation(parent: rxstate.Store, seconds: float) -> dict[str, tuple[float, float]]:
    """Quiet-tenant (median, p99) µs: alone and under noise, with the fair scheduler and without it."""
    quiet = _tenant_items(parent, f"q{uuid.uuid4().hex[:6]}")
    noisy = _tenant_items(parent, f"n{uuid.uuid4().hex[:6]}")
    quiet.put("q", Item())
    results: dict[str, tuple[float, float]] = {}
    with FairScheduler(WORKERS) as scheduler:
        results["alone, fair scheduler"], results["with noise, fair scheduler"] = _alone_and_noisy(
            scheduler, quiet, noisy, seconds
        )
    results["alone, no scheduler"], results["with noise, no scheduler"] = _alone_and_noisy(None, quiet, noisy, seconds)
    return results


def isolation_rows(ctx: Context) -> list[Result]:
    """Rows of the isolation run (ratios to the quiet tenant alone, same scheduling)."""
    figures = isolation(ctx.store("isolation"), 1.0 if ctx.options.quick else 3.0)
    rows = []
    for label in ("fair scheduler", "no scheduler"):
        alone = figures[f"alone, {label}"]
        for key in (f"alone, {label}", f"with noise, {label}"):
            median, p99 = figures[key]
            note = f"p99 {p99 / alone[1]:.2f}x of alone" if key.startswith("with") else ""
            rows.append(
                Result("quiet tenant under a noisy one", key, "µs", median, p99, p99 / alone[1], "alone", note=note)
            )
    return rows


def tenancy(ctx: Context) -> list[Result]:
    """The ``tenancy`` bench of ``python -m benchmarks``: overhead rows, then isolation rows."""
    return overhead(ctx) + append_overhead(ctx) + read_overhead(ctx) + isolation_rows(ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with EmbeddedServer() as server:
        parent = rxstate.connect(server.client(), namespace="bench", reap_interval=None)
        from benchmarks.timing import interleaved_us

        contenders = overhead_contenders(parent, server.url, _has_limits())
        times = interleaved_us({c.name: c.fn for c in contenders}, args.n, warmup=300)
        base = statistics.median(times[contenders[0].name])
        print(f"{'put':42} {'median µs':>10} {'p99 µs':>10} {'ratio':>7}")
        for c in contenders:
            median, p99 = median_p99(times[c.name])
            print(f"{c.name:42} {median:10.1f} {p99:10.1f} {median / base:7.2f}")
        print()
        appends = append_contenders(parent)
        times = interleaved_us({c.name: c.fn for c in appends}, args.n, warmup=300)
        base = statistics.median(times[appends[0].name])
        projected = statistics.median(times[appends[3].name])
        print(f"{'append':42} {'median µs':>10} {'p99 µs':>10} {'ratio':>7}")
        for j, c in enumerate(appends):
            median, p99 = median_p99(times[c.name])
            print(f"{c.name:42} {median:10.1f} {p99:10.1f} {median / (base if j < 3 else projected):7.2f}")
        print()
        reads, stores = read_contenders(parent)
        times = interleaved_us({c.name: c.fn for c in reads}, args.n, warmup=300)
        for store in stores:
            store.close()
        base = statistics.median(times[reads[0].name])
        print(f"{'read':42} {'median µs':>10} {'p99 µs':>10} {'ratio':>7}")
        for c in reads:
            median, p99 = median_p99(times[c.name])
            print(f"{c.name:42} {median:10.1f} {p99:10.1f} {median / base:7.2f}")
        print()
        print(f"{'quiet tenant':42} {'median µs':>10} {'p99 µs':>10}")
        for key, (median, p99) in isolation(parent, args.seconds).items():
            print(f"{key:42} {median:10.1f} {p99:10.1f}")
        parent.close()


if __name__ == "__main__":
    main()
