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
    >>> import rxstate.notebook as rxnb
    >>> _ = agents.put_many({f"a{i}": Agent(name=f"agent {i}") for i in range(30)})
    >>> rxnb.table(agents, page=2)
    <Table agents: rows 21-30 of 30, page 2/2>
    ...
    >>> rxnb.plot_change_rate(store).axes[0].get_title()  # a figure: .savefig("rate.png")
    "changes per second in 'default'"
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
from rxstate.store.query import Query

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
    display.register(Query, lambda q: value_html(q.versioned()))
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
        >>> import rxstate.notebook
        >>> "&lt;b&gt;" in rxstate.notebook.html(Agent(name="<b>planner</b>"))  # escaped
        True
    """
    return value_html(value)


def table(
    collection: Collection[Any], *, page: int = 1, page_size: int = 20, fields: Sequence[str] | None = None
) -> Table:
    """One page of a collection as a table (id, version, actor, time, fields; secrets redacted).

    Example:
        >>> import rxstate.notebook
        >>> _ = agents.put_many({f"a{i}": Agent(name=f"agent {i}") for i in range(12)})
        >>> rxstate.notebook.table(agents, page=2, page_size=10)
        <Table agents: rows 11-12 of 12, page 2/2>
        a8  v1  pid:...  20...  Agent(name='agent 8', status='idle', load=0, skills=[])
        a9  v1  pid:...  20...  Agent(name='agent 9', status='idle', load=0, skills=[])
    """
    return Table(collection, page=page, page_size=page_size, fields=fields)


def recent_changes(store: Store, *, count: int = 50, collection: str | None = None) -> ChangeList:
    """The latest change records of a store, oldest first, as a displayable list.

    Reads the last ``count`` records of every partition's change stream and keeps the newest ``count``.

    Example:
        >>> import rxstate.notebook
        >>> _ = agents.put("a1", Agent(name="planner"))
        >>> _ = agents.update("a1", status="busy")
        >>> rxstate.notebook.recent_changes(store, count=10, collection="agents")
        <ChangeList of 2>
        1...-0 agents/a1 create v1 by pid:... at 20...: name='planner', status='idle', load=0, skills=[]
        1...-0 agents/a1 update v2 by pid:... at 20...: status='busy'
    """
    return ChangeList(read_changes(store, count=count, collection=collection), store=store)


def timeline(events: Iterable[Any], *, secrets: Iterable[str] | None = None) -> Timeline:
    """An event history (``RecordedEvent``s, or objects with type, version, actor, timestamp_ms,
    causation_id and a ``data`` mapping) as a timeline.

    Args:
        events: the events, oldest first.
        secrets: data keys to redact (default: every field name a loaded model classifies secret).

    Example:
        >>> import rxstate.notebook
        >>> _ = orders.append("o1", [Placed(sku="apple")])
        >>> rxstate.notebook.timeline(orders.history("o1"))
        <Timeline of 1 events>
        v1 20... Placed by pid:...: {'sku': 'apple', 'qty': 1}
    """
    return Timeline(events, secrets=secrets)


def graph(source: Any, **options: Any) -> Figure:
    """The dependency graph of derived values and the entities they read (see ``dependency_graph``).

    Example:
        >>> import rxstate.notebook
        >>> busy = store.derived(lambda: agents.count(), name="agents")
        >>> rxstate.notebook.graph(store).axes[0].get_title()  # a figure: .savefig("deps.png")
        'dependency graph: 1 derived values'
    """
    return dependency_graph(source, **options)
