"""Event sourcing rows: rxstate appends and replays against raw ``XADD``/``XRANGE`` and ``eventsourcing``.

The workloads are those of ``bench_events`` (the detailed script), so both measure the same thing.
"""

from __future__ import annotations

import statistics

from benchmarks.bench_events import (
    Added,
    Counter,
    apply,
    es_appender,
    es_apps,
    raw_event,
    replay_contenders,
    replay_times,
)
from benchmarks.harness import Contender, Context, Result, latency_group, rate_result, ratio_at_most

__all__ = ["append", "replay"]


def append(ctx: Context) -> list[Result]:
    """One event per call: ``append`` (alone and with a projection) against one raw ``XADD``."""
    store = ctx.store("events")
    plain = store.events("counters", state=Counter, events=[Added], reducer=apply, snapshot_every=100)
    projected = store.events(
        "pcounters", state=Counter, events=[Added], reducer=apply, snapshot_every=100, project_to="counter_view"
    )
    ev = [Added(n=1, tag="x")]
    contenders = [
        Contender("raw XADD", raw_event(ctx.client(), f"raw:{ctx.namespace('stream')}")),
        Contender(
            "rxstate append 1 event",
            lambda i: plain.append(f"a{i % 50}", ev),
            ratio_at_most(1.5, "XADD"),
            "snapshot every 100 events",
        ),
        Contender(
            "rxstate append 1 event + projection",
            lambda i: projected.append(f"a{i % 50}", ev),
            ratio_at_most(2, "XADD"),
            "projection written in the same script",
        ),
    ]
    if ctx.peers:
        for name, make in es_apps(ctx.tmp).items():
            contenders.append(Contender(f"{name} save of 1 event", es_appender(make()), note="in-process"))
    return latency_group("event append", contenders, ctx.n)


def replay(ctx: Context) -> list[Result]:
    """Replaying one stream (events/s): rxstate and ``eventsourcing`` against raw ``XRANGE`` + ``json.loads``."""
    store = ctx.store("replay")
    events = ctx.options.scaled(20_000, min(2_000, 10 * ctx.n))
    contenders = replay_contenders(store, ctx.tmp, events, peers=ctx.peers)
    times = replay_times(contenders, ctx.options.scaled(7, 3))
    group = f"replay of {events:,} events"
    names = list(contenders)
    base_name = names[0]
    base = contenders[base_name][1] / statistics.median(times[base_name])
    return [
        rate_result(group, name, times[name], contenders[name][1], base, unit="events/s", baseline=base_name)
        for name in names
    ]
