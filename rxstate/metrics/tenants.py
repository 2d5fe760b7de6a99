"""Tenants' costs as Prometheus metrics: what the write scripts count per tenant (``rxstate.tenancy``),
read from the server when the registry is scraped.

``track_tenants(store)`` registers an administrator's store (the one that holds the tenant registry);
each scrape then reads every tenant's usage counters with one pipelined round trip per tenant and
exports them labelled by namespace and tenant. Nothing is counted here: the figures are the scripts'
own, so every process that writes for a tenant shows up in them, and a scrape of any process reports
the same numbers.

Example:
    >>> tracked = track_tenants(store)
    >>> "rxstate_tenant_operations_total" in rxstate.metrics.text()
    True
    >>> tracked.close()
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from rxstate.metrics.registry import StoresCollector
from rxstate.tenancy.registry import Tenants

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["TENANTS", "TenantCollector", "TrackedTenants", "track_tenants"]

_GAUGES = (
    ("entities", "rxstate_tenant_entities", "Entities a tenant holds"),
    ("bytes", "rxstate_tenant_stored_bytes", "Bytes a tenant's entities take (field names and encoded values)"),
    ("events", "rxstate_tenant_events", "Events held in a tenant's event collections"),
)
_COUNTERS = (
    ("operations", "rxstate_tenant_operations", "Write operations applied for a tenant (event appends included)"),
    ("bytes_written", "rxstate_tenant_bytes_written", "Bytes of the values written for a tenant"),
    ("reads", "rxstate_tenant_reads", "Entities and events read from the server for a tenant"),
    ("bytes_read", "rxstate_tenant_bytes_read", "Bytes read from the server for a tenant"),
)


class TenantCollector(StoresCollector):
    """Reads the usage counters of every tenant of the tracked stores' namespaces at scrape time."""

    def collect(self) -> Iterator[Any]:
        stores = self.open_stores()
        labels = ["namespace", "tenant"]
        gauges = {f: GaugeMetricFamily(name, text, labels=labels) for f, name, text in _GAUGES}
        counters = {f: CounterMetricFamily(name, text, labels=labels) for f, name, text in _COUNTERS}
        suspended = GaugeMetricFamily("rxstate_tenant_suspended", "1 while a tenant is suspended", labels=labels)
        for store in stores:
            for config, usage in Tenants(store).report():
                where = [store.namespace, config.name]
                for metric_field, gauge in gauges.items():
                    gauge.add_metric(where, getattr(usage, metric_field))
                for metric_field, counter in counters.items():
                    counter.add_metric(where, getattr(usage, metric_field))
                suspended.add_metric(where, 1 if config.status == "suspended" else 0)
        yield from (*gauges.values(), *counters.values(), suspended)


TENANTS = TenantCollector()
"""The collector ``track_tenants`` adds stores to (registered in ``rxstate.metrics.REGISTRY``)."""


class TrackedTenants:
    """One store's tenants in the metrics; ``close()`` takes them out."""

    def __init__(self, store: Store) -> None:
        self.store = store
        TENANTS.add(store)

    def close(self) -> None:
        """Stop exporting the tenants of this store's namespace."""
        TENANTS.discard(self.store)

    def __repr__(self) -> str:
        return f"<TrackedTenants of {self.store.namespace!r}>"


def track_tenants(store: Store) -> TrackedTenants:
    """Export the costs of every tenant of ``store``'s namespace (an administrator's store) at each scrape.

    Example:
        >>> track_tenants(store).close()
    """
    return TrackedTenants(store)
