"""The linearizability checker on hand-made histories."""

from __future__ import annotations

import random
import threading

import pytest

from rxstate.testing.linearizability import History, Op, check, counter, register


def op(process, f, value=None, output=None, *, start, end, status="ok", key="x"):
    return Op(str(process), key, f, value, output, status, start, None if status == "info" else end)


def test_sequential_register_history_is_linearizable():
    h = [
        op(1, "write", 1, start=0, end=1),
        op(1, "read", output=1, start=2, end=3),
        op(1, "cas", (1, 2), True, start=4, end=5),
        op(1, "cas", (1, 3), False, start=6, end=7),
        op(1, "read", output=2, start=8, end=9),
    ]
    result = check(h, model=register())
    assert result.valid is True and result.ops == 5 and result.keys == 1


def test_stale_read_after_completed_write_is_caught():
    h = [
        op(1, "write", 1, start=0, end=1),
        op(2, "write", 2, start=2, end=3),
        op(3, "read", output=1, start=4, end=5),  # 2 was written (and acknowledged) before this read began
    ]
    result = check(h, model=register())
    assert result.valid is False
    ce = result.counterexample
    assert ce.key == "x" and ce.state == 2
    assert any(o.f == "read" and o.output == 1 for o in ce.stuck)
    assert "not linearizable" in str(ce)


def test_concurrent_reads_may_see_either_value():
    h = [
        op(1, "write", 1, start=0, end=1),
        op(2, "write", 2, start=2, end=10),
        op(3, "read", output=2, start=3, end=4),  # the write may take effect before this read...
        op(4, "read", output=1, start=3, end=4),  # ...but not both orders at once:
    ]
    assert check(h[:3]).valid is True
    assert check([h[0], h[1], h[3]]).valid is True
    # both reads overlap, so 1 then 2 is fine; but 2 strictly before 1 is not
    h2 = [*h[:2], op(3, "read", output=2, start=3, end=4), op(4, "read", output=1, start=5, end=6)]
    assert check(h2).valid is False


def test_info_write_may_apply_late_or_never():
    base = [op(1, "write", 1, start=0, end=1), op(2, "write", 2, start=2, end=3, status="info")]
    assert check([*base, op(3, "read", output=1, start=10, end=11)]).valid is True
    assert check([*base, op(3, "read", output=2, start=10, end=11)]).valid is True
    # once a read saw 2, a later read cannot see the older 1 again
    late = [op(3, "read", output=2, start=10, end=11), op(3, "read", output=1, start=12, end=13)]
    assert check([*base, *late]).valid is False
    # an info write cannot take effect before its invocation
    early = [op(3, "read", output=2, start=0, end=1), op(1, "write", 2, start=5, end=6, status="info")]
    assert check(early).valid is False


def test_failed_ops_are_ignored_and_cas_outputs_are_checked():
    h = [
        op(1, "write", 1, start=0, end=1),
        op(2, "write", 5, start=2, end=3, status="fail"),
        op(1, "cas", (5, 6), True, start=4, end=5),  # 5 was never written
    ]
    assert check(h).valid is False
    assert check([*h[:2], op(1, "cas", (5, 6), False, start=4, end=5)]).valid is True


def test_counter_model():
    ok = [
        op(1, "incr", 1, 1, start=0, end=10, key="c"),
        op(2, "incr", 1, 2, start=1, end=5, key="c"),
        op(3, "read", output=2, start=11, end=12, key="c"),
    ]
    assert check(ok, model=counter()).valid is True
    lost = [*ok, op(1, "incr", 1, None, start=13, end=14, key="c"), op(3, "read", output=2, start=15, end=16, key="c")]
    result = check(lost, model=counter())
    assert result.valid is False and result.counterexample.key == "c"
    double = [op(1, "incr", 1, 2, start=0, end=1, key="c")]  # applied twice, reported once
    assert check(double, model=counter()).valid is False


def test_keys_are_checked_independently_with_per_key_models():
    h = [
        op(1, "write", 1, start=0, end=1, key="r"),
        op(1, "incr", 3, 3, start=0, end=1, key="c"),
        op(2, "read", output=1, start=2, end=3, key="r"),
        op(2, "read", output=3, start=2, end=3, key="c"),
    ]
    result = check(h, model={"r": register(), "c": counter()})
    assert result.valid is True and result.keys == 2
    assert check(h, model=lambda key: counter() if key == "c" else register()).valid is True


def test_recorder_threads_context_manager_and_file_roundtrip(tmp_path):
    h = History(process="main")

    def worker(n):
        for i in range(50):
            h.invoke("write", "k", n * 100 + i, process=f"t{n}").ok()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with pytest.raises(ZeroDivisionError), h.invoke("cas", "k", (1, 2)):
        raise ZeroDivisionError  # an exception before the outcome: recorded as info
    assert len(h) == 201 and h.ops[-1].status == "info" and h.ops[-1].complete_ns is None
    path = tmp_path / "h.jsonl"
    h.save(path)
    loaded = History.load(path)
    assert loaded.ops == h.ops  # cas tuples survive the JSON round trip
    merged = History.merge(loaded, [op("z", "read", output=None, start=0, end=1, key="other")])
    assert len(merged) == 202
    with pytest.raises(ValueError):
        h.invoke("append", "k")


def simulated_history(n_ops, processes, seed):
    """A linearizable history: an atomic register driven by overlapping simulated clients."""
    rng = random.Random(seed)
    value, t, ops, busy_until = 0, 0, [], dict.fromkeys(range(processes), 0)
    for _ in range(n_ops):
        p = rng.randrange(processes)
        start = max(t, busy_until[p]) + rng.randrange(3)
        point = start + rng.randrange(1, 20)
        end = point + rng.randrange(1, 20)
        t = point
        kind = rng.choice(["read", "write", "cas"])
        if kind == "read":
            ops.append(op(p, "read", output=value, start=start, end=end))
        elif kind == "write":
            value = rng.randrange(5)
            ops.append(op(p, "write", value, start=start, end=end))
        else:
            expected, new = rng.randrange(5), rng.randrange(5)
            success = value == expected
            value = new if success else value
            ops.append(op(p, "cas", (expected, new), success, start=start, end=end))
        busy_until[p] = end
    return ops


def test_simulated_concurrent_histories_pass_and_a_corrupted_one_fails():
    ops = simulated_history(600, 5, seed=7)
    assert check(ops, model=register(0)).valid is True
    # Change one read that follows a completed write of a different value into a stale one.
    for i, o in enumerate(ops):
        if o.f == "read" and i > 50 and all(x.complete_ns < o.invoke_ns for x in ops[i - 5 : i]):
            ops[i] = op(o.process, "read", output=99, start=o.invoke_ns, end=o.complete_ns)
            break
    assert check(ops, model=register(0)).valid is False


def test_timeout_gives_unknown():
    ops = simulated_history(3000, 8, seed=3)
    result = check(ops, model=register(0), timeout=0.0)
    assert result.valid is None and result.unknown_keys == ["x"] and not result


def test_many_lost_increments_stay_cheap_and_a_double_count_is_still_caught():
    rng = random.Random(5)
    ops, value, t = [], 0, 0
    for n in range(2000):
        start = t + rng.randrange(3)
        t = start + 5
        if n % 3:
            value += 1
            ops.append(op(n % 4, "incr", 1, value, start=start, end=start + 10, key="c"))
        else:
            ops.append(op(n % 4, "read", output=value, start=start, end=start + 10, key="c"))
    lost = [op(f"lost{j}", "incr", 1, start=rng.randrange(t), end=None, status="info", key="c") for j in range(40)]
    result = check([*ops, *lost], model=counter(), timeout=30)
    assert result.valid is True and result.seconds < 5
    # Two of the lost increments did happen: the final read shows them.
    final = op("final", "read", output=value + 2, start=t + 100, end=t + 101, key="c")
    assert check([*ops, *lost, final], model=counter(), timeout=30).valid is True
    too_many = op("final", "read", output=value + 41, start=t + 100, end=t + 101, key="c")
    assert check([*ops, *lost, too_many], model=counter(), timeout=30).valid is False
