"""Erasure of a data subject: entities, change records, events and snapshots go; the subject's key is
destroyed, so copies that stay (a backup taken before) cannot be read; audit entries are kept intact."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import rxstate
from rxstate.admin import backup, erase, restore
from rxstate.cli.main import app
from rxstate.core.errors import DecryptionError, NotFound, SchemaError, ValidationError
from rxstate.security import StaticKeyProvider, generate_key
from rxstate.security.subjects import SUBJECT_KEY_BASE
from tests.helpers import dump_all

runner = CliRunner()


class Patient(rxstate.Model):
    __subject__ = "id"
    name: str
    diagnosis: str = rxstate.classified("secret", default="")


class Visit(rxstate.Model):
    __subject__ = "patient"
    patient: str
    note: str = rxstate.classified("confidential", default="")
    room: int = 0


class Chart(rxstate.Model):
    __subject__ = "id"
    entries: int = 0
    last: str = ""


class Noted(rxstate.Model):
    text: str


def apply_note(state: Chart | None, event: Noted) -> Chart:
    """Count the notes and keep the last one."""
    count = state.entries if state is not None else 0
    return Chart(entries=count + 1, last=event.text)


class Plain(rxstate.Model):
    name: str


@pytest.fixture
def kek() -> StaticKeyProvider:
    return StaticKeyProvider(generate_key())


def _open(backend, kek, **kw):
    store = backend.store(partitions=4, keys=kek, audit=True, **kw)
    patients = store.collection("patients", Patient)
    visits = store.collection("visits", Visit, indexes=["room"])
    charts = store.events("charts", state=Chart, events=[Noted], reducer=apply_note, snapshot_every=2)
    return store, patients, visits, charts


def _fill(patients, visits, charts) -> None:
    for who in ("ada", "bob"):
        patients.put(who, Patient(name=who.title(), diagnosis=f"{who}-flu"))
        patients.update(who, name=who.upper())
        for n in range(3):
            visits.put(f"{who}-v{n}", Visit(patient=who, note=f"{who} note {n}", room=n))
        charts.append(who, [Noted(text=f"{who} 1"), Noted(text=f"{who} 2"), Noted(text=f"{who} 3")])


def _records_naming(client, store, pairs) -> list[tuple[bytes, bytes, bytes]]:
    ks = store.keyspace
    found = []
    for p in range(ks.partitions):
        for _sid, f in client.xrange(ks.changes(p)):
            if (f[b"c"].decode(), f[b"i"].decode()) in pairs:
                found.append((f[b"c"], f[b"i"], f[b"o"]))
    return found


def test_erasure_removes_the_subject_everywhere_and_leaves_others_intact(rx_redis_backend, kek, tmp_path):
    store, patients, visits, charts = _open(rx_redis_backend, kek)
    _fill(patients, visits, charts)
    client = rx_redis_backend.client()
    ks = store.keyspace
    ada_key = store.keys.subjects.key_of("ada")
    assert ada_key is not None and ada_key > SUBJECT_KEY_BASE
    assert store.keys.subjects.key_of("bob") not in (None, ada_key)
    raw = client.hget(ks.entity("patients", "ada", ks.partition_of("ada")), "diagnosis")
    assert int.from_bytes(raw[3:7], "big") == ada_key  # sealed under the subject's own key
    manifest = backup(client, tmp_path / "before.rxb", namespace=store.namespace)

    dry = erase(store, "ada", [patients, visits, charts], dry_run=True)
    assert dry.entities == {"patients": ["ada"], "visits": ["ada-v0", "ada-v1", "ada-v2"]}
    assert "ada" in patients and store.keys.subjects.key_of("ada") == ada_key  # a dry run changes nothing

    report = erase(store, "ada", [patients, visits, charts])
    assert report.entities == dry.entities and report.key == ada_key
    assert report.change_records == dry.change_records == 2 + 3  # put + update, three visit puts
    assert report.event_streams == {"charts": ["ada"]} and report.events == 3 and report.event_log_copies == 3
    assert report.snapshots == 1 and report.audit_entries > 0 and report.retained

    assert "ada" not in patients and visits.where(room=1).ids() == ["bob-v1"]
    assert sorted(visits.ids()) == ["bob-v0", "bob-v1", "bob-v2"]
    assert charts.version("ada") == 0
    with pytest.raises(NotFound):
        charts.load("ada")
    assert not client.exists(ks.event_stream("charts", "ada", ks.partition_of("ada")))
    assert not client.exists(ks.snapshot("charts", "ada", ks.partition_of("ada")))
    log = [f for p in range(4) for _sid, f in client.xrange(ks.event_log(p))]
    assert all(b"ada" not in f[b"i"] for f in log) and len(log) == 3  # bob's copies stay
    ada_pairs = {("patients", "ada"), *(("visits", f"ada-v{n}") for n in range(3))}
    assert {o for _c, _i, o in _records_naming(client, store, ada_pairs)} == {b"delete"}  # values gone
    assert patients.get("bob").diagnosis == "bob-flu" and charts.load("bob").value.entries == 3
    assert store.audit.verify().ok  # the chain is intact: audit entries were kept

    # A backup taken before still holds ada's entity; restored, her secret cannot be read (her key is
    # gone, and backups leave subject keys out), while bob's still can (his key is live).
    for key in list(client.scan_iter(match=f"rx:{{{store.namespace}*")):
        if key != ks.subject_keys().encode():
            client.delete(key)
    restore(client, tmp_path / "before.rxb")
    back = rx_redis_backend.store(keys=kek, partitions=4).collection("patients", Patient)
    assert back.get("bob", consistent=True).diagnosis == "bob-flu"
    with pytest.raises(DecryptionError) as info:
        back.get("ada", consistent=True)
    assert info.value.reason == "shredded" and manifest.total_keys > 0
    assert client.hget(ks.subject_keys(), f"k:{ada_key}") is None  # the restore brought no key back


def test_a_later_write_of_the_subject_gets_a_new_key(rx_redis_backend, kek):
    store, patients, _visits, _charts = _open(rx_redis_backend, kek)
    patients.put("ada", Patient(name="Ada", diagnosis="x"))
    first = store.keys.subjects.key_of("ada")
    erase(store, "ada", [patients])
    patients.put("ada", Patient(name="Ada", diagnosis="y"))
    second = store.keys.subjects.key_of("ada")
    assert second is not None and second != first
    assert patients.get("ada", consistent=True).diagnosis == "y"


def test_another_process_stops_reading_an_erased_subject(rx_redis_backend, kek):
    store, _patients, visits, _charts = _open(rx_redis_backend, kek)
    other = rx_redis_backend.store(keys=kek, partitions=4)
    other.keys.refresh = 0.0  # check keys on every use, so the test does not wait a refresh period
    other_visits = other.collection("visits", Visit, indexes=["room"])
    visits.put("v1", Visit(patient="ada", note="secret note"))
    assert other_visits.get("v1", consistent=True).note == "secret note"
    old = rx_redis_backend.client().hget(
        store.keyspace.entity("visits", "v1", store.keyspace.partition_of("v1")), "note"
    )
    erase(store, "ada", [visits])
    # a copy of the sealed value (say, from a change record someone kept) cannot be opened any more
    with pytest.raises(DecryptionError) as info:
        other.keys.open(store.keyspace.entity("visits", "v1", store.keyspace.partition_of("v1")), "visits", "note", old)
    assert info.value.reason == "shredded"


def test_rotating_the_kek_rewraps_subject_keys(rx_redis_backend, kek):
    store, patients, _visits, _charts = _open(rx_redis_backend, kek)
    patients.put("ada", Patient(name="Ada", diagnosis="flu"))
    new = StaticKeyProvider(generate_key())
    assert store.keys.rotate(new) == 1  # ada's key (the ring has none: only subjects' data is secret)
    fresh = rx_redis_backend.store(keys=new, partitions=4).collection("patients", Patient)
    assert fresh.get("ada", consistent=True).diagnosis == "flu"


def test_bad_erasure_requests_change_nothing(rx_redis_backend, kek):
    store, patients, visits, charts = _open(rx_redis_backend, kek)
    _fill(patients, visits, charts)
    plain = store.collection("plain", Plain)
    client = rx_redis_backend.client()
    before = dump_all(client)
    with pytest.raises(SchemaError, match="declares no __subject__"):
        erase(store, "ada", [patients, plain])
    with pytest.raises(ValidationError):
        erase(store, "", [patients])
    elsewhere = rx_redis_backend.store(partitions=4).collection("patients", Patient)
    with pytest.raises(ValidationError, match="another store"):
        erase(store, "ada", [elsewhere])
    assert dump_all(client) == before


def test_models_declare_subjects_clearly():
    with pytest.raises(SchemaError, match="must be 'id' or one of its fields"):

        class Wrong(rxstate.Model):
            __subject__ = "owner"
            name: str

    with pytest.raises(SchemaError, match="searchable"):

        class Searchable(rxstate.Model):
            __subject__ = "id"
            email: str = rxstate.classified("secret", searchable=True, default="")


def test_erasure_without_keys_reports_what_stays_in_clear(rx_redis_backend):
    store = rx_redis_backend.store(partitions=2)
    patients = store.collection("patients", Patient)
    patients.put("ada", Patient(name="Ada", diagnosis="flu"))
    report = erase(store, "ada", [patients])
    assert report.entities == {"patients": ["ada"]} and report.key is None
    assert any("in clear" in line for line in report.retained)


def test_the_command_line_erases_with_a_dry_run_first(rx_redis_backend, kek):
    store, patients, visits, _charts = _open(rx_redis_backend, kek)
    patients.put("ada", Patient(name="Ada", diagnosis="flu"))
    visits.put("v1", Visit(patient="ada", note="n"))
    common = ["--url", rx_redis_backend.server.url, "-n", store.namespace]
    specs = ["-c", "patients=tests.admin.test_erasure:Patient", "-c", "visits=tests.admin.test_erasure:Visit"]
    client = rx_redis_backend.client()
    before = dump_all(client)
    dry = runner.invoke(app, ["erase", "ada", *common, *specs, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["entities"] == {"patients": ["ada"], "visits": ["v1"]}
    assert dump_all(client) == before
    done = runner.invoke(app, ["erase", "ada", *common, *specs])
    assert done.exit_code == 0, done.output
    assert "patients: erased 1 entities (ada)" in done.output and "subject key destroyed" in done.output
    assert "ada" not in patients and "v1" not in visits
    bad = runner.invoke(app, ["erase", "ada", *common, "-c", "patients"])
    assert bad.exit_code != 0 and "NAME=package.module:Class" in bad.output
