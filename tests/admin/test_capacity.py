"""Capacity on a real server: sampled memory per collection and partition, growth, hot keys, the plot."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import rxstate
from rxstate.admin.capacity import CapacitySample, forecast, history, hot_keys, measure, record
from rxstate.cli.main import app
from tests.models import Agent, Task

runner = CliRunner()


def test_sampled_memory_tracks_the_real_sizes(rx_redis_backend):
    store = rx_redis_backend.store()
    agents = store.collection("agents", Agent)
    tasks = store.collection("tasks", Task)
    for i in range(300):
        agents.put(f"a{i}", Agent(name=f"agent {i}", notes="x" * 200))
    for i in range(30):
        tasks.put(f"t{i}", Task(title="t"))
    client = rx_redis_backend.client()
    exact = measure(client, store.namespace, fraction=1.0)
    sampled = measure(client, store.namespace, fraction=0.3, seed=1)
    assert exact.keys == sampled.keys and exact.sampled == exact.keys and sampled.sampled < exact.keys
    assert exact.collections["agents"] > 5 * exact.collections["tasks"]  # 10x the entities, larger ones
    assert 0.6 < sampled.collections["agents"] / exact.collections["agents"] < 1.4
    assert sum(exact.partitions.values()) == exact.namespace_bytes and set(exact.partitions) <= set(range(-1, 16))
    assert exact.used_memory and exact.used_memory > exact.namespace_bytes


def test_growth_projection_and_hot_keys(rx_redis_backend, tmp_path: Path):
    store = rx_redis_backend.store()
    agents = store.collection("agents", Agent)
    client = rx_redis_backend.client()
    ns = store.namespace
    record(client, measure(client, ns, fraction=1.0), ns)
    for i in range(200):
        agents.put(f"a{i}", Agent(name="x", notes="y" * 500))
    for _ in range(50):
        agents.incr("a7", "load", 1)
    record(client, measure(client, ns, fraction=1.0), ns)
    kept = history(client, ns)
    assert len(kept) == 2 and kept[1].keys > kept[0].keys
    keys, partitions = hot_keys(client, ns, top=3)
    assert keys[0] == ("agents:a7", 51) and partitions[0][0] == store.keyspace.partition_of("a7")
    made = runner.invoke(
        app, ["capacity", "--url", rx_redis_backend.server.url, "-n", ns, "--plot", str(tmp_path / "c.png")]
    )
    assert made.exit_code == 0, made.output
    assert "hot keys: agents:a7 (51)" in made.output
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_a_forecast_projects_when_memory_runs_out():
    hour = 3_600_000
    samples = [CapacitySample(i * hour, 1_000 + 500 * i, 11_000, 0, 0) for i in range(5)]
    projected = forecast(samples)
    assert projected.bytes_per_hour == pytest.approx(500)
    assert projected.hours_left == pytest.approx(16.0) and projected.full_at_ms == 20 * hour  # 8,000 B left at 500 B/h
    shrinking = forecast([CapacitySample(0, 5_000, 10_000, 0, 0), CapacitySample(hour, 4_000, 10_000, 0, 0)])
    assert shrinking.full_at_ms is None and shrinking.bytes_per_hour < 0
    with pytest.raises(rxstate.ValidationError):
        forecast(samples[:1])
    with pytest.raises(rxstate.ValidationError):
        measure(None, "x", fraction=0)
