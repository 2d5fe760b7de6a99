"""What the operations commands share: their options, the server they open, errors as one line.

Example:
    >>> with admin_client(None, None) as client:  # doctest: +SKIP
    ...     client.ping()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from rich.console import Console
from rich.text import Text

from rxstate.cli.target import URL_ENV, Target
from rxstate.core.errors import RxStateError

__all__ = ["DataPath", "Json", "Namespace", "Url", "admin_client", "err", "failing", "out"]

Url = Annotated[str | None, typer.Option("--url", envvar=URL_ENV, help=f"an administrator's server URL; or {URL_ENV}")]
DataPath = Annotated[Path | None, typer.Option("--path", help="data directory of an embedded server")]
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="the namespace")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output (JSON)")]


def out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def failing() -> Iterator[None]:
    """rxstate and server errors as one line on stderr and exit code 1 (no traceback)."""
    try:
        yield
    except (RxStateError, redis.RedisError) as exc:
        err().print(Text(f"rxstate: {exc}"))
        raise typer.Exit(1) from None


@contextlib.contextmanager
def admin_client(url: str | None, path: Path | None) -> Iterator[Any]:
    """A client of the target server (``--url`` or ``--path``), with errors reported as one line."""
    with failing(), Target(url, path).client() as client:
        yield client
