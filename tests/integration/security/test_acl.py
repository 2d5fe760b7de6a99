"""Attacks from outside: raw redis-py clients authenticated as a principal against another's keys.

Every refused attempt leaves the dataset byte-identical (``dump_all`` before and after).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

import rxstate
from tests.helpers import dump_all
from tests.integration.security.conftest import Ticket, World
from tests.models import Agent


def refused(w: World, attempt: Callable[[], Any]) -> redis.exceptions.ResponseError:
    """Run ``attempt``; it must be refused by the server, changing nothing."""
    before = dump_all(w.raw)
    with pytest.raises(redis.exceptions.ResponseError) as caught:
        attempt()
    assert dump_all(w.raw) == before
    return caught.value


def test_a_principal_cannot_read_write_delete_or_expire_anothers_keys(world: World):
    ann = world.principal_client("ann")
    agent = world.key("agents", "a1")
    ids = world.admin.keyspace.ids("agents", world.admin.keyspace.partition_of("a1"))
    for attempt in (
        lambda: ann.hgetall(agent),
        lambda: ann.hget(agent, "name"),
        lambda: ann.exists(agent),
        lambda: ann.smembers(ids),
        lambda: ann.hset(agent, "name", '"pwned"'),
        lambda: ann.delete(agent),
        lambda: ann.pexpire(agent, 1),
        lambda: ann.move(world.key("tickets", "t1"), 1),  # her own collection, but MOVE is never granted
    ):
        assert isinstance(refused(world, attempt), redis.exceptions.NoPermissionError)


def test_a_writer_cannot_reach_other_collections_through_a_script(world: World):
    bob = world.principal_client("bob")  # may run the write scripts: EVAL is granted to writers
    ticket = world.key("tickets", "t1")
    script = "redis.call('HSET', KEYS[1], 'title', '\"pwned\"') return 1"
    refused(world, lambda: bob.eval(script, 1, ticket))  # a declared key: refused before the script runs
    undeclared = f"redis.call('HSET', '{ticket}', 'title', '\"pwned\"') return 1"
    refused(world, lambda: bob.eval(undeclared, 0))  # an undeclared key: refused when the command runs
    secret = world.key("secrets", "s1")
    refused(world, lambda: bob.eval("return redis.call('HGETALL', KEYS[1])", 1, secret))


def test_a_principal_cannot_learn_other_key_names(world: World):
    ann = world.principal_client("ann")
    for attempt in (
        lambda: ann.scan(0),
        lambda: ann.keys("*"),
        lambda: ann.randomkey(),
        lambda: ann.dbsize(),
        lambda: ann.execute_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "rx:"),
        lambda: ann.execute_command("PSUBSCRIBE", "__keyspace@0__:*"),
        lambda: ann.execute_command("PSUBSCRIBE", "__keyevent@0__:*"),
        lambda: ann.execute_command("SUBSCRIBE", "__keyevent@0__:hset"),
        lambda: ann.execute_command("PSUBSCRIBE", f"__keyspace@0__:rx:{{{world.namespace}:[0-9]}}:agents:*"),
        lambda: ann.execute_command("PSUBSCRIBE", f"__keyspace@0__:rx:{{{world.namespace}:*"),
        lambda: ann.xrange(world.admin.keyspace.changes(0)),  # every collection's changes
        lambda: ann.hgetall(world.admin.keyspace.schemas()),  # the registry names every collection
        lambda: ann.get(f"rx:{{{world.namespace}}}:_principal:bob"),
        lambda: ann.hgetall(f"rx:{{{world.namespace}}}:_principal:bob"),
        lambda: ann.smembers(f"rx:{{{world.namespace}}}:_principals"),
    ):
        assert isinstance(refused(world, attempt), redis.exceptions.NoPermissionError)
    bob = world.principal_client("bob")  # a writer appends to the shared change streams, never reads them
    refused(world, lambda: bob.xrange(world.admin.keyspace.changes(0)))
    refused(world, lambda: bob.xread({world.admin.keyspace.changes(0): "0"}))


def test_a_principal_cannot_run_admin_commands_or_forge_invalidations(world: World):
    bob = world.principal_client("bob")
    own_channel = f"__keyspace@0__:{world.key('agents', 'a1')}"
    for attempt in (
        lambda: bob.execute_command("FUNCTION", "FLUSH"),
        lambda: bob.execute_command("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', function() end)"),
        lambda: bob.config_get("*"),
        lambda: bob.config_set("notify-keyspace-events", ""),
        lambda: bob.flushall(),
        lambda: bob.flushdb(),
        lambda: bob.execute_command("SCRIPT", "FLUSH"),
        lambda: bob.execute_command("ACL", "SETUSER", "rx:x:y", "on", "+@all", "~*"),
        lambda: bob.execute_command("CLIENT", "KILL", "USER", "default"),
        lambda: bob.publish(f"__keyspace@0__:{world.key('tickets', 't1')}", "del"),  # others' invalidations
        lambda: bob.publish(own_channel, "del"),  # and its own: publishing is not granted at all
        lambda: bob.execute_command("MONITOR"),
    ):
        assert isinstance(refused(world, attempt), redis.exceptions.NoPermissionError)
    refused(world, lambda: bob.execute_command("DEBUG", "SLEEP", "0"))  # off for everyone by default, denied anyway


def test_declared_keys_are_checked_before_a_script_runs_so_a_refused_write_writes_nothing(world: World):
    """The server checks a script's declared KEYS before it runs (needing read and write on each); a command
    inside a script on an undeclared key is checked only when it runs, after the script's earlier writes."""
    bob = world.principal_client("bob")
    mine, theirs = world.key("agents", "a1"), world.key("tickets", "t1")
    two_writes = "redis.call('HSET', KEYS[1], 'notes', '\"x\"') redis.call('HSET', KEYS[2], 'notes', '\"x\"')"
    error = refused(world, lambda: bob.eval(two_writes, 2, mine, theirs))  # first key granted, second not
    assert "no permissions to access" in str(error).lower()  # Redis: "... one of the keys"; Valkey: "a key"
    before = dump_all(world.raw)
    late = f"redis.call('HSET', KEYS[1], 'notes', '\"x\"') redis.call('HSET', '{theirs}', 'notes', '\"x\"')"
    with pytest.raises(redis.exceptions.ResponseError):
        bob.eval(late, 1, mine)
    assert world.raw.hget(mine, "notes") == b'"x"' and dump_all(world.raw) != before  # not rolled back
    assert world.raw.hget(theirs, "notes") is None


def test_a_multi_key_write_missing_one_key_is_refused_with_nothing_written(world: World):
    """A write whose declared keys include one the principal's ACL lacks (a reference to a collection it
    cannot touch) is refused by the server before anything is written, as ``PermissionDenied``."""
    admin_refs = world.admin.collection("assignments", Ticket, constraints=[rxstate.references("owner", "secrets")])
    admin_refs.put("x1", Ticket(title="seed", region="eu", owner="s1"))
    world.admin.set_policy(
        rxstate.Policy([*world.admin.policy.rules, rxstate.Rule("fleet", "allow", ["read", "write"], ["assignments"])])
    )
    bob = world.connect("bob", cache=False)
    try:
        assignments = bob.collection("assignments", Ticket, constraints=[rxstate.references("owner", "secrets")])
        before = dump_all(world.raw)
        with pytest.raises(rxstate.PermissionDenied) as caught:
            assignments.put("x2", Ticket(title="new", region="eu", owner="s1"))  # declares the secrets entity key
        assert "ACL" in str(caught.value)
        assert dump_all(world.raw) == before
        assert assignments.put("x3", Ticket(title="free", region="eu")).version == 1  # no reference: allowed
    finally:
        bob.close()


def test_a_read_only_principal_reads_but_every_write_is_refused(world: World):
    val = world.connect("val")
    try:
        agents = val.collection("agents", Agent, indexes=["status"])
        assert agents.get("a1").name == "planner"
        assert [a.name for a in agents.where(status="busy")] == ["coder"]
        assert agents.count() == 2
        before = dump_all(world.raw)
        for attempt in (
            lambda: agents.put("a3", Agent(name="x")),
            lambda: agents.update("a1", status="busy"),
            lambda: agents.incr("a1", "load"),
            lambda: agents.delete("a1"),
            lambda: agents.put_many({"a4": Agent(name="y")}, atomic=True),
        ):
            with pytest.raises(rxstate.PermissionDenied) as caught:
                attempt()
            assert caught.value.principal == "val" and caught.value.collection == "agents"
        with pytest.raises(rxstate.PermissionDenied), val.transaction() as tx:
            tx.update(agents, "a1", status="busy")
        assert dump_all(world.raw) == before
    finally:
        val.close()
    raw = world.principal_client("val")
    agent = world.key("agents", "a1")
    assert raw.hget(agent, "name") == b'"planner"'
    for attempt in (
        lambda: raw.hset(agent, "name", '"x"'),
        lambda: raw.evalsha("0" * 40, 1, agent),
        # scripts may run (a principal's reads of classified data and its denials are audited by one),
        # but not write what the principal may not: the declared key needs write access
        lambda: raw.eval("return redis.call('HSET', KEYS[1], 'name', 'x')", 1, agent),
        # nor reach an undeclared key: checked when the command runs
        lambda: raw.eval(f"return redis.call('HSET', '{agent}', 'name', 'x')", 0),
    ):
        error = refused(world, attempt)
        assert isinstance(error, redis.exceptions.ResponseError) and (
            isinstance(error, redis.exceptions.NoPermissionError)
            or "can't access" in str(error)  # Redis 7.0
            or "no permissions to access" in str(error).lower()  # Valkey 8
        ), error


def test_a_write_whose_acl_lacks_one_declared_key_writes_nothing(world: World):
    """The same with an ACL narrowed by hand: without the versions hash of ``agents``, every write of an
    agent (which declares it) is refused whole, though the entity, its ids and indexes are granted."""
    user = f"rx:{world.namespace}:bob"
    keys = world.admin.principals.acl("bob")["keys"].split()
    narrowed = [k for k in keys if "_ver:agents" not in k]
    assert len(narrowed) < len(keys)
    world.raw.execute_command("ACL", "SETUSER", user, "resetkeys", *narrowed)
    bob = world.connect("bob", cache=False)
    try:
        agents = bob.collection("agents", Agent, indexes=["status"])
        before = dump_all(world.raw)
        with pytest.raises(rxstate.PermissionDenied):
            agents.update("a1", status="busy")
        with pytest.raises(rxstate.PermissionDenied):
            agents.put("a9", Agent(name="new"))
        assert dump_all(world.raw) == before
    finally:
        bob.close()


def test_on_an_audited_namespace_a_readers_classified_reads_and_denials_are_audited(world: World):
    audited = rxstate.connect(world.server.url, namespace=world.namespace, audit=True)
    val = world.connect("val", cache=False)
    try:
        agents = val.collection("agents", Agent, indexes=["status"])  # Agent holds a Secret field
        assert agents.get("a1").name == "planner"
        with pytest.raises(rxstate.PermissionDenied):
            agents.update("a1", status="busy")
        entries = audited.audit.query(principal="val")
        assert [(e.action, e.collection, e.entity_id, e.outcome) for e in entries] == [
            ("read", "agents", "a1", "ok"),
            ("write", "agents", "a1", "denied"),
        ]
        assert "viewer" in entries[1].detail or "val" in entries[1].detail
        assert audited.audit.verify().ok
        assert world.admin.collections["agents"].get_versioned("a1").version == 1  # the denial changed nothing
    finally:
        val.close()
        audited.close()
