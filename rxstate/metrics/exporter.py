"""Serving ``rxstate.metrics.REGISTRY`` over HTTP for Prometheus (and ``rxstate top``) to scrape."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest, start_http_server

from rxstate.metrics.registry import REGISTRY

__all__ = ["MetricsServer", "serve", "text"]


class MetricsServer:
    """A running metrics endpoint: ``url`` to scrape, ``stop()`` to end it.

    Attributes:
        port: the port it listens on.
        url: ``http://<addr>:<port>/metrics``.
    """

    def __init__(self, server: Any, thread: Any, addr: str) -> None:
        self._server, self._thread = server, thread
        self.port: int = server.server_port
        self.url = f"http://{addr}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url}>"


def serve(port: int = 9464, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve the rxstate metrics on ``http://addr:port/metrics`` from a daemon thread (0: a free port).

    Example:
        >>> with serve(0) as endpoint:
        ...     endpoint.url.endswith("/metrics")
        True
    """
    server, thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return MetricsServer(server, thread, addr)


def text() -> str:
    """The metrics in the Prometheus text format, as a scrape would get them.

    Example:
        >>> "rxstate_operation_seconds" in text()
        True
    """
    return generate_latest(REGISTRY).decode()
