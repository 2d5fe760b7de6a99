"""Pictures: field distributions, change rates and the dependency graph render without a display."""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest

import rxstate
import rxstate.notebook as rxnb
from rxstate.notebook._plots import graph_layout
from tests.models import Agent, Task

pytest.importorskip("matplotlib")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def render(fig: Any, fmt: str = "png") -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    return buf.getvalue()


class FakeDerived:
    def __init__(self, name: str, value: Any, sources: Any = (), parents: Any = ()) -> None:
        self.name = name
        self.value = value
        self.sources = set(sources)
        self.parents = list(parents)


@pytest.fixture
def agents(rx_fake_store: rxstate.Store) -> rxstate.Collection[Agent]:
    coll = rx_fake_store.collection("agents", Agent)
    coll.put_many(
        {
            f"a{i}": Agent(
                name=f"n{i}", status=("idle", "busy", "failed")[i % 3], load=i % 7, skills=["x", "y"][: i % 3]
            )
            for i in range(30)
        }
    )
    return coll


@pytest.mark.parametrize("field", ["status", "load", "skills", "team"])
def test_plot_field_has_the_requested_pixel_size(agents: rxstate.Collection[Agent], field: str) -> None:
    fig = agents.plot(field, figsize=(5, 3), dpi=80)
    assert png_size(render(fig)) == (400, 240)
    assert png_size(fig._repr_png_()) == (400, 240)  # what a notebook shows


def test_plot_field_counts_values(agents: rxstate.Collection[Agent]) -> None:
    ax = agents.plot("status").axes[0]
    bars = {t.get_text(): p.get_height() for t, p in zip(ax.get_xticklabels(), ax.patches, strict=True)}
    assert bars == {"idle": 10, "busy": 10, "failed": 10}
    skills = agents.plot("skills").axes[0]
    assert sorted(p.get_height() for p in skills.patches) == [10, 20]  # "x" in 20 lists, "y" in 10
    load = agents.plot("load", bins=7).axes[0]
    assert sum(p.get_height() for p in load.patches) == 30


def test_plot_field_refuses_secrets_and_unknown_fields(agents: rxstate.Collection[Agent]) -> None:
    with pytest.raises(rxstate.ValidationError, match="secret"):
        agents.plot("api_key")
    with pytest.raises(rxstate.ValidationError, match="no field"):
        agents.plot("nope")


def test_plot_field_svg(agents: rxstate.Collection[Agent]) -> None:
    assert render(agents.plot("status"), "svg").lstrip().startswith(b"<?xml")


def test_change_rate_counts_every_change(rx_fake_store: rxstate.Store, agents: rxstate.Collection[Agent]) -> None:
    tasks = rx_fake_store.collection("tasks", Task)
    for i in range(5):
        tasks.put(f"t{i}", Task(title="t"))
        agents.incr("a1", "load", 1)
    fig = rxnb.plot_change_rate(rx_fake_store, window=None, bucket=0.5, figsize=(6, 4), dpi=50)
    assert png_size(render(fig)) == (300, 200)
    ax = fig.axes[0]
    total = sum(p.get_height() * 0.5 for p in ax.patches)  # rate x bucket width = count
    assert round(total) == 30 + 5 + 5
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert labels == {"create", "incr"}
    by_collection = rxnb.plot_change_rate(rx_fake_store, by="collection", collection="tasks", bucket=1)
    assert {t.get_text() for t in by_collection.axes[0].get_legend().get_texts()} == {"tasks"}
    with pytest.raises(rxstate.ValidationError):
        rxnb.plot_change_rate(rx_fake_store, bucket=0)


def test_change_rate_of_an_empty_store(rx_fake_store: rxstate.Store) -> None:
    fig = rxnb.plot_change_rate(rx_fake_store)
    assert "no changes recorded" in [t.get_text() for t in fig.axes[0].texts]


def test_graph_layout_layers_sources_and_derived() -> None:
    busy = FakeDerived("busy", 3, [("agents", f"a{i}") for i in range(10)])
    one = FakeDerived("a1 load", 5, [("agents", "a1"), ("tasks", "t1")])
    ratio = FakeDerived("ratio", 0.6, parents=[busy, one])
    nodes, edges = graph_layout([ratio], max_ids=5)  # parents are found through .parents
    layers = {label.split("\n")[0]: layer for layer, _kind, label in nodes.values()}
    assert layers == {"agents (10 ids)": 0, "tasks/t1": 0, "busy": 1, "a1 load": 1, "ratio": 2}
    labelled = {(nodes[a][2].split("\n")[0], nodes[b][2].split("\n")[0]) for a, b in edges}
    assert labelled == {
        ("agents (10 ids)", "busy"),
        ("agents (10 ids)", "a1 load"),
        ("tasks/t1", "a1 load"),
        ("busy", "ratio"),
        ("a1 load", "ratio"),
    }


def test_graph_draws_store_and_values(rx_fake_store: rxstate.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = rx_fake_store.graph(figsize=(4, 3), dpi=100)
    assert png_size(render(empty)) == (400, 300)
    assert "no derived values yet" in [t.get_text() for t in empty.axes[0].texts]
    busy = FakeDerived("busy", 2, [("agents", "a1")])
    monkeypatch.setattr(rx_fake_store, "derived_values", lambda: [busy], raising=False)
    fig = rx_fake_store.graph()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "busy\n= 2" in texts and "agents/a1" in texts
    assert png_size(render(rxnb.graph([busy], figsize=(8, 5), dpi=100))) == (800, 500)
