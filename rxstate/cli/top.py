"""``rxstate top``: the metrics of running stores, live, from their ``rxstate.metrics.serve`` endpoint."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from rxstate.core.errors import ValidationError

if TYPE_CHECKING:  # the metrics extra is optional: ``top`` imports it when it runs
    from rxstate.metrics.scrape import Snapshot

__all__ = ["tables", "top"]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def tables(snap: Snapshot, previous: Snapshot | None = None, elapsed: float = 0.0) -> Group:
    """The operations table (count, rate since ``previous``, latency) and the per-namespace health table.

    Example:
        >>> from rxstate.metrics.scrape import Snapshot
        >>> tables(Snapshot()).renderables[0].row_count
        0
    """
    before = {(o.namespace, o.kind, o.op, o.collection): o.count for o in previous.operations} if previous else {}
    ops = Table(title="operations", title_justify="left")
    for name in ("namespace", "kind", "op", "collection", "count", "rate/s", "mean ms", "p50 ms", "p99 ms"):
        ops.add_column(name, justify="right" if name[0] in "crmp" and name != "collection" else "left")
    for o in snap.operations:
        key = (o.namespace, o.kind, o.op, o.collection)
        rate = (o.count - before.get(key, 0.0)) / elapsed if previous is not None and elapsed > 0 else 0.0
        ops.add_row(
            o.namespace, o.kind, o.op, o.collection or "-", f"{o.count:.0f}", f"{rate:.0f}",
            _ms(o.mean), _ms(o.quantile(0.5)), _ms(o.quantile(0.99)),
        )
    health = Table(title="stores", title_justify="left")
    columns = ("namespace", "cache hit %", "entries", "inval p99 ms", "feed lag ms", "script errors", "pool use/idle")
    for name in columns:
        health.add_column(name, justify="left" if name == "namespace" else "right")
    namespaces = sorted({ns for _name, ns in snap.gauges} | {o.namespace for o in snap.operations})
    for ns in namespaces:
        g = {name: value for (name, n), value in snap.gauges.items() if n == ns}
        errors = sum(v for (n, _s, _e), v in snap.errors.items() if n == ns)
        lag = g.get("rxstate_feed_lag_seconds")
        inval = g.get("rxstate_invalidation_delay_seconds:0.99")
        health.add_row(
            ns,
            f"{g['rxstate_cache_hit_ratio'] * 100:.1f}" if "rxstate_cache_hit_ratio" in g else "-",
            f"{g.get('rxstate_cache_entries', 0):.0f}",
            _ms(inval) if inval is not None else "-",
            _ms(lag) if lag is not None else "-",
            f"{errors:.0f}",
            f"{g.get('rxstate_pool_connections:in_use', 0):.0f}/{g.get('rxstate_pool_connections:idle', 0):.0f}",
        )
    return Group(ops, health)


def top(
    url: Annotated[str, typer.Argument(help="a metrics endpoint (rxstate.metrics.serve)")] = (
        "http://127.0.0.1:9464/metrics"
    ),
    interval: Annotated[float, typer.Option(help="seconds between refreshes")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="print one table and exit")] = False,
) -> None:
    """Show the operations, latencies, cache hit rate and feed lag of running stores, refreshed live."""
    if interval <= 0:
        raise ValidationError(f"--interval must be positive, not {interval}", field="interval")
    from rxstate.metrics.scrape import fetch

    console = Console(highlight=False)
    snap, at = fetch(url), time.monotonic()
    if once:
        console.print(tables(snap))
        return
    with Live(tables(snap), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)
                latest, now = fetch(url), time.monotonic()
                live.update(tables(latest, snap, now - at))
                snap, at = latest, now
        except KeyboardInterrupt:
            return
