"""The ``rxstate`` command-line tool.

``server --path DIR`` runs the server of a data directory in the foreground.
Read commands (``ls``, ``get``, ``where``, ``watch``, ``history``, ``why``, ``stats``, ``locks``,
``info``) never write: they open the namespace read-only and fail, changing nothing, when it does not
exist. They work on ``--url`` (or ``RXSTATE_URL``) or on an embedded server's data directory
(``--path``); ``--json`` prints machine-readable output. ``demo`` and ``demo-plot`` run the demo
scenario in a fresh namespace, on an embedded server unless given ``--url``/``--path``.
``principals`` administers a namespace's principals and policy (``rxstate.cli.principals``).

Example:
    >>> main(["get", "tasks", "t1", "--url", "redis://127.0.0.1:6379/0", "--json"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import redis
import typer
from reactivex import Observable
from rich.console import Console
from rich.text import Text

from rxstate import __version__
from rxstate.api import Store, connect
from rxstate.cli import render
from rxstate.cli.backup import register as register_backup
from rxstate.cli.capacity import register as register_capacity
from rxstate.cli.erasure import register as register_erasure
from rxstate.cli.governance import register as register_governance
from rxstate.cli.health import register as register_health
from rxstate.cli.history import History
from rxstate.cli.inspector import EntityView, Inspector, NamespaceUsage, scan_usage
from rxstate.cli.migrate import register as register_migrate
from rxstate.cli.principals import app as principals_app
from rxstate.cli.progress import Steps, quiet, rich_steps
from rxstate.cli.serverinfo import locks as held_locks
from rxstate.cli.serverinfo import stats as namespace_stats
from rxstate.cli.target import URL_ENV, Target
from rxstate.cli.tenants import app as tenants_app
from rxstate.cli.top import top
from rxstate.core.errors import RxStateError, ValidationError
from rxstate.feed.change import Change

__all__ = ["app", "main"]

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="rxstate",
    help="Inspect and follow rxstate state on Redis or Valkey; run the demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Url = Annotated[
    str | None,
    typer.Option("--url", envvar=URL_ENV, help=f"server URL (redis://, unix://, redis+cluster://); or {URL_ENV}"),
]
DataPath = Annotated[
    Path | None, typer.Option("--path", help="data directory of an embedded server (instead of --url)")
]
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="the namespace")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output (JSON)")]
EntityId = Annotated[str, typer.Argument(metavar="ID", help="the entity (or aggregate) id")]


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _handled(fn: F) -> F:
    """Report rxstate and server errors as one line on stderr and exit 1 (no traceback)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RxStateError as exc:
            _err().print(Text(f"rxstate: {exc}"))
        except redis.RedisError as exc:
            _err().print(Text(f"rxstate: server error: {exc}"))
        except ImportError as exc:
            _err().print(Text(f"rxstate: {exc} (install the extra it needs)"))
        raise typer.Exit(1)

    return run  # type: ignore[return-value]


def _steps(json: bool) -> Steps:
    """Progress bars on stderr, except for machine-readable output."""
    return quiet if json else rich_steps(_err())


@contextlib.contextmanager
def _inspector(url: str | None, path: Path | None, namespace: str, json: bool) -> Iterator[Inspector]:
    steps = _steps(json)
    with Target(url, path, namespace).read(steps) as store:
        yield Inspector(store, steps)


T = TypeVar("T")


def _read(
    target: tuple[str | None, Path | None, str],
    json: bool,
    fetch: Callable[[Inspector], T],
    to_json: Callable[[T], Any],
    show: Callable[[Console, T], None],
) -> None:
    """Read ``fetch(inspector)`` from the target namespace, then print it as JSON or for people."""
    with _inspector(*target, json) as inspector:
        data = fetch(inspector)
    if json:
        render.print_json(to_json(data))
    else:
        show(_out(), data)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rxstate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version and exit")
    ] = False,
) -> None:
    """Inspect and follow rxstate state on Redis or Valkey; run the demo."""


# -- read commands ------------------------------------------------------------------------------------
@app.command("ls")
@_handled
def ls(
    url: Url = None,
    path: DataPath = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="list this namespace's collections")
    ] = None,
    json: Json = False,
) -> None:
    """List namespaces (keys, entities, memory), or one namespace's collections."""
    if namespace is None:
        with Target(url, path).client() as client:
            usage = scan_usage(client, None, _steps(json))
        names = sorted(name for name, used in usage.items() if used.registered)
        if json:
            render.print_json(
                [
                    {
                        "namespace": n,
                        "collections": len(u.collections),
                        "entities": u.total.entities,
                        "keys": u.total.keys,
                        "memory": u.total.memory,
                    }
                    for n in names
                    for u in [usage.get(n, NamespaceUsage())]
                ]
            )
        else:
            render.show_namespaces(_out(), names, usage)
        return
    with _inspector(url, path, namespace, json) as inspector:
        used = scan_usage(inspector.client, namespace, inspector.steps).get(namespace, NamespaceUsage())
        infos = inspector.collections(used)
    if json:
        render.print_json(
            {
                "namespace": namespace,
                "collections": [c.as_json() for c in infos],
                "keys": used.total.keys,
                "memory": used.total.memory,
            }
        )
    else:
        render.show_collections(_out(), namespace, infos, used)


@app.command("get")
@_handled
def get(
    collection: str,
    entity_id: EntityId,
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    json: Json = False,
) -> None:
    """Show one entity: its value, version, writer and time."""
    _read((url, path, namespace), json, lambda i: i.get(collection, entity_id), EntityView.as_json, render.show_entity)


def _conditions(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValidationError(f"expected field=value, not {pair!r}")
        out[name] = value
    return out


@app.command("where")
@_handled
def where(
    collection: str,
    conditions: Annotated[list[str], typer.Argument(metavar="FIELD=VALUE...", help="values are JSON, else text")],
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    json: Json = False,
) -> None:
    """List the entities whose indexed fields hold the given values."""
    wanted = _conditions(conditions)
    title = f"{collection} where {' '.join(conditions)}"
    _read(
        (url, path, namespace),
        json,
        lambda i: i.where(collection, wanted),
        lambda views: [v.as_json() for v in views],
        lambda console, views: render.show_entities(console, title, views),
    )


@app.command("history")
@_handled
def history(
    collection: str,
    entity_id: EntityId,
    limit: Annotated[int, typer.Option(help="at most this many of the latest records")] = 50,
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    json: Json = False,
) -> None:
    """Show an entity's change records (or an aggregate's events), oldest first."""
    _read(
        (url, path, namespace),
        json,
        lambda i: History(i).history(collection, entity_id, limit=limit),
        lambda items: [render.change_json(c) if isinstance(c, Change) else render.event_json(c) for c in items],
        render.show_history,
    )


@app.command("why")
@_handled
def why(
    collection: str,
    entity_id: EntityId,
    field: Annotated[str | None, typer.Argument(help="only changes of this field")] = None,
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    json: Json = False,
) -> None:
    """Show who or what last changed an entity (or one field), and in which transaction."""
    _read(
        (url, path, namespace),
        json,
        lambda i: History(i).why(collection, entity_id, field),
        render.why_json,
        render.show_why,
    )


@app.command("stats")
@_handled
def stats(url: Url = None, path: DataPath = None, namespace: Namespace = "default", json: Json = False) -> None:
    """Show the server, clients and their local caches, change streams and memory of a namespace."""
    _read((url, path, namespace), json, namespace_stats, lambda data: data, render.show_stats)


@app.command("locks")
@_handled
def locks(url: Url = None, path: DataPath = None, namespace: Namespace = "default", json: Json = False) -> None:
    """List the locks held now: holder, fencing token, time left."""
    _read((url, path, namespace), json, held_locks, lambda held: [lock.as_json() for lock in held], render.show_locks)


@app.command("info")
@_handled
def info(url: Url = None, path: DataPath = None, namespace: Namespace = "default", json: Json = False) -> None:
    """Show a namespace's partitions and registered collections with their schemas."""
    _read(
        (url, path, namespace),
        json,
        lambda i: {"namespace": namespace, "partitions": i.keyspace.partitions, "collections": i.schemas()},
        lambda data: data,
        render.show_info,
    )


audit_app = typer.Typer(help="The namespace's tamper-evident audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
register_governance(app, audit_app)


@audit_app.command("verify")
@_handled
def audit_verify(url: Url = None, path: DataPath = None, namespace: Namespace = "default", json: Json = False) -> None:
    """Recompute every partition's audit chain; report the first entry changed, added, removed or moved.

    Exits 1 when a chain does not hold.
    """
    with _inspector(url, path, namespace, json) as inspector:
        audit = inspector.store.audit
        if not audit.enabled:
            raise ValidationError(f"namespace {namespace!r} does not audit (connect with audit=True)")
        report = audit.verify()
    if json:
        render.print_json(
            {"ok": report.ok, "entries": report.entries, "problems": [vars_of(p) for p in report.problems]}
        )
    else:
        render.show_audit_report(_out(), namespace, report)
    if not report.ok:
        raise typer.Exit(1)


def vars_of(problem: Any) -> dict[str, Any]:
    """A dataclass with slots as a plain dict (for JSON output)."""
    return {name: getattr(problem, name) for name in problem.__slots__}


@app.command("watch")
@_handled
def watch(
    collection: Annotated[str | None, typer.Argument(help="only this collection")] = None,
    entity_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="only ids matching this glob")] = None,
    count: Annotated[int | None, typer.Option(help="stop after this many changes")] = None,
    since: Annotated[str | None, typer.Option(help="replay from this stream offset first ('0': all kept)")] = None,
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    json: Json = False,
) -> None:
    """Follow the change feed live, one line per change, until Ctrl-C (or --count changes)."""
    if count is not None and count < 1:
        raise ValidationError(f"--count must be at least 1, not {count}")
    out, done, lock = _out(), threading.Event(), threading.Lock()
    seen = 0
    failure: list[BaseException] = []

    def show(change: Change) -> None:
        nonlocal seen
        with lock:
            if done.is_set():
                return
            if json:
                render.print_json_line(render.change_json(change))
            else:
                out.print(render.change_text(change))
            seen += 1
            if count is not None and seen >= count:
                done.set()

    def fail(exc: Exception) -> None:
        failure.append(exc)
        done.set()

    with _inspector(url, path, namespace, json) as inspector:
        if collection is not None:
            inspector.kind(collection)
        feed: Observable[Change] = inspector.store.changes(collection=collection, id=entity_id, since=since)
        subscription = feed.subscribe(on_next=show, on_error=fail)
        what = "/".join(x for x in (collection, entity_id) if x) or "every collection"
        _err().print(Text(f"watching {what} in {namespace!r} (Ctrl-C to stop)", style="dim"))
        try:
            while not done.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            subscription.dispose()
    if failure:
        raise failure[0]


# -- the demo ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _demo_store(url: str | None, path: Path | None, namespace: str | None, prefix: str) -> Iterator[Store]:
    name = namespace or f"{prefix}-{int(time.time() * 1000)}"
    if url is not None and path is not None:
        raise ValidationError("give either --url or --path, not both")
    with connect(url, namespace=name) if url else connect(namespace=name, path=path) as store:
        yield store


def _agent_stores(store: Store, url: str | None) -> Callable[[str], Store]:
    """Each demo agent gets its own store (its own connection and actor name) on the same server."""

    def open_agent(name: str) -> Store:
        client: Any = store.server.client() if store.server is not None else None
        target: Any = client if client is not None else url
        return connect(target, namespace=store.namespace, actor=name, cache=False, reap_interval=None)

    return open_agent


@app.command("demo")
@_handled
def demo(
    agents: Annotated[int, typer.Option(min=2, help="agents racing for tasks")] = 3,
    tasks: Annotated[int, typer.Option(min=1, help="tasks to share out")] = 8,
    url: Annotated[str | None, typer.Option("--url", help="use this server instead of an embedded one")] = None,
    path: DataPath = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="default: a fresh demo-<ms>")] = None,
    json: Json = False,
) -> None:
    """Agents race for tasks under compare-and-set, watched live; the demo checks its own claim."""
    from rxstate.cli.demo import run_demo

    with _demo_store(url, path, namespace, "demo") as store:
        say: Callable[[str], None] = (lambda line: None) if json else typer.echo
        where = "embedded server" if store.server is not None else url or os.environ.get("REDIS_URL")
        say(f"rxstate demo on {where}, namespace {store.namespace!r}")
        result = run_demo(store, agents=agents, tasks=tasks, out=say, open_agent=_agent_stores(store, url))
    if json:
        render.print_json(result.as_json())
    if result.failures:
        raise typer.Exit(1)


@app.command("demo-plot")
@_handled
def demo_plot(
    out: Annotated[Path, typer.Argument(help="output file: .png, .svg or .pdf")],
    agents: Annotated[int, typer.Option(min=2)] = 5,
    tasks: Annotated[int, typer.Option(min=1)] = 40,
    url: Annotated[str | None, typer.Option("--url", help="use this server instead of an embedded one")] = None,
    path: DataPath = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="default: a fresh demo-plot-<ms>")] = None,
    json: Json = False,
) -> None:
    """Run the demo scenario and save a picture of it (needs matplotlib)."""
    from rxstate.cli.demo_plot import demo_plot as plot

    with _demo_store(url, path, namespace, "demo-plot") as store:
        written = plot(store, out, agents=agents, tasks=tasks, open_agent=_agent_stores(store, url))
    if json:
        render.print_json({"path": str(written)})
    else:
        _out().print(Text(f"wrote {written}"))


@app.command("server")
@_handled
def server(
    path: Annotated[Path, typer.Option("--path", help="the data directory that connect(path=...) opens")],
    fsync: Annotated[str, typer.Option(help="AOF fsync policy: everysec, always or no")] = "everysec",
) -> None:
    """Run the server of a data directory in the foreground until Ctrl-C (processes attach to it)."""
    from rxstate.server import serve
    from rxstate.server.directory import FSYNC_MODES

    if fsync not in FSYNC_MODES:
        raise ValidationError(f"--fsync must be one of {', '.join(FSYNC_MODES)}, not {fsync!r}", field="fsync")

    def announce(running: Any) -> None:
        print(f"rxstate server: {running.url} (Ctrl-C stops it)", flush=True)

    serve(str(path), fsync=fsync, ready=announce)


app.add_typer(principals_app, name="principals")
for _register in (register_backup, register_migrate, register_erasure, register_health, register_capacity):
    _register(app)
app.add_typer(tenants_app, name="tenants")
app.command("top")(_handled(top))

langgraph_app = typer.Typer(help="LangGraph threads kept by rxstate.integrations.langgraph.", no_args_is_help=True)
app.add_typer(langgraph_app, name="langgraph")


def _show_checkpoints(console: Console, checkpoints: Sequence[Any]) -> None:
    for c in checkpoints:
        ns = f" [{c.checkpoint_ns}]" if c.checkpoint_ns else ""
        parent = f" <- {c.parent_id}" if c.parent_id else ""
        console.print(Text(f"step {c.step} {c.source:<6} {c.checkpoint_id}{ns}{parent}"))
    console.print(Text(f"{len(checkpoints)} checkpoint(s)", style="dim"))


@langgraph_app.command("history")
@_handled
def langgraph_history(
    thread_id: Annotated[str, typer.Argument(metavar="THREAD_ID", help="the LangGraph thread")],
    checkpoint_ns: Annotated[str | None, typer.Option("--checkpoint-ns", help="only this namespace")] = None,
    limit: Annotated[int, typer.Option(help="at most this many of the newest checkpoints")] = 50,
    prefix: Annotated[str, typer.Option(help="the saver's collection prefix")] = "lg",
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    json: Json = False,
) -> None:
    """Show a LangGraph thread's checkpoints, newest first: step, source, id and parent."""

    def fetch(inspector: Inspector) -> list[Any]:
        from rxstate.integrations.langgraph.history import thread_history  # needs the langgraph extra

        return thread_history(inspector.store, thread_id, checkpoint_ns=checkpoint_ns, limit=limit, prefix=prefix)

    _read((url, path, namespace), json, fetch, lambda found: [c.as_json() for c in found], _show_checkpoints)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rxstate`` command with ``argv`` (default: the process's arguments); returns the exit code.

    Example:
        >>> main(["--version"])  # doctest: +SKIP
        0
    """
    try:
        app(args=list(argv) if argv is not None else None, prog_name="rxstate")
    except SystemExit as exc:  # standalone mode ends every run, with usage errors as code 2
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return 0
