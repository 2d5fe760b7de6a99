"""``rxstate.admin.tenants(store)``: the tenant registry of a store's namespace (``rxstate.tenancy``)."""

from __future__ import annotations

from typing import Any

from rxstate.tenancy.registry import Tenants

__all__ = ["tenants"]


def tenants(store: Any) -> Tenants:
    """The tenants of ``store``'s namespace (needs an administrator's store).

    Example:
        >>> registry = tenants(store)
        >>> registry.create("acme").partitions
        1
    """
    return Tenants(store)
