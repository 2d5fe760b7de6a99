"""Scopes on every backend: inheritance, unset, final values, merge policies, typed scopes, explain."""

from __future__ import annotations

import pytest
import reactivex.operators as ops

import rxstate
from rxstate.scopes.tree import SCOPES, scope_tree
from tests.helpers import dump_all


class Settings(rxstate.Model):
    model: str = "small"
    retries: int = 1
    tags: list[str] = []
    limits: dict[str, int] = {}


def test_nearest_scope_supplies_the_value_and_unset_exposes_the_inherited_one(rx_store):
    org, team, agent = (rx_store.scope(p) for p in ("org", "org/acme/team-a", "org/acme/team-a/agent-7"))
    assert agent.get("model") is None and agent.get("model", "none") == "none"
    org.set("model", "small")
    assert agent.get("model") == "small"
    team.set("model", "medium")
    agent.set("model", "large")
    assert (org.get("model"), team.get("model"), agent.get("model")) == ("small", "medium", "large")
    why = agent.explain("model")
    assert (why.source, why.overrides, why.contributors) == (
        "org/acme/team-a/agent-7",
        ("org/acme/team-a", "org"),
        ("org/acme/team-a/agent-7",),
    )
    assert agent.unset("model") is True and agent.unset("model") is False
    assert agent.get("model") == "medium" and agent.explain("model").source == "org/acme/team-a"
    assert rx_store.scope("org/other").get("model") == "small"
    assert agent.resolve() == {"model": "medium"}


def test_final_values_refuse_overrides_and_write_nothing(rx_backend):
    store = rx_backend.store()
    org, agent = store.scope("org"), store.scope("org/acme/agent-7")
    agent.set("retries", 9)  # set before the ancestor made it final: shadowed from then on
    org.set("retries", 3, final=True)
    assert agent.get("retries") == 3 and agent.explain("retries").final_at == "org"
    before = dump_all(rx_backend.client())
    with pytest.raises(rxstate.errors.FinalValueError) as caught:
        agent.set("retries", 5)
    assert (caught.value.key, caught.value.scope, caught.value.final_at) == ("retries", "org/acme/agent-7", "org")
    with pytest.raises(rxstate.errors.FinalValueError):
        store.scope("org/acme").set_many({"fine": 1, "retries": 4})
    assert dump_all(rx_backend.client()) == before
    org.set("retries", 3)  # no longer final: the override shows again
    assert agent.get("retries") == 9


def test_merge_policies_deep_merge_dicts_and_append_lists(rx_store):
    org, team, agent = (rx_store.scope(p) for p in ("org", "org/t", "org/t/a"))
    org.set("limits", {"tokens": 100, "nested": {"x": 1, "y": 2}})
    team.set("limits", {"nested": {"y": 3}}, merge="merge")
    agent.set("limits", {"calls": 5}, merge="merge")
    assert agent.get("limits") == {"tokens": 100, "nested": {"x": 1, "y": 3}, "calls": 5}
    assert agent.explain("limits").contributors == ("org", "org/t", "org/t/a")
    org.set("tags", ["base"])
    team.set("tags", ["team"], merge="append")
    agent.set("tags", ["own"])  # replace cuts the inherited list off
    assert team.get("tags") == ["base", "team"] and agent.get("tags") == ["own"]
    assert "appended to org" in str(team.explain("tags"))


def test_bad_input_raises_typed_errors_and_writes_nothing(rx_backend):
    store = rx_backend.store()
    typed = store.scope("org/x", model=Settings)
    store.scope("org").set("seed", 1)
    before = dump_all(rx_backend.client())
    for call in (
        lambda: store.scope("org//x"),
        lambda: store.scope(""),
        lambda: store.scope("org/bad seg"),
        lambda: store.scope("org").set("", 1),
        lambda: store.scope("org").set("k", object()),
        lambda: store.scope("org").set("k", 1, merge="merge"),
        lambda: store.scope("org").set("k", {"a": 1}, merge="append"),
        lambda: store.scope("org").set("k", 1, merge="sideways"),
        lambda: store.scope("org").set_many({}),
        lambda: typed.set("unknown", 1),
        lambda: typed.set("retries", "many"),
        lambda: typed.set("tags", [1, {"x": 2}], merge="append"),
    ):
        with pytest.raises(rxstate.ValidationError):
            call()
    assert dump_all(rx_backend.client()) == before


def test_a_typed_scope_validates_and_resolves_to_its_model(rx_store):
    org = rx_store.scope("org", model=Settings)
    org.set("retries", "4")  # coerced by the field's type, stored as the JSON of the valid value
    agent = org.child("acme").child("agent-7")
    assert agent.model is Settings and agent.get("retries") == 4
    assert agent.get("model") == "small"  # the model's default
    agent.set("tags", ["x"])
    assert agent.resolve() == Settings(retries=4, tags=["x"])


def test_scope_writes_are_versioned_entity_writes_of_one_partition(rx_store):
    agent = rx_store.scope("org/acme/agent-7")
    assert agent.set("a", 1) == 1 and agent.set("b", 2) == 2
    records = scope_tree(rx_store).records
    stored = records.get_versioned("org/acme/agent-7", partition="org")
    assert stored.version == 2 and stored.value.values == {"a": {"v": 1}, "b": {"v": 2}}
    keys = {records.key(p, partition="org") for p in ("org", "org/acme", "org/acme/agent-7")}
    assert len({k.split("}")[0] for k in keys}) == 1  # one hash tag: one slot
    changes = rx_store.changes(since="0", collection=SCOPES).pipe(ops.take(2), ops.to_list()).run()
    assert [(c.id, c.version) for c in changes] == [("org/acme/agent-7", 1), ("org/acme/agent-7", 2)]
