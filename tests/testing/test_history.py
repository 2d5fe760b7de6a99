"""Histories recorded elsewhere: explicit-time events, JSON lines, Jepsen EDN."""

from __future__ import annotations

import json

import pytest

from rxstate.errors import ValidationError
from rxstate.testing import checkers
from rxstate.testing.linearizability import History, check, register

EVENTS = [
    {"process": 0, "type": "invoke", "f": "write", "value": 1, "time": 1},
    {"process": 1, "type": "invoke", "f": "read", "value": None, "time": 2},
    {"process": 0, "type": "ok", "f": "write", "value": 1, "time": 3},
    {"process": 1, "type": "ok", "f": "read", "value": 1, "time": 4},
    {"process": 2, "type": "invoke", "f": "cas", "value": [1, 2], "time": 5},
    {"process": 2, "type": "fail", "f": "cas", "value": [1, 2], "time": 6},
    {"process": 0, "type": "invoke", "f": "write", "value": 3, "time": 7},
    {"process": 0, "type": "info", "f": "write", "value": 3, "time": 8},
    {"process": 1, "type": "invoke", "f": "write", "value": 4, "time": 9},  # never completed: info
]


def test_events_pair_up_per_process_with_their_times():
    h = History.from_events(EVENTS, time_unit="ms")
    ops = h.ops
    assert [(o.process, o.f, o.status) for o in ops] == [
        ("0", "write", "ok"),
        ("1", "read", "ok"),
        ("2", "cas", "fail"),
        ("0", "write", "info"),
        ("1", "write", "info"),
    ]
    assert ops[0].invoke_ns == 1_000_000 and ops[0].complete_ns == 3_000_000
    assert ops[1].output == 1 and ops[2].value == (1, 2)
    assert ops[3].complete_ns is None and ops[4].complete_ns is None
    assert check(h, register()).valid is True


def test_a_json_lines_log_of_events_loads_like_a_saved_history(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    loaded = History.load(path)
    assert len(loaded) == 5
    stale = tmp_path / "stale.jsonl"
    stale.write_text(
        "".join(
            json.dumps(e) + "\n"
            for e in [
                {"process": "a", "type": "invoke", "f": "write", "value": 1, "time": 0, "key": "x"},
                {"process": "a", "type": "ok", "f": "write", "value": 1, "time": 1, "key": "x"},
                {"process": "b", "type": "invoke", "f": "read", "time": 2, "key": "x"},
                {"process": "b", "type": "ok", "f": "read", "value": 0, "time": 3, "key": "x"},
            ]
        )
    )
    verdict = checkers.registers(0).check(History.load(stale))
    assert verdict.valid is False and verdict.counterexample.key == "x"


def test_a_jepsen_edn_history_with_independent_keys(tmp_path):
    path = tmp_path / "history.edn"
    path.write_text(
        "{:type :invoke, :f :write, :value [:k1 3], :process 0, :time 10, :index 0}\n"
        "{:type :ok, :f :write, :value [:k1 3], :process 0, :time 20, :index 1}\n"
        "{:type :invoke, :f :read, :value [:k1 nil], :process 1, :time 30, :index 2}\n"
        "{:type :ok, :f :read, :value [:k1 4], :process 1, :time 40, :index 3}\n"
    )
    h = History.load_edn(path, independent=True)
    assert [(o.key, o.f, o.value, o.output) for o in h.ops] == [("k1", "write", 3, None), ("k1", "read", None, 4)]
    assert check(h, register()).valid is False


@pytest.mark.parametrize(
    ("events", "match"),
    [
        ([{"process": 0, "type": "invoke", "f": "write", "value": 1}], "no 'time'"),
        ([{"process": 0, "type": "ok", "f": "write", "value": 1, "time": 1}], "completes no invocation"),
        (
            [
                {"process": 0, "type": "invoke", "f": "write", "time": 1},
                {"process": 0, "type": "invoke", "f": "read", "time": 2},
            ],
            "before completing",
        ),
        ([{"process": 0, "type": "invoke", "f": "append", "time": 1}], "unknown operation"),
        ([{"process": 0, "type": "done", "f": "read", "time": 1}], "type must be"),
    ],
)
def test_malformed_events_raise_typed_errors(events, match):
    with pytest.raises(ValidationError, match=match):
        History.from_events(events)


def test_bad_time_unit_and_independent_values_are_refused():
    with pytest.raises(ValidationError, match="time_unit"):
        History.from_events(EVENTS, time_unit="days")
    with pytest.raises(ValidationError, match=r"\[key, value\] pair"):
        History.from_events(EVENTS, independent=True)
