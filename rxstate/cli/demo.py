"""The demo scenario: agents race to claim tasks; compare-and-set decides every race."""

from __future__ import annotations

import random
import threading
import time
from typing import Literal

from rxstate.api import Store
from rxstate.core.errors import ConflictError
from rxstate.core.model import Model

__all__ = ["DemoAgent", "DemoTask", "_demo"]


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
