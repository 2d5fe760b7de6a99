"""``python -m rxstate.server --path DIR``: run the server of a data directory (see ``rxstate.server.directory``).

Background owners run as ``--until-unused``; exit code 3 means another process already serves the directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from rxstate.core.errors import ServerError
from rxstate.server.directory import ALREADY_SERVED, FSYNC_MODES, serve
from rxstate.server.embedded import EmbeddedServer, data_dir_owner


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and serve until stopped; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m rxstate.server", description="serve a data directory")
    parser.add_argument("--path", required=True, help="the data directory")
    parser.add_argument("--fsync", choices=FSYNC_MODES, default="everysec")
    parser.add_argument("--until-unused", action="store_true", help="stop once no process uses the directory")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO)

    def ready(server: EmbeddedServer) -> None:
        print(f"rxstate server {os.getpid()}: serving {args.path} on {server.url}", flush=True)

    try:
        serve(args.path, fsync=args.fsync, until_unused=args.until_unused, ready=ready)
    except ServerError as exc:
        print(f"rxstate server {os.getpid()}: {exc}", file=sys.stderr, flush=True)
        owner = data_dir_owner(args.path)
        return ALREADY_SERVED if owner is not None and owner != os.getpid() else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
