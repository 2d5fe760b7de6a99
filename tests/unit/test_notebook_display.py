"""Notebook displays: short reprs, HTML of models, versioned values, tables, changes and timelines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

import rxstate
import rxstate.notebook as rxnb
from rxstate.core.redaction import REDACTED
from tests.models import Agent

SCRIPT = "<script>alert('x')</script>"
KEY = "sk-very-secret-123"


class Vault(rxstate.Model):
    """A model whose secret field has a name no other test model uses."""

    owner: str
    passphrase: rxstate.Secret[str]


@dataclass
class FakeChange:
    collection: str
    id: str
    op: str
    version: int
    fields: dict[str, Any]
    actor: str = "tester"
    timestamp_ms: int = 1_700_000_000_000
    offset: str = "1700000000000-0"


@dataclass
class FakeEvent:
    type: str
    version: int
    data: dict[str, Any] = field(default_factory=dict)
    actor: str = "tester"
    timestamp_ms: int = 1_700_000_000_000
    causation_id: str | None = None


@pytest.fixture
def agents(rx_fake_store: rxstate.Store) -> rxstate.Collection[Agent]:
    coll = rx_fake_store.collection("agents", Agent, indexes=["status"])
    coll.put("a1", Agent(name=SCRIPT, api_key=KEY, notes="<b>bold</b> & more", skills=["<i>x</i>"]))
    coll.put("a2", Agent(name="coder", api_key=KEY, status="busy"))
    return coll


def test_model_html_escapes_user_data_and_redacts_secrets() -> None:
    out = Agent(name=SCRIPT, api_key=KEY, skills=["<img src=x onerror=alert(1)>"])._repr_html_()
    assert SCRIPT not in out and "<img" not in out
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in out
    assert KEY not in out and REDACTED in out
    assert "Agent (schema v2)" in out


def test_model_repr_is_short_and_redacted() -> None:
    text = repr(Agent(name="x", skills=[f"skill-{i}" for i in range(1000)], notes="n" * 10_000, api_key=KEY))
    assert len(text) < 400
    assert "(1000 items)" in text and "(10000 chars)" in text
    assert KEY not in text and KEY not in str(Agent(name="x", api_key=KEY))
    # short values keep pydantic's usual form
    assert repr(Agent(name="p")) == (
        "Agent(name='p', status='idle', load=0, skills=[], team='core', notes='', api_key=None)"
    )


def test_versioned_repr_is_short(agents: rxstate.Collection[Agent]) -> None:
    v = agents.put("big", Agent(name="b", skills=["s"] * 5000, api_key=KEY))
    text = repr(v)
    assert text.startswith("Versioned(id='big', value=Agent(") and "version=1" in text
    assert len(text) < 500 and KEY not in text


def test_versioned_html_has_metadata(agents: rxstate.Collection[Agent]) -> None:
    v = agents.get_versioned("a1")
    out = v._repr_html_()
    assert f"version {v.version}" in out and v.actor in out and v.offset in out
    assert KEY not in out and SCRIPT not in out and "&lt;b&gt;bold&lt;/b&gt; &amp; more" in out


def test_collection_html_is_a_table_with_metadata(agents: rxstate.Collection[Agent]) -> None:
    out = agents._repr_html_()
    for column in ("<th>id</th>", "<th>version</th>", "<th>actor</th>", "<th>updated (UTC)</th>", "<th>api_key</th>"):
        assert column in out
    assert "<td>a1</td>" in out and "<td>a2</td>" in out
    assert KEY not in out and out.count(REDACTED) == 2
    assert SCRIPT not in out and "&lt;i&gt;x&lt;/i&gt;" in out


def test_table_pages(rx_fake_store: rxstate.Store) -> None:
    coll = rx_fake_store.collection("agents", Agent)
    coll.put_many({f"a{i:02d}": Agent(name=f"n{i}") for i in range(25)})
    page = rxnb.table(coll, page=2, page_size=10)
    assert [v.id for v in page.rows] == [f"a{i:02d}" for i in range(10, 20)]
    assert "rows 11-20 of 25, page 2/3" in repr(page)
    assert "page=3" in page._repr_html_()
    last = rxnb.table(coll, page=9, page_size=10)  # past the end: the last page
    assert last.page == 3 and [v.id for v in last.rows] == ["a20", "a21", "a22", "a23", "a24"]
    only = rxnb.table(coll, fields=["name"])._repr_html_()
    assert "<th>name</th>" in only and "<th>status</th>" not in only


@pytest.mark.parametrize("kwargs", [{"page": 0}, {"page_size": 0}, {"fields": ["nope"]}])
def test_table_rejects_bad_options(agents: rxstate.Collection[Agent], kwargs: dict[str, Any]) -> None:
    with pytest.raises(rxstate.ValidationError):
        rxnb.table(agents, **kwargs)


def test_recent_changes_redact_secrets_and_escape(agents: rxstate.Collection[Agent]) -> None:
    agents.update("a1", status="busy", api_key="sk-rotated")
    changes = rxnb.recent_changes(agents._store)
    assert [(c.id, c.op) for c in changes] == [("a1", "create"), ("a2", "create"), ("a1", "update")]
    assert changes[-1].fields["status"] == "busy"
    assert changes[-1].fields["api_key"].get_secret_value() == "sk-rotated"  # kept, but wrapped
    for text in (repr(changes), changes._repr_html_(), repr(changes[-1]), changes[-1]._repr_html_()):
        assert KEY not in text and "sk-rotated" not in text
    html = changes._repr_html_()
    assert SCRIPT not in html and "&lt;script&gt;" in html
    only = rxnb.recent_changes(agents._store, count=1, collection="agents")
    assert len(only) == 1 and only[0].op == "update"


def test_change_list_of_foreign_change_objects_redacts_by_classification(rx_fake_store: rxstate.Store) -> None:
    rx_fake_store.collection("vaults", Vault)
    change = FakeChange("vaults", "v1", "create", 1, {"owner": SCRIPT, "passphrase": "open-sesame"})
    for text in (rxnb.ChangeList([change], store=rx_fake_store)._repr_html_(), rxnb.html([change])):
        assert "open-sesame" not in text and REDACTED in text and SCRIPT not in text
    assert "open-sesame" not in repr(rxnb.ChangeList([change]))


def test_timeline_shows_events_in_order_redacted_and_escaped() -> None:
    history = [
        FakeEvent("TaskOpened", 1, {"title": SCRIPT}),
        FakeEvent("KeyIssued", 2, {"api_key": KEY, "passphrase": "open-sesame"}, causation_id="cmd-7"),
        FakeEvent("TaskClosed", 3, {"by": "a1"}, timestamp_ms=1_700_000_001_500),
    ]
    view = rxnb.timeline(history)
    html = view._repr_html_()
    assert html.index("TaskOpened") < html.index("KeyIssued") < html.index("TaskClosed")
    assert "caused by cmd-7" in html and "2023-11-14 22:13:21.500" in html
    assert KEY not in html and "open-sesame" not in html and SCRIPT not in html
    text = repr(view)
    assert "KeyIssued" in text and KEY not in text and "open-sesame" not in text
    explicit = rxnb.timeline([FakeEvent("Note", 1, {"title": "plain", "memo": "hush"})], secrets={"memo"})
    assert "hush" not in explicit._repr_html_() and "plain" in explicit._repr_html_()


def test_html_of_plain_values_and_lists() -> None:
    assert "&lt;script&gt;" in rxnb.html(SCRIPT) and SCRIPT not in rxnb.html(SCRIPT)
    table = rxnb.html([Agent(name="a", api_key=KEY), Agent(name="b")])
    assert "2 entities" in table and KEY not in table
    assert "<pre>" in rxnb.html(list(range(10_000))) and "(10000 items)" in rxnb.html(list(range(10_000)))


def test_html_of_a_mapping_redacts_classified_keys() -> None:
    out = rxnb.html({"api_key": KEY, "title": SCRIPT, "n": 3})
    assert KEY not in out and REDACTED in out and SCRIPT not in out and "<th>n</th><td>3</td>" in out
