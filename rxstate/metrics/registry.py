"""The Prometheus metrics of rxstate stores, in one registry of their own (``REGISTRY``).

Timings and errors are recorded as they happen (``rxstate_operation_seconds``,
``rxstate_script_errors_total``); what a store already counts (its cache, its change feed, its connection
pools) is read when the registry is scraped, by ``StoreCollector``, so it costs nothing in between.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from rxstate.cache.stats import parse_offset

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["ERRORS", "LATENCY", "REGISTRY", "StoreCollector", "StoresCollector"]

REGISTRY = CollectorRegistry(auto_describe=True)
"""Every rxstate metric (``rxstate.metrics.serve`` exports this registry)."""

_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

LATENCY = Histogram(
    "rxstate_operation_seconds",
    "Latency of store operations: writes by script, reads by operation and collection",
    ["namespace", "kind", "op", "collection"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
ERRORS = Counter(
    "rxstate_script_errors_total",
    "Write script calls refused or failed, by script and error type",
    ["namespace", "script", "error"],
    registry=REGISTRY,
)


class StoresCollector(Collector):
    """A collector of figures read from a set of stores at scrape time (held weakly: a store that is
    garbage-collected drops out; a closed one is skipped). Subclasses say what they read (``collect``)."""

    def __init__(self) -> None:
        self._stores: weakref.WeakSet[Store] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, store: Store) -> None:
        with self._lock:
            self._stores.add(store)

    def discard(self, store: Store) -> None:
        with self._lock:
            self._stores.discard(store)

    def open_stores(self) -> list[Store]:
        """The stores added and not closed."""
        with self._lock:
            return [s for s in self._stores if not s._closed.is_set()]


class StoreCollector(StoresCollector):
    """Reads the cache, change-feed and connection-pool figures of the instrumented stores at scrape time."""

    def collect(self) -> Iterator[Any]:
        stores = self.open_stores()
        ns = ["namespace"]
        hits = CounterMetricFamily("rxstate_cache_hits", "Reads answered from the local cache", labels=ns)
        misses = CounterMetricFamily("rxstate_cache_misses", "Reads that went to the server", labels=ns)
        ratio = GaugeMetricFamily("rxstate_cache_hit_ratio", "Cache hits over all cached reads", labels=ns)
        entries = GaugeMetricFamily("rxstate_cache_entries", "Entities held by the local cache", labels=ns)
        delay = GaugeMetricFamily(
            "rxstate_invalidation_delay_seconds",
            "Delay from a write's reply to its invalidation's arrival (observed quantiles)",
            labels=[*ns, "quantile"],
        )
        lag = GaugeMetricFamily(
            "rxstate_feed_lag_seconds", "How far the change feed trails the newest change record", labels=ns
        )
        delivered = CounterMetricFamily("rxstate_feed_delivered", "Changes delivered to subscribers", labels=ns)
        pool = GaugeMetricFamily("rxstate_pool_connections", "Connections of the store's pools", labels=[*ns, "state"])
        for store in stores:
            name = [store.namespace]
            cache = store._cache
            if cache is not None:
                stats = cache.stats()
                hits.add_metric(name, stats.hits)
                misses.add_metric(name, stats.misses + stats.bypassed)
                ratio.add_metric(name, stats.hit_rate)
                entries.add_metric(name, stats.entries)
                for q, value in (("0.5", stats.delay_p50_ms), ("0.99", stats.delay_p99_ms), ("1", stats.delay_max_ms)):
                    if value is not None:
                        delay.add_metric([*name, q], value / 1000)
            feed_lag = _feed_lag(store)
            if feed_lag is not None:
                lag.add_metric(name, feed_lag[0])
                delivered.add_metric(name, feed_lag[1])
            in_use, idle = pool_use(store.client)
            pool.add_metric([*name, "in_use"], in_use)
            pool.add_metric([*name, "idle"], idle)
        yield from (hits, misses, ratio, entries, delay, lag, delivered, pool)


def _feed_lag(store: Store) -> tuple[float, int] | None:
    """(seconds the store's running change feed trails the newest record of any partition, changes delivered).

    The lag is the distance between stream ids (milliseconds of the server's clock), so no clock of this
    machine enters it.
    """
    from rxstate.feed.reader import ChangeFeed

    feed = store.running(ChangeFeed)
    if feed is None or feed.stopped:
        return None
    positions = dict(feed.positions)
    pipe = store.client.pipeline(transaction=False)
    parts = sorted(positions)
    for p in parts:
        pipe.xrevrange(store.keyspace.changes(p), count=1)
    worst = 0
    for p, newest in zip(parts, pipe.execute(), strict=True):
        if newest and parse_offset(newest[0][0].decode()) > parse_offset(positions[p]):
            behind = parse_offset(newest[0][0].decode())[0] - parse_offset(positions[p])[0]
            worst = max(worst, behind, 1)
    return worst / 1000, feed.metrics()["delivered"]


def pool_use(client: Any) -> tuple[int, int]:
    """(connections in use, idle) over a client's pools (every node's, on a cluster).

    Example:
        >>> in_use, idle = pool_use(store.client)
        >>> in_use + idle >= 1  # the store's connections
        True
    """
    pools = [client.connection_pool] if hasattr(client, "connection_pool") else []
    if hasattr(client, "get_nodes"):
        pools = [n.redis_connection.connection_pool for n in client.get_nodes() if n.redis_connection is not None]
    in_use = idle = 0
    for pool in pools:
        in_use += len(getattr(pool, "_in_use_connections", ()))
        idle += len(getattr(pool, "_available_connections", ()))
    return in_use, idle
