"""Backup, restore and replay on a Redis Cluster: every group is frozen on the node that holds its slot."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import rxstate
from rxstate.admin.archive import ChangeArchive
from rxstate.admin.backup import backup
from rxstate.admin.replay import recover
from tests.admin.helpers import logical_state
from tests.models import Agent


@pytest.mark.cluster
def test_a_cluster_namespace_backs_up_and_recovers_into_another_namespace(rx_cluster, tmp_path: Path):
    client = rx_cluster.client()
    ns = f"c{uuid.uuid4().hex[:8]}"
    store = rxstate.connect(client, namespace=ns, partitions=6, change_retention=100_000)
    agents = store.collection("agents", Agent, indexes=["status"])
    for i in range(40):
        agents.put(f"a{i}", Agent(name=f"n{i}"), ttl=3_600 if i % 4 == 0 else None)
    archive = ChangeArchive(client, ns, tmp_path / "log")
    archive.poll()
    backup(client, tmp_path / "b.rxb", namespace=ns)
    for i in range(0, 40, 3):
        agents.update(f"a{i}", status="busy")
    agents.delete("a1")
    archive.poll()
    into = f"{ns}-copy"
    report = recover(client, tmp_path / "b.rxb", tmp_path / "log", namespace=into)
    assert report.replayed["changes"] == 15
    assert logical_state(client, into) == logical_state(client, ns)
    store.close()
