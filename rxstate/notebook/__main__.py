"""``python -m rxstate.notebook demo-plot out.png``: run the demo scenario and save pictures of it.

Agents race to claim tasks (the ``rxstate demo`` scenario) on an embedded server; the picture shows
who did how many tasks and the change rate over the run (PNG, SVG or PDF, by the file's suffix).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..cli import DemoTask, _demo
from ..errors import RxStateError
from ..store import Store, connect
from ._plots import dependency_graph, new_figure, plot_change_rate, plot_field

__all__ = ["demo_plot", "main"]


def demo_plot(store: Store, out: str | Path, *, agents: int = 5, tasks: int = 40, seed: int = 7) -> Path:
    """Run the demo scenario on ``store`` and save a picture of it to ``out``.

    Example:
        >>> demo_plot(rxstate.connect(), "demo.png")  # doctest: +SKIP
        PosixPath('demo.png')
    """
    _demo(store, agents=agents, tasks=tasks, seed=seed, out=lambda *_: None)
    board = store.collection("tasks", DemoTask, indexes=["state"])
    derived = list(getattr(store, "derived_values", lambda: [])())
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m rxstate.notebook``."""
    parser = argparse.ArgumentParser(prog="python -m rxstate.notebook", description="pictures of rxstate state")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo-plot", help="run the demo scenario on an embedded server and save a picture")
    demo.add_argument("out", help="output file: .png, .svg or .pdf")
    demo.add_argument("--url", default=None, help="use this server instead of an embedded one")
    demo.add_argument("--agents", type=int, default=5)
    demo.add_argument("--tasks", type=int, default=40)
    demo.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        with connect(args.url, namespace=f"demo-plot-{int(time.time() * 1000)}") as store:
            path = demo_plot(store, args.out, agents=args.agents, tasks=args.tasks, seed=args.seed)
    except (RxStateError, ImportError) as exc:
        print(f"rxstate: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
