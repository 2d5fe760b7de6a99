"""The checkers on hand-made histories: each anomaly it names, found; valid histories, passed."""

from __future__ import annotations

import pytest

from rxstate.errors import ValidationError
from rxstate.testing import checkers
from rxstate.testing.linearizability import History, Op


def op(process, f, *, value=None, output=None, start, end, key="s", status="ok"):
    return Op(process, key, f, value, output, status, start, end)


def test_set_full_accepts_a_correct_history():
    h = [
        op("a", "add", value=1, start=0, end=10),
        op("b", "read", output=[], start=1, end=5),
        op("b", "read", output=[1], start=20, end=30),
        op("a", "add", value=2, start=25, end=40, status="info"),
    ]
    verdict = checkers.set_full().check(h)
    assert verdict.valid is True and verdict.anomalies == []


@pytest.mark.parametrize(
    ("history", "kind"),
    [
        ([op("a", "add", value=1, start=0, end=10), op("b", "read", output=[], start=20, end=30)], "lost"),
        (
            [
                op("a", "add", value=1, start=0, end=10),
                op("b", "read", output=[], start=20, end=30),
                op("b", "read", output=[1], start=40, end=50),
            ],
            "stale",
        ),
        ([op("b", "read", output=[7], start=0, end=5)], "unexpected"),
        (
            [op("a", "add", value=1, start=0, end=10, status="fail"), op("b", "read", output=[1], start=20, end=30)],
            "unexpected",
        ),
        (
            [
                op("a", "add", value=1, start=0, end=10),
                op("a", "remove", value=1, start=11, end=15),
                op("b", "read", output=[1], start=20, end=30),
            ],
            "resurrected",
        ),
    ],
)
def test_set_full_names_each_anomaly(history, kind):
    verdict = checkers.set_full().check(history)
    assert verdict.valid is False
    assert [a.kind for a in verdict.anomalies] == [kind]
    assert verdict.anomalies[0].ops  # the operations involved, for the timeline


def test_a_removal_in_flight_excuses_a_missing_element():
    h = [
        op("a", "add", value=1, start=0, end=10),
        op("a", "remove", value=1, start=15, end=None, status="info"),
        op("b", "read", output=[], start=20, end=30),
    ]
    assert checkers.set_full().check(h).valid is True


def test_queue_finds_loss_duplicates_strangers_and_reordering():
    h = [
        op("p", "enqueue", value=("k", 1), start=0, end=1),
        op("p", "enqueue", value=("k", 2), start=2, end=3),
        op("p", "enqueue", value=("k", 3), start=4, end=5),
        op("p", "enqueue", value=("j", 9), start=6, end=7),
        op("c", "dequeue", output=("k", 2), start=10, end=10),
        op("c", "dequeue", output=("k", 1), start=11, end=11),
        op("c", "dequeue", output=("k", 1), start=12, end=12),
        op("c", "dequeue", output=("z", 0), start=13, end=13),
        op("c", "dequeue", output=("k", 3), start=14, end=14),
    ]
    kinds = sorted(a.kind for a in checkers.queue().check(h).anomalies)
    assert kinds == ["duplicated", "lost", "order", "order", "unexpected"]
    assert checkers.queue(drained=False, order_key=None).check(h).valid is False  # still duplicates


def test_queue_accepts_order_across_keys_and_consumers():
    h = [
        op("p", "enqueue", value=("k", 1), start=0, end=1),
        op("p", "enqueue", value=("j", 1), start=2, end=3),
        op("c1", "dequeue", output=("j", 1), start=10, end=10),
        op("c2", "dequeue", output=("k", 1), start=9, end=9),
        op("p", "enqueue", value=("k", 2), start=20, end=None, status="info"),
    ]
    assert checkers.queue().check(h).valid is True  # an unknown enqueue never delivered is no loss


def test_bank_checks_totals_and_overdrafts():
    h = History(process="p")
    h.invoke("transfer", "bank", ("a", "b", 5)).ok()
    h.invoke("read", "bank").ok({"a": 45, "b": 55})
    assert checkers.bank(100).check(h).valid is True
    h.invoke("read", "bank").ok({"a": -5, "b": 105})
    assert [a.kind for a in checkers.bank(100).check(h).anomalies] == ["negative"]
    assert checkers.bank(100, allow_negative=True).check(h).valid is True
    h.invoke("read", "bank").ok({"a": 45, "b": 50})
    assert "sum to 95" in str(checkers.bank(100).check(h).anomalies[-1])


def _v(version):
    return {"version": version, "value": {}}


def test_sessions_read_your_writes_and_monotonic_reads():
    good = [
        op("p", "write", output={"version": 3}, start=0, end=1, key="k"),
        op("p", "read", output=_v(3), start=2, end=3, key="k"),
        op("q", "read", output=_v(2), start=4, end=5, key="k"),
        op("p", "read", output=_v(4), start=6, end=7, key="k"),
    ]
    assert checkers.sessions().check(good).valid is True
    bad = [*good, op("p", "read", output=_v(2), start=8, end=9, key="k")]
    kinds = sorted(a.kind for a in checkers.sessions().check(bad).anomalies)
    assert kinds == ["monotonic-reads", "read-your-writes"]
    assert checkers.sessions(read_your_writes=False).check(bad).anomalies[0].kind == "monotonic-reads"


def test_registers_and_counters_through_the_checker_interface():
    h = History(process="p")
    h.invoke("incr", "c", 1).ok(1)
    h.invoke("incr", "c", 1).ok(3)  # applied twice
    verdict = checkers.counters().check(h)
    assert verdict.valid is False and verdict.counterexample.key == "c"
    assert "INVALID" in str(verdict) and "non-linearizable" in str(verdict)


def _hard_history(keys=("x", "y"), n=14):
    """Concurrent writes all overlapping one read that nobody wrote: no linearization; a full search."""
    ops = []
    for key in keys:
        ops += [Op(f"w{i}", key, "write", i, None, "ok", i, 1000) for i in range(n)]
        ops.append(Op("r", key, "read", None, -1, "ok", 0, 1001))
    return ops


def test_partitions_check_in_parallel_processes_with_the_same_verdict():
    ops = _hard_history(n=6)
    serial = checkers.registers().check(ops)
    parallel = checkers.registers().check(ops, processes=2)
    assert serial.valid is parallel.valid is False
    assert serial.partitions == parallel.partitions == 2
    assert {a.key for a in parallel.anomalies} == {"x", "y"}


def test_a_user_partition_function(tmp_path):
    ops = [op("p", "add", value=1, start=0, end=1, key="s1"), op("p", "read", output=[], start=2, end=3, key="s2")]
    assert checkers.set_full().check(ops).valid is True  # different keys: different sets
    assert checkers.set_full().check(ops, partition=_one_set).valid is False


def _one_set(op):
    return "all"


def test_the_time_limit_reports_unknown_honestly():
    verdict = checkers.registers().check(_hard_history(keys=("x",), n=60), timeout=0.05)
    assert verdict.valid is None
    assert verdict.unknown == ["x"] and verdict.anomalies == []
    assert "unknown" in str(verdict)
    assert not verdict


def test_bad_options_raise_typed_errors():
    with pytest.raises(ValidationError, match="processes"):
        checkers.registers().check([], processes=0)
    with pytest.raises(ValidationError, match="timeout"):
        checkers.registers().check([], timeout=0)
