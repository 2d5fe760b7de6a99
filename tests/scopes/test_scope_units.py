"""Pure parts of scopes (merging, explanations, rule chains) and refusals on fakeredis."""

from __future__ import annotations

import pytest

import rxstate
from rxstate.scopes.access import decide, scope_policy
from rxstate.scopes.merging import Entry, deep_merge, explain_key, final_above, resolve_all
from rxstate.security.policy import Principal
from tests.helpers import dump_all


def test_a_final_in_the_middle_stops_merges_below_it():
    chain = [
        ("o", {"d": Entry({"a": 1})}),
        ("o/t", {"d": Entry({"b": 2}, merge="merge", final=True)}),
        ("o/t/x", {"d": Entry({"c": 3}, merge="merge")}),
    ]
    why = explain_key(chain, "d")
    assert why.value == {"a": 1, "b": 2} and why.final_at == "o/t" and why.contributors == ("o", "o/t")
    assert why.source == "o/t" and why.overrides == ("o",)
    assert final_above(chain, "d") == "o/t" and final_above(chain[:2], "d") is None
    assert resolve_all(chain) == {"d": {"a": 1, "b": 2}}


def test_merge_and_append_onto_a_value_of_another_kind_start_afresh():
    assert explain_key([("o", {"k": Entry(5)}), ("o/a", {"k": Entry({"x": 1}, merge="merge")})], "k").value == {"x": 1}
    assert explain_key([("o", {"k": Entry("s")}), ("o/a", {"k": Entry([1], merge="append")})], "k").value == [1]
    assert deep_merge({"a": [1]}, {"a": [2]}) == {"a": [2]}  # lists inside a merged dict are replaced
    assert str(explain_key([], "k")) == "k: set by no scope"


def test_rules_of_a_chain_are_named_by_their_scope_and_a_deny_anywhere_wins():
    rules = [
        ("o", ({"role": "m", "effect": "allow", "actions": ["write"], "collections": ["*"]},)),
        ("o/t", ({"role": "m", "effect": "deny", "actions": ["write"], "collections": ["k"], "name": "freeze"},)),
    ]
    policy, where = scope_policy(rules)
    assert [r.name for r in policy.rules] == ["o:m-allow-write-*", "o/t:freeze"] and where["o/t:freeze"] == "o/t"
    who = Principal("p", roles=("m",))
    assert decide(who, "write", "other", "o/t/x", rules).allowed
    denied = decide(who, "write", "k", "o/t/x", rules)
    assert not denied.allowed and denied.decided_at == "o/t" and denied.path == ("o", "o/t")
    assert decide(who, "write", "k", "o", rules[:1]).allowed  # the chain of "o" holds only its own rules


def test_repeated_rule_names_and_delegation_without_an_audit_server_write_nothing(rx_fake_store):
    org = rx_fake_store.scope("org")
    org.allow("viewer", ["read"], name="viewers")
    raw = rx_fake_store.client
    before = dump_all(raw)
    with pytest.raises(rxstate.ValidationError):
        org.allow("viewer", ["read"], name="viewers")
    with pytest.raises(rxstate.ValidationError):
        org.allow("viewer", ["fly"])
    with pytest.raises(rxstate.ValidationError):
        org.delegate("cal", ["k"], ttl=-1)
    with pytest.raises(rxstate.ValidationError):
        org.delegate("cal", ["k"], ttl=5, scope="elsewhere/x")
    with pytest.raises(rxstate.ServerError):
        org.delegate("cal", ["k"], ttl=5)  # each link is audited: fakeredis has no redis.sha1hex
    assert dump_all(raw) == before
    assert org.remove_rule("viewers") and org.rules() == []
