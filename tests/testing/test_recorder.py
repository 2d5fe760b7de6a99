"""record(store): what each call records, and how its outcome is classified."""

from __future__ import annotations

import fakeredis
import pytest
import redis

import rxstate
from rxstate.errors import ConflictError, NotFound, UnknownOutcome, ValidationError
from rxstate.testing import checkers, faults, record
from rxstate.testing.linearizability import History
from rxstate.testing.recorder import outcome
from tests.testing.agents import Cell


@pytest.fixture
def store():
    s = record(rxstate.connect(fakeredis.FakeRedis(), cache=False), process="p1")
    yield s
    s.store.close()


def test_every_call_is_recorded_with_its_shape(store):
    cells = store.collection("cells", Cell)
    cells.put("c", Cell(value=1))
    cells.update("c", value=2)
    cells.update("c", lambda c: c.model_copy(update={"n": 5}))
    assert cells.incr("c", "n", 2) == 7
    assert cells.get("c").value == 2
    assert cells.delete("c") is True
    with pytest.raises(NotFound):
        cells.get("c")
    ops = store.history.ops
    assert [(o.f, o.status) for o in ops] == [
        ("write", "ok"),
        ("update", "ok"),
        ("rmw", "ok"),
        ("incr", "ok"),
        ("read", "ok"),
        ("delete", "ok"),
        ("read", "ok"),
    ]
    assert {o.key for o in ops} == {"cells/c"} and {o.process for o in ops} == {"p1"}
    assert ops[0].output == {"version": 1} and ops[1].value == {"fields": {"value": 2}, "expected": None}
    assert ops[2].output == {"version": 3, "value": {"value": 2, "n": 5}}
    assert ops[4].output == {"version": 4, "value": {"value": 2, "n": 7}}
    assert ops[6].output is None  # it read that nothing is there
    assert all(o.invoke_ns <= o.complete_ns for o in ops)
    assert checkers.entities().check(store.history).valid is True


def test_refusals_are_fails_and_leave_the_history_checkable(store):
    cells = store.collection("cells", Cell)
    cells.put("c", Cell())
    with pytest.raises(ConflictError):
        cells.update("c", value=9, expected_version=7)
    with pytest.raises(NotFound):
        cells.incr("nope", "n", 1)
    with pytest.raises(ValidationError):
        cells.incr("c", "n", 1.5)
    assert [o.status for o in store.history.ops] == ["ok", "fail", "fail", "fail"]
    assert checkers.entities().check(store.history).valid is True


def test_a_wrong_read_is_caught_by_the_entity_model(store):
    cells = store.collection("cells", Cell)
    cells.put("c", Cell(value=1))
    with store.recording("read", "cells/c") as call:  # a read reported by some other path, wrong
        call.ok({"version": 1, "value": {"value": 5, "n": 0}})
    assert checkers.entities().check(store.history).valid is False


def test_threads_record_as_their_own_processes_and_stores_merge():
    shared = History()
    a = record(rxstate.connect(fakeredis.FakeRedis(), cache=False), history=shared, process="a")
    b = record(rxstate.connect(fakeredis.FakeRedis(), cache=False), history=shared, process="b")
    a.collection("cells", Cell).put("x", Cell())
    with b.as_process("b-agent-2"):
        b.collection("cells", Cell).put("y", Cell())
    b.collection("cells", Cell).put("z", Cell())
    assert [o.process for o in shared.ops] == ["a", "b-agent-2", "b"]


def test_outcomes_of_errors():
    assert outcome("write", ConflictError("stale")) == "fail"
    assert outcome("write", redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")) == "fail"
    assert outcome("write", redis.ConnectionError("Connection reset by peer")) == "info"
    assert outcome("write", redis.TimeoutError("Timeout reading from socket")) == "info"
    assert (
        outcome("write", UnknownOutcome("no reply", write_id="w", record="r", keys=[], script="s", remembered_ms=1))
        == "info"
    )


def test_a_write_whose_reply_is_lost_is_recorded_as_unknown(rx_server):
    with faults.proxy(rx_server.port) as p:
        client = redis.Redis(port=p.port, socket_timeout=0.5, retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))
        store = record(rxstate.connect(client, namespace="rec-lost", cache=False, write_retries=0), process="w")
        cells = store.collection("cells", Cell)
        cells.put("c", Cell())
        p.arm(mode="drop")
        with pytest.raises((UnknownOutcome, redis.ConnectionError)):
            cells.incr("c", "n", 1)
        assert cells.get("c").n == 1  # it did take effect
        assert [o.status for o in store.history.ops] == ["ok", "info", "ok"]
        assert store.history.ops[1].complete_ns is None
        assert checkers.entities().check(store.history).valid is True
        store.store.close()


def test_an_asyncio_store_records_concurrent_tasks_into_one_history():
    import asyncio

    import rxstate.aio

    async def main():
        async with rxstate.aio.connect(fakeredis.FakeAsyncRedis(), cache=False) as astore:
            shared = History()
            recorded = [record(astore, history=shared, process=f"task-{i}") for i in range(3)]
            cells = [await r.collection("cells", Cell) for r in recorded]
            await cells[0].put("c", Cell(value=0))

            async def bump(i):
                for _ in range(5):
                    await cells[i].incr("c", "n", 1)
                    await cells[i].get("c")

            await asyncio.gather(*(bump(i) for i in range(3)))
            with pytest.raises(NotFound):
                await cells[1].get("missing")
            return shared

    shared = asyncio.run(main())
    ops = shared.ops
    assert {o.process for o in ops} == {"task-0", "task-1", "task-2"}
    assert sum(o.f == "incr" and o.status == "ok" for o in ops) == 15
    assert max(o.output for o in ops if o.f == "incr") == 15
    assert (ops[-1].f, ops[-1].status, ops[-1].output) == ("read", "ok", None)  # a read of nothing
    assert all(o.invoke_ns <= o.complete_ns for o in ops)
    assert checkers.entities().check(shared).valid is True
