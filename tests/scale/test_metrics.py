"""rxstate.metrics: what an instrumented store records, what the endpoint serves, spans, and `rxstate top`."""

from __future__ import annotations

import itertools
import urllib.request
from collections.abc import Iterator

import fakeredis
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from typer.testing import CliRunner

import rxstate
import rxstate.metrics
from rxstate.cli.main import app
from rxstate.metrics.scrape import Snapshot
from rxstate.store.observe import Observers
from tests.helpers import wait_for
from tests.models import Task

EXPORTER = InMemorySpanExporter()
_NAMES = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def _tracer() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)  # once per process: the OpenTelemetry API refuses a second


@pytest.fixture
def store() -> Iterator[rxstate.Store]:
    opened = rxstate.connect(fakeredis.FakeRedis(), namespace=f"m{next(_NAMES)}")
    yield opened
    opened.close()


def _op(snap: Snapshot, namespace: str, kind: str, op: str, collection: str = "") -> float:
    found = [
        o for o in snap.operations if (o.namespace, o.kind, o.op, o.collection) == (namespace, kind, op, collection)
    ]
    return found[0].count if found else 0.0


def test_reads_and_writes_are_timed_and_refusals_counted(store: rxstate.Store) -> None:
    tasks = store.collection("tasks", Task)
    metrics = rxstate.metrics.instrument(store)
    assert rxstate.metrics.instrument(store) is metrics  # one per store
    ns = store.namespace
    for i in range(5):
        tasks.put(f"t{i}", Task(title="x"))
    for _ in range(3):
        tasks.get("t1")
    tasks.get_many(["t1", "t2"])
    with pytest.raises(rxstate.ConflictError):
        tasks.update("t1", title="y", expected_version=9)
    tasks.put_many({"a": Task(title="a"), "b": Task(title="b")})
    snap = Snapshot.parse(rxstate.metrics.text())
    assert _op(snap, ns, "write", "mutate") == 5 + 1 + 1  # the refused call is timed too, and the batch once
    assert _op(snap, ns, "read", "get", "tasks") == 3
    assert _op(snap, ns, "read", "get_many", "tasks") == 1
    assert snap.errors[(ns, "mutate", "ConflictError")] == 1
    assert snap.gauges[("rxstate_cache_hit_ratio", ns)] == pytest.approx(store.cache.stats().hit_rate)
    assert snap.gauges[("rxstate_cache_hits", ns)] == store.cache.stats().hits
    assert snap.gauges[("rxstate_pool_connections:idle", ns)] >= 1
    mean = next(o for o in snap.operations if (o.namespace, o.op) == (ns, "mutate")).mean
    assert 0 < mean < 1.0
    metrics.close()
    tasks.put("t9", Task(title="x"))
    tasks.get("t9")
    after = Snapshot.parse(rxstate.metrics.text())
    assert _op(after, ns, "write", "mutate") == 7 and _op(after, ns, "read", "get", "tasks") == 3  # not observed
    assert ("rxstate_cache_hits", ns) not in after.gauges  # no longer collected
    assert "_send" not in vars(store.writer) and not store.running(Observers).listeners


def test_each_operation_is_a_span_with_errors_marked(store: rxstate.Store) -> None:
    tasks = store.collection("tasks", Task)
    rxstate.metrics.instrument(store, spans=True)
    EXPORTER.clear()
    tasks.put("t1", Task(title="x"))
    with pytest.raises(rxstate.NotFound):
        tasks.get("nope")
    spans = EXPORTER.get_finished_spans()
    assert [s.name for s in spans] == ["rxstate.write mutate", "rxstate.read get"]
    write, read = spans
    assert write.attributes["rxstate.namespace"] == store.namespace
    assert read.attributes["rxstate.collection"] == "tasks"
    assert read.status.status_code == trace.StatusCode.ERROR and read.events[0].name == "exception"
    assert write.end_time > write.start_time and write.status.status_code == trace.StatusCode.UNSET


def test_feed_lag_is_zero_once_the_feed_caught_up(store: rxstate.Store) -> None:
    tasks = store.collection("tasks", Task)
    rxstate.metrics.instrument(store)
    seen: list[object] = []
    sub = store.changes(collection="tasks").subscribe(seen.append)
    tasks.put("t1", Task(title="x"))
    assert wait_for(lambda: len(seen) == 1)
    snap = Snapshot.parse(rxstate.metrics.text())
    assert snap.gauges[("rxstate_feed_lag_seconds", store.namespace)] == 0
    assert snap.gauges[("rxstate_feed_delivered", store.namespace)] >= 1
    sub.dispose()


def test_the_endpoint_serves_prometheus_text_and_top_shows_it(store: rxstate.Store) -> None:
    tasks = store.collection("tasks", Task)
    rxstate.metrics.instrument(store)
    tasks.put("t1", Task(title="x"))
    tasks.get("t1")
    with rxstate.metrics.serve(0) as endpoint:
        with urllib.request.urlopen(endpoint.url, timeout=5) as reply:
            body = reply.read().decode()
        assert f'rxstate_operation_seconds_count{{collection="tasks",kind="read",namespace="{store.namespace}"' in body
        result = CliRunner().invoke(app, ["top", endpoint.url, "--once"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if f" {store.namespace} " in line]
    assert any("mutate" in row for row in rows) and any("get" in row and "tasks" in row for row in rows), result.output
    assert "cache hit %" in result.output and any("100.0" in row for row in rows)
    gone = CliRunner().invoke(app, ["top", endpoint.url, "--once"])
    assert gone.exit_code == 1 and "cannot read metrics" in gone.output
    bad = CliRunner().invoke(app, ["top", endpoint.url, "--interval", "0"])
    assert bad.exit_code == 1 and "--interval must be positive" in bad.output
