"""The policy (roles, attribute and time conditions, deny wins) and the server ACL derived from it."""

from __future__ import annotations

from datetime import UTC, datetime

import fakeredis
import pytest

import rxstate
from rxstate import Policy, Rule
from rxstate.security.acl import acl_rules, grants, keyspace_channels
from rxstate.security.guard import Guard
from rxstate.security.policy import Principal

ANN = Principal("ann", kind="user", roles=("support",), attributes={"region": "eu", "level": 2})
MORNING = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
NIGHT = datetime(2026, 1, 5, 23, 30, tzinfo=UTC)


def test_nothing_is_allowed_by_default():
    decision = Policy().decide(ANN, "read", "tickets", now=MORNING)
    assert not decision.allowed and decision.rule is None
    assert decision.reason == "no rule allows read on tickets"


def test_roles_grant_actions_on_collections_and_admin_implies_the_rest():
    policy = Policy([Rule("support", "allow", ["read"], ["tickets"]), Rule("support", "allow", ["admin"], ["kb"])])
    assert policy.decide(ANN, "read", "tickets").allowed
    assert not policy.decide(ANN, "write", "tickets").allowed
    assert not policy.decide(ANN, "read", "agents").allowed
    assert all(policy.decide(ANN, a, "kb").allowed for a in ("read", "write", "delete", "admin"))
    other = Principal("bob", roles=("fleet",))
    assert not policy.decide(other, "read", "tickets").allowed


def test_an_explicit_deny_wins_whatever_the_order():
    allow = Rule("support", "allow", ["*"], ["*"], name="all")
    deny = Rule("*", "deny", ["delete"], ["tickets"], name="keep-tickets")
    for rules in ([allow, deny], [deny, allow]):
        decision = Policy(rules).decide(ANN, "delete", "tickets")
        assert (decision.allowed, decision.rule) == (False, "keep-tickets")
        assert decision.reason == "denied by keep-tickets"
        assert Policy(rules).decide(ANN, "delete", "kb").rule == "all"


def test_attribute_conditions_over_principal_entity_action_and_collection():
    policy = Policy(
        [
            Rule("support", "allow", ["read", "write"], ["tickets"], when=["entity.region == principal.region"]),
            Rule("support", "allow", ["read"], ["kb"], when=["principal.level >= 3"], name="senior"),
            Rule("support", "allow", ["read"], ["logs"], when=['entity.level in ["info", "warn"]', 'action == "read"']),
            Rule("support", "deny", ["write"], ["tickets"], when=['entity.state == "closed"'], name="closed"),
        ]
    )
    assert policy.decide(ANN, "read", "tickets", entity={"region": "eu"}).allowed
    refused = policy.decide(ANN, "read", "tickets", entity={"region": "us"})
    assert not refused.allowed and "'us' vs 'eu'" in refused.reason
    missing = policy.decide(ANN, "read", "tickets", entity={})
    assert not missing.allowed and "cannot be evaluated" in missing.reason
    assert not policy.decide(ANN, "read", "kb").allowed  # level 2 < 3
    assert policy.decide(ANN, "read", "logs", entity={"level": "warn"}).allowed
    assert not policy.decide(ANN, "read", "logs", entity={"level": "debug"}).allowed
    closed = policy.decide(ANN, "write", "tickets", entity={"region": "eu", "state": "closed"})
    assert (closed.allowed, closed.rule) == (False, "closed")
    pending = policy.decide(ANN, "write", "tickets")  # no entity yet: the allow depends on its fields
    assert not pending.allowed and pending.pending == {"region"}


def test_time_windows_in_a_zone_and_across_midnight():
    office = Policy([Rule("support", "allow", ["read"], ["tickets"], hours="08:00-18:00", tz="Europe/Berlin")])
    assert office.decide(ANN, "read", "tickets", now=MORNING).allowed  # 10:30 in Berlin
    late = office.decide(ANN, "read", "tickets", now=datetime(2026, 1, 5, 17, 15, tzinfo=UTC))
    assert not late.allowed and "outside 08:00-18:00 Europe/Berlin (now 18:15)" in late.reason
    nights = Policy([Rule("support", "allow", ["read"], ["tickets"], hours="22:00-06:00")])
    assert nights.decide(ANN, "read", "tickets", now=NIGHT).allowed
    assert not nights.decide(ANN, "read", "tickets", now=MORNING).allowed


def test_classification_of_collections():
    policy = Policy(
        [Rule("support", "allow", ["read"], ["*"]), Rule("support", "deny", ["read"], ["*"], classified=True)]
    )
    assert policy.decide(ANN, "read", "tickets", classified=False).allowed
    assert not policy.decide(ANN, "read", "vault", classified=True).allowed


@pytest.mark.parametrize(
    "bad",
    [
        {"role": "sup port"},
        {"effect": "maybe"},
        {"actions": ["fly"]},
        {"actions": []},
        {"collections": []},
        {"when": ["region == 'eu'"]},
        {"when": ["entity.region ~= principal.region"]},
        {"when": ["entity.region == eu"]},
        {"hours": "8-18"},
        {"hours": "25:00-26:00"},
        {"tz": "Mars/Olympus"},
    ],
)
def test_bad_rules_are_refused(bad):
    rule = {"role": "support", "effect": "allow", "actions": ["read"], "collections": ["tickets"]} | bad
    with pytest.raises(rxstate.ValidationError):
        Rule(**rule)


def test_rule_names_are_unique_and_a_policy_round_trips_through_json():
    with pytest.raises(rxstate.ValidationError, match="unique"):
        Policy([Rule("a", "allow", ["read"], ["x"], name="r"), Rule("b", "allow", ["read"], ["y"], name="r")])
    policy = Policy([Rule("support", "allow", ["read"], ["tickets"], when=["entity.n > 2"], hours="08:00-18:00")])
    again = Policy.from_json(policy.to_json())
    assert again.to_json() == policy.to_json()
    assert again.decide(ANN, "read", "tickets", entity={"n": 3}, now=MORNING).allowed


def test_the_guard_raises_a_typed_error_with_context_and_refuses_partial_listings():
    guard = Guard(ANN, Policy([Rule("support", "allow", ["read"], ["tickets"], when=['entity.region == "eu"'])]))
    assert guard.require("read", "tickets", "t1").pending == {"region"}  # decided once the entity is read
    with pytest.raises(rxstate.PermissionDenied) as caught:
        guard.require("read", "tickets", "t2", {"region": "us"})
    err = caught.value
    assert (err.principal, err.action, err.collection, err.id) == ("ann", "read", "tickets", "t2")
    assert isinstance(err, PermissionError)
    with pytest.raises(rxstate.PermissionDenied, match="read them by id"):
        guard.require("read", "tickets", whole=True)


def test_a_store_guard_checks_before_the_cache_and_changes_nothing():
    store = rxstate.connect(fakeredis.FakeRedis(), namespace="g")
    from tests.helpers import dump_all
    from tests.models import Agent

    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="planner"))
    store.guard = Guard(Principal("val", roles=("viewer",)), Policy([Rule("viewer", "allow", ["read"], ["agents"])]))
    assert agents.get("a1").name == "planner"
    before = dump_all(store.client)
    with pytest.raises(rxstate.PermissionDenied):
        agents.update("a1", status="busy")
    with pytest.raises(rxstate.PermissionDenied), store.batch() as batch:
        batch.put(agents, "a2", Agent(name="x"))
    assert dump_all(store.client) == before
    store.guard.policy = Policy(
        [
            Rule("viewer", "allow", ["read"], ["agents"]),
            Rule("viewer", "allow", ["write"], ["agents"], when=["entity.load < 5"]),
        ]
    )
    agents.update("a1", load=4)
    with pytest.raises(rxstate.PermissionDenied, match="6 vs 5"):
        agents.incr("a1", "load", 2)  # judged on the value it would leave
    assert agents.get("a1", consistent=True).load == 4
    store.guard.policy = Policy()
    with pytest.raises(rxstate.PermissionDenied):
        agents.get("a1")  # cached, still checked
    store.close()


def test_acl_of_a_reader_a_writer_and_a_reader_of_everything():
    policy = Policy(
        [
            Rule("support", "allow", ["read"], ["tickets"]),
            Rule("fleet", "allow", ["write"], ["agents"]),
            Rule("auditor", "allow", ["read"], ["*"]),
            Rule("fleet", "deny", ["*"], ["secrets"]),
        ]
    )
    reader = acl_rules("crew", 16, ANN, policy)
    assert "%R~rx:{crew:[0-9]}:tickets:*" in reader and "%R~rx:{crew:[0-9][0-9]}:_idx:tickets:*" in reader
    assert not any(r.startswith("~") and "tickets" in r for r in reader)
    # a reader runs scripts only to append to the audit (reads of classified data, denials): its write
    # patterns are the audit streams, their chain heads and write records, no collection key; and it adds
    # its reads to the read-cost hashes (a tenant's read costs, HINCRBY)
    assert "+xrange" not in reader and "~rx:{crew:[0-9]}:audit" in reader and "~rxw:{crew:[0-9]}:*" in reader
    assert "~rx:{crew:[0-9]}:_treads" in reader and "+hincrby" in reader
    written = ("audit", "}:*", "_probe:ann", ":ping", "_treads")
    assert not any(r.startswith("~") and not r.endswith(written) for r in reader)
    assert reader[0] == "-@all" and {"-keys", "-scan", "-client|tracking", "-publish", "-function"} <= set(reader)
    writer = acl_rules("crew", 16, Principal("bob", roles=("fleet",)), policy)
    assert "~rx:{crew:[0-9]}:agents:*" in writer and "~rx:{crew:[0-9]}:changes" in writer
    assert "+evalsha" in writer and "+xrange" not in writer  # appends to the change streams, never reads them
    everything = acl_rules("crew", 16, Principal("eve", roles=("auditor",)), policy)
    assert "%R~rx:{crew:[0-9]}:*" in everything and "+xread" in everything
    assert not any("*}" in r or "{crew:*" in r for r in reader + writer + everything)  # no '*' over the tag


def test_grants_follow_unconditional_denials_and_partition_digits():
    policy = Policy(
        [
            Rule("fleet", "allow", ["read", "write"], ["agents", "secrets"]),
            Rule("fleet", "deny", ["*"], ["secrets"]),
            Rule("fleet", "deny", ["write"], ["agents"], when=['entity.team == "ops"']),
        ]
    )
    bob = Principal("bob", roles=("fleet",))
    given = grants(bob, policy)
    assert given.read == {"agents"} and given.write == {"agents"}  # the conditional deny stays on the client
    channels = keyspace_channels("crew", 1000, bob, policy, db=2)
    assert channels == [
        "__keyspace@2__:rx:{crew:[0-9]}:agents:*",
        "__keyspace@2__:rx:{crew:[0-9][0-9]}:agents:*",
        "__keyspace@2__:rx:{crew:[0-9][0-9][0-9]}:agents:*",
        "__keyspace@2__:rx:{crew:0}:_probe:bob",
        "__keyspace@2__:rx:{crew:0}:_probe:bob:ping",
    ]
    assert [f"&{c}" for c in channels] == [r for r in acl_rules("crew", 1000, bob, policy, db=2) if r[0] == "&"]
