"""RxStore (LangGraph's BaseStore) on real servers: namespaced items, search with filters, namespace
listing, TTL, typed errors; answers compared with LangGraph's own InMemoryStore on the same operations."""

from __future__ import annotations

import asyncio
import time

import pytest
from langgraph.store.memory import InMemoryStore

from rxstate.errors import ValidationError
from rxstate.integrations.langgraph.store import RxStore
from rxstate.testing import Backend
from tests.helpers import dump_all

ITEMS = [
    (("users", "u1", "prefs"), "diet", {"food": "vegan", "level": 3, "tags": ["a", "b"]}),
    (("users", "u1", "prefs"), "tone", {"style": "brief", "level": 1}),
    (("users", "u2", "prefs"), "diet", {"food": "fish", "level": 5, "nested": {"x": 1}}),
    (("users", "u2", "facts"), "city", {"name": "Oslo"}),
    (("agents", "planner"), "notes", {"text": "plan first", "level": 2}),
    (("a|b", "x/y", "100%"), "odd key/with|chars", {"ok": True}),
]

SEARCHES = [
    (("users",), None),
    (("users", "u1"), None),
    (("users", "u1"), {"level": {"$gte": 3}}),
    (("users", "u2", "prefs"), {"level": {"$gt": 4}}),
    (("users",), {"food": "vegan"}),
    (("users",), {"level": {"$ne": 1}, "food": {"$eq": "fish"}}),
    (("users",), {"nested": {"x": 1}}),
    (("users",), {"tags": ["a", "b"]}),
    (("agents",), {"level": {"$lt": 3}}),
    (("agents",), {"text": "nope"}),
    (("a|b",), None),
]


def _keys(items):
    return sorted((i.namespace, i.key) for i in items)


@pytest.fixture
def stores(lg_backend: Backend):
    """Ours on each server kind (Redis 7.0, Valkey, a cluster), and LangGraph's InMemoryStore."""
    ours, theirs = RxStore(lg_backend.store()), InMemoryStore()
    for namespace, key, value in ITEMS:
        ours.put(namespace, key, value)
        theirs.put(namespace, key, value)
    return ours, theirs


def test_items_round_trip_and_update_keeps_created_at(stores) -> None:
    ours, _ = stores
    first = ours.get(("users", "u1", "prefs"), "diet")
    assert first.value == ITEMS[0][2] and first.namespace == ("users", "u1", "prefs")
    ours.put(("users", "u1", "prefs"), "diet", {"food": "raw"})
    again = ours.get(("users", "u1", "prefs"), "diet")
    assert again.value == {"food": "raw"}
    assert again.created_at == first.created_at and again.updated_at >= first.updated_at
    odd = ours.get(("a|b", "x/y", "100%"), "odd key/with|chars")
    assert odd.value == {"ok": True} and odd.namespace == ("a|b", "x/y", "100%")
    ours.delete(("users", "u1", "prefs"), "diet")
    assert ours.get(("users", "u1", "prefs"), "diet") is None
    assert ours.get(("users", "nobody"), "diet") is None


def test_search_answers_like_langgraphs_in_memory_store(stores) -> None:
    ours, theirs = stores
    for prefix, where in SEARCHES:
        assert _keys(ours.search(prefix, filter=where)) == _keys(theirs.search(prefix, filter=where)), (prefix, where)
    # a range on a value some items lack: those items do not match (InMemoryStore raises TypeError)
    assert _keys(ours.search((), filter={"level": {"$lt": 3}})) == [
        (("agents", "planner"), "notes"),
        (("users", "u1", "prefs"), "tone"),
    ]
    newest = ours.search(("users",), limit=2)
    assert len(newest) == 2
    assert len(ours.search(("users",), limit=2, offset=3)) == 1


def test_list_namespaces_answers_like_langgraphs_in_memory_store(stores) -> None:
    ours, theirs = stores
    cases = [
        {},
        {"prefix": ("users",)},
        {"suffix": ("prefs",)},
        {"prefix": ("users", "*", "prefs")},
        {"max_depth": 2},
        {"prefix": ("users",), "max_depth": 2, "limit": 1, "offset": 1},
    ]
    for kw in cases:
        assert ours.list_namespaces(**kw) == theirs.list_namespaces(**kw), kw


def test_async_methods_run_the_same_operations(stores) -> None:
    ours, theirs = stores

    async def both():
        await ours.aput(("users", "u3"), "k", {"level": 9})
        return await ours.aget(("users", "u3"), "k"), await ours.asearch(("users",), filter={"level": {"$gt": 4}})

    assert _keys(asyncio.run(theirs.asearch(("users", "u2", "prefs"), filter={"level": {"$gt": 4}}))) == [
        (("users", "u2", "prefs"), "diet")
    ]

    item, found = asyncio.run(both())
    assert item.value == {"level": 9}
    assert _keys(found) == [(("users", "u2", "prefs"), "diet"), (("users", "u3"), "k")]


def test_a_store_of_an_asyncio_store_awaits_its_client_on_the_loop(rx_server) -> None:
    import threading

    import rxstate.aio

    async def main():
        async with rxstate.aio.connect(rx_server.url, namespace=f"lg-aio-{time.time_ns()}") as astore:
            memories = await RxStore.on(astore)
            threads: set[int] = set()
            original = memories.batch

            def batch(ops):  # where the synchronous body runs: the loop's own thread, not a worker
                threads.add(threading.get_ident())
                return original(ops)

            memories.batch = batch  # type: ignore[method-assign]
            await memories.aput(("users", "u1"), "diet", {"food": "vegan"})
            item = await memories.aget(("users", "u1"), "diet")
            found = await memories.asearch(("users",), filter={"food": "vegan"})
            return item.value, _keys(found), threads == {threading.get_ident()}

    value, keys, on_loop = asyncio.run(main())
    assert value == {"food": "vegan"} and keys == [(("users", "u1"), "diet")] and on_loop


def test_ttl_is_set_in_minutes_and_refreshed_on_read(rx_redis_backend: Backend, rx_server) -> None:
    store = RxStore(rx_redis_backend.store(), ttl_config={"default_ttl": 2, "refresh_on_read": True})
    store.put(("users", "u1"), "short", {"v": 1})
    store.put(("users", "u1"), "kept", {"v": 2}, ttl=None)
    client = rx_server.client()
    short_key = store.items.key(store._id(("users", "u1"), "short"), partition="users")
    kept_key = store.items.key(store._id(("users", "u1"), "kept"), partition="users")
    assert 60_000 < client.pttl(short_key) <= 120_000
    assert client.pttl(kept_key) == -1
    client.pexpire(short_key, 5_000)  # as if most of its life had passed
    assert store.get(("users", "u1"), "short").value == {"v": 1}
    assert client.pttl(short_key) > 60_000  # the read restarted it
    client.pexpire(short_key, 5_000)
    store.get(("users", "u1"), "short", refresh_ttl=False)
    assert client.pttl(short_key) <= 5_000


def test_an_expired_item_is_gone_from_get_and_search(rx_redis_backend: Backend) -> None:
    store = RxStore(rx_redis_backend.store())
    store.put(("users", "u9"), "flash", {"v": 1}, ttl=0.001)  # 60 ms
    store.put(("users", "u9"), "stays", {"v": 2})
    deadline = time.monotonic() + 5
    while store.get(("users", "u9"), "flash", refresh_ttl=False) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.get(("users", "u9"), "flash") is None
    assert _keys(store.search(("users", "u9"))) == [(("users", "u9"), "stays")]


def test_bad_input_raises_typed_errors_and_writes_nothing(rx_redis_backend: Backend, rx_server) -> None:
    store = RxStore(rx_redis_backend.store())
    store.put(("users", "u1"), "k", {"v": 1})
    before = dump_all(rx_server.client())
    with pytest.raises(ValidationError) as query:
        store.search(("users",), query="vegan food")
    assert query.value.field == "query"
    with pytest.raises(ValidationError) as ttl:
        store.batch([store_put(("users", "u1"), "k2", {"v": 2}, ttl=-1)])
    assert ttl.value.field == "ttl"
    with pytest.raises(ValidationError) as namespace:
        store.batch([store_put((), "k3", {"v": 3})])
    assert namespace.value.field == "namespace"
    assert dump_all(rx_server.client()) == before


def store_put(namespace, key, value, ttl=None):
    from langgraph.store.base import PutOp

    return PutOp(namespace, key, value, ttl=ttl)
