"""``rxstate health``: the namespace's and server's health, with exit codes for probes.

``--probe liveness`` exits 0 while the server answers; ``--probe readiness`` (the default) exits 0
unless a check fails. Warnings are printed but pass both.

Example:
    >>> from typer.testing import CliRunner
    >>> CliRunner().invoke(app, ["health", "--help"]).exit_code
    0
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import redis
import typer
from rich.table import Table

from rxstate.admin.health import PROBES, HealthReport, check_health, unreachable
from rxstate.api import connect
from rxstate.cli import render
from rxstate.cli.admin import DataPath, Json, Namespace, Url, failing, out
from rxstate.cli.target import Target
from rxstate.core.errors import ServerError, ValidationError

__all__ = ["app", "register"]

app = typer.Typer(help="Health checks.", no_args_is_help=True)
_STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


@app.command("health")
def health(
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    probe: Annotated[
        str, typer.Option("--probe", help="liveness or readiness (what the exit code says)")
    ] = "readiness",
    json: Json = False,
) -> None:
    """Check the server, persistence, replication, feed lag, cache, reaper and pending transactions."""
    with failing():
        if probe not in PROBES:
            raise ValidationError(f"--probe must be one of {', '.join(PROBES)}, not {probe!r}", field="probe")
        report = _report(url, path, namespace)
    if json:
        render.print_json(report.as_json())
    else:
        table = Table("check", "status", "detail", title=f"health of {namespace!r}: {report.status}")
        for c in report.checks:
            table.add_row(c.name, f"[{_STYLE[c.status]}]{c.status}[/]", c.detail)
        out().print(table)
    raise typer.Exit(report.exit_code(probe))


def _report(url: str | None, path: Path | None, namespace: str) -> HealthReport:
    try:
        with (
            Target(url, path, namespace).client() as client,
            connect(client, namespace=namespace, read_only=True, reap_interval=None) as store,
        ):
            return check_health(store)
    except (redis.ConnectionError, redis.TimeoutError, ServerError) as exc:
        return unreachable(namespace, exc)


def register(root: typer.Typer) -> None:
    """Add this command to the ``rxstate`` command."""
    root.registered_commands.extend(app.registered_commands)
