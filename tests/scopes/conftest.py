"""An org chart on the session's real server: principals acting on one scope tree.

Roles: ``manager`` (ann, of team-a), ``agent`` (a7 and a8 of team-a), ``contractor`` (cal). The
namespace policy lets ``member`` s use scopes (the server ACL opens the scope collections to them);
``outsider`` (oz) is no member. The tree's rules: at ``org``, every agent may write its own scope and
every member may read, contractors may not read ``salary_band``; at ``org/acme/team-a``, managers may
write (and delegate).
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

TEAM = "org/acme/team-a"


@dataclass
class Org:
    server: Any
    namespace: str
    admin: rxstate.Store
    passwords: dict[str, str]
    opened: list[rxstate.Store]

    def connect(self, name: str) -> rxstate.Store:
        store = rxstate.connect(
            self.server.url, namespace=self.namespace, principal=name, password=self.passwords[name], cache=False
        )
        self.opened.append(store)
        return store

    def raw(self, name: str) -> redis.Redis:
        return self.server.client(username=username(self.namespace, name), password=self.passwords[name])


@pytest.fixture
def org(rx_server: Any) -> Iterator[Org]:
    namespace = f"org-{uuid.uuid4().hex[:8]}"
    admin = rxstate.connect(rx_server.url, namespace=namespace, cache=False)
    admin.set_policy(Policy([Rule("member", "allow", ["read", "write"], ["scopes", "scope_links"])]))
    people = {
        "ann": ("user", ["member", "manager"]),
        "a7": ("agent", ["member", "agent"]),
        "a8": ("agent", ["member", "agent"]),
        "cal": ("user", ["member", "contractor"]),
        "dan": ("user", ["member"]),
        "oz": ("user", ["outsider"]),
    }
    passwords = {n: admin.principals.create(n, kind=k, roles=r) for n, (k, r) in people.items()}
    root = admin.scope("org")
    root.allow("member", ["read"], name="members-read")
    root.allow("agent", ["write"], when=["entity.name == principal.name"], name="agents-write-own")
    root.deny("contractor", ["read"], ["salary_band"], name="no-salary-for-contractors")
    admin.scope(TEAM).allow("manager", ["write"], name="managers-write-team")
    root.set_many({"model": "small", "salary_band": "B2"})
    world = Org(rx_server, namespace, admin, passwords, [])
    yield world
    for store in world.opened:
        store.close()
    for name in people:
        admin.principals.delete(name)
    admin.close()
