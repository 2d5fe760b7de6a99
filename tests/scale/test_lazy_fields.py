"""Lazy fields (rxstate.lazy): left out of whole-entity reads, loaded on first access at the version read."""

from __future__ import annotations

import copy
import pickle

import pytest

import rxstate
from rxstate.core.codec import LZ4_MARKER, SEALED_MARKER
from rxstate.security import StaticKeyProvider, generate_key
from rxstate.store.lazy import EntityFields
from rxstate.testing import Backend
from tests.helpers import dump_all, wait_for

BODY = "the quick brown fox jumps over the lazy dog. " * 2300  # ~100 KB


class Doc(rxstate.Model):
    title: str
    status: str = "draft"
    words: int = 0
    body: str = rxstate.lazy(default="")


class SecretDoc(rxstate.Model):
    title: str
    token: rxstate.Secret[str] | None = rxstate.lazy(default=None)
    ssn: str = rxstate.classified("secret", lazy=True, default="")


def _calls(client, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


def _unloaded(model: rxstate.Model) -> bool:
    return "body" not in model.__dict__


@pytest.fixture
def docs(rx_fake_store: rxstate.Store):
    coll = rx_fake_store.collection("docs", Doc, indexes=["status"])
    coll.put("d1", Doc(title="one", body=BODY))
    rx_fake_store.cache.clear()
    return coll


def test_a_lazy_field_is_declared_with_a_default_and_cannot_be_indexed(rx_fake_store: rxstate.Store) -> None:
    assert Doc.__rxstate_lazy__ == {"body"}
    assert SecretDoc.__rxstate_lazy__ == {"token", "ssn"} and set(SecretDoc.__rxstate_secrets__) == {"token", "ssn"}
    with pytest.raises(rxstate.SchemaError) as info:

        class Bad(rxstate.Model):
            body: str = rxstate.lazy()

    assert info.value.field == "body"
    with pytest.raises(rxstate.SchemaError) as info:
        rx_fake_store.collection("bad", Doc, indexes=["body"])
    assert info.value.field == "body"


def test_get_leaves_the_lazy_field_out_and_loads_it_on_access(docs) -> None:
    for read in (lambda: docs.get("d1"), lambda: docs.get("d1", consistent=True)):
        doc = read()
        assert doc.title == "one" and _unloaded(doc)
        assert doc.body == BODY
        assert not _unloaded(doc) and doc.body == BODY  # loaded once, kept
    assert docs.get_versioned("d1").version == 1


def test_get_many_where_and_all_leave_it_out_too(docs) -> None:
    docs.put("d2", Doc(title="two", status="final", body="short"))
    docs._store.cache.clear()
    many = docs.get_many(["d1", "d2", "nope"])
    assert set(many) == {"d1", "d2"} and all(_unloaded(d) for d in many.values())
    assert many["d2"].body == "short" and many["d1"].body == BODY
    found = list(docs.where(status="final"))
    assert [d.title for d in found] == ["two"] and _unloaded(found[0]) and found[0].body == "short"
    listed = docs.all()
    assert all(_unloaded(d) for d in listed) and [d.body for d in listed] == [BODY, "short"]


def test_repr_does_not_load_and_shows_the_field_as_not_loaded(docs) -> None:
    doc = docs.get("d1")
    assert repr(doc) == "Doc(title='one', status='draft', words=0, body=<not loaded>)"
    assert str(doc) and _unloaded(doc)
    assert doc.body == BODY
    assert "<not loaded>" not in repr(doc)


def test_a_change_since_the_read_is_a_typed_error_not_a_mixed_model(docs) -> None:
    doc = docs.get("d1")
    docs.update("d1", words=5)
    with pytest.raises(rxstate.LazyFieldStale) as info:
        _ = doc.body
    exc = info.value
    assert isinstance(exc, rxstate.ConflictError)
    assert (exc.key, exc.field, exc.expected, exc.actual) == (docs.key("d1"), "body", 1, 2)
    assert docs.get("d1").body == BODY  # a new read sees it
    gone = docs.get("d1", consistent=True)
    docs.delete("d1")
    with pytest.raises(rxstate.LazyFieldStale) as info:
        _ = gone.body
    assert info.value.actual == 0


def test_whole_model_operations_load_first_and_copies_stay_lazy(docs) -> None:
    full = Doc(title="one", body=BODY)
    assert docs.get("d1", consistent=True) == full
    assert docs.get("d1", consistent=True).model_dump()["body"] == BODY
    assert dict(docs.get("d1", consistent=True))["body"] == BODY
    assert hash(docs.get("d1", consistent=True)) == hash(full)
    assert pickle.loads(pickle.dumps(docs.get("d1", consistent=True))) == full
    doc = docs.get("d1", consistent=True)
    for copied in (doc.model_copy(update={"words": 3}), copy.copy(doc), copy.deepcopy(doc)):
        assert _unloaded(copied) and copied.body == BODY
    assert _unloaded(doc)


def test_the_cache_keeps_the_entity_without_its_lazy_field_and_never_serves_it_as_complete(docs) -> None:
    cache = docs._store.cache
    first = docs.get("d1")
    assert docs.get("d1") is first  # a hit: the same snapshot
    assert _unloaded(first)
    # fields= of a lazy field the cached value has not loaded: read from the server, not the default
    assert docs.get("d1", fields=["body", "title"]) == {"body": BODY, "title": "one"}
    # a partial update on top of the cached value: the new cached value still loads the field
    docs.update("d1", words=7)
    after = docs.get("d1")
    assert after.words == 7 and docs.get_versioned("d1").version == 2
    assert _unloaded(after) and after.body == BODY
    hits = cache.stats().hits
    assert docs.get("d1").body == BODY and cache.stats().hits == hits + 1  # loaded into the cached entry


def test_put_of_a_model_read_without_its_lazy_field_keeps_the_stored_value(docs) -> None:
    client = docs._store.client
    doc = docs.get("d1", consistent=True)
    docs.put("d1", doc.model_copy(update={"title": "renamed"}))
    assert client.hget(docs.key("d1"), "body") is not None
    assert docs.get("d1", consistent=True).body == BODY and docs.get("d1").title == "renamed"
    docs.put("copy", docs.get("d1", consistent=True))  # another id: the value travels with the model
    assert docs.get("copy", consistent=True).body == BODY


def test_a_put_of_a_stale_lazy_model_is_refused_and_writes_nothing(docs) -> None:
    doc = docs.get("d1", consistent=True)
    docs.update("d1", words=2)
    before = dump_all(docs._store.client)
    with pytest.raises(rxstate.LazyFieldStale):
        docs.put("d1", doc)
    assert dump_all(docs._store.client) == before


def test_updates_keep_the_stored_lazy_value_without_reading_it(docs) -> None:
    key = docs.key("d1")
    client = docs._store.client
    stored = client.hget(key, "body")
    docs.get("d1")  # cached without the field
    result = docs.update("d1", lambda d: d.model_copy(update={"words": d.words + 1}))
    assert result.value.words == 1 and _unloaded(result.value)
    assert client.hget(key, "body") == stored
    assert docs.update("d1", title="other").value.title == "other"
    assert client.hget(key, "body") == stored
    docs._store.cache.clear()
    result = docs.update("d1", lambda d: d.model_copy(update={"words": d.words + 1}))
    assert _unloaded(result.value) and result.value.body == BODY  # at the version the update left
    assert docs.get("d1", consistent=True).words == 2
    # a function that does change the lazy field writes it
    docs.update("d1", lambda d: d.model_copy(update={"body": d.body + "!"}))
    assert docs.get("d1", consistent=True).body == BODY + "!"


def test_a_large_lazy_value_is_compressed_and_reads_back() -> None:
    with Backend("fakeredis") as backend:
        store = backend.store()
        docs = store.collection("docs", Doc)
        docs.put("d1", Doc(title="one", body=BODY))
        assert store.client.hget(docs.key("d1"), "body")[:2] == LZ4_MARKER
        assert docs.get("d1", consistent=True).body == BODY


def test_secret_lazy_fields_are_sealed_at_rest_and_load_in_clear() -> None:
    with Backend("fakeredis") as backend:
        store = backend.store(keys=StaticKeyProvider(generate_key()))
        docs = store.collection("secret_docs", SecretDoc)
        docs.put("s1", SecretDoc(title="x", token="tok-1", ssn="078-05-1120"))
        stored = store.client.hgetall(docs.key("s1"))
        assert stored[b"token"][:2] == SEALED_MARKER and stored[b"ssn"][:2] == SEALED_MARKER
        doc = docs.get("s1", consistent=True)
        assert "token" not in doc.__dict__ and "ssn" not in doc.__dict__
        assert "tok-1" not in repr(doc) and "078" not in repr(doc)
        assert doc.token is not None and doc.token.get_secret_value() == "tok-1"
        assert doc.ssn == "078-05-1120" and "078" not in repr(doc)
        docs.update("s1", lambda d: d.model_copy(update={"title": "y"}))
        assert docs.get("s1", consistent=True).ssn == "078-05-1120"


def test_lazy_reads_on_a_real_server_send_one_hmget_and_no_hgetall(rx_redis_backend: Backend) -> None:
    store = rx_redis_backend.store(cache=False)
    docs = store.collection("docs", Doc)
    docs.put("d1", Doc(title="one", body=BODY))
    raw = rx_redis_backend.client()
    hmget, hgetall = _calls(raw, "hmget"), _calls(raw, "hgetall")
    doc = docs.get("d1")
    assert _calls(raw, "hmget") == hmget + 1 and _calls(raw, "hgetall") == hgetall
    assert doc.body == BODY and doc.body == BODY
    assert _calls(raw, "hmget") == hmget + 2 and _calls(raw, "hgetall") == hgetall  # one HMGET to load it
    docs.update("d1", lambda d: d.model_copy(update={"words": 9}))
    assert docs.get("d1").body == BODY and docs.get("d1").words == 9


def _note_v1() -> type[rxstate.Model]:
    class Note(rxstate.Model):  # the model's name is what the collection records: same as below
        heading: str
        body: str = ""

    return Note


class Note(rxstate.Model):
    __version__ = 2
    title: str
    body: str = rxstate.lazy(default="")

    @rxstate.upcaster(1)
    def _from_v1(data: dict) -> dict:
        return {"title": data.pop("heading"), **data}


def test_an_entity_of_an_older_schema_is_read_whole_and_upcast() -> None:
    with Backend("fakeredis") as backend:
        v1 = _note_v1()
        backend.store().collection("notes", v1).put("n1", v1(heading="old", body=BODY))
        notes = backend.store().collection("notes", Note)
        note = notes.get("n1", consistent=True)
        assert note.title == "old" and "body" in note.__dict__ and note.body == BODY


def test_the_cache_of_a_real_server_drops_a_lazily_read_entity_another_store_changes(
    rx_redis_backend: Backend,
) -> None:
    reader, writer = rx_redis_backend.store(), rx_redis_backend.store(cache=False)
    docs, other = reader.collection("docs", Doc), writer.collection("docs", Doc)
    other.put("d1", Doc(title="one", body=BODY))
    # the first read may not be kept (the put's invalidation may arrive while it is in flight): read until cached
    assert wait_for(lambda: docs.get("d1") is docs.get("d1"))
    first = docs.get("d1")
    assert docs.get("d1") is first and _unloaded(first)
    other.update("d1", lambda d: d.model_copy(update={"body": "rewritten", "words": 1}))
    assert wait_for(lambda: docs.get("d1").words == 1)
    assert docs.get("d1").body == "rewritten"
    with pytest.raises(rxstate.LazyFieldStale):
        _ = first.body  # the snapshot's own version is gone: never the new body under the old title


def test_html_display_does_not_load_either(docs) -> None:
    doc = docs.get("d1")
    assert "not loaded" in doc._repr_html_() and _unloaded(doc)


def test_the_cache_confirms_a_lazily_read_entry_without_loading_it(docs, monkeypatch) -> None:
    cache = docs._store.cache
    held = docs.get("d1")
    assert _unloaded(held)

    def refuse(self, names):
        raise AssertionError(f"loaded {names} to compare cached values")

    monkeypatch.setattr(EntityFields, "load", refuse)
    again = docs.get_versioned("d1", consistent=True)  # another instance of the same snapshot
    assert cache.fill(docs.key("d1"), again, token=cache.token())
    assert _unloaded(docs.get("d1"))


def test_an_entity_locked_by_a_pending_transaction_is_read_settled(docs) -> None:
    store = docs._store
    key = docs.key("d1")
    partition = store.keyspace.partition_of("d1")
    before = docs.get("d1", consistent=True)  # without its body, before the transaction
    far = 4_102_444_800_000  # a deadline in 2100: the transaction stays pending
    store.client.hset(store.keyspace.tx_record(partition, "tx-lazy"), mapping={"s": "pending", "d": far, "p": ""})
    store.client.hset(key, "_t", f"tx-lazy@{partition}")
    assert before.body == BODY  # the lazy load settles the intent: the committed value at that version
    during = docs.get("d1", consistent=True)  # read whole (settled), so complete
    assert "body" in during.__dict__ and during.body == BODY and during.title == "one"


def test_an_update_by_function_on_a_stale_lazy_read_reads_again(docs, monkeypatch) -> None:
    stale = docs.get_versioned("d1", consistent=True)
    docs.update("d1", words=1)  # version 2: the snapshot above can no longer load its body
    real = docs.get_versioned
    handed: list[int] = []

    def first_stale(entity_id, **kw):
        value = stale if not handed else real(entity_id, **kw)
        handed.append(value.version)
        return value

    monkeypatch.setattr(docs, "get_versioned", first_stale)
    result = docs.update("d1", lambda d: d.model_copy(update={"body": d.body + "!"}))
    assert handed == [1, 2] and result.version == 3
    assert docs.get("d1", consistent=True).body == BODY + "!" and docs.get("d1", consistent=True).words == 1
    with pytest.raises(rxstate.LazyFieldStale):  # with an expected version, the conflict is the caller's
        monkeypatch.setattr(docs, "get_versioned", lambda entity_id, **kw: stale)
        docs.update("d1", lambda d: d.model_copy(update={"body": d.body}), expected_version=1)
