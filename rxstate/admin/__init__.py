"""rxstate.admin: operating a namespace — backup and point-in-time recovery, online migrations,
governance (schema registry, retention, policy checks), erasure of data subjects, capacity, health and
the tenant registry.

Example:
    >>> from rxstate.admin import backup, check_health, migrate, recover
"""

from rxstate.admin.archive import ChangeArchive, read_archive
from rxstate.admin.backup import BackupManifest, backup, read_manifest
from rxstate.admin.capacity import CapacitySample, Forecast, forecast, hot_keys, measure
from rxstate.admin.erasure import ErasureReport, erase
from rxstate.admin.governance import PolicyReport, RetentionPolicy, apply_retention, check_policies, set_retention
from rxstate.admin.health import HealthReport, check_health
from rxstate.admin.migrate import IndexReport, MigrationReport, build_index, downcaster, migrate, rollback
from rxstate.admin.registry import SchemaRegistry
from rxstate.admin.replay import RecoveryReport, recover, replay
from rxstate.admin.restore import RestoreReport, restore, verify
from rxstate.admin.tenants import tenants

__all__ = [
    "BackupManifest",
    "CapacitySample",
    "ChangeArchive",
    "ErasureReport",
    "Forecast",
    "HealthReport",
    "IndexReport",
    "MigrationReport",
    "PolicyReport",
    "RecoveryReport",
    "RestoreReport",
    "RetentionPolicy",
    "SchemaRegistry",
    "apply_retention",
    "backup",
    "build_index",
    "check_health",
    "check_policies",
    "downcaster",
    "erase",
    "forecast",
    "hot_keys",
    "measure",
    "migrate",
    "read_archive",
    "read_manifest",
    "recover",
    "replay",
    "restore",
    "rollback",
    "set_retention",
    "tenants",
    "verify",
]
