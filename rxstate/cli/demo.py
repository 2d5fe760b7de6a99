"""The demo scenario: agents race for tasks, compare-and-set decides every race, and the demo checks itself.

Each agent is its own client (its own store, with its name as the actor of its writes). Work comes
in waves: in a wave every agent races for the oldest open task; the agents of a race all read the
same version of it (they meet at a barrier after reading), the race's designated winner commits
first, and only then do the others try to commit with the version they read. Their compare-and-set
fails on the server with ``ConflictError``, so every contested race ends in visible lost races —
deterministic by construction, not by luck. The winner marks itself busy; once everyone in the wave
holds a task, each finishes its task in one transaction (task done, agent idle with one more done).

Meanwhile a watcher prints every change from the change feed as it arrives, and a derived value
(how many agents are busy) prints each new value. At the end the demo checks its claim against what
the server and the feed say: every task done, exactly one winning claim per task (from the feed), the
owners' counts adding up, every lost race a refused compare-and-set, and the watcher having seen
every change record.

Example:
    >>> result = run_demo(rxstate.connect(fakeredis.FakeRedis()), agents=3, tasks=6)  # doctest: +SKIP
    >>> result.failures, len(result.lost_races)  # doctest: +SKIP
    ([], 6)
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from reactivex import Observable

from rxstate.api import Store
from rxstate.cli.render import change_text
from rxstate.core.errors import ConflictError
from rxstate.core.model import Model
from rxstate.feed.change import Change, offset_key

__all__ = ["DemoAgent", "DemoResult", "DemoTask", "LostRace", "run_demo"]


class DemoAgent(Model):
    name: str
    status: Literal["idle", "busy"] = "idle"
    done: int = 0


class DemoTask(Model):
    title: str
    state: Literal["open", "claimed", "done"] = "open"
    owner: str | None = None


@dataclass(frozen=True)
class LostRace:
    """An agent's compare-and-set refused: it read ``expected``, the task was already at ``actual``."""

    agent: str
    task: str
    expected: int
    actual: int


@dataclass
class DemoResult:
    """What happened in a demo run, and the checks that failed (none, when the claim holds)."""

    tasks: int
    done: int = 0
    claims: dict[str, str] = field(default_factory=dict)
    per_agent: dict[str, int] = field(default_factory=dict)
    lost_races: list[LostRace] = field(default_factory=list)
    changes_made: int = 0
    changes_seen: int = 0
    busy_seen: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Race:
    contenders: list[str]
    winner: str
    read: threading.Barrier
    attempted: threading.Barrier
    committed: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Wave:
    races: list[_Race]
    claimed: threading.Barrier
    finished: threading.Barrier


def _schedule(names: list[str], tasks: int, timeout: float, on_busy: Callable[[int], None]) -> list[_Wave]:
    """Waves of races: in wave ``w`` the agents, rotated by ``w``, race for one task after another;
    each race's first contender wins and leaves the next race to the rest. ``on_busy(n)`` runs when
    a wave's agents all hold their tasks (``n`` busy) and when they have all finished (0 busy)."""
    waves, left, w = [], tasks, 0
    while left:
        pool = names[w % len(names) :] + names[: w % len(names)]
        races = []
        for k in range(min(len(pool), left)):
            contenders = pool[k:]
            n = len(contenders)
            races.append(
                _Race(contenders, pool[k], threading.Barrier(n, timeout=timeout), threading.Barrier(n, timeout=timeout))
            )
        claimed = threading.Barrier(len(pool), action=functools.partial(on_busy, len(races)), timeout=timeout)
        finished = threading.Barrier(len(pool), action=functools.partial(on_busy, 0), timeout=timeout)
        waves.append(_Wave(races, claimed, finished))
        left -= len(races)
        w += 1
    return waves


class _Watch:
    """What the watcher and the busy-agents subscriber saw, with waits on it."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.changes: list[Change] = []
        self.busy: list[int] = []
        self.cond = threading.Condition()

    def change(self, change: Change) -> None:
        self.say(f"  feed      {change_text(change).plain}")
        with self.cond:
            self.changes.append(change)
            self.cond.notify_all()

    def busy_value(self, value: int) -> None:
        self.say(f"  busy agents: {value}")
        with self.cond:
            self.busy.append(value)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


def _tails(store: Store) -> dict[int, str]:
    pipe = store.client.pipeline(transaction=False)
    for p in range(store.keyspace.partitions):
        pipe.xrevrange(store.keyspace.changes(p), count=1)
    return {p: (rows[0][0].decode() if rows else "0-0") for p, rows in enumerate(pipe.execute())}


def run_demo(
    store: Store,
    *,
    agents: int = 3,
    tasks: int = 8,
    out: Callable[[str], None] = print,
    open_agent: Callable[[str], Store] | None = None,
    timeout: float = 20.0,
) -> DemoResult:
    """Run the scenario in ``store``'s namespace; ``open_agent(name)`` opens each agent's own store
    (default: the agents share ``store``). Returns what happened; ``failures`` lists broken checks.

    Example:
        >>> run_demo(store, agents=3, tasks=6, out=print).failures  # doctest: +SKIP
        []
    """
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            out(line)

    names = [f"agent-{i}" for i in range(agents)]
    task_ids = [f"task-{i:02d}" for i in range(tasks)]
    crew = store.collection("agents", DemoAgent, indexes=["status"])
    board = store.collection("tasks", DemoTask, indexes=["state"])
    result = DemoResult(tasks=tasks)
    seen = _Watch(say)
    start = _tails(store)
    feed: Observable[Change] = store.changes(collection=["agents", "tasks"])
    watcher = feed.subscribe(on_next=seen.change)
    busy = store.derived(lambda: len(crew.where(status="busy")), name="busy agents")
    busy_sub = busy.subscribe(on_next=seen.busy_value)
    say(f"{agents} agents, {tasks} open tasks; every claim is a compare-and-set on the task's version")
    for name in names:
        crew.put(name, DemoAgent(name=name))
    for i, task_id in enumerate(task_ids):
        board.put(task_id, DemoTask(title=f"task {i}"))

    def wait_busy(n: int) -> None:  # the derived value shows each wave's peak and end as they happen
        if not seen.wait(lambda: bool(seen.busy) and seen.busy[-1] == n, timeout):
            result.failures.append(f"the busy-agents value did not reach {n}")

    waves = _schedule(names, tasks, timeout, wait_busy)
    stores = {name: open_agent(name) if open_agent is not None else store for name in names}

    def work(name: str) -> None:
        own = stores[name]
        my_crew = own.collection("agents", DemoAgent, indexes=["status"])
        my_board = own.collection("tasks", DemoTask, indexes=["state"])
        for wave in waves:
            mine = None
            for race in wave.races:
                if name not in race.contenders:
                    continue
                pick = my_board.where_versioned(state="open")[0]  # everyone wants the oldest open task
                race.read.wait()
                if name == race.winner:
                    my_board.update(pick.id, state="claimed", owner=name, expected_version=pick.version)
                    say(f"  {name:9} claimed {pick.id}")
                    race.committed.set()
                    my_crew.update(name, status="busy")
                    mine = pick.id
                else:
                    if not race.committed.wait(timeout):
                        raise TimeoutError(f"the winner of the race for {pick.id} did not commit")
                    try:
                        my_board.update(pick.id, state="claimed", owner=name, expected_version=pick.version)
                    except ConflictError as exc:
                        actual = int(exc.actual) if isinstance(exc.actual, int | str) else -1
                        with lock:
                            result.lost_races.append(LostRace(name, pick.id, pick.version, actual))
                        say(
                            f"  {name:9} lost the race for {pick.id}: it read v{pick.version}, the task is at v{actual}"
                        )
                    else:
                        with lock:
                            result.failures.append(f"{name} also won {pick.id} with a stale version")
                race.attempted.wait()
            wave.claimed.wait()
            if mine is not None:
                with own.transaction() as tx:
                    me = tx.get(my_crew, name)
                    tx.update(my_board, mine, state="done")
                    tx.update(my_crew, name, status="idle", done=me.done + 1)
                say(f"  {name:9} finished {mine}")
            wave.finished.wait()

    def guarded(name: str) -> None:
        try:
            work(name)
        except Exception as exc:  # reported as a failed check; the others are released below
            with lock:
                result.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            for wave in waves:  # release everyone waiting on this agent
                for race in wave.races:
                    race.read.abort()
                    race.attempted.abort()
                    race.committed.set()
                wave.claimed.abort()
                wave.finished.abort()

    threads = [threading.Thread(target=guarded, args=(n,), name=f"demo-{n}") for n in names]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _settle(store, result, seen, start, timeout)
    finally:
        watcher.dispose()
        busy_sub.dispose()
        busy.dispose()
        for own in stores.values():
            if own is not store:
                own.close()
    _check(result, board.all_versioned(), crew.all(), seen)
    _report(result, say)
    return result


def _settle(store: Store, result: DemoResult, seen: _Watch, start: dict[int, str], timeout: float) -> None:
    """Wait until the watcher has every change record written since the start, and busy agents is 0."""
    end = _tails(store)
    pipe = store.client.pipeline(transaction=False)
    for p, last in end.items():
        pipe.xrange(store.keyspace.changes(p), "(" + start[p] if start[p] != "0-0" else "-", last)
    result.changes_made = sum(len(rows) for rows in pipe.execute())

    def caught_up() -> bool:
        latest: dict[int, str] = {}
        for c in seen.changes:
            if c.partition not in latest or offset_key(c.offset) > offset_key(latest[c.partition]):
                latest[c.partition] = c.offset
        return all(last == "0-0" or offset_key(latest.get(p, "0-0")) >= offset_key(last) for p, last in end.items())

    if not seen.wait(caught_up, timeout):
        result.failures.append("the watcher did not receive every change")
    if not seen.wait(lambda: bool(seen.busy) and seen.busy[-1] == 0, timeout):
        result.failures.append("the busy-agents value did not return to 0")


def _check(result: DemoResult, board: list[Any], crew: list[DemoAgent], seen: _Watch) -> None:
    result.claims = {t.id: t.value.owner for t in board if t.value.owner}
    result.done = sum(t.value.state == "done" for t in board)
    result.per_agent = {a.name: a.done for a in crew}
    result.changes_seen = len(seen.changes)
    result.busy_seen = list(seen.busy)
    claims = Counter(c.id for c in seen.changes if c.collection == "tasks" and c.fields.get("state") == "claimed")
    fail = result.failures.append
    if result.done != result.tasks:
        fail(f"{result.done}/{result.tasks} tasks done")
    for task in board:
        if claims[task.id] != 1:
            fail(f"{task.id} has {claims[task.id]} winning claims in the change feed, not 1")
    owned = Counter(result.claims.values())
    if any(owned[name] != done for name, done in result.per_agent.items()) or sum(owned.values()) != result.tasks:
        fail(f"the agents' done counts {result.per_agent} do not match the task owners {dict(owned)}")
    if len(crew) > 1 and result.tasks and not result.lost_races:
        fail("no race was lost")
    if any(r.actual <= r.expected for r in result.lost_races):
        fail("a refused compare-and-set did not see a newer version")
    if result.changes_seen != result.changes_made:
        fail(f"the watcher saw {result.changes_seen} of {result.changes_made} change records")


def _report(result: DemoResult, say: Callable[[str], None]) -> None:
    summary = ", ".join(f"{name} did {n}" for name, n in result.per_agent.items())
    say(f"summary: {summary}")
    say(
        f"{result.done}/{result.tasks} tasks done, each by exactly one agent; "
        f"{len(result.lost_races)} lost races resolved by CAS; the watcher saw {result.changes_seen} changes"
    )
    for failure in result.failures:
        say(f"check failed: {failure}")
    if not result.failures:
        say("every task had exactly one winning claim, and every other attempt was refused: checked")
