"""A kind of server for one test (fakeredis, a real server, a local cluster) that makes clients and stores.

Example:
    >>> with Backend("fakeredis") as backend:
    ...     backend.store().ping()
    True
"""

from __future__ import annotations

import uuid
from typing import Any

from rxstate.api import Store, connect

__all__ = ["BACKENDS", "Backend"]

BACKENDS = ("fakeredis", "redis", "cluster")


class Backend:
    """One kind of server for a test: makes clients and stores that share its data.

    Attributes:
        kind: ``"fakeredis"``, ``"redis"`` or ``"cluster"``.
        namespace: a namespace unique to this test.
        server: the ``EmbeddedServer`` or ``LocalCluster`` behind it (None for fakeredis).
    """

    def __init__(self, kind: str, server: Any = None) -> None:
        self.kind = kind
        self.server = server
        self.namespace = f"t{uuid.uuid4().hex[:12]}"
        self._stores: list[Store] = []
        self._fake_server: Any = None
        if kind == "fakeredis":
            import fakeredis

            self._fake_server = fakeredis.FakeServer()

    def client(self, **kwargs: Any) -> Any:
        """A new client of this backend (``decode_responses=False``)."""
        if self.kind == "fakeredis":
            import fakeredis

            return fakeredis.FakeRedis(server=self._fake_server, **kwargs)
        return self.server.client(**kwargs)

    def store(self, **kwargs: Any) -> Store:
        """A new store on this backend, in this test's namespace unless ``namespace=`` is given."""
        kwargs.setdefault("namespace", self.namespace)
        store = connect(self.client(), **kwargs)
        self._stores.append(store)
        return store

    @property
    def is_real(self) -> bool:
        return self.kind != "fakeredis"

    def close(self) -> None:
        for store in self._stores:
            store.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
