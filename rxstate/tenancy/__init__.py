"""Tenants: isolated namespaces ``<ns>/<tenant>`` with quotas, rate limits, suspension and cost counters.

``store.tenant("acme")`` opens a tenant's store; ``rxstate.admin.tenants(store)`` is the registry
(create, configure, suspend, resume, export, import, delete); ``FairScheduler`` serves several
tenants' work fairly over a bounded pool; ``ReadCosts`` counts a tenant store's reads (flushed, see
``rxstate.tenancy.reads``). See ``rxstate.tenancy.registry`` and the README, "Tenants".
"""

from rxstate.tenancy.archive import export_tenant, import_tenant
from rxstate.tenancy.config import DEFAULT_PARTITIONS, Limits, TenantConfig, validate_tenant_name
from rxstate.tenancy.reads import ReadCosts
from rxstate.tenancy.registry import Tenants, Usage
from rxstate.tenancy.scheduler import FairScheduler
from rxstate.tenancy.stage import attach, enable

__all__ = [
    "DEFAULT_PARTITIONS",
    "FairScheduler",
    "Limits",
    "ReadCosts",
    "TenantConfig",
    "Tenants",
    "Usage",
    "attach",
    "enable",
    "export_tenant",
    "import_tenant",
    "validate_tenant_name",
]
