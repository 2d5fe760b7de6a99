"""``rxstate erase SUBJECT``: erase a data subject from the given collections and destroy their key.

Each collection is named with its model, ``--collection NAME=package.module:Class`` (repeatable), the
model declaring ``__subject__``; ``--kek-env`` names the environment variable holding the KEK where
finding the subject's entities needs secret fields read (a subject field that is itself secret).
Event collections need their reducer, so they are erased from Python (``rxstate.admin.erase``).

Example:
    >>> from typer.testing import CliRunner
    >>> CliRunner().invoke(app, ["erase", "--help"]).exit_code
    0
"""

from __future__ import annotations

import json as jsonlib
from typing import Annotated, Any

import typer

from rxstate.admin.erasure import erase
from rxstate.api import connect
from rxstate.cli import render
from rxstate.cli.admin import DataPath, Json, Namespace, Url, admin_client, out
from rxstate.cli.migrate import load_model
from rxstate.core.errors import ValidationError
from rxstate.security import EnvKeyProvider

__all__ = ["app", "register"]

app = typer.Typer(help="Erasure of data subjects.", no_args_is_help=True)


def _pairs(specs: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for spec in specs:
        name, sep, model = spec.partition("=")
        if not sep or not name or not model:
            raise ValidationError(f"--collection {spec!r}: expected NAME=package.module:Class", field="collection")
        pairs.append((name, model))
    return pairs


@app.command("erase")
def erase_command(
    subject: Annotated[str, typer.Argument(metavar="SUBJECT", help="the data subject, as their entities name them")],
    collection: Annotated[
        list[str], typer.Option("--collection", "-c", help="NAME=package.module:Class (repeat for each)")
    ],
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    kek_env: Annotated[
        str | None, typer.Option("--kek-env", help="environment variable holding the KEK (to read secret fields)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only report what would be erased")] = False,
    json: Json = False,
) -> None:
    """Erase SUBJECT's entities, change records and key; print what was erased and what is kept."""
    with admin_client(url, path) as client:
        pairs = _pairs(collection)
        keys = EnvKeyProvider(kek_env) if kek_env else None
        with connect(client, namespace=namespace, keys=keys, reap_interval=None) as store:
            registered = {k.decode(): jsonlib.loads(v) for k, v in client.hgetall(store.keyspace.schemas()).items()}
            colls = []
            for name, model in pairs:
                schema = registered.get(name) or {}  # opened as registered: indexes stay as they are
                colls.append(
                    store.collection(
                        name,
                        load_model(model),
                        indexes=schema.get("indexes") or (),
                        partition_key=schema.get("partition_key"),
                    )
                )
            report = erase(store, subject, colls, dry_run=dry_run)
    data: dict[str, Any] = report.to_json()
    if json:
        render.print_json(data)
        return
    verb = "would erase" if dry_run else "erased"
    console = out()
    for name, ids in sorted(report.entities.items()):
        console.print(f"{name}: {verb} {len(ids)} entities ({', '.join(ids)})")
    if not report.entities:
        console.print(f"no entity of {subject!r} in {', '.join(n for n, _ in pairs)}")
    console.print(f"change records {'to remove' if dry_run else 'removed'}: {report.change_records}")
    shown = "none" if report.key is None else str(report.key)
    console.print(f"subject key {'to destroy' if dry_run else 'destroyed'}: {shown}")
    for line in report.retained:
        console.print(f"kept: {line}")


def register(root: typer.Typer) -> None:
    """Add this command to the ``rxstate`` command."""
    root.registered_commands.extend(app.registered_commands)
