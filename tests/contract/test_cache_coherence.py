"""A store reads its own transactional and batched writes at once, whatever the cache holds."""

from __future__ import annotations

from tests.models import Agent


def test_own_transaction_and_batch_writes_are_read_back(rx_store):
    agents = rx_store.collection("agents", Agent)
    agents.put("a1", Agent(name="x"))
    agents.put("a2", Agent(name="y"))
    for _ in range(3):
        agents.get("a1"), agents.get("a2")  # warm the cache
    for round_ in range(20):
        with rx_store.transaction() as tx:
            tx.update(agents, "a1", load=round_)
            tx.update(agents, "a2", load=round_)
        assert agents.get("a1").load == round_ and agents.get("a2").load == round_
        with rx_store.batch() as batch:
            batch.update(agents, "a1", notes=f"b{round_}")
        assert agents.get("a1").notes == f"b{round_}"
        agents.put_many({"a2": Agent(name="y", notes=f"p{round_}")})
        assert agents.get("a2").notes == f"p{round_}"


def test_consistent_reads_see_a_foreign_write_at_once(rx_backend):
    store = rx_backend.store()
    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="x"))
    agents.get("a1")
    foreign = rx_backend.client()
    foreign.hset(agents.key("a1"), mapping={"name": '"changed"', "_v": 9})
    assert agents.get("a1", consistent=True).name == "changed"
    assert agents.get_versioned("a1", consistent=True).version == 9
    assert agents.get_many(["a1"], consistent=True)["a1"].name == "changed"
