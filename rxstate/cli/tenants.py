"""``rxstate tenants``: the tenants of a namespace (needs an administrator's URL).

Example:
    >>> from typer.testing import CliRunner
    >>> CliRunner().invoke(app, ["list", "--url", "redis://127.0.0.1:6379/0", "-n", "crew"])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rxstate.api import connect
from rxstate.cli.principals import DataPath, Json, Url
from rxstate.cli.progress import rich_steps
from rxstate.cli.target import Target
from rxstate.core.errors import RxStateError
from rxstate.tenancy import Limits, Tenants, export_tenant, import_tenant

__all__ = ["app"]

app = typer.Typer(name="tenants", help="Create, list, suspend, resume, export, import and delete tenants.")

Namespace = Annotated[str, typer.Option("--namespace", "-n", help="the parent namespace")]
Name = Annotated[str, typer.Argument(help="the tenant's name")]
MaxEntities = Annotated[int | None, typer.Option("--max-entities", help="quota: entities")]
MaxBytes = Annotated[int | None, typer.Option("--max-bytes", help="quota: stored bytes")]
MaxEvents = Annotated[int | None, typer.Option("--max-events", help="quota: events in its event collections")]
Rate = Annotated[float | None, typer.Option("--rate", help="writes per second of the tenant")]
Burst = Annotated[int | None, typer.Option("--burst", help="the tenant's bucket size")]
PRate = Annotated[float | None, typer.Option("--principal-rate", help="writes per second of each principal")]


@contextlib.contextmanager
def _tenants(url: str | None, path: Path | None, namespace: str) -> Iterator[Tenants]:
    """The registry of the namespace; errors become one line on stderr and exit code 1."""
    try:
        with (
            Target(url, path, namespace).client() as client,
            connect(client, namespace=namespace, cache=False, reap_interval=None) as store,
        ):
            yield Tenants(store)
    except (RxStateError, redis.RedisError) as exc:
        Console(stderr=True, highlight=False).print(Text(f"rxstate: {exc}"))
        raise typer.Exit(1) from None


def _row(tenants: Tenants, name: str) -> dict[str, Any]:
    config = tenants.get(name)
    usage = tenants.usage(name)
    return {
        "name": name,
        "namespace": tenants.namespace_of(name),
        "status": config.status,
        "partitions": config.partitions,
        "retention": config.retention,
        "limits": config.limits.to_dict(),
        "effective": tenants.effective(name).to_dict(),
        "usage": {"entities": usage.entities, "bytes": usage.bytes, "events": usage.events},
        "costs": {
            "operations": usage.operations,
            "bytes_written": usage.bytes_written,
            "reads": usage.reads,
            "bytes_read": usage.bytes_read,
        },
    }


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        Console(highlight=False).print_json(json.dumps(data))


@app.command("create")
def create(
    name: Name,
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    partitions: Annotated[int, typer.Option("--partitions", help="partition count (fixed)")] = 1,
    retention: Annotated[
        int, typer.Option("--retention", help="change records kept per partition (a cap that trims)")
    ] = 10_000,
    max_entities: MaxEntities = None,
    max_bytes: MaxBytes = None,
    rate: Rate = None,
    burst: Burst = None,
    principal_rate: PRate = None,
    max_events: MaxEvents = None,
    json_: Json = False,
) -> None:
    """Create a tenant with its limits (unset ones fall back to the namespace defaults)."""
    with _tenants(url, path, namespace) as tenants:
        limits = Limits(max_entities, max_bytes, rate, burst, principal_rate, max_events=max_events)
        tenants.create(name, limits=limits, partitions=partitions, retention=retention)
        _print(_row(tenants, name), json_)


@app.command("list")
def list_tenants(url: Url = None, path: DataPath = None, namespace: Namespace = "default", json_: Json = False) -> None:
    """List the tenants with their status and partitions."""
    with _tenants(url, path, namespace) as tenants:
        rows = [{"name": c.name, "status": c.status, "partitions": str(c.partitions)} for c in tenants.list()]
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("tenant", "status", "partitions")
    for r in rows:
        table.add_row(r["name"], r["status"], r["partitions"])
    Console().print(table)


@app.command("show")
def show(
    name: Name, url: Url = None, path: DataPath = None, namespace: Namespace = "default", json_: Json = False
) -> None:
    """Show a tenant's configuration, effective limits, usage and costs."""
    with _tenants(url, path, namespace) as tenants:
        _print(_row(tenants, name), json_)


@app.command("suspend")
def suspend(name: Name, url: Url = None, path: DataPath = None, namespace: Namespace = "default") -> None:
    """Refuse every write of the tenant (reads still work)."""
    with _tenants(url, path, namespace) as tenants:
        tenants.suspend(name)
    typer.echo(f"suspended {name}")


@app.command("resume")
def resume(name: Name, url: Url = None, path: DataPath = None, namespace: Namespace = "default") -> None:
    """Accept the tenant's writes again."""
    with _tenants(url, path, namespace) as tenants:
        tenants.resume(name)
    typer.echo(f"resumed {name}")


@app.command("export")
def export(
    name: Name,
    out: Annotated[Path, typer.Argument(help="the file to write (.jsonl.gz)")],
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
) -> None:
    """Write the tenant to a file (gzip JSON lines; see rxstate.tenancy.archive)."""
    with _tenants(url, path, namespace) as tenants:
        n = export_tenant(tenants, name, out)
    typer.echo(f"exported {n} keys of {name} to {out}")


@app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="a file written by `rxstate tenants export`")],
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    name: Annotated[str | None, typer.Option("--as", help="restore under this name")] = None,
) -> None:
    """Restore a tenant from an export."""
    with _tenants(url, path, namespace) as tenants:
        config = import_tenant(tenants, source, name=name)
    typer.echo(f"imported {config.name}")


@app.command("delete")
def delete(
    name: Name,
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
) -> None:
    """Remove a tenant: its principals, every key (in batches, with a progress bar), its entry."""
    if not yes:
        typer.confirm(f"delete tenant {name} and all its data?", abort=True)
    with _tenants(url, path, namespace) as tenants:
        total = sum(1 for _ in tenants.keys(name))
        with rich_steps()(f"deleting {name}", total) as tick:
            n = tenants.delete(name, progress=tick)
    typer.echo(f"deleted {name}: {n} keys")


@app.command("report")
def report(url: Url = None, path: DataPath = None, namespace: Namespace = "default", json_: Json = False) -> None:
    """Usage and costs of every tenant, as a table."""
    with _tenants(url, path, namespace) as tenants:
        rows = [_row(tenants, c.name) for c in tenants.list()]
    if json_:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    table = Table(
        "tenant",
        "status",
        "entities",
        "bytes",
        "events",
        "operations",
        "bytes written",
        "reads",
        "bytes read",
        title=f"tenants of {namespace}",
    )
    for r in rows:
        limit, use = r["effective"], r["usage"]

        def of(used: str, quota: str) -> str:
            return f"{use[used]}" + (f" / {limit[quota]}" if quota in limit else "")  # noqa: B023 - used at once

        table.add_row(
            r["name"],
            r["status"],
            of("entities", "max_entities"),
            of("bytes", "max_bytes"),
            of("events", "max_events"),
            str(r["costs"]["operations"]),
            str(r["costs"]["bytes_written"]),
            str(r["costs"]["reads"]),
            str(r["costs"]["bytes_read"]),
        )
    Console().print(table)
