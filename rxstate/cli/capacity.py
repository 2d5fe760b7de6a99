"""``rxstate capacity``: memory per collection and partition, growth, hot keys, and when memory runs out.

Each run measures (sampled ``MEMORY USAGE``, see ``rxstate.admin.capacity``) and, with ``--record``,
keeps the measurement, so that later runs show the growth rate and the projection. ``--plot FILE``
draws the recorded history with the projection line and the memory per collection (needs matplotlib).

Example:
    >>> from typer.testing import CliRunner
    >>> CliRunner().invoke(app, ["capacity", "--help"]).exit_code
    0
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rxstate.admin.capacity import CapacitySample, Forecast, forecast, history, hot_keys, measure, record
from rxstate.cli import render
from rxstate.cli.admin import DataPath, Json, Namespace, Url, admin_client, out
from rxstate.core.errors import ValidationError
from rxstate.notebook._plots import new_figure

__all__ = ["app", "plot_capacity", "register"]

app = typer.Typer(help="Capacity.", no_args_is_help=True)


def plot_capacity(samples: Sequence[CapacitySample], projection: Forecast | None) -> Any:
    """A figure: ``used_memory`` over time with the projection to ``maxmemory``, and bytes per collection.

    Example:
        >>> a = CapacitySample(0, 1_000, 5_000, 1, 1, {"agents": 700}, {0: 700})
        >>> b = CapacitySample(3_600_000, 2_000, 5_000, 2, 2, {"agents": 1_400}, {0: 1_400})
        >>> len(plot_capacity([a, b], forecast([a, b])).axes)
        2
    """
    fig = new_figure((9.0, 4.0))
    left, right = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.88, bottom=0.2, wspace=0.35)
    times = [datetime.fromtimestamp(s.at_ms / 1000, UTC) for s in samples if s.used_memory is not None]
    used = [s.used_memory / 2**20 for s in samples if s.used_memory is not None]
    left.plot(times, used, marker="o", label="used_memory")
    last = samples[-1]
    if projection is not None and projection.full_at_ms is not None and last.maxmemory:
        end = datetime.fromtimestamp(projection.full_at_ms / 1000, UTC)
        left.plot([times[-1], end], [used[-1], last.maxmemory / 2**20], linestyle="--", label="projection")
        left.axhline(last.maxmemory / 2**20, color="red", linewidth=0.8, label="maxmemory")
    left.set_ylabel("MiB")
    left.set_title("server memory")
    left.legend(fontsize="small")
    left.tick_params(axis="x", labelrotation=30, labelsize="small")
    names = sorted(last.collections, key=last.collections.__getitem__, reverse=True)[:10]
    right.barh(names, [last.collections[n] / 2**10 for n in names])
    right.set_xlabel("KiB (sampled estimate)")
    right.set_title("memory per collection")
    return fig


@app.command("capacity")
def capacity(
    url: Url = None,
    path: DataPath = None,
    namespace: Namespace = "default",
    fraction: Annotated[float, typer.Option("--fraction", help="the share of keys to ask MEMORY USAGE of")] = 0.1,
    keep: Annotated[bool, typer.Option("--record", help="keep this measurement for growth and projection")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="save a picture of the history here (PNG)")] = None,
    json: Json = False,
) -> None:
    """Memory per collection and partition, growth rate, hot keys and partitions, when memory runs out."""
    with admin_client(url, path) as client:
        sample = measure(client, namespace, fraction=fraction)
        if keep:
            record(client, sample, namespace)
        samples = history(client, namespace) if keep else [*history(client, namespace), sample]
        try:
            projection: Forecast | None = forecast(samples)
        except ValidationError:
            projection = None  # one measurement: no growth yet
        keys, partitions = hot_keys(client, namespace)
    if plot is not None:
        plot_capacity(samples, projection).savefig(plot, format="png")
    data = {
        "keys": sample.keys,
        "sampled": sample.sampled,
        "used_memory": sample.used_memory,
        "maxmemory": sample.maxmemory,
        "collections": sample.collections,
        "partitions": {str(p): n for p, n in sorted(sample.partitions.items())},
        "bytes_per_hour": None if projection is None else projection.bytes_per_hour,
        "hours_left": None if projection is None else projection.hours_left,
        "hot_keys": keys,
        "hot_partitions": partitions,
    }
    if json:
        render.print_json(data)
        return
    table = Table(
        "collection", "bytes (estimate)", title=f"{namespace!r}: {sample.keys} keys, {sample.sampled} sampled"
    )
    for name, nbytes in sorted(sample.collections.items(), key=lambda kv: -kv[1]):
        table.add_row(name, f"{nbytes:,}")
    console = out()
    console.print(table)
    if projection is None:
        console.print("growth: one measurement so far (run with --record over time)")
    elif projection.hours_left is None:
        console.print(f"growth: {projection.bytes_per_hour:,.0f} bytes/hour; no memory limit reached at this rate")
    else:
        console.print(
            f"growth: {projection.bytes_per_hour:,.0f} bytes/hour; maxmemory in {projection.hours_left:,.1f} h"
        )
    console.print("hot keys: " + (", ".join(f"{k} ({n})" for k, n in keys) or "none"))
    console.print("hot partitions: " + (", ".join(f"{p} ({n})" for p, n in partitions) or "none"))


def register(root: typer.Typer) -> None:
    """Add this command to the ``rxstate`` command."""
    root.registered_commands.extend(app.registered_commands)
