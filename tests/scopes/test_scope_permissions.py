"""Permission inheritance on an org chart (real server, principals with their own ACL users)."""

from __future__ import annotations

import pytest
import redis

import rxstate
from rxstate.scopes import scope_tree
from tests.helpers import dump_all
from tests.scopes.conftest import TEAM, Org


def test_a_manager_writes_the_team_scope_an_agent_only_its_own(org: Org):
    ann, a7 = org.connect("ann"), org.connect("a7")
    ann.scope(TEAM).set("model", "medium")
    ann.scope(f"{TEAM}/a7").set("budget", 10)  # the team's grant flows down
    a7.scope(f"{TEAM}/a7").set("model", "large")
    raw = org.server.client()
    before = dump_all(raw)
    for attempt in (
        lambda: a7.scope(TEAM).set("model", "tiny"),
        lambda: a7.scope(f"{TEAM}/a8").set("model", "tiny"),
        lambda: ann.scope("org/acme").set("model", "tiny"),
        lambda: a7.scope(f"{TEAM}/a7").allow("agent", ["write"]),
    ):
        with pytest.raises(rxstate.PermissionDenied) as caught:
            attempt()
        assert caught.value.collection == "scopes" and caught.value.principal in ("a7", "ann")
    assert dump_all(raw) == before
    assert a7.scope(f"{TEAM}/a7").resolve() == {"model": "large", "salary_band": "B2", "budget": 10}


def test_a_contractor_is_denied_a_classified_key_inherited_from_the_org(org: Org):
    cal = org.connect("cal")
    org.admin.scope(f"{TEAM}/cal").set("task", "fix printer")
    scope = cal.scope(f"{TEAM}/cal")
    assert scope.get("model") == "small" and scope.get("task") == "fix printer"
    with pytest.raises(rxstate.PermissionDenied) as caught:
        scope.get("salary_band")
    assert caught.value.rule == "org:no-salary-for-contractors"
    assert "salary_band" not in scope.resolve()
    decision = org.admin.explain("cal", "read", "salary_band", scope=f"{TEAM}/cal")
    assert not decision.allowed and decision.decided_at == "org" and decision.path == ("org",)
    allowed = org.admin.explain("ann", "write", "model", scope=f"{TEAM}/a7")
    assert allowed.allowed and allowed.decided_at == TEAM and allowed.path == (TEAM,)


def test_a_grant_change_takes_effect_at_once_for_every_process(org: Org):
    dan = org.connect("dan")
    team = dan.scope(TEAM)
    with pytest.raises(rxstate.PermissionDenied):
        team.set("note", "x")
    org.admin.scope("org").allow("member", ["write"], ["note"], name="members-write-notes")
    assert team.set("note", "x") >= 1  # the very next call sees the new rule
    org.admin.scope("org/acme").deny("member", ["write"], ["note"], name="acme-freezes-notes")
    with pytest.raises(rxstate.PermissionDenied) as caught:
        team.set("note", "y")
    assert caught.value.rule == "org/acme:acme-freezes-notes"  # the deny wins over the allow above it
    assert org.admin.scope("org/acme").remove_rule("acme-freezes-notes") is True
    team.set("note", "z")
    assert org.admin.scope(TEAM).get("note") == "z"


def test_the_server_refuses_scopes_to_a_principal_the_namespace_policy_does_not_open(org: Org):
    raw = org.raw("oz")  # the attacker: a raw client with oz's credentials
    key = scope_tree(org.admin).records.key("org", partition="org")
    with pytest.raises(redis.exceptions.NoPermissionError):
        raw.hgetall(key)
    with pytest.raises(redis.exceptions.NoPermissionError):
        raw.hset(key, "values", "{}")
    with pytest.raises(rxstate.PermissionDenied):
        org.connect("oz").scope(TEAM).get("model")
