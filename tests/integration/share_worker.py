"""A process using a store, driven by the tests: one JSON command per stdin line, one JSON reply line each.

Commands: ``connect`` (``path``, ``fsync``, ``isolated``), ``put`` / ``get`` (``id``, ``name``), ``count``,
``server`` (the server's pid, its owner's pid and its socket), ``close``, ``exit`` (ends the process
without closing the store). A command that raises replies ``{"error": "<type>: <message>"}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import rxstate


class Agent(rxstate.Model):
    name: str


class Worker:
    def __init__(self) -> None:
        self.store: rxstate.Store | None = None

    def run(self, op: str, args: dict[str, Any]) -> Any:
        if op == "connect":
            self.store = rxstate.connect(namespace="share", **args)
            return None
        assert self.store is not None
        agents = self.store.collection("agents", Agent)
        if op == "put":
            return agents.put(args["id"], Agent(name=args["name"])).version
        if op == "get":
            try:
                got = agents.get_versioned(args["id"], consistent=True)
            except rxstate.errors.NotFound:
                return None
            return [got.value.name, got.version]
        if op == "count":
            return agents.count()
        if op == "server":
            lease = self.store.server
            return {"pid": lease.pid, "owner": lease.owner_pid, "socket": lease.unix_socket_path}
        if op == "close":
            self.store.close()
            return None
        raise ValueError(f"unknown command {op!r}")


def main() -> None:
    worker = Worker()
    for line in sys.stdin:
        args = json.loads(line)
        op = args.pop("cmd")
        if op == "exit":
            sys.exit(0)
        try:
            reply = {"ok": worker.run(op, args)}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
