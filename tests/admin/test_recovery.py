"""Backup, restore, change archive and point-in-time recovery; the disaster-recovery drill on real servers."""

from __future__ import annotations

import random
import threading
import zipfile
from pathlib import Path
from typing import Any

import fakeredis
import pytest

import rxstate
from rxstate.admin.archive import ChangeArchive, read_archive
from rxstate.admin.backup import backup, read_manifest, server_ms
from rxstate.admin.replay import recover
from rxstate.admin.restore import restore, verify
from rxstate.core.keys import is_cache_probe
from rxstate.server import EmbeddedServer
from tests.admin.helpers import logical_state
from tests.event_models import ORDER_EVENTS, Order, Paid, Placed, apply_order
from tests.helpers import dump_all, wait_for
from tests.models import Agent


def _fill(store: rxstate.Store) -> rxstate.Collection[Agent]:
    agents = store.collection("agents", Agent, indexes=["status"])
    for i in range(30):
        agents.put(f"a{i}", Agent(name=f"agent {i}", api_key="k" if i % 3 == 0 else None))
    agents.put("brief", Agent(name="short-lived"), ttl=3_600)
    agents.incr("a1", "load", 5)
    agents.delete("a2")
    return agents


def test_a_backup_restores_into_another_namespace_and_server_identically(tmp_path: Path):
    source = fakeredis.FakeRedis()
    store = rxstate.connect(source, namespace="crew", partitions=4)
    original = _fill(store)
    manifest = backup(source, tmp_path / "crew.rxb", namespace="crew")
    assert manifest.partitions == 4 and len(manifest.groups) == 5
    kept = [k for k in source.scan_iter(match="rx:{crew*") if not is_cache_probe(k)]
    assert manifest.total_keys == len(kept)  # every key but the cache's probes, which hold no state
    assert not [k for k in source.keys("*") if k.startswith(b"rxb:")]  # the frozen copies are gone
    target = fakeredis.FakeRedis()
    report = restore(target, tmp_path / "crew.rxb", namespace="copy")
    assert report.keys == manifest.total_keys and report.expired == 0
    assert logical_state(target, "copy") == logical_state(source, "crew")
    copy = rxstate.connect(target, namespace="copy").collection("agents", Agent, indexes=["status"])
    assert copy.get("a1").load == 5 and copy.get_versioned("a1").version == 2
    assert {a.name for a in copy.where(status="idle")} == {a.name for a in original.all()}


def test_restore_checks_every_checksum_before_writing(tmp_path: Path):
    source = fakeredis.FakeRedis()
    _fill(rxstate.connect(source, namespace="crew", partitions=2))
    good = tmp_path / "crew.rxb"
    backup(source, good, namespace="crew")
    bad = tmp_path / "bad.rxb"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "p00001.jsonl":
                data = data.replace(b"agent", b"AGENT", 1)  # one byte of one member tampered with
            dst.writestr(item, data)
    target = fakeredis.FakeRedis()
    rxstate.connect(target, namespace="other").collection("agents", Agent).put("x", Agent(name="x"))
    before = dump_all(target)
    with pytest.raises(rxstate.BackupError) as caught:
        restore(target, bad, namespace="fresh")
    assert caught.value.reason == "checksum" and caught.value.member == "p00001.jsonl"
    assert dump_all(target) == before
    with pytest.raises(rxstate.BackupError) as occupied:
        restore(target, good, namespace="other")
    assert occupied.value.reason == "not-empty" and "other" in str(occupied.value)
    assert dump_all(target) == before
    (tmp_path / "junk.rxb").write_bytes(b"not a zip")
    with pytest.raises(rxstate.BackupError) as junk:
        verify(tmp_path / "junk.rxb")
    assert junk.value.reason == "manifest"


def test_backing_up_a_missing_namespace_is_not_found(tmp_path: Path):
    with pytest.raises(rxstate.NotFound):
        backup(fakeredis.FakeRedis(), tmp_path / "x.rxb", namespace="nope")
    assert not (tmp_path / "x.rxb").exists()


def test_the_archive_refuses_a_gap_and_resumes_where_it_ends(tmp_path: Path):
    client = fakeredis.FakeRedis()
    store = rxstate.connect(client, namespace="crew", partitions=1, change_retention=5)
    agents = store.collection("agents", Agent)
    path = tmp_path / "changes.log"
    archive = ChangeArchive(client, "crew", path)
    agents.put("a", Agent(name="a"))
    assert archive.poll() == 1
    with open(path, "a") as out:
        out.write('{"g": 0, "s": "chan')  # a line cut short by a crash
    resumed = ChangeArchive(client, "crew", path)
    assert resumed.last == archive.last and resumed.poll() == 0
    for i in range(300):  # the stream is capped at ~5: the archived entry is trimmed
        agents.update("a", load=i % 100)
    client.xtrim(store.keyspace.changes(0), maxlen=5)
    with pytest.raises(rxstate.BackupError) as caught:
        resumed.poll()
    assert caught.value.reason == "gap" and caught.value.member == store.keyspace.changes(0)
    assert [e.id for e in read_archive(path)] == [archive.last[(0, "changes")]]


def test_recover_rejects_a_malformed_offset(tmp_path: Path):
    with pytest.raises(rxstate.ValidationError) as caught:
        recover(fakeredis.FakeRedis(), tmp_path / "b", tmp_path / "a", until_offset="yesterday")
    assert caught.value.field == "until_offset"


class _Load:
    """Writers doing every kind of write, which the test can pause between two writes."""

    def __init__(self, store: rxstate.Store, writers: int = 2) -> None:
        self.agents = store.collection("agents", Agent, indexes=["status", "team"])
        self.orders = store.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order, snapshot_every=None)
        self.locks = [threading.Lock() for _ in range(writers)]
        self.stop = threading.Event()
        self.done = 0
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(writers)]

    def _one(self, rng: random.Random, w: int) -> None:
        entity = f"w{w}-{rng.randrange(40)}"
        kind = rng.randrange(8)
        try:
            if kind == 0:
                self.agents.put(entity, Agent(name=entity, team=rng.choice(["a", "b"]), api_key="secret"))
            elif kind == 1:
                self.agents.put(entity, Agent(name=entity), ttl=3_600)
            elif kind == 2:
                self.agents.delete(entity)
            elif kind == 3:
                self.agents.incr(entity, "load", 1)
            elif kind == 4:
                self.orders.append(entity, [Placed(sku="x", qty=1)])
            elif kind == 5:
                self.orders.append(entity, [Paid(amount_cents=rng.randrange(1000))])
            else:
                self.agents.update(entity, status=rng.choice(["idle", "busy", "failed"]), notes=str(rng.random()))
        except (rxstate.NotFound, rxstate.IntegrityError, rxstate.ValidationError):
            pass  # a write to an entity that does not exist (or is full): refused, nothing written

    def _run(self, w: int) -> None:
        rng = random.Random(w)
        try:
            while not self.stop.is_set():
                with self.locks[w]:
                    self._one(rng, w)
                    self.done += 1
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self) -> _Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()
        assert not self.errors, self.errors

    def paused(self) -> Any:
        load = self

        class _Paused:
            def __enter__(self) -> None:
                for lock in load.locks:
                    lock.acquire()

            def __exit__(self, *exc: object) -> None:
                for lock in load.locks:
                    lock.release()

        return _Paused()


@pytest.mark.slow
def test_disaster_recovery_drill_restores_the_state_at_a_chosen_time(tmp_path: Path):
    """Write under load, back up, keep writing, destroy the server, restore + replay to a chosen time:
    the state is the one recorded at that time, key for key (versions, indexes, streams, audit chain)."""
    with EmbeddedServer() as server:
        client = server.client()
        store = rxstate.connect(client, namespace="drill", partitions=4, change_retention=1_000_000, audit=True)
        archive = ChangeArchive(client, "drill", tmp_path / "drill.changes")
        with archive.running(interval=0.05), _Load(store) as load:
            assert wait_for(lambda: load.done >= 300, timeout=30)
            manifest = backup(client, tmp_path / "drill.rxb", namespace="drill")
            at_backup = load.done
            assert wait_for(lambda: load.done >= at_backup + 400, timeout=30)
            with load.paused():
                chosen = server_ms(client)
                recorded = logical_state(client, "drill")
                assert wait_for(lambda: server_ms(client) > chosen)
            after = load.done
            assert wait_for(lambda: load.done >= after + 300, timeout=30)
        store.close()
        assert archive.archived > 1000
        assert read_manifest(tmp_path / "drill.rxb").offsets() == manifest.offsets()
        server.kill()  # the server and its data are gone
    with EmbeddedServer() as fresh:
        client = fresh.client()
        report = recover(client, tmp_path / "drill.rxb", tmp_path / "drill.changes", until_ms=chosen)
        assert report.replayed["changes"] > 300 and report.replayed["events"] > 0 and report.replayed["audit"] > 0
        assert logical_state(client, "drill") == recorded
        restored = rxstate.connect(client, namespace="drill")
        assert restored.audit.verify().ok
        agents = restored.collection("agents", Agent, indexes=["status", "team"])
        busy = {a.name for a in agents.where(status="busy")}
        assert busy == {a.name for a in agents.all() if a.status == "busy"}
        restored.close()
