"""The one table of ``python -m benchmarks``: on the console (rich) and as ``benchmarks/RESULTS.md``.

Rows of the same contender on the two transports become one line, TCP loopback and unix socket side by
side; rows measured in-process (no transport) show their figures once.

Example:
    >>> from benchmarks.harness import Result
    >>> lines = merge([Result("g", "raw", "µs", 100.0, 150.0, 1.0, "raw", transport="tcp")])
    >>> fmt_value(lines[0].by_transport["tcp"].median, "µs")
    '100'
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import TRANSPORTS, Result, Run

__all__ = ["Line", "Machine", "fmt_value", "machine", "markdown", "merge", "print_table", "versions"]

LEGEND = """\
How to read it: every contender of a group is timed call by call in turn with the group's first row
(its baseline: every ratio is to it), in the same run against the same server, so a change of machine
load hits them alike. Latencies are per call in µs (median, p99). For rates (entities/s, events/s) the
median is the rate of the median call, "p99" the rate of the p99 call (the slow tail), and the ratio is
rate / baseline rate (above 1 is faster); for latencies and bytes it is median / baseline median (below
1 is faster or smaller). Slopes are least-squares lines through the medians (and p99s) at each count;
their ratio is the slope over the write's median at the smallest count. Rows marked "same" under unix
run in-process (no transport) or do not depend on it (bytes): they are measured once."""

PEER_PACKAGES = ("redis-om", "pottery", "eventsourcing", "reaktiv")


@dataclass
class Line:
    """One contender of one group, with its result on each transport."""

    group: str
    name: str
    by_transport: dict[str, Result] = field(default_factory=dict)

    @property
    def first(self) -> Result:
        return next(iter(self.by_transport.values()))

    def verdict(self) -> str:
        """``met`` / ``missed`` when the transports agree, else one verdict per transport."""
        verdicts = {t: r.verdict for t, r in self.by_transport.items() if r.verdict}
        if not verdicts:
            return ""
        if len(set(verdicts.values())) == 1:
            return next(iter(verdicts.values()))
        return ", ".join(f"{t} {v}" for t, v in verdicts.items())


def merge(results: Sequence[Result]) -> list[Line]:
    """Group ``results`` by (group, contender), in the order they were measured."""
    lines: dict[tuple[str, str], Line] = {}
    for r in results:
        lines.setdefault((r.group, r.name), Line(r.group, r.name)).by_transport[r.transport] = r
    return list(lines.values())


def fmt_value(value: float, unit: str) -> str:
    """A figure in its unit's precision (``—`` for none)."""
    if math.isnan(value):
        return "—"
    if unit.endswith("/s") or unit == "B":
        return f"{value:,.0f}"
    if "/" in unit:  # slopes
        return f"{value:+.2f}"
    if abs(value) < 10:
        return f"{value:.2f}"
    if abs(value) < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _ratio(r: Result | None) -> str:
    if r is None or math.isnan(r.ratio):
        return "—"
    return f"{r.ratio:.3f}x" if abs(r.ratio) < 0.1 else f"{r.ratio:.2f}x"


HEADERS = [
    "operation",
    "unit",
    "TCP median",
    "TCP p99",
    "TCP ratio",
    "unix median",
    "unix p99",
    "unix ratio",
    "target",
    "met?",
    "note",
]


def _cells(line: Line) -> list[str]:
    first = line.first
    cells = [line.name, first.unit]
    if "any" in line.by_transport:
        r = line.by_transport["any"]
        cells += [fmt_value(r.median, r.unit), fmt_value(r.p99, r.unit), _ratio(r), "same", "", ""]
    else:
        for t in TRANSPORTS:
            r = line.by_transport.get(t)
            cells += (
                ["—", "—", "—"] if r is None else [fmt_value(r.median, r.unit), fmt_value(r.p99, r.unit), _ratio(r)]
            )
    cells += [first.target.text if first.target else "", line.verdict(), first.note]
    return cells


def print_table(lines: Sequence[Line], *, title: str) -> None:
    """Print the table on the console with rich (needs the ``bench`` extra)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for h in HEADERS:
        table.add_column(h, justify="right" if h.split()[-1] in ("median", "p99", "ratio") else "left", overflow="fold")
    group = None
    for line in lines:
        if line.group != group:
            if group is not None:
                table.add_section()
            group = line.group
            table.add_row(f"[bold]{group}[/bold]", *[""] * (len(HEADERS) - 1))
        cells = _cells(line)
        verdict = cells[-2]
        if verdict:
            colour = "green" if verdict == "met" else "red" if verdict == "missed" else "yellow"
            cells[-2] = f"[{colour}]{verdict}[/{colour}]"
        table.add_row(*cells)
    Console(width=max(200, Console().width)).print(table)


@dataclass(frozen=True)
class Machine:
    """Where a run happened, and how busy the machine was."""

    cpu: str
    cores: int
    memory_gib: float
    system: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    @property
    def loaded(self) -> bool:
        """Whether others kept the machine busy: a 1-minute load above half the cores before the run,
        or above the cores plus one after it (the run itself keeps about one core busy)."""
        return self.load_before[0] > self.cores / 2 or self.load_after[0] > self.cores + 1


def machine(load_before: tuple[float, float, float]) -> Machine:
    """This machine's description, with the load average before the run and now."""
    cpu = platform.processor() or platform.machine()
    mem = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) / 2**20
                break
    except OSError:
        pass
    return Machine(cpu, os.cpu_count() or 0, mem, platform.platform(), load_before, os.getloadavg())


def versions(run: Run) -> dict[str, str]:
    """Versions of python, the server, redis-py and its parser, rxstate and every peer."""
    out = {"python": platform.python_version(), "server": f"{run.server} ({run.binary})"}
    for package in ("redis", "hiredis", "rxstate", "reactivex", "pydantic", *PEER_PACKAGES):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def markdown(lines: Sequence[Line], run: Run, box: Machine, *, command: str, quick: bool) -> str:
    """``RESULTS.md``: date, command, machine, versions, the table and how to read it."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmark results",
        "",
        f"Written by `{command}` on {when}{' (a quick run: few calls, rough figures)' if quick else ''}.",
        "",
        "## Machine",
        "",
        f"- CPU: {box.cpu}, {box.cores} cores, {box.memory_gib:.0f} GiB; {box.system}",
        "- load average (1, 5, 15 min) before the run: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(
            *box.load_before, *box.load_after
        ),
    ]
    if box.loaded:
        out.append(
            "- **The machine was loaded by other work during this run**: absolute figures are noisy; ratios "
            "(each contender timed in turn with its baseline) hold better."
        )
    out += ["", "## Versions", ""]
    out += [f"- {name}: {version}" for name, version in versions(run).items()]
    out += ["", "## Results", "", _md_row(HEADERS), _md_row(["---"] * len(HEADERS))]
    group = None
    for line in lines:
        if line.group != group:
            group = line.group
            out.append(_md_row([f"**{group}**", *[""] * (len(HEADERS) - 1)]))
        out.append(_md_row(_cells(line)))
    out += ["", LEGEND, ""]
    return "\n".join(out)


def argv_command() -> str:
    """The command line as typed (``python -m benchmarks ...``)."""
    return " ".join(["python -m benchmarks", *sys.argv[1:]])
