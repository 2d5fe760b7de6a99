"""The workloads against rxstate itself, on a real server and on the local cluster, under each nemesis.

Each run is short (under a second of agents, on a shared two-core machine: the counts asked for are low);
the verdict must be valid (the fixture fails the test with the rendered counterexample otherwise), and the
run must have done real work: acknowledged operations, and faults actually applied.
"""

from __future__ import annotations

import pytest

from rxstate.testing import checkers, workload
from tests.testing import agents

FAULTS = ["none", "cut", "client-kill", "delay", "drop-reply", "pause", "kill", "restart"]


def _faults(name: str) -> tuple[str, ...]:
    return () if name == "none" else (name,)


def _params(*names: str) -> list:
    """The fault names as parameters; runs under a fault are marked slow."""
    return [pytest.param(n, marks=[] if n == "none" else [pytest.mark.slow], id=n) for n in names]


def _assert_worked(run, f: str, minimum: int) -> None:
    ok = sum(op.status == "ok" and op.f == f for op in run.history.ops)
    assert ok >= minimum, f"only {ok} acknowledged {f} operations"
    if run.schedule is not None:
        assert any(action == "inject" for _t, _name, action in run.schedule.log), run.schedule.log


@pytest.mark.parametrize("fault", _params(*FAULTS))
@workload(checker=checkers.entities(), seconds=0.6, processes=3)
def test_registers_are_linearizable_under_each_fault(rx_workload, fault):
    run = rx_workload.run(agents.register_step, setup=agents.seed_cells, final=agents.read_cells, faults=_faults(fault))
    _assert_worked(run, "read", 5)
    assert sum(op.f == "incr" and op.status == "ok" for op in run.history.ops) >= 5


@pytest.mark.parametrize("fault", _params("none", "cut", "pause", "kill"))
@workload(checker=checkers.bank(agents.TOTAL), seconds=0.6, processes=3)
def test_bank_totals_are_conserved_under_faults(rx_workload, fault):
    run = rx_workload.run(agents.bank_step, setup=agents.seed_bank, final=agents.read_bank, faults=_faults(fault))
    _assert_worked(run, "transfer", 2)
    _assert_worked(run, "read", 5)


@pytest.mark.parametrize("fault", _params("none", "cut", "client-kill", "kill"))
@workload(checker=checkers.set_full(), seconds=0.6, processes=3)
def test_set_full_loses_nothing_under_faults(rx_workload, fault):
    run = rx_workload.run(agents.set_step, final=agents.read_set, faults=_faults(fault))
    _assert_worked(run, "add", 5)


@pytest.mark.parametrize("fault", _params("none", "cut", "client-kill"))
@workload(checker=checkers.queue(), seconds=0.6, processes=2)
def test_the_change_feed_delivers_each_change_once_in_order_under_faults(rx_workload, fault):
    state = {}

    def setup(store):
        state["consumer"] = agents.FeedConsumer(store)

    def final(store):
        state["consumer"].drain(agents.acknowledged(store.history))

    run = rx_workload.run(agents.produce_step, setup=setup, final=final, faults=_faults(fault))
    _assert_worked(run, "enqueue", 5)
    assert sum(op.f == "dequeue" for op in run.history.ops) >= 5


@pytest.mark.cluster
@pytest.mark.parametrize("fault", _params("none", "client-kill"))
@workload(checker=checkers.entities(), seconds=0.6, processes=3)
def test_registers_on_a_cluster(rx_workload, fault):
    run = rx_workload.run(
        agents.register_step, setup=agents.seed_cells, final=agents.read_cells, cluster=True, faults=_faults(fault)
    )
    _assert_worked(run, "read", 5)


@pytest.mark.cluster
@workload(checker=checkers.bank(agents.TOTAL), seconds=0.6, processes=3, faults=("client-kill",))
def test_bank_on_a_cluster(rx_workload):
    run = rx_workload.run(agents.bank_step, setup=agents.seed_bank, final=agents.read_bank, cluster=True)
    _assert_worked(run, "transfer", 2)


@pytest.mark.cluster
@pytest.mark.parametrize("fault", _params("none", "client-kill"))
@workload(checker=checkers.set_full(), seconds=0.6, processes=3)
def test_set_full_on_a_cluster(rx_workload, fault):
    run = rx_workload.run(agents.set_step, final=agents.read_set, cluster=True, faults=_faults(fault))
    _assert_worked(run, "add", 5)


@pytest.mark.cluster
@workload(checker=checkers.queue(), seconds=0.6, processes=2)
def test_the_change_feed_on_a_cluster(rx_workload):
    state = {}

    def setup(store):
        state["consumer"] = agents.FeedConsumer(store)

    def final(store):
        state["consumer"].drain(agents.acknowledged(store.history))

    run = rx_workload.run(agents.produce_step, setup=setup, final=final, cluster=True)
    _assert_worked(run, "enqueue", 5)
