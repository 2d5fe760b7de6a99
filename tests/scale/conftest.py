"""Replicated servers for the scale-out tests: started per module, stopped after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rxstate.testing.replicated import PrimaryReplicas, replicated_cluster
from rxstate.testing.servers import LocalCluster


@pytest.fixture(scope="module")
def primary_replicas() -> Iterator[PrimaryReplicas]:
    """A standalone primary with one replica."""
    with PrimaryReplicas(replicas=1) as servers:
        yield servers


@pytest.fixture
def replicated() -> Iterator[LocalCluster]:
    """A fresh cluster of 3 masters with one replica each (a test may kill nodes of it)."""
    with replicated_cluster() as cluster:
        yield cluster
