"""Histories of several processes against real servers, checked for linearizability."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import pytest

from rxstate.server import EmbeddedServer
from rxstate.testing.linearizability import History, check, counter, register
from tests.integration import lin_workers
from tests.integration.lin_workers import COUNTERS, REGISTERS, Cell

MODELS = {**{k: register(0) for k in REGISTERS}, **{k: counter(0) for k in COUNTERS}}
WORKERS = 4


def seed_cells(port, namespace):
    store = lin_workers.connect(port, namespace)
    cells = store.collection("cells", Cell)
    for key in REGISTERS + COUNTERS:
        cells.put(key, Cell())
    return store, cells


def start_workers(port, namespace, tmp_path, seconds):
    ctx = multiprocessing.get_context("spawn")  # no fork of a threaded test process
    paths = [str(tmp_path / f"w{i}.jsonl") for i in range(WORKERS)]
    ready = ctx.Queue()
    procs = [
        ctx.Process(target=lin_workers.run, args=(port, namespace, f"w{i}", seconds, i + 1, paths[i], ready))
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)  # every worker is connected and about to start
    return procs, paths


def join_workers(procs):
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, f"worker {p.name} exited with {p.exitcode}"


def final_reads(cells):
    """A last read of every key, after all workers stopped, by another process (this one)."""
    h = History(process="final")
    for key in REGISTERS:
        with h.invoke("read", key) as call:
            call.ok(cells.get(key).value)
    for key in COUNTERS:
        with h.invoke("read", key) as call:
            call.ok(cells.get(key).n)
    return h


@pytest.mark.slow
def test_processes_on_a_real_server_are_linearizable(rx_server, tmp_path):
    namespace = f"lin{uuid.uuid4().hex[:8]}"
    store, cells = seed_cells(rx_server.port, namespace)
    procs, paths = start_workers(rx_server.port, namespace, tmp_path, seconds=1.5)
    join_workers(procs)
    history = History.merge(History.load(*paths), final_reads(cells))
    ops = history.ops
    assert {o.process for o in ops} == {f"w{i}" for i in range(WORKERS)} | {"final"}
    assert sum(o.f == "incr" and o.status == "ok" for o in ops) > 50
    assert sum(o.f == "cas" and o.status == "ok" for o in ops) > 20
    assert all(o.status in ("ok", "fail") for o in ops)  # nothing indeterminate without faults
    result = check(history, model=MODELS)
    assert result.valid is True, str(result.counterexample)
    acked = sum(o.f == "incr" and o.status == "ok" for o in ops)
    assert cells.get("c1").n == acked
    store.close()


@pytest.mark.slow
def test_no_acknowledged_write_is_lost_across_a_sigkill(tmp_path):
    server = EmbeddedServer(path=tmp_path / "data", appendfsync="always").start()
    try:
        namespace = f"lin{uuid.uuid4().hex[:8]}"
        store, cells = seed_cells(server.port, namespace)
        procs, paths = start_workers(server.port, namespace, tmp_path, seconds=2.0)
        time.sleep(0.8)  # let them work before the crash
        store.close()
        killed = time.monotonic_ns()
        server.kill()
        time.sleep(0.3)
        server.restart()
        restarted = time.monotonic_ns()
        join_workers(procs)
        store = lin_workers.connect(server.port, namespace)
        cells = store.collection("cells", Cell)
        history = History.merge(History.load(*paths), final_reads(cells))
        ops = history.ops
        # in flight at the crash: an operation left unknown, or a write the Writer's resend (same write id)
        # carried across the restart
        bridged = [o for o in ops if o.status == "ok" and o.invoke_ns < killed and o.complete_ns > restarted]
        assert any(o.status == "info" for o in ops) or bridged, "the crash hit no operation in flight"
        assert any(o.status == "ok" and o.invoke_ns > restarted for o in ops), "no work after the restart"
        result = check(history, model=MODELS)
        assert result.valid is True, str(result.counterexample)
        acked = sum(o.f == "incr" and o.status == "ok" for o in ops)
        unknown = sum(o.f == "incr" and o.status == "info" for o in ops)
        assert acked <= cells.get("c1").n <= acked + unknown
        store.close()
    finally:
        server.stop()


def test_checker_catches_a_stale_read_from_a_real_server(rx_server):
    """A reader that serves values from a naive local cache produces a non-linearizable history."""
    namespace = f"lin{uuid.uuid4().hex[:8]}"
    writer_store, writer = seed_cells(rx_server.port, namespace)
    reader_store = lin_workers.connect(rx_server.port, namespace)
    reader = reader_store.collection("cells", Cell)
    h = History()
    cache = {}

    def cached_read(key):
        if key not in cache:
            cache[key] = reader.get(key).value
        return cache[key]

    with h.invoke("read", "r1", process="reader") as call:
        call.ok(cached_read("r1"))
    with h.invoke("write", "r1", 7, process="writer") as call:
        writer.update("r1", value=7)
        call.ok()
    with h.invoke("read", "r1", process="reader") as call:
        call.ok(cached_read("r1"))  # served from the cache: 0, after 7 was acknowledged
    assert reader.get("r1").value == 7
    result = check(h, model=register(0))
    assert result.valid is False
    assert result.counterexample.state == 7
    assert [o.output for o in result.counterexample.stuck] == [0]
    writer_store.close()
    reader_store.close()
