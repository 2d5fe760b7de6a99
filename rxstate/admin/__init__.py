"""rxstate.admin: operating a namespace — backup and point-in-time recovery, migrations, health.

Example:
    >>> from rxstate.admin import backup, recover
"""

from rxstate.admin.archive import ChangeArchive, read_archive
from rxstate.admin.backup import BackupManifest, backup, read_manifest
from rxstate.admin.replay import RecoveryReport, recover, replay
from rxstate.admin.restore import RestoreReport, restore, verify

__all__ = [
    "BackupManifest",
    "ChangeArchive",
    "RecoveryReport",
    "RestoreReport",
    "backup",
    "read_archive",
    "read_manifest",
    "recover",
    "replay",
    "restore",
    "verify",
]
