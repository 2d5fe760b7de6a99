"""Tenancy fixtures: an administrator's store on the session's real server, a fresh namespace each test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import rxstate
from rxstate.server.embedded import EmbeddedServer
from rxstate.tenancy import Tenants


@pytest.fixture
def admin(rx_server: EmbeddedServer) -> Iterator[rxstate.Store]:
    store = rxstate.connect(rx_server.url, namespace=f"ten-{uuid.uuid4().hex[:8]}", reap_interval=None)
    yield store
    tenants = Tenants(store)
    for config in tenants.list():
        tenants.delete(config.name)
    store.close()


@pytest.fixture
def tenants(admin: rxstate.Store) -> Tenants:
    return rxstate.admin.tenants(admin)
