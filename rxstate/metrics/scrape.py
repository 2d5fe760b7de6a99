"""Reading a metrics endpoint back: the figures ``rxstate top`` shows, from the Prometheus text format.

Example:
    >>> import rxstate.metrics
    >>> snap = Snapshot.parse(rxstate.metrics.text())
    >>> isinstance(snap.operations, list)
    True
"""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from rxstate.core.errors import ServerError

__all__ = ["Operation", "Snapshot", "fetch", "quantile"]


@dataclass
class Operation:
    """One timed operation: its labels, how many ran, their total time and latency buckets."""

    namespace: str
    kind: str
    op: str
    collection: str
    count: float = 0.0
    total: float = 0.0
    buckets: list[tuple[float, float]] = field(default_factory=list)  # (upper bound, cumulative count)

    @property
    def mean(self) -> float:
        """Mean latency in seconds (0 before the first)."""
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """The ``q`` quantile's bucket bound in seconds (what Prometheus' ``histogram_quantile`` estimates)."""
        return quantile(self.buckets, q)


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Linear interpolation within the bucket holding the ``q`` quantile, as ``histogram_quantile`` does.

    Example:
        >>> round(quantile([(0.001, 50.0), (0.01, 100.0), (math.inf, 100.0)], 0.75), 6)
        0.0055
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] == 0:
        return 0.0
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            span = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / span if span else 1.0)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass
class Snapshot:
    """The figures of one scrape, per namespace where a figure has one."""

    operations: list[Operation] = field(default_factory=list)
    errors: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (namespace, script, error)
    gauges: dict[tuple[str, str], float] = field(default_factory=dict)  # (metric[:label], namespace)

    @classmethod
    def parse(cls, exposition: str) -> Snapshot:
        """Read the Prometheus text format."""
        snap = cls()
        ops: dict[tuple[str, str, str, str], Operation] = {}
        for family in text_string_to_metric_families(exposition):
            for sample in family.samples:
                if sample.name.endswith("_created"):  # creation times of counters: no figure to show
                    continue
                labels = sample.labels
                if family.name == "rxstate_operation_seconds":
                    key = (labels["namespace"], labels["kind"], labels["op"], labels["collection"])
                    op = ops.setdefault(key, Operation(*key))
                    if sample.name.endswith("_bucket"):
                        op.buckets.append((float(labels["le"]), sample.value))
                    elif sample.name.endswith("_count"):
                        op.count = sample.value
                    elif sample.name.endswith("_sum"):
                        op.total = sample.value
                elif family.name == "rxstate_script_errors" and sample.name.endswith("_total"):
                    snap.errors[(labels["namespace"], labels["script"], labels["error"])] = sample.value
                elif family.name.startswith("rxstate_") and "namespace" in labels:
                    extra = labels.get("quantile") or labels.get("state")
                    name = f"{family.name}:{extra}" if extra else family.name
                    snap.gauges[(name, labels["namespace"])] = sample.value
        snap.operations = sorted(ops.values(), key=lambda o: (o.namespace, o.kind, o.op, o.collection))
        return snap


def fetch(url: str, timeout: float = 5.0) -> Snapshot:
    """Scrape ``url`` (a ``rxstate.metrics.serve`` endpoint) once.

    Raises:
        ServerError: the endpoint cannot be reached.

    Example:
        >>> fetch("http://127.0.0.1:9464/metrics")  # doctest: +SKIP
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return Snapshot.parse(reply.read().decode())
    except OSError as exc:
        raise ServerError(f"cannot read metrics from {url}: {exc}") from exc
