"""``store.changes(values=True)`` on a real server, with writers racing the reader."""

from __future__ import annotations

import threading

import pytest

from tests.helpers import wait_for
from tests.models import Agent


@pytest.fixture
def writer(rx_redis_backend):
    return rx_redis_backend.store()


@pytest.fixture
def reader(rx_redis_backend):
    return rx_redis_backend.store()


def test_values_under_racing_writers_are_exact_or_none(writer, reader):
    """Every value a change carries is the entity's value at that change's version."""
    agents = writer.collection("agents", Agent)
    reader.collection("agents", Agent)  # open here: values come typed
    got = []
    reader.changes(collection="agents", values=True).subscribe(got.append)
    truth: dict[tuple[str, int], Agent] = {}
    lock = threading.Lock()

    def work(entity_id: str) -> None:
        v = agents.put(entity_id, Agent(name=entity_id))
        with lock:
            truth[(entity_id, v.version)] = v.value
        for n in range(60):
            v = agents.update(entity_id, load=n % 100, notes=f"n{n}")
            with lock:
                truth[(entity_id, v.version)] = v.value

    threads = [threading.Thread(target=work, args=(f"a{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wait_for(lambda: len(got) == len(truth), timeout=30)
    known = [c for c in got if c.value is not None]
    for c in known:
        assert c.value == truth[(c.id, c.version)], (c.id, c.version)
    assert len(known) == len(got)  # the reader saw every creation, so no value had to be read late


def test_a_reader_without_the_model_gets_dicts(writer, reader):
    agents = writer.collection("agents", Agent)
    got = []
    reader.changes(values=True).subscribe(got.append)
    agents.put("a1", Agent(name="x", skills=["py"]))
    agents.incr("a1", "load", 7)
    assert wait_for(lambda: len(got) == 2)
    assert got[1].value["load"] == 7 and got[1].value["skills"] == ["py"] and got[1].value["name"] == "x"
