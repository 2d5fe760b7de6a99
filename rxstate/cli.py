"""The ``rxstate`` command-line tool.

Commands:
    rxstate demo      a small multi-agent scenario on an embedded server
    rxstate info URL  namespaces, partitions and collections on a server
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections.abc import Sequence
from typing import Literal

from . import __version__
from .errors import ConflictError, RxStateError
from .model import Model
from .store import Store, connect

__all__ = ["main"]


class DemoAgent(Model):
    name: str
    status: Literal["idle", "busy"] = "idle"
    done: int = 0


class DemoTask(Model):
    title: str
    state: Literal["open", "claimed", "done"] = "open"
    owner: str | None = None


def _demo(store: Store, *, agents: int, tasks: int, seed: int, out: object = print) -> dict[str, int]:
    """Agents race to claim tasks with compare-and-set; each task ends up done by exactly one agent."""
    say = out if callable(out) else print
    rng = random.Random(seed)
    crew = store.collection("agents", DemoAgent, indexes=["status"])
    board = store.collection("tasks", DemoTask, indexes=["state"])
    names = [f"agent-{i}" for i in range(agents)]
    for name in names:
        crew.put(name, DemoAgent(name=name))
    for i in range(tasks):
        board.put(f"task-{i:02d}", DemoTask(title=f"task {i}"))
    say(f"{agents} agents, {tasks} open tasks in namespace {store.namespace!r}")
    lock = threading.Lock()
    start = threading.Barrier(agents)
    lost_races = 0

    def work(name: str) -> None:
        nonlocal lost_races
        local = random.Random(rng.random())
        start.wait()  # everyone looks at the board at once, as agents woken by one event would
        while True:
            open_tasks = board.where_versioned(state="open")
            if not open_tasks:
                return
            pick = open_tasks[0]  # everyone wants the oldest open task: CAS decides who gets it
            try:
                board.update(pick.id, state="claimed", owner=name, expected_version=pick.version)
            except ConflictError:
                with lock:
                    lost_races += 1
                say(f"  {name:8} lost the race for {pick.id}")
                continue
            crew.update(name, status="busy")
            say(f"  {name:8} claimed {pick.id}")
            time.sleep(local.uniform(0.005, 0.03))
            board.update(pick.id, state="done")
            crew.incr(name, "done")
            crew.update(name, status="idle")
            say(f"  {name:8} finished {pick.id}")

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = {a.name: a.done for a in crew.all()}
    done = board.where(state="done")
    say("summary: " + ", ".join(f"{k} did {v}" for k, v in summary.items()))
    say(f"{len(done)}/{tasks} tasks done, each by exactly one agent; {lost_races} lost races resolved by CAS")
    return {"done": len(done), "lost_races": lost_races, **summary}


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
    info = sub.add_parser("info", help="describe a namespace on a server")
    info.add_argument("url", nargs="?", default=None)
    info.add_argument("--namespace", default="default")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            namespace = f"demo-{int(time.time())}"
            with connect(args.url, namespace=namespace) as store:
                where = "embedded server" if store.server is not None else args.url
                print(f"rxstate demo on {where}")
                _demo(store, agents=args.agents, tasks=args.tasks, seed=args.seed)
            return 0
        with connect(args.url, namespace=args.namespace) as store:
            schemas = {k.decode(): json.loads(v) for k, v in store.client.hgetall(store.keyspace.schemas()).items()}
            print(json.dumps({"namespace": store.namespace, "partitions": store.keyspace.partitions,
                              "collections": schemas}, indent=2))
        return 0
    except RxStateError as exc:
        print(f"rxstate: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
