"""Smoke test of ``python -m benchmarks``: with a tiny n, every row comes out with numbers.

No timing is asserted: only that the harness runs against a real server on both transports and produces
the rows it promises, so the benchmark code cannot rot.
"""

from __future__ import annotations

import importlib.util
import math

import pytest

from benchmarks.__main__ import main
from benchmarks.harness import Options, Run, bench_names, run
from benchmarks.report import machine, markdown, merge

CORE_ROWS = {
    "update one field": ["raw HSET 1 field", "Lua floor", "rxstate update 1 indexed field, CAS"],
    "put 10 fields": ["raw HSET 10 fields", "rxstate put 10 fields"],
    "get one entity": ["raw HGETALL", "rxstate get, uncached", "rxstate get, cached (hit)"],
    "incr one field": ["raw HINCRBY", "rxstate incr"],
    "put_many of 1,000": ["raw pipeline of 1,000 HSET", "rxstate put_many"],
    "encrypted fields: put": ["rxstate put, all in clear", "rxstate put, 3 fields encrypted"],
    "encrypted fields: get": ["rxstate get, all in clear", "rxstate get, 3 fields decrypted"],
    "audit: update": ["rxstate update, unaudited", "rxstate update, audited (hash-chained entry in the same call)"],
    "audit: verify": ["rxstate audit verify"],
    "event append": ["raw XADD", "rxstate append 1 event", "rxstate append 1 event + projection"],
    "lock acquire + release": ["redis-py Lock", "rxstate lock"],
    "transaction: read 1, write 3": [
        "raw HGETALL + MULTI/EXEC",
        "rxstate transaction, 1 partition",
        "rxstate transaction, 3",
    ],
    "write -> watch in another process": ["raw XADD -> XREAD process", "rxstate update -> collection.watch(id)"],
    "derived values: diamond": ["plain callback (no library)", "rxstate DerivedGraph", "reactivex combine_latest"],
    "memory per entity": ["raw hash (MEMORY USAGE)", "rxstate entity incl. ids set, index, change record"],
    "write cost vs schema size (slopes)": [
        "update 1 field vs partitions",
        "put vs indexes (each value changes)",
        "put of a new entity vs constraints",
    ],
    "replay of": ["raw XRANGE (unparsed) + json.loads (baseline)", "rxstate replay (decode + validate + reduce)"],
}
TARGETED = {
    "rxstate update 1 indexed field, CAS",
    "rxstate put 10 fields",
    "rxstate get, uncached",
    "rxstate get, cached (hit)",
    "rxstate incr",
    "rxstate put_many",
    "rxstate put, 3 fields encrypted",
    "rxstate get, 3 fields decrypted",
    "rxstate update, audited (hash-chained entry in the same call)",
    "rxstate append 1 event",
    "rxstate append 1 event + projection",
    "rxstate update -> collection.watch(id)",
    "rxstate entity incl. ids set, index, change record",
}


def names_by_group(result: Run) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in result.results:
        out.setdefault(r.group, [])
        if r.name not in out[r.group]:
            out[r.group].append(r.name)
    return out


def group_named(groups: dict[str, list[str]], prefix: str) -> list[str]:
    matches = [names for group, names in groups.items() if group.startswith(prefix)]
    assert len(matches) == 1, f"expected one group starting {prefix!r}, got {list(groups)}"
    return matches[0]


@pytest.fixture(scope="module")
def core_run() -> Run:
    return run(Options(n=10, quick=True, peers=False))


def test_every_rxstate_vs_raw_row_has_numbers_on_both_transports(core_run: Run) -> None:
    groups = names_by_group(core_run)
    for prefix, expected in CORE_ROWS.items():
        names = group_named(groups, prefix)
        for wanted in expected:
            assert any(n.startswith(wanted) for n in names), (prefix, wanted, names)
        assert not any(n.startswith(("Redis OM", "pottery", "eventsourcing", "reaktiv")) for n in names)
    for r in core_run.results:
        assert math.isfinite(r.median), r
        assert math.isfinite(r.ratio), r
        assert math.isfinite(r.p99) or r.unit == "B", r
        if r.name == r.baseline:
            assert r.ratio == pytest.approx(1.0)
        assert (r.target is not None) == (r.name in TARGETED), r
        if r.target is not None:
            assert r.verdict in ("met", "missed")
        if not r.unit.startswith("µs/"):  # slopes may be negative; latencies, rates, bytes may not
            assert r.median > 0, r
    transports = {r.transport for r in core_run.results}
    assert transports == {"tcp", "unix", "any"}
    watch = [r for r in core_run.results if r.name == "rxstate update -> collection.watch(id)"]
    assert {r.transport for r in watch} == {"tcp", "unix"}
    assert core_run.server.split()[0] in ("redis", "valkey")


def test_results_file_names_every_row_machine_and_versions(core_run: Run) -> None:
    lines = merge(core_run.results)
    text = markdown(lines, core_run, machine((0.0, 0.0, 0.0)), command="python -m benchmarks", quick=True)
    for line in lines:
        assert line.name in text
    for word in ("CPU:", "cores", "python:", "server:", "redis:", "rxstate:", "pottery:", "≤1.3x HSET", "≥60k/s"):
        assert word in text
    assert (
        sum(1 for row in text.splitlines() if row.startswith("| "))
        == len(lines) + len({line.group for line in lines}) + 2
    )  # the header and its separator


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("redis_om", "pottery", "eventsourcing", "reaktiv")),
    reason="the bench extra is not installed",
)
def test_peer_rows_run_beside_rxstate() -> None:
    result = run(
        Options(n=10, quick=True, only=("update", "put", "get", "lock", "append", "diamond"), transports=("unix",))
    )
    names = {r.name for r in result.results}
    for wanted in (
        "Redis OM HashModel.update(status=)",
        "Redis OM HashModel.save()",
        "Redis OM HashModel.get(pk)",
        "pottery RedisDict[id] = dict",
        "pottery RedisDict[id]",
        "pottery Redlock (1 master)",
        "eventsourcing POPO save of 1 event",
        "eventsourcing SQLite save of 1 event",
        "reaktiv signals",
    ):
        assert wanted in names
    assert all(math.isfinite(r.median) and r.median > 0 for r in result.results)


@pytest.mark.skipif(importlib.util.find_spec("rich") is None, reason="the bench extra (rich) is not installed")
def test_command_prints_the_table_and_writes_the_file(tmp_path, capsys) -> None:
    out = tmp_path / "RESULTS.md"
    assert main(["--quick", "--n", "10", "--only", "incr,get", "--no-peers", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rxstate incr" in printed and "raw HGETALL" in printed
    text = out.read_text()
    assert "rxstate incr" in text and "rxstate put" not in text


def test_unknown_bench_is_refused_with_the_known_names(capsys) -> None:
    assert main(["--quick", "--only", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and all(name in err for name in bench_names())
