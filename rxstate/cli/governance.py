"""``rxstate audit check`` (policy checks, exit 1 on a failure, for CI) and ``rxstate retention``.

Example:
    >>> from typer.testing import CliRunner
    >>> CliRunner().invoke(audit_app, ["check", "--help"]).exit_code
    0
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rxstate.admin.governance import apply_retention, check_policies, set_retention
from rxstate.cli import render
from rxstate.cli.admin import DataPath, Json, Namespace, Url, admin_client, out

__all__ = ["audit_app", "app", "register"]

audit_app = typer.Typer(help="Policy checks.", no_args_is_help=True)
app = typer.Typer(help="Retention.", no_args_is_help=True)
_STYLE = {"ok": "green", "fail": "red"}


@audit_app.command("check")
def check(url: Url = None, path: DataPath = None, namespace: Namespace = "default", json: Json = False) -> None:
    """Check encryption of classified fields, retention, and least privilege; exit 1 if one fails."""
    with admin_client(url, path) as client:
        report = check_policies(client, namespace)
    if json:
        render.print_json(
            {"namespace": namespace, "ok": not report.failures, "findings": [vars(f) for f in report.findings]}
        )
    else:
        table = Table("check", "status", "subject", "detail", title=f"policy checks of {namespace!r}")
        for f in report.findings:
            table.add_row(f.check, f"[{_STYLE[f.status]}]{f.status}[/]", f.subject, f.detail)
        out().print(table)
    raise typer.Exit(report.exit_code())


@app.command("retention")
def retention_command(
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    max_age: Annotated[float | None, typer.Option("--max-age", help="set: keep this many hours")] = None,
    max_len: Annotated[int | None, typer.Option("--max-len", help="set: keep this many entries per stream")] = None,
    archive: Annotated[Path | None, typer.Option("--archive", help="append what is trimmed to this file first")] = None,
) -> None:
    """Set the retention policy (--max-age/--max-len), or apply it (trim change streams and event logs)."""
    with admin_client(url, path) as client:
        if max_age is not None or max_len is not None:
            age = None if max_age is None else int(max_age * 3_600_000)
            policy = set_retention(client, namespace, max_age_ms=age, max_len=max_len)
            out().print(f"retention of {namespace!r}: max_age_ms={policy.max_age_ms}, max_len={policy.max_len}")
            return
        report = apply_retention(client, namespace, archive=archive)
    out().print(", ".join(f"trimmed {n} {kind} entries" for kind, n in report.trimmed.items()))


def register(root: typer.Typer, audit: typer.Typer) -> None:
    """Add ``retention`` to the ``rxstate`` command and ``check`` to its ``audit`` group."""
    root.registered_commands.extend(app.registered_commands)
    audit.registered_commands.extend(audit_app.registered_commands)
