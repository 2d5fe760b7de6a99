"""Encryption at rest of secret fields (fakeredis): sealing, bindings, rotation, re-encryption, shredding."""

from __future__ import annotations

import base64
import os
import threading

import pydantic
import pytest

import rxstate
from rxstate import DecryptionError, SchemaError, ValidationError
from rxstate.core.codec import SEALED_MARKER
from rxstate.security import EnvKeyProvider, FileKeyProvider, StaticKeyProvider, generate_key
from rxstate.security.cipher import key_id_of
from rxstate.testing import Backend
from tests.helpers import dump_all, wait_for


class Agent(rxstate.Model):
    name: str
    api_key: rxstate.Secret[str] | None = None
    ssn: str = rxstate.classified("secret", default="")
    email: str = rxstate.classified("confidential", searchable=True, default="")
    load: int = 0


SECRET_FIELDS = (b"api_key", b"ssn", b"email")


@pytest.fixture
def backend():
    with Backend("fakeredis") as b:
        yield b


@pytest.fixture
def kek():
    return StaticKeyProvider(generate_key())


def open_agents(store, **kw):
    return store.collection("agents", Agent, indexes=["email"], **kw)


def raw(store, coll, entity_id):
    return store.client.hgetall(coll.key(entity_id))


def sealed_key_ids(store, coll, entity_id):
    got = raw(store, coll, entity_id)
    return {got[f][:2] == SEALED_MARKER and key_id_of(got[f]) for f in SECRET_FIELDS}


def test_secret_fields_are_stored_sealed_and_read_back(backend, kek):
    store = backend.store(keys=kek)
    agents = open_agents(store)
    agents.put("a1", Agent(name="planner", api_key="sk-1", ssn="078-05-1120", email="ada@x"))
    stored = raw(store, agents, "a1")
    assert stored[b"name"] == b'"planner"'
    for f in SECRET_FIELDS:
        assert stored[f][:2] == SEALED_MARKER
    assert b"sk-1" not in b"".join(stored.values()) and b"078-05" not in b"".join(stored.values())
    got = agents.get("a1", consistent=True)
    assert (got.api_key.get_secret_value(), got.ssn, got.email) == ("sk-1", "078-05-1120", "ada@x")
    agents.update("a1", ssn="123", expected_version=1)
    agents.update("a1", lambda a: a.model_copy(update={"api_key": rxstate.Secret("sk-2"), "load": 1}))
    with store.transaction() as tx:
        tx.update(agents, "a1", email="bob@x")
        tx.put(agents, "a2", Agent(name="coder", ssn="999"))
        assert tx.get(agents, "a2").ssn == "999"  # read-your-writes decrypts the buffered value
    with store.batch() as batch:
        batch.update(agents, "a2", ssn="998")
    other = backend.store(keys=kek)  # another process with the same KEK, no cache of these values
    again = open_agents(other)
    a1, a2 = again.get("a1", consistent=True), again.get("a2", consistent=True)
    assert (a1.api_key.get_secret_value(), a1.ssn, a1.email, a1.load) == ("sk-2", "123", "bob@x", 1)
    assert a2.ssn == "998"
    assert sealed_key_ids(store, agents, "a2") == {1}


def test_searchable_field_can_be_indexed_others_cannot(backend, kek):
    store = backend.store(keys=kek)
    agents = open_agents(store)
    agents.put("a1", Agent(name="x", email="same@x"))
    agents.put("a2", Agent(name="y", email="same@x"))
    agents.put("a3", Agent(name="z", email="other@x"))
    assert sorted(a.name for a in agents.where(email="same@x")) == ["x", "y"]
    r1, r2 = raw(store, agents, "a1"), raw(store, agents, "a2")
    assert r1[b"email"] == r2[b"email"]  # deterministic: equal values, equal ciphertexts (documented leak)
    assert r1[b"ssn"] != r2[b"ssn"]  # randomised: equal values, different ciphertexts
    with pytest.raises(SchemaError, match="ssn is secret"):
        store.collection("people", Agent, indexes=["ssn"])
    with pytest.raises(SchemaError, match="api_key is secret"):
        store.collection("people", Agent, indexes=["api_key"])
    with pytest.raises(SchemaError, match="searchable"):

        class Bad(rxstate.Model):
            name: str = rxstate.classified("public", searchable=True)


def test_classification_levels():
    class Person(rxstate.Model):
        name: str = rxstate.classified("public")
        team: str = rxstate.classified("internal", default="")
        ssn: str = rxstate.classified("secret")
        note: str = rxstate.classified("confidential", default="", description="kept")

    assert set(Person.__rxstate_secrets__) == {"ssn", "note"}
    assert "078-05" not in repr(Person(name="ada", ssn="078-05-1120"))
    assert Person.model_fields["note"].description == "kept"
    with pytest.raises(SchemaError, match="classification"):
        rxstate.classified("top-secret")

    with pytest.raises(SchemaError, match="classification"):

        class Odd(rxstate.Model):
            x: str = pydantic.Field(json_schema_extra={"classification": "nope"})

    class ByExtra(rxstate.Model):
        pin: str = pydantic.Field(json_schema_extra={"classification": "secret"})

    assert set(ByExtra.__rxstate_secrets__) == {"pin"}


def test_secret_int_fields_cannot_be_incremented_on_the_server(backend, kek):
    class Wallet(rxstate.Model):
        balance: int = rxstate.classified("secret", default=0)
        visits: int = 0

    store = backend.store(keys=kek)
    wallets = store.collection("wallets", Wallet)
    wallets.put("w1", Wallet(balance=5))
    with pytest.raises(ValidationError, match="not an int field"):
        wallets.incr("w1", "balance", 1)
    assert wallets.incr("w1", "visits", 1) == 1
    assert wallets.get("w1", consistent=True).balance == 5


def test_a_moved_ciphertext_fails_to_decrypt(backend, kek):
    store = backend.store(keys=kek)
    agents = open_agents(store)
    agents.put("a1", Agent(name="x", ssn="111", api_key="sk-1"))
    agents.put("a2", Agent(name="y", ssn="222", api_key="sk-2"))
    first = raw(store, agents, "a1")
    store.client.hset(agents.key("a2"), "ssn", first[b"ssn"])  # another entity
    with pytest.raises(DecryptionError) as info:
        agents.get("a2", consistent=True)
    assert info.value.reason == "binding" and info.value.field == "ssn" and info.value.key == agents.key("a2")
    assert isinstance(info.value, rxstate.errors.CorruptDataError)
    store.client.hset(agents.key("a1"), "ssn", first[b"api_key"])  # another field of the same entity
    with pytest.raises(DecryptionError, match="moved or altered"):
        agents.get("a1", consistent=True)
    tampered = bytearray(first[b"api_key"])
    tampered[-1] ^= 1
    store.client.hset(agents.key("a1"), mapping={"ssn": first[b"ssn"], "api_key": bytes(tampered)})
    with pytest.raises(DecryptionError):
        agents.get("a1", consistent=True)


def test_rotation_rewraps_keys_and_keeps_every_value_readable(backend, kek):
    store = backend.store(keys=kek)
    agents = open_agents(store)
    for i in range(20):
        agents.put(f"a{i}", Agent(name=f"n{i}", ssn=f"s{i}", email=f"e{i}@x"))
    before = {k: v for k, v in dump_all(store.client).items() if b"_keys" not in k}
    ring_before = store.keys.state()
    new = StaticKeyProvider(generate_key())
    assert store.keys.rotate(new) == 1
    ring_after = store.keys.state()
    assert ring_after.kek == new.kek_id != ring_before.kek
    assert ring_after.wrapped[1] != ring_before.wrapped[1] and ring_after.active == ring_before.active
    assert {k: v for k, v in dump_all(store.client).items() if b"_keys" not in k} == before  # no data rewrite
    fresh = open_agents(backend.store(keys=new))
    assert [fresh.get(f"a{i}", consistent=True).ssn for i in range(20)] == [f"s{i}" for i in range(20)]
    assert fresh.where(email="e3@x")[0].name == "n3"
    with pytest.raises(DecryptionError) as info:
        backend.store(keys=kek)  # the old KEK no longer unwraps anything
    assert info.value.reason == "wrong-kek"
    agents.put("late", Agent(name="late", ssn="after"))  # the rotating store goes on with the new KEK
    assert fresh.get("late", consistent=True).ssn == "after"


def test_a_wrong_kek_is_a_typed_error_never_garbage(backend, kek):
    store = backend.store(keys=kek)
    open_agents(store).put("a1", Agent(name="x", ssn="111"))
    with pytest.raises(DecryptionError) as info:
        backend.store(keys=StaticKeyProvider(generate_key()))
    assert info.value.reason == "wrong-kek" and info.value.key_id == 1
    assert "111" not in str(info.value)


def test_reencrypt_resumes_after_interruption_and_retires_the_old_key(backend, kek):
    store = backend.store(keys=kek, partitions=4)
    store.keys.refresh = 0.05
    agents = open_agents(store)
    n = 240
    for i in range(n):
        agents.put(f"a{i:03}", Agent(name=f"n{i}", api_key=f"k{i}", ssn=f"s{i}", email=f"e{i % 7}@x"))
    agents.put("ttl", Agent(name="t", ssn="ephemeral"), ttl=300)
    partial = store.keys.reencrypt(max_entities=60)
    assert not partial.done and partial.target == 2 and 60 <= partial.rewritten < n and partial.remaining
    # Mid-way both keys are readable, and where() finds values under either key.
    assert sorted(a.name for a in agents.where(email="e3@x")) == sorted(f"n{i}" for i in range(n) if i % 7 == 3)
    ids_per_key = [sealed_key_ids(store, agents, f"a{i:03}") for i in range(n)]
    assert {1} in ids_per_key and {2} in ids_per_key
    # An interruption mid-page (the process dies in a write) loses nothing: the page is done again.
    resumed = backend.store(keys=kek, partitions=4)
    resumed.keys.refresh = 0.05
    again = open_agents(resumed)
    calls = {"n": 0}
    real_put = again.put

    def dying_put(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 30:
            raise ConnectionError("killed")
        return real_put(*args, **kwargs)

    again.put = dying_put  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        resumed.keys.reencrypt()
    again.put = real_put  # type: ignore[method-assign]
    done = resumed.keys.reencrypt()
    assert done.done and done.retired == (1,) and done.target == 2
    assert partial.rewritten + 29 + done.rewritten == n + 1  # every entity rewritten exactly once
    for i in range(n):
        assert sealed_key_ids(store, agents, f"a{i:03}") == {2}
        versioned = again.get_versioned(f"a{i:03}", consistent=True)
        assert versioned.version == 2  # one compare-and-set write each, never two
        assert versioned.value.api_key.get_secret_value() == f"k{i}" and versioned.value.ssn == f"s{i}"
    assert 0 < store.client.pttl(agents.key("ttl")) <= 300_000  # the TTL survived the rewrite
    assert agents.get("ttl", consistent=True).ssn == "ephemeral"
    state = store.keys.state()
    assert sorted(state.wrapped) == [2] and 1 in state.gone and state.reencrypt is None and not state.progress
    assert sorted(a.name for a in again.where(email="e3@x")) == sorted(f"n{i}" for i in range(n) if i % 7 == 3)
    changes = sum(store.client.xlen(store.keyspace.changes(p)) for p in range(4))
    assert changes == 2 * (n + 1)  # each rewrite is a change record, like any write


def test_reencrypt_needs_every_encrypted_collection_open(backend, kek):
    store = backend.store(keys=kek)
    open_agents(store).put("a1", Agent(name="x", ssn="1"))
    other = backend.store(keys=kek)
    with pytest.raises(SchemaError, match="agents"):
        other.keys.reencrypt()
    assert other.keys.state().reencrypt is None


def test_reencrypt_encrypts_values_written_in_clear_before_keys(backend, kek):
    plain = backend.store()
    open_agents(plain).put("a1", Agent(name="x", ssn="clear-before"))
    assert raw(plain, open_agents(plain), "a1")[b"ssn"] == b'"clear-before"'
    store = backend.store(keys=kek)
    store.keys.refresh = 0.01
    agents = open_agents(store)
    assert agents.get("a1", consistent=True).ssn == "clear-before"
    assert store.keys.reencrypt().done
    assert raw(store, agents, "a1")[b"ssn"][:2] == SEALED_MARKER
    assert agents.get("a1", consistent=True).ssn == "clear-before"


def test_shredding_makes_values_unreadable(backend, kek):
    store = backend.store(keys=kek)
    agents = open_agents(store)
    agents.put("a1", Agent(name="x", ssn="gone-soon"))
    assert agents.get("a1").ssn == "gone-soon"  # cached
    assert store.keys.shred() == [1]
    for reader in (agents, open_agents(backend.store(keys=kek))):
        with pytest.raises(DecryptionError) as info:
            reader.get("a1")
        assert info.value.reason == "shredded" and info.value.key_id == 1
    agents.put("a2", Agent(name="y", ssn="new"))  # a new data key for new writes
    assert agents.get("a2", consistent=True).ssn == "new" and store.keys.active_key == 2
    with pytest.raises(ValidationError, match="no data key 7"):
        store.keys.shred(7)


def test_no_kek_on_an_encrypted_namespace_refuses_writes_and_changes_nothing(backend, kek):
    store = backend.store(keys=kek)
    open_agents(store).put("a1", Agent(name="x", ssn="111"))
    bare = backend.store()
    assert bare.keys is not None and bare.keys.provider is None
    agents = open_agents(bare)
    before = dump_all(bare.client)
    with pytest.raises(ValidationError, match="no key-encryption key to write 'api_key'"):
        agents.put("a2", Agent(name="y"))
    with pytest.raises(ValidationError, match="no key-encryption key"):
        agents.update("a1", ssn="222")
    with pytest.raises(ValidationError, match="no key-encryption key"):
        agents.update("a1", name="clear field, but the reply could not be read")
    with pytest.raises(ValidationError, match="no key-encryption key"):
        agents.incr("a1", "load", 1)
    with pytest.raises(DecryptionError):  # a read-modify-write cannot even read the entity
        agents.update("a1", lambda a: a.model_copy(update={"ssn": "333"}))
    with pytest.raises(ValidationError), bare.transaction() as tx:
        tx.update(agents, "a1", ssn="444")
    assert dump_all(bare.client) == before
    with pytest.raises(DecryptionError) as info:
        agents.get("a1")
    assert info.value.reason == "no-keys"
    assert agents.delete("a1")  # a delete needs no value
    assert not open_agents(store).exists("a1")


def test_a_namespace_without_keys_stays_in_clear():
    with Backend("fakeredis") as backend:
        store = backend.store()
        assert store.keys is None
        agents = open_agents(store)
        agents.put("a1", Agent(name="x", ssn="111"))
        assert raw(store, agents, "a1")[b"ssn"] == b'"111"'


def test_change_feed_decrypts_with_keys_and_redacts_without(backend, kek):
    store = backend.store(keys=kek)
    agents = open_agents(store)
    bare = backend.store()  # no keys: it must not see the value
    open_agents(bare)
    seen: list = []
    seen_bare: list = []
    agents.put("a1", Agent(name="x", ssn="feed-secret", api_key="sk-feed"))
    store.changes(collection="agents", since="0").subscribe(seen.append)
    bare.changes(collection="agents", since="0").subscribe(seen_bare.append)
    assert wait_for(lambda: seen and seen_bare)
    mine, theirs = seen[0].fields, seen_bare[0].fields
    assert mine["ssn"].get_secret_value() == "feed-secret"
    assert mine["api_key"].get_secret_value() == "sk-feed"
    for name in ("ssn", "api_key"):
        hidden = theirs[name].get_secret_value()
        assert isinstance(hidden, bytes) and hidden[:2] == SEALED_MARKER
    assert "feed-secret" not in repr(seen_bare[0]) and "feed-secret" not in repr(seen[0])


def test_key_ring_creation_races_to_one_active_key(backend, kek):
    stores = [backend.store(keys=kek) for _ in range(4)]
    colls = [open_agents(s) for s in stores]
    barrier = threading.Barrier(4)

    def write(n):
        barrier.wait()
        colls[n].put(f"a{n}", Agent(name=str(n), ssn=f"s{n}"))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = stores[0].keys.state()
    assert state.active is not None and len(state.wrapped) >= 1
    assert [colls[0].get(f"a{n}", consistent=True).ssn for n in range(4)] == [f"s{n}" for n in range(4)]
    assert {key_id_of(raw(stores[0], colls[0], f"a{n}")[b"ssn"]) for n in range(4)} == {state.active}


def test_providers(tmp_path, monkeypatch):
    key = os.urandom(32)
    monkeypatch.setenv("RXSTATE_TEST_KEK", base64.b64encode(key).decode())
    env = EnvKeyProvider("RXSTATE_TEST_KEK")
    assert env.kek_id == StaticKeyProvider(key).kek_id == StaticKeyProvider(key.hex()).kek_id
    (tmp_path / "raw").write_bytes(key)
    (tmp_path / "b64").write_text(base64.urlsafe_b64encode(key).decode().rstrip("=") + "\n")
    assert FileKeyProvider(tmp_path / "raw").kek_id == FileKeyProvider(tmp_path / "b64").kek_id == env.kek_id
    assert env.unwrap(env.wrap(b"d" * 32, b"ctx"), b"ctx") == b"d" * 32
    with pytest.raises(DecryptionError):
        env.unwrap(env.wrap(b"d" * 32, b"ctx"), b"other")
    monkeypatch.delenv("RXSTATE_TEST_KEK")
    with pytest.raises(ValidationError, match="RXSTATE_TEST_KEK is not set"):
        EnvKeyProvider("RXSTATE_TEST_KEK")
    with pytest.raises(ValidationError, match="32 bytes"):
        StaticKeyProvider("c2hvcnQ=")
    with pytest.raises(ValidationError, match="cannot read"):
        FileKeyProvider(tmp_path / "missing")
    with pytest.raises(ValidationError, match="KeyProvider"), Backend("fakeredis") as backend:
        backend.store(keys="not-a-provider")
    assert key.hex() not in repr(env) and base64.b64encode(key).decode() not in repr(env)


def test_watch_follows_classified_fields(backend, kek):
    store = backend.store(keys=kek)
    agents = open_agents(store)
    agents.put("a1", Agent(name="x", ssn="1"))
    seen: list = []
    agents.watch("a1").subscribe(seen.append)
    assert wait_for(lambda: seen)
    agents.update("a1", ssn="2")
    agents.update("a1", api_key="k-2")  # a barrier: the last change, after which nothing more comes
    assert wait_for(lambda: len(seen) >= 3)
    assert [c.op for c in seen] == ["snapshot", "update", "update"]
    assert seen[1].value.ssn == "2" and isinstance(seen[1].fields["ssn"], pydantic.Secret)
    assert seen[2].value.ssn == "2" and seen[2].value.api_key.get_secret_value() == "k-2"


def test_a_write_buffered_across_a_key_change_is_sealed_under_the_new_key(backend, kek):
    store = backend.store(keys=kek)
    store.keys.refresh = 0.0  # read the ring before every seal: the new key is seen at once
    agents = open_agents(store)
    agents.put("a0", Agent(name="first", ssn="0"))
    with store.transaction() as tx:
        tx.put(agents, "a1", Agent(name="x", ssn="buffered"))  # sealed now, under key 1
        assert store.keys.begin_reencrypt()["target"] == 2  # key 2 becomes active before the commit
    assert sealed_key_ids(store, agents, "a1") == {2}  # re-sealed at commit
    done = store.keys.reencrypt()
    assert done.done and done.retired == (1,) and done.rewritten == 1  # only a0 was left under key 1
    assert agents.get("a1", consistent=True).ssn == "buffered" and agents.get("a0", consistent=True).ssn == "0"
