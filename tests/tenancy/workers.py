"""Worker processes of the tenancy tests: each writes to one tenant as hard as it can."""

from __future__ import annotations

import time
from typing import Any

import rxstate
from rxstate.core.errors import RateLimited, TenantSuspended


class Item(rxstate.Model):
    n: int = 0


def _tenant(url: str, namespace: str, tenant: str) -> Any:
    parent = rxstate.connect(url, namespace=namespace, cache=False, reap_interval=None)
    return parent, parent.tenant(tenant).collection("items", Item)


def rate_worker(
    url: str, namespace: str, tenant: str, name: str, seconds: float, ready: Any, go: Any, out: Any
) -> None:
    """Write for ``seconds`` after ``go``; report the number of accepted writes."""
    parent, items = _tenant(url, namespace, tenant)
    ready.put(name)
    go.wait(60)
    accepted = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            items.put(f"{name}-{accepted % 10}", Item(n=accepted))
            accepted += 1
        except RateLimited as exc:
            time.sleep(min(exc.retry_after, 0.005))
    out.put(accepted)
    parent.close()


def suspend_worker(url: str, namespace: str, tenant: str, name: str, ready: Any, out: Any) -> None:
    """Write until the tenant's suspension refuses a write; report that, then try 20 more writes."""
    parent, items = _tenant(url, namespace, tenant)
    ready.put(name)
    i = 0
    while True:
        try:
            items.put(f"{name}", Item(n=i))
            i += 1
        except TenantSuspended:
            break
    refused = 0
    for _ in range(20):
        try:
            items.put(f"{name}", Item(n=-1))
        except TenantSuspended:
            refused += 1
    out.put((name, refused))
    parent.close()
