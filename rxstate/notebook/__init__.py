"""Exploring rxstate in Jupyter: rich displays, live views, and pictures of state.

- Rich displays: models, versioned values and collections show as HTML in a notebook (a collection as
  a paged table); ``recent_changes`` and ``timeline`` show change lists and event histories. Classified
  values (``rxstate.Secret`` fields) are always redacted, and all user data is escaped. Changes,
  batches of changes (lists/tuples), event histories, timelines and derived values display too.
- Live views: ``live(observable_or_derived)`` shows a value that updates in place, throttled
  (needs ``ipywidgets``: ``pip install 'rxstate[notebook]'``).
- Pictures (matplotlib): ``graph(store)`` (also ``store.graph()``), ``plot_field(collection, field)``
  (also ``collection.plot(field)``) and ``plot_change_rate(store)``; each returns a figure that shows
  in a notebook and saves with ``fig.savefig("out.png")``.

Optional packages are imported only when a function needs them.

Example:
    >>> import rxstate.notebook as rxnb  # doctest: +SKIP
    >>> rxnb.table(agents, page=2)  # doctest: +SKIP
    >>> rxnb.plot_change_rate(store).savefig("rate.png")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rxstate.core import display
from rxstate.core.model import Model
from rxstate.core.versioned import Versioned
from rxstate.events.query import Timeline as EventTimeline
from rxstate.events.query import Why
from rxstate.events.types import RecordedEvent
from rxstate.feed.change import Change
from rxstate.reactive.derived import Derived
from rxstate.store.collection import Collection

from ._changes import ChangeRecord, read_changes
from ._html import changes_html, derived_html, model_html, timeline_html, value_html, versioned_html, why_html
from ._ipython import register_formatters
from ._live import LiveView, Throttle, live
from ._plots import dependency_graph, new_figure, plot_change_rate, plot_field
from ._views import ChangeList, Table, Timeline

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from rxstate.store.store import Store

__all__ = [
    "ChangeList",
    "ChangeRecord",
    "LiveView",
    "Table",
    "Throttle",
    "Timeline",
    "graph",
    "html",
    "live",
    "new_figure",
    "plot_change_rate",
    "plot_field",
    "recent_changes",
    "table",
    "timeline",
]


def _register_displays() -> None:
    """Give the core's types their notebook HTML (they render through ``rxstate.core.display``)."""
    display.register(Model, model_html)
    display.register(Versioned, versioned_html)
    display.register(Collection, lambda c: Table(c)._repr_html_())
    display.register(Change, lambda c: changes_html([c]))
    display.register(RecordedEvent, lambda e: timeline_html([e]))
    display.register(EventTimeline, lambda t: timeline_html(t.events, caption=f"{t.title}: {len(t.events)} events"))
    display.register(Why, why_html)
    display.register(Derived, derived_html)


_register_displays()
register_formatters()  # in IPython: lists of changes and of events display as tables and timelines


def html(value: Any) -> str:
    """The HTML a notebook shows for a value (secrets redacted, user data escaped).

    Example:
        >>> rxstate.notebook.html(agents.get("a1"))  # doctest: +SKIP
    """
    return value_html(value)


def table(
    collection: Collection[Any], *, page: int = 1, page_size: int = 20, fields: Sequence[str] | None = None
) -> Table:
    """One page of a collection as a table (id, version, actor, time, fields; secrets redacted).

    Example:
        >>> rxstate.notebook.table(agents, page=2, page_size=10)  # doctest: +SKIP
    """
    return Table(collection, page=page, page_size=page_size, fields=fields)


def recent_changes(store: Store, *, count: int = 50, collection: str | None = None) -> ChangeList:
    """The latest change records of a store, oldest first, as a displayable list.

    Reads the last ``count`` records of every partition's change stream and keeps the newest ``count``.

    Example:
        >>> rxstate.notebook.recent_changes(store, count=10, collection="agents")  # doctest: +SKIP
    """
    return ChangeList(read_changes(store, count=count, collection=collection), store=store)


def timeline(events: Iterable[Any], *, secrets: Iterable[str] | None = None) -> Timeline:
    """An event history (``RecordedEvent``s, or objects with type, version, actor, timestamp_ms,
    causation_id and a ``data`` mapping) as a timeline.

    Args:
        events: the events, oldest first.
        secrets: data keys to redact (default: every field name a loaded model classifies secret).

    Example:
        >>> rxstate.notebook.timeline(history)  # doctest: +SKIP
    """
    return Timeline(events, secrets=secrets)


def graph(source: Any, **options: Any) -> Figure:
    """The dependency graph of derived values and the entities they read (see ``dependency_graph``).

    Example:
        >>> rxstate.notebook.graph(store).savefig("deps.png")  # doctest: +SKIP
    """
    return dependency_graph(source, **options)
