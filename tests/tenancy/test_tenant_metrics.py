"""Tenants' costs in the metrics exporter: the scripts' counters, read at scrape time."""

from __future__ import annotations

import rxstate
import rxstate.metrics
from rxstate.metrics.scrape import Snapshot
from tests.tenancy.workers import Item


def _samples(text: str, name: str) -> dict[str, float]:
    """``{tenant: value}`` of metric ``name`` in an exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            tenant = next(p.split("=", 1)[1].strip('"') for p in labels.split(",") if p.startswith("tenant="))
            out[tenant] = float(value)
    return out


def test_the_exporter_shows_each_tenants_costs(admin, tenants):
    tenants.create("acme", partitions=2)
    tenants.create("globex", partitions=1)
    acme = admin.tenant("acme").collection("items", Item)
    for i in range(3):
        acme.put(f"i{i}", Item(n=i))
    acme.update("i0", n=7)
    admin.tenant("globex").collection("items", Item).put("g", Item(n=1))
    tenants.suspend("globex")
    tracked = rxstate.metrics.track_tenants(admin)
    try:
        text = rxstate.metrics.text()
        usage = tenants.usage("acme")
        assert _samples(text, "rxstate_tenant_entities") == {"acme": 3, "globex": 1}
        assert _samples(text, "rxstate_tenant_operations_total")["acme"] == usage.operations == 4
        assert _samples(text, "rxstate_tenant_stored_bytes")["acme"] == usage.bytes > 0
        assert _samples(text, "rxstate_tenant_bytes_written_total")["acme"] == usage.bytes_written > 0
        assert _samples(text, "rxstate_tenant_suspended") == {"acme": 0, "globex": 1}
        Snapshot.parse(text)  # `rxstate top` still reads the exposition
        acme.delete("i1")
        assert _samples(rxstate.metrics.text(), "rxstate_tenant_entities")["acme"] == 2  # read at each scrape
    finally:
        tracked.close()
    assert "rxstate_tenant_entities{" not in rxstate.metrics.text()
