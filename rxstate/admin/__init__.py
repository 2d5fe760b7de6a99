"""rxstate.admin."""

from rxstate.admin.tenants import tenants as tenants
