"""The ``rxstate`` command-line tool.

Commands:
    rxstate demo      a small multi-agent scenario on an embedded server
    rxstate info URL  namespaces, partitions and collections on a server
    rxstate server --path DIR   run the server of a data directory in the foreground
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from rxstate import __version__
from rxstate.api import connect
from rxstate.cli.demo import _demo
from rxstate.core.errors import RxStateError
from rxstate.server import serve
from rxstate.server.directory import FSYNC_MODES

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rxstate`` command."""
    parser = argparse.ArgumentParser(prog="rxstate", description="rxstate command-line tool")
    parser.add_argument("--version", action="version", version=f"rxstate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a small multi-agent scenario on an embedded server")
    demo.add_argument("--url", default=None, help="use this server instead of an embedded one")
    demo.add_argument("--agents", type=int, default=3)
    demo.add_argument("--tasks", type=int, default=8)
    demo.add_argument("--seed", type=int, default=7)
    plot = sub.add_parser("demo-plot", help="run the demo scenario and save a picture of it (needs matplotlib)")
    plot.add_argument("out", help="output file: .png, .svg or .pdf")
    plot.add_argument("--url", default=None, help="use this server instead of an embedded one")
    plot.add_argument("--agents", type=int, default=5)
    plot.add_argument("--tasks", type=int, default=40)
    plot.add_argument("--seed", type=int, default=7)
    info = sub.add_parser("info", help="describe a namespace on a server")
    info.add_argument("url", nargs="?", default=None)
    info.add_argument("--namespace", default="default")
    server = sub.add_parser("server", help="run the server of a data directory in the foreground (Ctrl-C stops it)")
    server.add_argument("--path", required=True, help="the data directory that connect(path=...) opens")
    server.add_argument("--fsync", choices=FSYNC_MODES, default="everysec")
    args = parser.parse_args(argv)
    try:
        if args.command == "server":
            announce = lambda s: print(f"rxstate server: {s.url} (Ctrl-C stops it)", flush=True)  # noqa: E731
            serve(args.path, fsync=args.fsync, ready=announce)
            return 0
        if args.command == "demo":
            namespace = f"demo-{int(time.time())}"
            with connect(args.url, namespace=namespace) as store:
                where = "embedded server" if store.server is not None else args.url
                print(f"rxstate demo on {where}")
                _demo(store, agents=args.agents, tasks=args.tasks, seed=args.seed)
            return 0
        if args.command == "demo-plot":
            from rxstate.cli.demo_plot import demo_plot

            with connect(args.url, namespace=f"demo-plot-{int(time.time() * 1000)}") as store:
                path = demo_plot(store, args.out, agents=args.agents, tasks=args.tasks, seed=args.seed)
            print(f"wrote {path}")
            return 0
        with connect(args.url, namespace=args.namespace) as store:
            schemas = {k.decode(): json.loads(v) for k, v in store.client.hgetall(store.keyspace.schemas()).items()}
            print(
                json.dumps(
                    {"namespace": store.namespace, "partitions": store.keyspace.partitions, "collections": schemas},
                    indent=2,
                )
            )
        return 0
    except (RxStateError, ImportError) as exc:
        print(f"rxstate: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
