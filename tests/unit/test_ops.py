"""rxstate.ops operators, in virtual time (reactivex TestScheduler): no sleeps, no server."""

from __future__ import annotations

import pytest
from reactivex.testing import ReactiveTest, TestScheduler

from rxstate import ops
from rxstate.errors import ValidationError
from rxstate.feed.change import Change

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error


def ch(cid: str, version: int, coll: str = "agents", op: str = "update", **fields) -> Change:
    return Change(coll, cid, op, version, fields)


def run(scheduler: TestScheduler, source, operator):
    return scheduler.start(lambda: source.pipe(operator), created=1, subscribed=2, disposed=10_000)


def values(results):
    return [(m.time, m.value.value) for m in results.messages if m.value.kind == "N"]


def test_batch_emits_when_full():
    s = TestScheduler()
    src = s.create_hot_observable(on_next(10, 1), on_next(20, 2), on_next(30, 3), on_next(40, 4), on_completed(50))
    res = run(s, src, ops.batch(max_items=2, max_delay=100.0, scheduler=s))
    assert values(res) == [(20, [1, 2]), (40, [3, 4])]
    assert res.messages[-1].time == 50 and res.messages[-1].value.kind == "C"


def test_batch_emits_after_max_delay_from_first_item():
    s = TestScheduler()
    src = s.create_hot_observable(on_next(10, "a"), on_next(15, "b"), on_next(200, "c"), on_completed(500))
    res = run(s, src, ops.batch(max_items=10, max_delay=50.0, scheduler=s))
    # The window runs from the first item (10) for 50 ticks; a quiet stream emits nothing empty.
    assert values(res) == [(60, ["a", "b"]), (250, ["c"])]


def test_batch_flushes_partial_on_completion_and_passes_errors():
    s = TestScheduler()
    src = s.create_hot_observable(on_next(10, 1), on_completed(20))
    assert values(run(s, src, ops.batch(max_items=5, max_delay=100.0, scheduler=s))) == [(20, [1])]
    s = TestScheduler()
    boom = RuntimeError("boom")
    src = s.create_hot_observable(on_next(10, 1), on_error(20, boom))
    res = run(s, src, ops.batch(max_items=5, max_delay=100.0, scheduler=s))
    assert values(res) == []
    assert res.messages[-1].value.kind == "E"


def test_batch_rejects_bad_arguments():
    with pytest.raises(ValidationError):
        ops.batch(max_items=0, max_delay=1)
    with pytest.raises(ValidationError):
        ops.batch(max_items=2, max_delay=-1)


def test_coalesce_keeps_latest_per_key_and_merges_fields():
    s = TestScheduler()
    src = s.create_hot_observable(
        on_next(10, ch("a1", 1, status="busy")),
        on_next(12, ch("a2", 1, load=1)),
        on_next(14, ch("a1", 2, load=5)),
        on_next(16, ch("a2", 2, load=2)),
        on_next(100, ch("a1", 3, load=6)),
    )
    res = run(s, src, ops.coalesce(window=20.0, scheduler=s))
    got = [(t, v.id, v.version, dict(v.fields)) for t, v in values(res)]
    assert got == [
        (30, "a1", 2, {"status": "busy", "load": 5}),
        (30, "a2", 2, {"load": 2}),
        (120, "a1", 3, {"load": 6}),
    ]


def test_coalesce_by_custom_key_keeps_latest():
    s = TestScheduler()
    src = s.create_hot_observable(on_next(10, ("x", 1)), on_next(11, ("y", 1)), on_next(12, ("x", 2)), on_completed(13))
    res = run(s, src, ops.coalesce(lambda t: t[0], window=50.0, scheduler=s))
    # completion flushes the open window at once
    assert values(res) == [(13, ("x", 2)), (13, ("y", 1))]


def test_coalesce_folds_create_then_update_and_delete_wins():
    create = Change("agents", "a1", "create", 1, {"name": "x", "load": 0})
    update = Change("agents", "a1", "update", 2, {"load": 3})
    delete = Change("agents", "a1", "delete", 3, {})
    merged = create.then(update)
    assert merged.op == "create" and dict(merged.fields) == {"name": "x", "load": 3} and merged.version == 2
    assert create.then(update).then(delete).op == "delete"


def test_filters():
    s = TestScheduler()
    items = [
        ch("a1", 1, status="busy"),
        ch("t1", 1, coll="tasks", title="x"),
        ch("b2", 1, load=3),
        ch("a3", 2, op="delete"),
    ]
    src = s.create_hot_observable(*(on_next(10 * (i + 1), c) for i, c in enumerate(items)))
    assert [v.id for _, v in values(run(s, src, ops.collection("tasks")))] == ["t1"]

    def ids(op):
        sch = TestScheduler()
        hot = sch.create_hot_observable(*(on_next(10 * (i + 1), c) for i, c in enumerate(items)))
        return [v.id for _, v in values(run(sch, hot, op))]

    assert ids(ops.id_match("a*")) == ["a1", "a3"]
    assert ids(ops.touches("load")) == ["b2", "a3"]  # a delete touches every field
    assert ids(ops.where(status="busy")) == ["a1"]
    assert ids(ops.where(lambda c: c.collection == "agents", load=3)) == ["b2"]
    with pytest.raises(ValidationError):
        ops.where()
    with pytest.raises(ValidationError):
        ops.collection()


def test_operators_compose_in_pipe():
    s = TestScheduler()
    src = s.create_hot_observable(
        on_next(10, ch("a1", 1, status="busy")),
        on_next(11, ch("t1", 1, coll="tasks")),
        on_next(12, ch("a2", 1, status="busy")),
        on_next(13, ch("a1", 2, status="idle")),
        on_completed(100),
    )
    res = s.start(
        lambda: src.pipe(
            ops.collection("agents"), ops.touches("status"), ops.batch(max_items=2, max_delay=5.0, scheduler=s)
        ),
        created=1,
        subscribed=2,
        disposed=1000,
    )
    assert [(t, [c.id for c in batch]) for t, batch in values(res)] == [(12, ["a1", "a2"]), (18, ["a1"])]
