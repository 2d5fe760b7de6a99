"""OpenTelemetry spans of store operations (optional: ``opentelemetry-api``).

Spans are made after the operation, with its measured start and end, so the operation itself carries
no tracing code. Without a configured ``TracerProvider`` the API's default tracer drops them for free.

Example:
    >>> Spans.make(False) is None
    True
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["Spans"]


class Spans:
    """Emits one span per observed operation through the global tracer provider."""

    def __init__(self) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = trace.get_tracer("rxstate")

    @classmethod
    def make(cls, wanted: bool | None) -> Spans | None:
        """A span emitter; None when ``wanted`` is False, or None and ``opentelemetry-api`` is missing.

        Raises:
            ImportError: ``wanted`` is True and ``opentelemetry-api`` is not installed.
        """
        if wanted is False:
            return None
        if importlib.util.find_spec("opentelemetry") is None:
            if wanted:
                raise ImportError("spans=True needs opentelemetry-api: pip install 'rxstate[metrics]'")
            return None
        return cls()

    def emit(self, name: str, start_ns: int, seconds: float, error: Any, namespace: str, collection: str) -> None:
        """Record one finished operation as a span (status ERROR when it raised)."""
        attributes = {"rxstate.namespace": namespace, "db.system": "redis"}
        if collection:
            attributes["rxstate.collection"] = collection
        span = self._tracer.start_span(name, start_time=start_ns, attributes=attributes)
        if isinstance(error, BaseException):
            span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, type(error).__name__))
        span.end(end_time=start_ns + int(seconds * 1e9))
