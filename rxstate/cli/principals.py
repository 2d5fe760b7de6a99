"""``rxstate principals``: the principals of a namespace and its policy (needs an administrator's URL).

Example:
    >>> from typer.testing import CliRunner
    >>> CliRunner().invoke(app, ["ls", "--url", "redis://127.0.0.1:6379/0", "-n", "crew"])  # doctest: +SKIP
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

from rxstate.api import Store
from rxstate.cli.target import URL_ENV, Target
from rxstate.core.errors import RxStateError, ValidationError
from rxstate.security.policy import Policy

__all__ = ["app"]

app = typer.Typer(name="principals", help="Create, rotate, disable and list principals; show or set the policy.")

Url = Annotated[str | None, typer.Option("--url", envvar=URL_ENV, help=f"an administrator's server URL; or {URL_ENV}")]
DataPath = Annotated[Path | None, typer.Option("--path", help="data directory of an embedded server")]
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="the namespace")]
Name = Annotated[str, typer.Argument(help="the principal's name")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output (JSON)")]


@contextlib.contextmanager
def _store(url: str | None, path: Path | None, namespace: str) -> Iterator[Store]:
    """The namespace opened read-only (principals are administered through the ACL, not the store's writes);
    errors become one line on stderr and exit code 1."""
    try:
        with Target(url, path, namespace).read() as store:
            yield store
    except (RxStateError, redis.RedisError) as exc:
        Console(stderr=True, highlight=False).print(Text(f"rxstate: {exc}"))
        raise typer.Exit(1) from None


def _attributes(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValidationError(f"--attr takes NAME=VALUE, not {pair!r}", field="attributes")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw  # plain text
    return out


@app.command("ls")
def list_principals(
    url: Url = None, path: DataPath = None, namespace: Namespace = "default", json_: Json = False
) -> None:
    """List the principals of a namespace with their kind, roles and state."""
    with _store(url, path, namespace) as store:
        infos = store.principals.list()
    rows: list[dict[str, Any]] = [
        {
            "name": i.name,
            "kind": i.principal.kind,
            "roles": list(i.roles),
            "enabled": i.enabled,
            "attributes": dict(i.principal.attributes),
            "user": i.username,
        }
        for i in infos
    ]
    if json_:
        typer.echo(json.dumps(rows, sort_keys=True))
        return
    table = Table("name", "kind", "roles", "enabled", "attributes", "ACL user")
    for r in rows:
        enabled = "yes" if r["enabled"] else "no"
        table.add_row(r["name"], r["kind"], ", ".join(r["roles"]), enabled, json.dumps(r["attributes"]), r["user"])
    Console(highlight=False).print(table)


@app.command("create")
def create(
    name: Name,
    role: Annotated[list[str], typer.Option("--role", "-r", help="a role (repeat for more)")],
    kind: Annotated[str, typer.Option("--kind", help="agent, user or service")] = "agent",
    attr: Annotated[list[str] | None, typer.Option("--attr", help="an attribute NAME=VALUE (repeatable)")] = None,
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
) -> None:
    """Create a principal; prints its password once (the server keeps only a hash of it)."""
    with _store(url, path, namespace) as store:
        typer.echo(store.principals.create(name, kind=kind, roles=role, attributes=_attributes(attr or [])))


@app.command("rotate")
def rotate(name: Name, url: Url = None, path: DataPath = None, namespace: Namespace = "default") -> None:
    """Give a principal a new password (printed); the old one and its connections stop working."""
    with _store(url, path, namespace) as store:
        typer.echo(store.principals.rotate(name))


@app.command("disable")
def disable(name: Name, url: Url = None, path: DataPath = None, namespace: Namespace = "default") -> None:
    """Turn a principal off and close its connections."""
    with _store(url, path, namespace) as store:
        store.principals.disable(name)


@app.command("enable")
def enable(name: Name, url: Url = None, path: DataPath = None, namespace: Namespace = "default") -> None:
    """Turn a disabled principal back on."""
    with _store(url, path, namespace) as store:
        store.principals.enable(name)


@app.command("delete")
def delete(name: Name, url: Url = None, path: DataPath = None, namespace: Namespace = "default") -> None:
    """Remove a principal and its ACL user."""
    with _store(url, path, namespace) as store:
        store.principals.delete(name)


@app.command("policy")
def policy(
    load: Annotated[Path | None, typer.Option("--set", help="a JSON file of rules to make the policy")] = None,
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
) -> None:
    """Print the namespace's policy as JSON, or replace it (``--set rules.json``) and re-derive every ACL."""
    with _store(url, path, namespace) as store:
        if load is not None:
            store.set_policy(Policy.from_json(load.read_text()))
        typer.echo(json.dumps(json.loads(store.policy.to_json()), indent=2))


@app.command("explain")
def explain(
    name: Name,
    action: Annotated[str, typer.Argument(help="read, write, delete or admin")],
    collection: Annotated[str, typer.Argument(help="the collection")],
    entity_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="an entity, for conditions on it")] = None,
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    json_: Json = False,
) -> None:
    """Say which rule allows or denies the principal the action, and why."""
    with _store(url, path, namespace) as store:
        decision = store.explain(name, action, collection, entity_id)
    if json_:
        typer.echo(json.dumps({"allowed": decision.allowed, "rule": decision.rule, "reason": decision.reason,
                               "enforced_by": decision.enforced_by}))  # fmt: skip
        return
    verdict = "allowed" if decision.allowed else "denied"
    typer.echo(f"{verdict}: {decision.reason} (enforced by {decision.enforced_by})")
