"""Each checker catches a deliberately broken store, on a real server, and says why on the timeline."""

from __future__ import annotations

import pytest

from rxstate.testing import Workload, WorkloadSpec, checkers, workload
from tests.testing import agents


def _run(rx_server, step, checker, *, setup=None, final=None, attempts=3, **spec):
    """Run the workload until the checker finds the bug, at most ``attempts`` times (a race needs luck)."""
    spec.setdefault("seconds", 0.6)
    spec.setdefault("processes", 3)
    for _ in range(attempts):
        run = Workload(WorkloadSpec(checker, **spec), server=rx_server).run(step, setup=setup, final=final)
        if run.verdict.valid is False:
            break
    return run


def test_a_cache_without_invalidation_is_not_linearizable(rx_server):
    run = _run(
        rx_server,
        agents.register_step,
        checkers.entities(),
        setup=agents.seed_cells,
        final=agents.read_cells,
        wrap=agents.StaleCache,
    )
    verdict = run.verdict
    assert verdict.valid is False
    assert verdict.counterexample is not None and verdict.counterexample.stuck
    assert [a.kind for a in verdict.anomalies] == ["non-linearizable"] * len(verdict.anomalies)
    report = verdict.text()
    assert "is not linearizable" in report and "!" in report  # the operation that cannot fit is marked
    page = verdict.html()
    assert " bad'" in page and " lin'" in page  # bars of the stuck operations and of the linearization


def test_blindly_retried_increments_are_caught(rx_server):
    def step(agent):
        agent.store.collection("cells", agents.Cell).incr(agent.rng.choice(agents.KEYS), "n", 1)

    run = _run(
        rx_server, step, checkers.entities(), setup=agents.seed_cells, final=agents.read_cells, wrap=agents.BlindRetries
    )
    assert run.verdict.valid is False
    stuck = run.verdict.counterexample.stuck
    assert any(op.f in ("incr", "read") for op in stuck)


def test_a_transfer_in_two_writes_breaks_the_bank(rx_server):
    def step(agent):
        agents.bank_step(agent, move=agents.broken_transfer)

    run = _run(rx_server, step, checkers.bank(agents.TOTAL), setup=agents.seed_bank, final=agents.read_bank)
    kinds = {a.kind for a in run.verdict.anomalies}
    assert run.verdict.valid is False and "total" in kinds


def test_adds_acknowledged_but_not_stored_are_lost(rx_server):
    forgetful = agents.ForgetfulAdds()

    def step(agent):
        agents.set_step(agent, add=forgetful)

    run = _run(rx_server, step, checkers.set_full(), final=agents.read_set)
    kinds = {a.kind for a in run.verdict.anomalies}
    assert run.verdict.valid is False and kinds == {"lost"}
    assert all(a.ops[0].f == "add" and a.ops[-1].f == "read" for a in run.verdict.anomalies)


def test_a_consumer_that_redelivers_out_of_order_is_caught(rx_server):
    state = {}

    def setup(store):
        state["consumer"] = agents.FeedConsumer(store, broken=True)

    def final(store):
        state["consumer"].drain(agents.acknowledged(store.history), timeout=3)

    run = _run(rx_server, agents.produce_step, checkers.queue(), setup=setup, final=final, processes=2)
    kinds = {a.kind for a in run.verdict.anomalies}
    assert run.verdict.valid is False
    assert {"duplicated", "order"} <= kinds


def test_lagging_reads_break_the_session_guarantees(rx_server):
    run = _run(rx_server, agents.register_step, checkers.sessions(), setup=agents.seed_cells, wrap=agents.LaggingReads)
    kinds = {a.kind for a in run.verdict.anomalies}
    assert run.verdict.valid is False
    assert {"read-your-writes", "monotonic-reads"} <= kinds
    # the same store without the lag keeps both guarantees
    fine = _run(rx_server, agents.register_step, checkers.sessions(), setup=agents.seed_cells, attempts=1)
    assert fine.verdict.valid is True


@workload(checker=checkers.entities(), seconds=0.5, processes=2, wrap=agents.StaleCache)
def test_the_fixture_fails_the_test_with_the_rendered_counterexample(rx_workload, tmp_path):
    with pytest.raises(pytest.fail.Exception) as failed:
        rx_workload.run(agents.register_step, setup=agents.seed_cells, final=agents.read_cells)
    message = str(failed.value)
    assert "INVALID" in message and "is not linearizable" in message and "HTML timeline:" in message
    assert (tmp_path / "timeline.html").read_text().startswith("<!DOCTYPE html>")
    assert rx_workload.last.verdict.valid is False


def _seed_counter(store):
    store.store.collection("cells", agents.Cell).put("a", agents.Cell())  # unrecorded: the counter starts at 0


def _count_step(agent):
    cells = agent.store.collection("cells", agents.Cell)
    with agent.store.recording("incr", "counter", 1) as call:
        call.ok(cells.inner.incr("a", "n", 1))


def _read_count(store):
    with store.recording("read", "counter") as call:
        call.ok(store.collection("cells", agents.Cell).inner.get("a").n)


def test_the_counter_checker_catches_blind_retries(rx_server):
    run = _run(
        rx_server,
        _count_step,
        checkers.counters(),
        setup=_seed_counter,
        final=_read_count,
        wrap=agents.BlindRetries,
    )
    assert run.verdict.valid is False and run.verdict.counterexample.key == "counter"
    fine = _run(rx_server, _count_step, checkers.counters(), setup=_seed_counter, final=_read_count, attempts=1)
    assert fine.verdict.valid is True
