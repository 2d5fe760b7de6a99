"""Principals on a real server: their lifecycle, stores acting as them, the policy they are held to."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis

import rxstate
import rxstate.aio
from rxstate import Policy, Rule
from rxstate.security.acl import username
from tests.helpers import dump_all, wait_for
from tests.integration.security.conftest import POLICY, Ticket, World
from tests.models import Agent


def test_create_stores_no_password_and_lists_roles(world: World):
    password = world.passwords["ann"]
    assert all(password.encode() not in (v or b"") for v in dump_all(world.raw).values())
    acl = world.admin.principals.acl("ann")
    assert "on" in acl["flags"].split() and "-@all" in acl["commands"]
    listed = {p.name: (p.principal.kind, p.roles, p.enabled) for p in world.admin.principals.list()}
    assert listed == {
        "ann": ("user", ("support",), True),
        "bob": ("service", ("fleet",), True),
        "val": ("agent", ("viewer",), True),
    }
    assert world.admin.principals.get("ann").principal.attributes == {"region": "eu"}


def test_bad_or_repeated_creations_change_nothing(world: World):
    before = dump_all(world.raw)
    users = world.raw.acl_users()
    with pytest.raises(rxstate.AlreadyExists):
        world.admin.principals.create("ann", roles=["support"])
    for bad in (
        {"name": "9lives"},
        {"name": "x y"},
        {"name": "eve", "kind": "robot"},
        {"name": "eve", "roles": ["no spaces"]},
        {"name": "eve", "attributes": {"when": datetime.now(UTC)}},
        {"name": "eve", "password": "short"},
    ):
        with pytest.raises(rxstate.ValidationError):
            world.admin.principals.create(**bad)  # type: ignore[arg-type]
    assert dump_all(world.raw) == before and world.raw.acl_users() == users


def test_rotate_ends_the_old_password_and_its_connections(world: World):
    old = world.principal_client("ann")
    assert old.hget(world.key("tickets", "t1"), "title") == b'"printer"'
    new = world.admin.principals.rotate("ann")
    assert new != world.passwords["ann"]
    with pytest.raises(redis.AuthenticationError):
        old.hget(world.key("tickets", "t1"), "title")  # its connection was closed; re-authenticating fails
    with pytest.raises(rxstate.PermissionDenied):
        world.connect("ann")
    world.passwords["ann"] = new
    assert world.principal_client("ann").hget(world.key("tickets", "t1"), "title") == b'"printer"'


def test_disable_and_enable(world: World):
    store = world.connect("val", cache=False)
    agents = store.collection("agents", Agent)
    assert agents.get("a1").name == "planner"
    world.admin.principals.disable("val")
    assert not world.admin.principals.get("val").enabled
    with pytest.raises(redis.AuthenticationError):
        agents.get("a1")  # the open store's connections were closed, and it cannot log in again
    with pytest.raises(rxstate.PermissionDenied) as caught:
        world.connect("val")
    assert caught.value.principal == "val"
    store.close()
    world.admin.principals.enable("val")
    with world.connect("val", cache=False) as again:
        assert again.collection("agents", Agent).get("a1").name == "planner"


def test_every_connection_of_a_principal_store_authenticates_as_it(world: World):
    world.admin.set_policy(Policy([*POLICY.rules, Rule("auditor", "allow", ["read"], ["*"])]))
    password = world.admin.principals.create("eve", roles=["auditor"])
    eve = rxstate.connect(world.server.url, namespace=world.namespace, principal="eve", password=password)
    try:
        assert eve.cache is not None and eve.cache.stats().mode == "keyspace"  # never BCAST tracking
        seen: list[rxstate.Change] = []
        eve.changes(collection="agents").subscribe(seen.append)
        eve.collection("agents", Agent).get("a1")
        world.admin.collections["agents"].update("a1", status="busy")
        assert wait_for(lambda: any(c.id == "a1" for c in seen))
        assert wait_for(lambda: eve.collection("agents", Agent).get("a1").status == "busy")
        clients = [c for c in world.raw.client_list() if c["user"] == username(world.namespace, "eve")]
        names = {c["name"] for c in clients}
        assert f"rxstate-invalidation-{world.namespace}" in names and len(clients) >= 3  # commands, cache, feed
    finally:
        eve.close()


def test_a_restricted_cache_is_invalidated_through_its_own_channels_only(world: World):
    val = world.connect("val")
    try:
        feed = val._invalidation
        assert feed is not None and feed.mode == "keyspace"
        assert all(":agents:*" in p or p.endswith((":_probe:val", ":_probe:val:ping")) for p in feed.patterns)
        agents = val.collection("agents", Agent)
        assert agents.get("a1").status == "idle"
        assert agents.get("a1").status == "idle"
        assert val.cache is not None and val.cache.stats().hits >= 1
        world.raw.hset(world.key("agents", "a1"), "status", '"failed"')  # a foreign write
        assert wait_for(lambda: agents.get("a1").status == "failed")
    finally:
        val.close()


def test_attribute_conditions_on_entities(world: World):
    ann = world.connect("ann")
    try:
        tickets = ann.collection("tickets", Ticket, indexes=["region"])
        assert tickets.get("t1").title == "printer"
        assert tickets.get("t2").title == "network"  # reading is unconditional
        assert tickets.ids() == ["t1", "t2"]
        assert tickets.update("t1", owner="ann").version == 2  # her region
        before = dump_all(world.raw)
        for attempt in (
            lambda: tickets.update("t2", owner="ann"),  # another region
            lambda: tickets.put("t3", Ticket(title="new", region="us")),
            lambda: tickets.update("t1", region="us"),  # moving one out of her region
            lambda: tickets.delete("t1"),  # no rule grants delete
        ):
            with pytest.raises(rxstate.PermissionDenied) as caught:
                attempt()
            assert caught.value.principal == "ann" and caught.value.collection == "tickets"
        assert dump_all(world.raw) == before
        assert tickets.put("t4", Ticket(title="mine", region="eu")).version == 1
    finally:
        ann.close()


def test_row_conditions_on_reads_and_an_injected_clock(world: World):
    world.admin.set_policy(
        Policy(
            [
                Rule("support", "allow", ["read"], ["tickets"], when=["entity.region == principal.region"]),
                Rule("viewer", "allow", ["read"], ["agents"], hours="08:00-18:00", tz="Europe/Berlin", name="office"),
            ]
        )
    )
    ann, val = world.connect("ann"), world.connect("val")
    try:
        assert ann.cache is None  # row-level read conditions are checked on every read, at the server's data
        tickets = ann.collection("tickets", Ticket, indexes=["region"])
        assert tickets.get("t1").region == "eu"
        with pytest.raises(rxstate.PermissionDenied):
            tickets.get("t2")
        with pytest.raises(rxstate.PermissionDenied):
            tickets.get_many(["t1", "t2"])
        with pytest.raises(rxstate.PermissionDenied, match="read them by id"):
            tickets.ids()  # a listing would reveal ids of entities she may not read
        agents = val.collection("agents", Agent)
        assert val.guard is not None
        val.guard.clock = lambda: datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
        assert agents.get("a1").name == "planner"
        val.guard.clock = lambda: datetime(2026, 1, 5, 17, 30, tzinfo=UTC)  # 18:30 in Berlin
        with pytest.raises(rxstate.PermissionDenied, match="outside 08:00-18:00"):
            agents.get("a1")  # also a cached entity: the check comes before the cache
    finally:
        ann.close()
        val.close()


def test_explain_names_the_rule_and_the_reason(world: World):
    explain = world.admin.explain
    allowed = explain("ann", "write", "tickets", "t1")
    assert allowed.allowed and allowed.rule == "support-writes-own-region"
    assert "entity.region == principal.region" in allowed.reason
    denied = explain("ann", "write", "tickets", "t2")
    assert not denied.allowed and denied.rule is None
    assert "'us' vs 'eu'" in denied.reason
    assert explain("ann", "write", "tickets").pending == {"region"}  # no entity: the fields it needs
    assert explain("val", "read", "agents").enforced_by == "server and client"  # no conditions: the ACL's limits
    assert explain("ann", "read", "agents").enforced_by == "server and client"  # her ACL does not open agents
    assert denied.enforced_by == "client"  # her ACL opens tickets for writing; the region is checked here
    assert allowed.enforced_by == "client"
    world.admin.set_policy(Policy([*POLICY.rules, Rule("viewer", "deny", ["read"], ["agents"], name="no-agents")]))
    refused = explain("val", "read", "agents", "a1")
    assert (refused.allowed, refused.rule) == (False, "no-agents")
    raw = world.principal_client("val")
    with pytest.raises(redis.exceptions.NoPermissionError):
        raw.hget(world.key("agents", "a1"), "name")  # an unconditional deny closes the keys on the server too


def test_only_a_principal_that_may_read_everything_follows_the_change_feed(world: World):
    with world.connect("val", cache=False) as val:
        with pytest.raises(rxstate.PermissionDenied, match="change feed"):
            val.changes()
        errors: list[BaseException] = []
        val.collection("agents", Agent).watch("a1").subscribe(on_error=errors.append)
        assert wait_for(lambda: errors) and isinstance(errors[0], rxstate.PermissionDenied)


def test_a_principal_cannot_administer_principals(world: World):
    with world.connect("bob", cache=False) as bob:
        before = dump_all(world.raw)
        with pytest.raises(rxstate.PermissionDenied):
            bob.principals.create("mallory", roles=["fleet"])
        with pytest.raises(rxstate.PermissionDenied):
            bob.set_policy(Policy([Rule("*", "allow", ["*"], ["*"])]))
        assert dump_all(world.raw) == before


def test_a_store_on_a_client_of_ones_own_checks_whose_it_is(world: World):
    own = world.principal_client("val")
    with rxstate.connect(own, namespace=world.namespace, principal="val", cache=False) as val:
        assert val.collection("agents", Agent).get("a1").name == "planner"
        with pytest.raises(rxstate.PermissionDenied):
            val.collection("agents", Agent).update("a1", status="busy")  # the policy still holds
    with pytest.raises(rxstate.PermissionDenied, match=r"authenticated as 'rx:.*:bob', not as principal 'val'"):
        rxstate.connect(world.principal_client("bob"), namespace=world.namespace, principal="val")
    with pytest.raises(rxstate.ValidationError, match="pass principal= alone"):
        rxstate.connect(own, namespace=world.namespace, principal="val", password=world.passwords["val"])


def test_an_asyncio_store_acts_as_a_principal(world: World):
    import asyncio

    async def main() -> tuple[str, str]:
        async with rxstate.aio.connect(
            world.server.url, namespace=world.namespace, principal="bob", password=world.passwords["bob"], cache=False
        ) as bob:
            agents = await bob.collection("agents", Agent)
            await agents.update("a1", status="busy")  # fleet may write agents
            with pytest.raises(rxstate.PermissionDenied):
                await (await bob.collection("tickets", Ticket)).get("t1")
            users = {c["user"] for c in world.raw.client_list()}  # its connections are the ACL user's
            assert username(world.namespace, "bob") in users
            return (await agents.get("a1")).status, bob.actor

    status, actor = asyncio.run(main())
    assert status == "busy" and actor == "bob"
    with pytest.raises(rxstate.PermissionDenied):
        asyncio.run(_open_with(world.server.url, world.namespace, "bob", "wrong-password-123"))


async def _open_with(url: str, namespace: str, principal: str, password: str) -> None:
    async with rxstate.aio.connect(url, namespace=namespace, principal=principal, password=password):
        pass
