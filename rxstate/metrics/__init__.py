"""Metrics of rxstate stores: latency histograms per operation, cache hit rate, invalidation delay,
change-feed lag, script errors, connection-pool use and tenants' costs (``track_tenants``), exported
for Prometheus and as OpenTelemetry spans (optional extra ``metrics``: ``pip install 'rxstate[metrics]'``).

Example:
    >>> metrics = rxstate.metrics.instrument(store)
    >>> endpoint = rxstate.metrics.serve(0)   # http://127.0.0.1:<port>/metrics; `rxstate top` shows it live
    >>> endpoint.stop(); metrics.close()
"""

from __future__ import annotations

try:
    import prometheus_client  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed in tests
    raise ImportError("rxstate.metrics needs prometheus-client: pip install 'rxstate[metrics]'") from exc

from rxstate.metrics.exporter import MetricsServer, serve, text
from rxstate.metrics.instrument import COLLECTOR, Metrics, instrument
from rxstate.metrics.registry import REGISTRY
from rxstate.metrics.tenants import TENANTS, TrackedTenants, track_tenants

REGISTRY.register(COLLECTOR)
REGISTRY.register(TENANTS)

__all__ = ["REGISTRY", "Metrics", "MetricsServer", "TrackedTenants", "instrument", "serve", "text", "track_tenants"]
