"""IPython display hooks: a list or tuple of changes (a batch) or of events (a history) shows as HTML.

A plain ``list`` cannot carry a ``_repr_html_``, so the notebook registers an HTML formatter for
``list`` and ``tuple`` with the running IPython shell. It answers only for non-empty sequences made of
change records or of events, and leaves every other sequence (and any subclass with its own
``_repr_html_``) to IPython's usual display. Nothing here imports IPython unless it is already loaded.
"""

from __future__ import annotations

import sys
from typing import Any

from ._html import changes_html, looks_like_change, looks_like_event, timeline_html

__all__ = ["register_formatters", "sequence_html"]


def sequence_html(value: Any) -> str | None:
    """HTML of a list/tuple of changes (a table) or of events (a timeline); None for anything else.

    Example:
        >>> sequence_html([1, 2]) is None
        True
    """
    if not isinstance(value, list | tuple) or not value:
        return None
    if type(value) not in (list, tuple):
        own = getattr(value, "_repr_html_", None)
        if callable(own):
            return own()  # type: ignore[no-any-return]
    if all(looks_like_change(v) for v in value):
        kind = "batch of " if isinstance(value, tuple) else ""
        return changes_html(value, caption=f"{kind}{len(value)} change{'s' if len(value) != 1 else ''}")
    if all(looks_like_event(v) for v in value):
        return timeline_html(value, caption=f"{len(value)} event{'s' if len(value) != 1 else ''}")
    return None


def register_formatters(shell: Any = None) -> bool:
    """Register ``sequence_html`` for lists and tuples with ``shell`` (default: the running IPython).

    Returns whether a shell was found. Called when ``rxstate.notebook`` is imported.

    Example:
        >>> register_formatters()  # outside IPython: nothing to do
        False
    """
    if shell is None:
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
    formatter = getattr(getattr(shell, "display_formatter", None), "formatters", {}).get("text/html")
    if formatter is None:
        return False
    for kind in (list, tuple):
        formatter.for_type(kind, sequence_html)
    return True
