"""Principals on a Redis Cluster: the ACL user exists on every node, and holds there too."""

from __future__ import annotations

import uuid

import pytest
import redis

import rxstate
from rxstate import Policy, Rule
from rxstate.security.acl import username
from tests.models import Agent, Task

pytestmark = pytest.mark.cluster


def test_a_principal_is_set_on_every_node_and_refused_everywhere(rx_cluster):
    namespace = f"sec-{uuid.uuid4().hex[:8]}"
    admin = rxstate.connect(client=rx_cluster.client(), namespace=namespace, cache=False)
    try:
        agents = admin.collection("agents", Agent)
        tasks = admin.collection("tasks", Task)
        for i in range(12):  # entities on every node
            agents.put(f"a{i}", Agent(name=f"n{i}"))
            tasks.put(f"t{i}", Task(title=f"t{i}"))
        admin.set_policy(Policy([Rule("viewer", "allow", ["read"], ["agents"])]))
        password = admin.principals.create("val", roles=["viewer"])
        user = username(namespace, "val")
        for node in rx_cluster.nodes:
            raw = node.client(username=user, password=password)
            assert raw.ping()
            with pytest.raises(redis.exceptions.NoPermissionError):
                raw.keys("*")
        url = "redis+cluster://" + rx_cluster.url.split("://", 1)[1]
        val = rxstate.connect(url, namespace=namespace, principal="val", password=password)
        try:
            assert val.cache is None  # no principal cache on a cluster
            mine = val.collection("agents", Agent)
            assert sorted(a.name for a in mine.all()) == sorted(f"n{i}" for i in range(12))
            with pytest.raises(rxstate.PermissionDenied):
                mine.put("a99", Agent(name="x"))
            with pytest.raises(rxstate.PermissionDenied):
                val.collection("tasks", Task).get("t1")
        finally:
            val.close()
        admin.principals.delete("val")
        for node in rx_cluster.nodes:
            with pytest.raises(redis.AuthenticationError):
                node.client(username=user, password=password).ping()
    finally:
        admin.close()
