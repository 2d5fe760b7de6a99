"""get(id, fields=[...]): only those fields, with one HMGET of just them."""

from __future__ import annotations

import pytest

import rxstate
from rxstate.testing import Backend
from tests.helpers import dump_all
from tests.models import Agent


def _calls(client, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


def test_fields_reads_only_those_fields_on_a_real_server(rx_redis_backend: Backend) -> None:
    store = rx_redis_backend.store(cache=False)
    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="planner", load=7, notes="x" * 50_000, api_key="k-1"))
    raw = rx_redis_backend.client()
    hmget, hgetall = _calls(raw, "hmget"), _calls(raw, "hgetall")
    assert agents.get("a1", fields=["name", "load"]) == {"name": "planner", "load": 7}
    assert _calls(raw, "hmget") == hmget + 1 and _calls(raw, "hgetall") == hgetall  # no whole-entity read
    secret = agents.get("a1", fields=["api_key"])["api_key"]
    assert secret.get_secret_value() == "k-1"
    assert agents.get("nope", None, fields=["name"]) is None
    with pytest.raises(rxstate.NotFound):
        agents.get("nope", fields=["name"])


def test_fields_from_the_cache_and_for_defaults(rx_fake_store: rxstate.Store) -> None:
    agents = rx_fake_store.collection("agents", Agent)
    agents.put("a1", Agent(name="planner", skills=["plan"]))
    agents.get("a1")  # cached now
    assert agents.get("a1", fields=["skills", "status"]) == {"skills": ["plan"], "status": "idle"}
    hits = rx_fake_store.cache.stats().hits
    agents.get("a1", fields=["name"])
    assert rx_fake_store.cache.stats().hits == hits + 1


def test_unknown_fields_are_refused_and_nothing_changes(rx_fake_store: rxstate.Store) -> None:
    agents = rx_fake_store.collection("agents", Agent)
    agents.put("a1", Agent(name="planner"))
    before = dump_all(rx_fake_store.client)
    with pytest.raises(rxstate.ValidationError) as info:
        agents.get("a1", fields=["name", "salary"])
    assert info.value.field == "salary" and "Agent" in str(info.value)
    with pytest.raises(rxstate.ValidationError):
        agents.get("a1", fields=[])
    assert dump_all(rx_fake_store.client) == before
