"""Real ``StateGraph`` runs checkpointed by RxCheckpointSaver on a real server: interrupt and resume from
another saver (another worker), time travel through ``get_state_history``, forks, fencing of two workers
resuming one thread, TTL, and ``watch``."""

from __future__ import annotations

import operator
import threading
import uuid
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

import rxstate
from rxstate.errors import ThreadForkConflict, ValidationError
from rxstate.integrations.langgraph import RxCheckpointSaver
from rxstate.testing import Backend
from tests.helpers import dump_all, wait_for


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def _graph(saver: RxCheckpointSaver, *, gate: threading.Event | None = None, started: threading.Event | None = None):
    """plan -> review (asks a human: interrupt) -> act."""

    def plan(state: State) -> dict[str, Any]:
        return {"log": ["plan"]}

    def review(state: State) -> dict[str, Any]:
        answer = interrupt({"question": "approve the plan?"})
        if started is not None:
            started.set()
        if gate is not None:
            assert gate.wait(10)
        return {"log": [f"review:{answer}"]}

    def act(state: State) -> dict[str, Any]:
        return {"log": ["act"]}

    builder = StateGraph(State)
    builder.add_node("plan", plan)
    builder.add_node("review", review)
    builder.add_node("act", act)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "review")
    builder.add_edge("review", "act")
    builder.add_edge("act", END)
    return builder.compile(checkpointer=saver)


def _thread() -> dict[str, Any]:
    return {"configurable": {"thread_id": f"th-{uuid.uuid4().hex[:8]}"}}


@pytest.fixture
def worker(rx_redis_backend: Backend):
    """Makes savers on separate stores (separate connections, caches and feeds) of one namespace."""

    def make(**options: Any) -> RxCheckpointSaver:
        return RxCheckpointSaver(rx_redis_backend.store(), **options)

    return make


def test_interrupt_then_resume_from_another_worker(worker) -> None:
    config = _thread()
    first = _graph(worker())
    out = first.invoke({"log": []}, config)
    assert out["log"] == ["plan"]
    [pending] = out["__interrupt__"]
    assert pending.value == {"question": "approve the plan?"}
    # another worker (its own store and saver) sees the interrupt and resumes the thread
    second = _graph(worker())
    snapshot = second.get_state(config)
    assert snapshot.next == ("review",)
    assert snapshot.tasks[0].interrupts[0].value == {"question": "approve the plan?"}
    done = second.invoke(Command(resume="yes"), config)
    assert done["log"] == ["plan", "review:yes", "act"]
    assert first.get_state(config).next == ()


def test_time_travel_replays_from_an_earlier_checkpoint_as_a_fork(worker) -> None:
    config = _thread()
    graph = _graph(worker())
    graph.invoke({"log": []}, config)
    graph.invoke(Command(resume="yes"), config)
    history = list(graph.get_state_history(config))
    assert [h.next for h in history][:3] == [(), ("act",), ("review",)]
    assert [h.metadata["step"] for h in history] == sorted((h.metadata["step"] for h in history), reverse=True)
    at_review = next(h for h in history if h.next == ("review",))
    # a replay of a checkpoint reuses the writes stored against it (the recorded answer), as with LangGraph's
    # own savers; running it again from there forks the thread and asks the human again
    assert graph.invoke(Command(resume="ignored"), at_review.config)["log"] == ["plan", "review:yes", "act"]
    forked = graph.invoke(None, at_review.config)
    assert forked["log"] == ["plan"] and forked["__interrupt__"]
    assert graph.get_state(config).metadata["source"] == "fork"
    assert graph.invoke(Command(resume="no"), config)["log"] == ["plan", "review:no", "act"]
    after = list(graph.get_state_history(config))
    review_id = at_review.config["configurable"]["checkpoint_id"]
    children = [h for h in after if h.parent_config and h.parent_config["configurable"]["checkpoint_id"] == review_id]
    assert len(children) == 3  # the original run, the replay and the fork all continue that checkpoint
    assert len(after) == len(history) + 5  # replay: 2 checkpoints, fork: 1, its resumed run: 2
    assert [h.values["log"] for h in after if h.next == ()][-1] == ["plan", "review:yes", "act"]


def test_update_state_forks_an_old_checkpoint(worker) -> None:
    config = _thread()
    graph = _graph(worker())
    graph.invoke({"log": []}, config)
    graph.invoke(Command(resume="yes"), config)
    first = next(h for h in graph.get_state_history(config) if h.next == ("review",))
    forked = graph.update_state(first.config, {"log": ["edited"]})
    snapshot = graph.get_state(forked)
    assert snapshot.values["log"] == ["plan", "edited"]
    assert snapshot.parent_config["configurable"]["checkpoint_id"] == first.config["configurable"]["checkpoint_id"]
    assert snapshot.metadata["source"] == "update"


def test_two_workers_resuming_one_thread_cannot_fork_it_silently(worker, rx_server) -> None:
    config = _thread()
    _graph(worker()).invoke({"log": []}, config)
    gate, started = threading.Event(), threading.Event()
    slow = _graph(worker(), gate=gate, started=started)
    errors: list[BaseException] = []

    def resume_slowly() -> None:
        try:
            slow.invoke(Command(resume="late"), config, durability="sync")
        except BaseException as exc:
            errors.append(exc)

    late = threading.Thread(target=resume_slowly)
    late.start()
    assert started.wait(10)  # the slow worker read the latest checkpoint and is inside the node
    fast = _graph(worker())
    assert fast.invoke(Command(resume="first"), config)["log"] == ["plan", "review:first", "act"]
    before = dump_all(rx_server.client())
    gate.set()
    late.join(10)
    [error] = errors
    assert isinstance(error, ThreadForkConflict)
    assert error.thread_id == config["configurable"]["thread_id"] and error.checkpoint_ns == ""
    assert error.head_id == fast.get_state(config).config["configurable"]["checkpoint_id"]
    assert error.parent_id and error.parent_id != error.head_id
    assert dump_all(rx_server.client()) == before  # the refused worker wrote nothing, not even its writes
    assert fast.get_state(config).values["log"] == ["plan", "review:first", "act"]


def test_fencing_off_lets_concurrent_writers_fork(worker) -> None:
    config = _thread()
    a, b = worker(fencing=False), worker(fencing=False)
    _graph(a).invoke({"log": []}, config)
    latest_a, latest_b = a.get_tuple(config), b.get_tuple(config)
    assert latest_a is not None and latest_b is not None
    for saver, tup in ((a, latest_a), (b, latest_b)):
        checkpoint = {**tup.checkpoint, "id": str(uuid.uuid4()), "channel_values": {}}
        saver.put(tup.config, checkpoint, {"source": "loop", "step": 9}, {})
    parents = [h.parent_id for h in a.history(config["configurable"]["thread_id"]) if h.step == 9]
    assert len(parents) == 2 and len(set(parents)) == 1


def test_pending_writes_are_idempotent_and_special_writes_are_kept(worker) -> None:
    saver = worker()
    config = _thread()
    _graph(saver).invoke({"log": []}, config)
    stored = saver.get_tuple(config)
    assert stored is not None
    at = stored.config
    saver.put_writes(at, [("log", ["x"]), ("log", ["y"])], task_id="task-1")
    saver.put_writes(at, [("log", ["changed"]), ("log", ["y"])], task_id="task-1")  # a retry: kept as first written
    saver.put_writes(at, [("__error__", "boom")], task_id="task-2")
    saver.put_writes(at, [("__error__", "boom again")], task_id="task-2")  # special writes replace
    writes = [w for w in saver.get_tuple(at).pending_writes if w[0] in ("task-1", "task-2")]
    assert writes == [("task-1", "log", ["x"]), ("task-1", "log", ["y"]), ("task-2", "__error__", "boom again")]
    interrupts = [w for w in saver.get_tuple(at).pending_writes if w[1] == "__interrupt__"]
    assert interrupts and interrupts[0][2][0].value == {"question": "approve the plan?"}


def test_bad_input_raises_typed_errors_and_writes_nothing(worker, rx_server) -> None:
    saver = worker()
    before = dump_all(rx_server.client())
    with pytest.raises(ValidationError) as missing:
        saver.put_writes({"configurable": {"thread_id": "t"}}, [("a", 1)], task_id="x")
    assert missing.value.field == "checkpoint_id"
    with pytest.raises(ValidationError) as no_thread:
        saver.get_tuple({"configurable": {}})
    assert no_thread.value.field == "thread_id"
    with pytest.raises(ValidationError) as strategy:
        saver.prune(["t"], strategy="newest")
    assert strategy.value.field == "strategy"
    with pytest.raises(ValidationError):
        worker(ttl="soon")
    assert dump_all(rx_server.client()) == before


def test_ttl_expires_every_key_of_a_thread(worker, rx_server) -> None:
    saver = worker(ttl=120)
    config = _thread()
    _graph(saver).invoke({"log": []}, config)
    client = rx_server.client()
    thread = config["configurable"]["thread_id"]
    keys = [k for k in client.scan_iter(match=f"rx:{{{saver.store.namespace}:*") if thread.encode() in k]
    assert len(keys) >= 6  # checkpoints, blobs, writes, the head
    assert all(0 < client.pttl(k) <= 120_000 for k in keys)
    assert {k.split(b"}")[0] for k in keys} == {keys[0].split(b"}")[0]}  # one partition: one slot


def test_watch_emits_a_threads_checkpoints_as_they_are_written(worker) -> None:
    saver = worker()
    config, other = _thread(), _thread()
    seen: list[Any] = []
    subscription = saver.watch(config["configurable"]["thread_id"]).subscribe(seen.append)
    try:
        graph = _graph(worker())  # written by another worker: delivered through the change feed
        graph.invoke({"log": []}, other)
        graph.invoke({"log": []}, config)
        written = saver.history(config["configurable"]["thread_id"])
        assert wait_for(lambda: len(seen) == len(written))
        assert [c.checkpoint_id for c in seen] == [c.checkpoint_id for c in reversed(written)]
        assert {c.thread_id for c in seen} == {config["configurable"]["thread_id"]}
        assert [c.step for c in seen] == [-1, 0, 1]
        assert seen[-1].config["configurable"]["checkpoint_id"] == written[0].checkpoint_id
    finally:
        subscription.dispose()


def test_a_saver_works_with_a_fresh_connect(rx_server) -> None:
    store = rxstate.connect(rx_server.url, namespace=f"lg-{uuid.uuid4().hex[:6]}")
    try:
        saver = RxCheckpointSaver(store)
        config = _thread()
        assert _graph(saver).invoke({"log": []}, config)["log"] == ["plan"]
        assert len(saver.history(config["configurable"]["thread_id"])) == 3
    finally:
        store.close()


def test_cli_shows_a_threads_history_without_writing(worker, rx_server) -> None:
    import json

    from typer.testing import CliRunner

    from rxstate.cli.main import app

    saver = worker()
    config = _thread()
    graph = _graph(saver)
    graph.invoke({"log": []}, config)
    graph.invoke(Command(resume="yes"), config)
    thread = config["configurable"]["thread_id"]
    target = ["--url", rx_server.url, "--namespace", saver.store.namespace]
    before = dump_all(rx_server.client())
    listed = CliRunner().invoke(app, ["langgraph", "history", thread, *target, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [r["step"] for r in rows] == [3, 2, 1, 0, -1]
    assert [r["checkpoint_id"] for r in rows] == [c.checkpoint_id for c in saver.history(thread)]
    assert rows[0]["parent_id"] == rows[1]["checkpoint_id"] and rows[-1]["source"] == "input"
    text = CliRunner().invoke(app, ["langgraph", "history", thread, *target, "--limit", "2"])
    assert text.exit_code == 0 and "2 checkpoint(s)" in text.output and rows[0]["checkpoint_id"] in text.output
    assert dump_all(rx_server.client()) == before
