"""A client SIGKILLed at every step of a two-phase commit leaves no half-applied state visible.

The committing client is a separate process that kills itself (``SIGKILL``) right after step k of the
protocol (through ``rxstate.store.twophase.fault_hook``). Afterwards, readers must see the whole transaction
(killed after the commit point) or none of it (killed before), through point reads and listings alike;
writers must get past its locks; and once its deadline has passed, nothing of it is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from redis.crc import key_slot

import rxstate
from tests.contract.test_transactions import leftovers, tx_changes
from tests.models import Agent, Task

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TTL = 0.5
# prepared:<primary>, prepared:<2nd>, prepared:<3rd>, committed, resolved x3, forgotten
STEPS = 8
COMMIT_STEP = 4

CHILD = """
import os, signal, sys
import rxstate
from rxstate.store import twophase
from tests.models import Agent, Task

url, namespace, crash_at, a, b, c, ttl = sys.argv[1:]
store = rxstate.connect(url, namespace=namespace, reap_interval=None)
agents = store.collection("agents", Agent, indexes=["status"])
tasks = store.collection("tasks", Task)
tx = store.transaction(two_phase=True, ttl=float(ttl))
calls = []

def hook(step):
    calls.append(step)
    if len(calls) == 1:
        print(tx.txid, flush=True)
    if len(calls) == int(crash_at):
        os.kill(os.getpid(), signal.SIGKILL)

twophase.fault_hook = hook
with tx:
    tx.update(agents, a, status="busy", load=tx.get(agents, a).load + 1)
    tx.put(tasks, b, Task(title="new", owner=a))
    tx.delete(agents, c)
print("finished", calls, flush=True)
"""


def spread_over_nodes(store, masters=3):
    """Three ids whose partitions sit on three different masters of a ``LocalCluster`` (slots split evenly)."""
    out, nodes = [], set()
    for i in range(10_000):
        candidate = f"k{i}"
        node = key_slot(store.keyspace.entity("agents", candidate, store.keyspace.partition_of(candidate)).encode())
        node = node * masters // 16384
        if node not in nodes:
            nodes.add(node)
            out.append(candidate)
            if len(out) == masters:
                return out
    raise AssertionError("no ids on every node")


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def server_url(request):
    if request.param == "redis":
        return request.getfixturevalue("rx_server").url
    cluster = request.getfixturevalue("rx_cluster")
    host, port = cluster.startup_nodes[0]
    return f"redis+cluster://{host}:{port}/0"


@pytest.mark.parametrize("crash_at", range(1, STEPS + 1))
def test_kill_committer_after_each_step(server_url, crash_at):
    namespace = f"crash{uuid.uuid4().hex[:10]}"
    store = rxstate.connect(server_url, namespace=namespace, reap_interval=None)
    try:
        agents = store.collection("agents", Agent, indexes=["status"])
        tasks = store.collection("tasks", Task)
        a, b, c = spread_over_nodes(store)
        agents.put(a, Agent(name="a"))
        agents.put(c, Agent(name="c"))

        child = subprocess.run(
            [sys.executable, "-c", CHILD, server_url, namespace, str(crash_at), a, b, c, str(TTL)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
        assert child.returncode == -signal.SIGKILL, child.stderr
        txid = child.stdout.split()[0]

        committed = crash_at >= COMMIT_STEP
        assert bool(leftovers(store)) == (crash_at < STEPS)  # it died holding locks (or a record)
        # Readers first: point reads and listings agree on all-or-nothing.
        if committed:
            assert sorted(agents.ids()) == [a] and tasks.ids() == [b]
            assert [x.name for x in agents.where(status="busy")] == ["a"]
            assert agents.get(a) == Agent(name="a", status="busy", load=1)
            assert tasks.get(b).owner == a and not agents.exists(c)
            records = tx_changes(store, txid)
            assert sorted((r["i"], r["o"]) for r in records) == sorted([(a, "update"), (b, "create"), (c, "delete")])
            assert {r["n"] for r in records} == {"3"}
        else:
            assert agents.get(a) == Agent(name="a") and agents.get(c) == Agent(name="c")
            assert not tasks.exists(b) and tasks.get(b, None) is None
            assert sorted(agents.ids()) == sorted([a, c]) and tasks.ids() == []
            assert agents.where(status="busy") == []
            assert tx_changes(store, txid) == []
        # Writers get past its locks (waiting out a pending transaction until its deadline).
        started = time.monotonic()
        agents.update(a, notes="after")
        assert time.monotonic() - started < TTL + 2
        assert agents.get(a).status == ("busy" if committed else "idle")
        # Once past the deadline, the sweep leaves nothing of it behind.
        time.sleep(max(0.0, TTL - (time.monotonic() - started)) + 0.05)
        store.resolve_transactions()
        assert leftovers(store) == []
        assert tasks.exists(b) is committed and agents.exists(c) is not committed
    finally:
        store.close()
