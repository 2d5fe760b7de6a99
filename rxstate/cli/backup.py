"""``rxstate backup``, ``restore``, ``archive`` and ``recover``: backups and point-in-time recovery.

Example:
    >>> from typer.testing import CliRunner
    >>> CliRunner().invoke(app, ["backup", "--help"]).exit_code
    0
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from rxstate.admin.archive import ChangeArchive
from rxstate.admin.backup import backup as write_backup
from rxstate.admin.replay import recover as run_recovery
from rxstate.admin.restore import restore as run_restore
from rxstate.cli import render
from rxstate.cli.admin import DataPath, Json, Namespace, Url, admin_client, err, failing, out
from rxstate.core.errors import ValidationError

__all__ = ["app", "register"]

app = typer.Typer(help="Backups and point-in-time recovery.", no_args_is_help=True)

File = Annotated[Path, typer.Argument(help="the backup file")]
Into = Annotated[str | None, typer.Option("--into", help="restore into this namespace (default: the one backed up)")]


@app.command("backup")
def backup(
    file: File, url: Url = None, path: DataPath = None, namespace: Namespace = "default", json: Json = False
) -> None:
    """Write a consistent backup of the namespace (each partition read atomically) to FILE."""
    with admin_client(url, path) as client:
        manifest = write_backup(client, file, namespace=namespace)
    if json:
        render.print_json(manifest.to_json())
    else:
        out().print(
            f"backed up {manifest.total_keys} keys of {namespace!r} ({manifest.partitions} partitions) to {file}"
        )


@app.command("restore")
def restore(file: File, url: Url = None, path: DataPath = None, into: Into = None, json: Json = False) -> None:
    """Check FILE's checksums, then restore it into an empty namespace (the same or --into)."""
    with admin_client(url, path) as client:
        report = run_restore(client, file, namespace=into)
    if json:
        render.print_json({"namespace": report.namespace, "keys": report.keys, "expired": report.expired})
    else:
        out().print(
            f"restored {report.keys} keys into {report.namespace!r} ({report.expired} expired since the backup)"
        )


@app.command("archive")
def archive(
    file: Annotated[Path, typer.Argument(help="the archive file (appended to, resumed where it ends)")],
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    follow: Annotated[bool, typer.Option("--follow", help="keep archiving until interrupted")] = False,
    interval: Annotated[float, typer.Option("--interval", help="seconds between polls with --follow")] = 0.5,
) -> None:
    """Append the namespace's new change records, audit entries and events to FILE."""
    with admin_client(url, path) as client:
        follower = ChangeArchive(client, namespace, file)
        if not follow:
            out().print(f"archived {follower.poll()} entries to {file}")
            return
        stop = threading.Event()
        try:
            with follower.running(interval=interval):
                stop.wait()
        except KeyboardInterrupt:
            err().print(f"archived {follower.archived} entries to {file}")


def _until(until: str | None) -> int | None:
    if until is None:
        return None
    if until.isdigit():
        return int(until)
    try:
        moment = datetime.fromisoformat(until)
    except ValueError:
        raise ValidationError(f"--until {until!r} is neither server ms nor an ISO time", field="until") from None
    if moment.tzinfo is None:
        raise ValidationError(f"--until {until!r} has no time zone (add +00:00)", field="until")
    return int(moment.timestamp() * 1000)


@app.command("recover")
def recover(
    file: File,
    archive_file: Annotated[Path, typer.Argument(metavar="ARCHIVE", help="the change archive")],
    url: Url = None,
    path: DataPath = None,
    into: Into = None,
    until: Annotated[str | None, typer.Option("--until", help="replay up to this time (ISO or server ms)")] = None,
    until_offset: Annotated[str | None, typer.Option("--until-offset", help="replay up to this stream id")] = None,
    json: Json = False,
) -> None:
    """Restore FILE, then replay ARCHIVE up to --until / --until-offset (default: all of it)."""
    with failing():
        cut = _until(until)
    with admin_client(url, path) as client:
        report = run_recovery(client, file, archive_file, namespace=into, until_ms=cut, until_offset=until_offset)
    assert report.restore is not None
    if json:
        render.print_json(
            {"namespace": report.restore.namespace, "keys": report.restore.keys, "replayed": report.replayed}
        )
    else:
        replayed = ", ".join(f"{n} {s}" for s, n in report.replayed.items())
        out().print(f"restored {report.restore.keys} keys into {report.restore.namespace!r}, replayed {replayed}")


def register(root: typer.Typer) -> None:
    """Add these commands to the ``rxstate`` command."""
    root.registered_commands.extend(app.registered_commands)
