"""``rxstate migrate COLL``: rewrite a collection's older entities through its model's upcasters, or
build an index, online.

The command needs the model: ``--model package.module:Class``, importable where it runs.

Example:
    >>> from typer.testing import CliRunner
    >>> CliRunner().invoke(app, ["migrate", "--help"]).exit_code
    0
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer

from rxstate.admin.migrate import build_index, migrate
from rxstate.api import connect
from rxstate.cli import render
from rxstate.cli.admin import DataPath, Json, Namespace, Url, admin_client, err, out
from rxstate.cli.progress import quiet, rich_steps
from rxstate.core.errors import ValidationError
from rxstate.core.model import Model

__all__ = ["app", "load_model", "register"]

app = typer.Typer(help="Online migrations.", no_args_is_help=True)


def load_model(spec: str) -> type[Model]:
    """The model class named ``package.module:Class``.

    Example:
        >>> load_model("tests.models:Agent").__name__
        'Agent'
    """
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValidationError(f"--model {spec!r}: expected package.module:Class", field="model")
    try:
        found: Any = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValidationError(f"--model {spec!r}: {exc}", field="model") from None
    if not (isinstance(found, type) and issubclass(found, Model)):
        raise ValidationError(f"--model {spec!r} is not an rxstate.Model", field="model")
    return found


@app.command("migrate")
def migrate_command(
    collection: Annotated[str, typer.Argument(metavar="COLL", help="the collection")],
    model: Annotated[str, typer.Option("--model", help="the current model: package.module:Class")],
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only report what would change")] = False,
    rate: Annotated[float | None, typer.Option("--rate", help="the most entities rewritten per second")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="the cursor an earlier run printed")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="stop after this many entities (prints a cursor)")
    ] = None,
    index: Annotated[
        list[str] | None, typer.Option("--index", help="build (or rebuild) an index on this field, online")
    ] = None,
    json: Json = False,
) -> None:
    """Rewrite COLL's entities stored under an older schema version; with --index, build indexes."""
    with admin_client(url, path) as client:
        cls = load_model(model)
        with connect(client, namespace=namespace, reap_interval=None) as store:
            coll = store.collection(collection, cls, indexes=index or ())
            steps = quiet if json else rich_steps(err())
            with steps(f"migrating {collection}", store.keyspace.partitions) as tick:
                report = migrate(
                    coll, dry_run=dry_run, rate=rate, cursor=resume, limit=limit, progress=lambda done, _n: tick(1)
                )
            built = [build_index(coll, f) for f in index or ()] if not dry_run else []
    by_version = {str(k): v for k, v in sorted(report.by_version.items())}
    data: dict[str, Any] = {
        "collection": collection,
        "to_version": report.to_version,
        "dry_run": report.dry_run,
        "scanned": report.scanned,
        "migrated": report.migrated,
        "by_version": by_version,
        "retried": report.retried,
        "failed": [{"id": i, "error": e} for i, e in report.failed],
        "cursor": report.cursor,
        "indexes": [{"field": b.field, "added": b.added, "removed": b.removed} for b in built],
    }
    if json:
        render.print_json(data)
    else:
        verb = "would rewrite" if dry_run else "rewrote"
        versions = ", ".join(f"v{k}: {v}" for k, v in by_version.items()) or "none older"
        out().print(
            f"{collection}: scanned {report.scanned}, {verb} {report.migrated} to v{report.to_version} ({versions})"
        )
        for i, e in report.failed:
            out().print(f"  failed {i}: {e}")
        for b in built:
            out().print(f"  index {b.field}: {b.added} added, {b.removed} stale removed")
        if report.cursor:
            out().print(f"stopped early: resume with --resume {report.cursor}")
    if report.failed:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    """Add this command to the ``rxstate`` command."""
    root.registered_commands.extend(app.registered_commands)
