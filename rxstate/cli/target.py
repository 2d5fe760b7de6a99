"""Which server and namespace a command works on: ``--url``, ``--path`` or ``RXSTATE_URL``.

Read commands never start an empty server to inspect, and never create a namespace: with neither a
URL nor a data directory they fail with a clear message, and a missing namespace is a ``NotFound``
that lists the namespaces the server has.

Example:
    >>> with Target(url="redis://127.0.0.1:6379/0", namespace="crew").read() as store:  # doctest: +SKIP
    ...     print(store.keyspace.partitions)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rxstate.api import Store, connect
from rxstate.cli.inspector import list_namespaces
from rxstate.cli.progress import Steps, quiet
from rxstate.core.errors import NotFound, ValidationError
from rxstate.server.lease import attach
from rxstate.store.connect import client_from_url

__all__ = ["URL_ENV", "Target"]

URL_ENV = "RXSTATE_URL"


@dataclass(frozen=True)
class Target:
    """A server (a URL, or an embedded server's data directory) and a namespace on it."""

    url: str | None = None
    path: Path | None = None
    namespace: str = "default"

    def _check(self) -> None:
        if self.url is not None and self.path is not None:
            raise ValidationError("give either --url or --path, not both")

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A client of the target server (an embedded one on ``path`` runs while it is open).

        Raises:
            ValidationError: no server given, or both a URL and a path.
            NotFound: ``path`` holds no data directory.
        """
        self._check()
        if self.url is not None:
            client = client_from_url(self.url)
            try:
                yield client
            finally:
                client.close()
            return
        if self.path is None:
            raise ValidationError(
                f"no server given: pass --url redis://HOST:PORT/DB or --path DATA_DIR, or set {URL_ENV}"
            )
        if not self.path.is_dir():
            raise NotFound(f"no data directory at {self.path} (an embedded server's --path)", key=str(self.path))
        lease = attach(self.path)  # the directory's server, shared with every process using it
        try:
            client = lease.client()
            try:
                yield client
            finally:
                client.close()
        finally:
            lease.release()

    @contextlib.contextmanager
    def read(self, steps: Steps = quiet) -> Iterator[Store]:
        """A read-only store of the namespace.

        Raises:
            NotFound: the namespace does not exist (the message lists those that do).
        """
        with self.client() as client:
            try:
                store = connect(client, namespace=self.namespace, read_only=True)
            except NotFound as exc:
                names = list_namespaces(client, steps)
                raise NotFound(
                    f"namespace {self.namespace!r} does not exist on this server "
                    f"(namespaces: {', '.join(names) or 'none'})",
                    key=exc.key,
                ) from None
            with store:
                yield store
