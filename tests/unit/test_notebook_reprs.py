"""Displays of the reactive and event-sourcing objects: changes, batches, event histories, timelines, derived values.

Every display must escape user data (a ``<script>`` value shows as text) and never show a classified
value in clear, whether it comes from a model's ``Secret`` field or from a change record's raw fields.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType, SimpleNamespace
from typing import Any

import fakeredis
import pytest

import rxstate
from rxstate.core.redaction import REDACTED
from rxstate.notebook._ipython import register_formatters, sequence_html
from tests.helpers import wait_for

SCRIPT = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
KEY = "sk-never-shown-42"


class Keyholder(rxstate.Model):
    """An entity with a secret field whose name no other test model uses."""

    label: str
    vault_code: rxstate.Secret[str] | None = None


class Issued(rxstate.Model):
    """An event carrying a secret."""

    holder: str
    credential: rxstate.Secret[str]


class Revoked(rxstate.Model):
    reason: str


class Badge(rxstate.Model):
    holder: str = ""
    credential: rxstate.Secret[str] | None = None
    revoked: bool = False


def apply(badge: Badge, event: Any) -> Badge:
    match event:
        case Issued(holder=holder, credential=credential):
            return badge.model_copy(update={"holder": holder, "credential": credential})
        case Revoked():
            return badge.model_copy(update={"revoked": True})
    return badge


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def store(server: fakeredis.FakeServer) -> rxstate.Store:
    s = rxstate.connect(fakeredis.FakeRedis(server=server), namespace="nbr")
    yield s
    s.close()


def _changes(store: rxstate.Store, write: Callable[[], None], count: int, **filters: Any) -> list[Any]:
    seen: list[Any] = []
    sub = store.changes(**filters).subscribe(seen.append)
    try:
        write()
        assert wait_for(lambda: len(seen) >= count)
    finally:
        sub.dispose()
    return seen


def test_change_repr_is_short_and_html_is_a_redacted_escaped_table(store: rxstate.Store) -> None:
    keys = store.collection("keys", Keyholder)
    [change] = _changes(store, lambda: keys.put("k1", Keyholder(label=SCRIPT, vault_code=KEY)), 1)
    text = repr(change)
    assert text.startswith("<Change ") and "keys/k1 create v1" in text
    assert KEY not in text and len(text) < 200
    out = change._repr_html_()
    assert ESCAPED in out and SCRIPT not in out
    assert KEY not in out and REDACTED in out
    assert "<th>collection</th>" in out and "transaction" not in out  # no tx column outside transactions


def test_change_of_a_collection_not_open_here_is_redacted_by_classification(
    server: fakeredis.FakeServer, store: rxstate.Store
) -> None:
    reader = rxstate.connect(fakeredis.FakeRedis(server=server), namespace="nbr")  # never opens "keys"
    try:
        keys = store.collection("keys", Keyholder)
        [change] = _changes(reader, lambda: keys.put("k1", Keyholder(label="x", vault_code=KEY)), 1)
        # Classified by the schema the writer stored: wrapped, though the reader has no model for it.
        assert change.fields["vault_code"].get_secret_value() == KEY
        assert KEY not in repr(change) and KEY not in change._repr_html_()
    finally:
        reader.close()


def test_a_batch_of_changes_renders_as_one_table_with_its_transaction(store: rxstate.Store) -> None:
    keys = store.collection("keys", Keyholder)

    def write() -> None:
        with store.transaction() as tx:
            tx.put(keys, "k1", Keyholder(label=SCRIPT, vault_code=KEY))
            tx.put(keys, "k2", Keyholder(label="two"))

    [batch] = _changes(store, write, 1, batched=True)
    assert isinstance(batch, tuple) and len(batch) == 2
    out = sequence_html(batch)
    assert out is not None and "batch of 2 changes" in out
    assert out.count("<tr>") == 3 and "<th>transaction</th>" in out and batch[0].txid in out
    assert ESCAPED in out and SCRIPT not in out and KEY not in out
    assert sequence_html(list(batch)) is not None
    assert sequence_html([1, 2]) is None and sequence_html([]) is None and sequence_html((batch[0], 3)) is None


def test_ipython_formatter_shows_change_and_event_lists_and_leaves_other_lists_alone() -> None:
    formatters = pytest.importorskip("IPython.core.formatters")
    display = formatters.DisplayFormatter()
    assert register_formatters(SimpleNamespace(display_formatter=display))
    change = rxstate.Change("keys", "k1", "update", 2, MappingProxyType({"vault_code": KEY, "label": SCRIPT}))
    data, _ = display.format([change])
    assert ESCAPED in data["text/html"] and KEY not in data["text/html"] and KEY not in data["text/plain"]
    plain, _ = display.format([1, 2, 3])
    assert "text/html" not in plain and plain["text/plain"] == "[1, 2, 3]"
    assert register_formatters() is False  # no running shell: nothing to register


def open_badges(store: rxstate.Store) -> Any:
    return store.events("badges", state=Badge, events=[Issued, Revoked], reducer=apply)


def test_event_history_and_timeline_redact_payload_secrets_and_escape(store: rxstate.Store) -> None:
    badges = open_badges(store)
    badges.append("b1", [Issued(holder=SCRIPT, credential=KEY)], expected_version=0)
    badges.append("b1", [Revoked(reason="<b>lost</b>")], causation_id="cmd-<1>")
    history = badges.history("b1")
    assert all(KEY not in repr(e) and len(repr(e)) < 200 for e in history)
    assert repr(history[0]).startswith("<RecordedEvent badges/b1#1 Issued")
    for out in (sequence_html(history), history[0]._repr_html_(), badges.timeline("b1")._repr_html_()):
        assert out is not None and KEY not in out
        assert ESCAPED in out and SCRIPT not in out
    whole = badges.timeline("b1")._repr_html_()
    assert REDACTED in whole and "&lt;b&gt;lost&lt;/b&gt;" in whole and "caused by cmd-&lt;1&gt;" in whole
    assert whole.index("Issued") < whole.index("Revoked") and "badges/b1 v2" in whole
    assert "2 events" in whole


def test_event_payload_of_a_collection_not_open_here_is_redacted_by_classification(
    server: fakeredis.FakeServer, store: rxstate.Store
) -> None:
    open_badges(store).append("b1", [Issued(holder="ann", credential=KEY)])
    reader = rxstate.connect(fakeredis.FakeRedis(server=server), namespace="nbr")
    try:
        [event] = reader.event_log().query()
        assert isinstance(event.event, dict) and event.event["credential"] == KEY  # undecoded here
        assert KEY not in repr(event) and KEY not in event._repr_html_()
        assert KEY not in reader.event_log().timeline()._repr_html_()
    finally:
        reader.close()


def test_notebook_timeline_of_recorded_events(store: rxstate.Store) -> None:
    import rxstate.notebook as rxnb

    badges = open_badges(store)
    badges.append("b1", [Issued(holder=SCRIPT, credential=KEY)])
    view = rxnb.timeline(badges.history("b1"))
    assert "Issued" in repr(view) and "'holder'" in repr(view) and KEY not in repr(view)
    assert KEY not in view._repr_html_() and ESCAPED in view._repr_html_()


def test_derived_html_shows_name_value_sources_and_parents(store: rxstate.Store) -> None:
    keys = store.collection("keys", Keyholder)
    keys.put("k1", Keyholder(label=SCRIPT, vault_code=KEY))
    first = store.derived(lambda: keys.get("k1"), name="first <key>")
    count = store.derived(lambda: keys.count(), name="count")
    both = store.derived(lambda: (count.value, first.value.label), name="both")
    assert both.value == (1, SCRIPT)
    out = first._repr_html_()
    assert "first &lt;key&gt;" in out and ESCAPED in out and KEY not in out and REDACTED in out
    assert "keys/k1" in out
    out = both._repr_html_()
    assert "count, first &lt;key&gt;" in out and "keys/k1" not in out
    assert "keys (ids)" in count._repr_html_()
    text = repr(first)
    assert KEY not in text and text.startswith("<Derived 'first <key>' = Keyholder(")


def test_derived_repr_is_short_and_html_shows_an_error(store: rxstate.Store) -> None:
    keys = store.collection("keys", Keyholder)
    keys.put("k1", Keyholder(label="x" * 500))
    long = store.derived(lambda: keys.get("k1").label, name="long")
    assert long.value == "x" * 500 and len(repr(long)) < 120
    broken = store.derived(lambda: keys.get("missing").label, name="broken")
    out = broken._repr_html_()
    assert "NotFound" in out and "broken" in out


def test_derived_html_lists_at_most_a_dozen_sources(store: rxstate.Store) -> None:
    keys = store.collection("keys", Keyholder)
    keys.put_many({f"k{i:02d}": Keyholder(label=f"key {i}") for i in range(30)})
    labels = store.derived(lambda: [keys.get(f"k{i:02d}").label for i in range(30)], name="labels")
    assert len(labels.value) == 30 and len(labels.sources) == 30
    out = labels._repr_html_()
    assert "keys/k00" in out and "keys/k11" in out and "keys/k12" not in out and "(30 in all)" in out


def test_why_html_lists_the_changes_with_causes_redacted_and_escaped(store: rxstate.Store) -> None:
    badges = open_badges(store)
    first = badges.append("b1", [Issued(holder=SCRIPT, credential=KEY)], causation_id="cmd-<9>")
    badges.append("b1", [Issued(holder="bob", credential="sk-other-7")], causation_id=first.event_ids[0])
    out = badges.why("b1", "credential")._repr_html_()
    assert KEY not in out and "sk-other-7" not in out and out.count(REDACTED) >= 3
    assert "cmd-&lt;9&gt;" in out and "badges/b1 v1 Issued" in out and "2 change(s)" in out
    out = badges.why("b1", "holder")._repr_html_()
    assert ESCAPED in out and SCRIPT not in out and "→ bob" in out
