"""``rxstate demo-plot out.png``: run the demo scenario and save pictures of it.

Agents race to claim tasks (the ``rxstate demo`` scenario) on an embedded server; the picture shows
who did how many tasks and the change rate over the run (PNG, SVG or PDF, by the file's suffix).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rxstate.api import Store
from rxstate.cli.demo import DemoTask, run_demo
from rxstate.notebook._plots import dependency_graph, new_figure, plot_change_rate, plot_field

__all__ = ["demo_plot"]


def demo_plot(
    store: Store,
    out: str | Path,
    *,
    agents: int = 5,
    tasks: int = 40,
    open_agent: Callable[[str], Store] | None = None,
) -> Path:
    """Run the demo scenario on ``store`` and save a picture of it to ``out``.

    Example:
        >>> demo_plot(rxstate.connect(), "demo.png")  # doctest: +SKIP
        PosixPath('demo.png')
    """
    run_demo(store, agents=agents, tasks=tasks, out=lambda _line: None, open_agent=open_agent)
    board = store.collection("tasks", DemoTask, indexes=["state"])
    derived = store.derived_values()
    panels = 3 if derived else 2
    fig = new_figure((6.0 * panels, 4.5), dpi=100)
    axes = fig.subplots(1, panels)
    plot_field(board, "owner", ax=axes[0])
    axes[0].set_title(f"tasks done per agent ({tasks} tasks)")
    plot_change_rate(store, window=None, bucket=0.05, by="collection", ax=axes[1])
    if derived:
        dependency_graph(derived, ax=axes[2])
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.18, top=0.9, wspace=0.25)
    path = Path(out)
    fig.savefig(path)
    return path
