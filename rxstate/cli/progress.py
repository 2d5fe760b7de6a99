"""Progress reporting for reads that may take a while (a ``SCAN`` over many keys, a long stream).

The readers take a ``Steps`` callback and know nothing of the terminal; the command line passes one
that draws ``rich`` progress bars on stderr (only when stderr is a terminal, so output stays clean).

Example:
    >>> with quiet("scanning keys", None) as tick:
    ...     tick(10)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

__all__ = ["Steps", "Tick", "quiet", "rich_steps"]

Tick = Callable[[int], None]
"""Advance the current step by that many units."""
Steps = Callable[[str, int | None], AbstractContextManager[Tick]]
"""``steps(label, total)`` opens one step (``total`` None when unknown) and yields its ``Tick``."""


@contextlib.contextmanager
def quiet(label: str, total: int | None) -> Iterator[Tick]:
    """A step that reports nothing."""
    yield lambda n: None


def rich_steps(console: Console | None = None) -> Steps:
    """Steps drawn as transient ``rich`` progress bars on ``console`` (default: stderr).

    Nothing is drawn when the console is not a terminal.

    Example:
        >>> with rich_steps()("scanning keys", 1000) as tick:  # doctest: +SKIP
        ...     tick(500)
    """
    out = console or Console(stderr=True)

    @contextlib.contextmanager
    def step(label: str, total: int | None) -> Iterator[Tick]:
        if not out.is_terminal:
            yield lambda n: None
            return
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
        with Progress(*columns, TimeElapsedColumn(), console=out, transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)

    return step
