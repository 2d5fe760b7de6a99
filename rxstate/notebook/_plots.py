"""Pictures of state: a field's distribution, the change rate over time, the dependency graph.

Every function returns a matplotlib ``Figure`` drawn with the Agg renderer (no display, no pyplot
state), which shows as an image in a notebook and saves with ``fig.savefig("out.png")`` or ``.svg``.
Pass ``ax=`` to draw into an axes of your own figure instead.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rxstate.core.errors import ValidationError
from rxstate.core.redaction import clip, format_ms, short

from ._changes import change_times

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from rxstate.store.collection import Collection
    from rxstate.store.store import Store

__all__ = ["dependency_graph", "new_figure", "plot_change_rate", "plot_field"]

INSTALL_HINT = "pictures need matplotlib; install the notebook extra: pip install 'rxstate[notebook]'"
DEFAULT_SIZE = (6.4, 4.0)
DEFAULT_DPI = 100


def new_figure(figsize: tuple[float, float] = DEFAULT_SIZE, dpi: int = DEFAULT_DPI) -> Figure:
    """A matplotlib figure on the Agg canvas that shows as a PNG in notebooks.

    Example:
        >>> fig = new_figure((4, 3), dpi=100)
        >>> fig.canvas.get_width_height()  # pixels when saved
        (400, 300)
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(INSTALL_HINT, name="matplotlib") from exc

    class Picture(Figure):
        """A figure with a PNG repr, so a notebook shows it without pyplot."""

        def _repr_png_(self) -> bytes:
            import io

            buf = io.BytesIO()
            self.savefig(buf, format="png")
            return buf.getvalue()

    fig = Picture(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _axes(ax: Axes | None, figsize: tuple[float, float], dpi: int) -> Axes:
    if ax is not None:
        return ax
    fig = new_figure(figsize, dpi)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.18)
    return ax


def _hashable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else short(value, 30)


def plot_field(
    collection: Collection[Any],
    field: str,
    *,
    bins: int = 20,
    top: int = 15,
    ax: Axes | None = None,
    figsize: tuple[float, float] = DEFAULT_SIZE,
    dpi: int = DEFAULT_DPI,
) -> Figure:
    """The distribution of one field over a collection.

    Numbers give a histogram; other values (text, flags, literals) a bar per value, the ``top`` most
    common ones; a list field counts each element. Secret fields are refused.

    Args:
        collection: the collection to read (every entity, so mind very large collections).
        field: the field to plot.
        bins: histogram bins for a numeric field.
        top: bars shown for a categorical field (the rest are summed as "other").
        ax: draw into this axes instead of a new figure.
        figsize: size of a new figure in inches.
        dpi: pixels per inch of a new figure.

    Raises:
        ValidationError: no such field, or the field is classified secret.

    Example:
        >>> _ = agents.put_many({"a1": Agent(name="planner"), "a2": Agent(name="coder", status="busy")})
        >>> plot_field(agents, "status").axes[0].get_title()  # also agents.plot("status")
        'agents.status (2 entities)'
    """
    model = collection.model
    if field not in model.model_fields:
        raise ValidationError(f"{model.__name__} has no field {field!r}", field=field)
    if field in model.__rxstate_secrets__:
        raise ValidationError(f"{model.__name__}.{field} is classified secret: it is never plotted", field=field)
    values = [getattr(v, field) for v in collection.all()]
    ax = _axes(ax, figsize, dpi)
    flat: list[Any] = []
    for value in values:
        if isinstance(value, list | tuple | set | frozenset):
            flat.extend(value)
        else:
            flat.append(value)
    numeric = [v for v in flat if isinstance(v, int | float) and not isinstance(v, bool)]
    if flat and len(numeric) == len(flat):
        ax.hist(numeric, bins=max(1, min(bins, len(set(numeric)))), color="#4c72b0", edgecolor="white")
        ax.set_ylabel("entities")
    else:
        counts = Counter(_hashable(v) for v in flat)
        common = counts.most_common(top)
        rest = sum(counts.values()) - sum(n for _, n in common)
        labels = [clip(str(k), 18) for k, _ in common] + (["other"] if rest else [])
        heights = [n for _, n in common] + ([rest] if rest else [])
        ax.bar(range(len(heights)), heights, color="#4c72b0")
        rotated = len(heights) > 5
        ax.set_xticks(range(len(heights)), labels, rotation=30 if rotated else 0, ha="right" if rotated else "center")
        ax.set_ylabel("count")
    ax.set_xlabel(field)
    ax.set_title(f"{collection.name}.{field} ({len(values)} entities)")
    if not flat:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes, color="#888")
    return ax.figure  # type: ignore[return-value]


def plot_change_rate(
    store: Store,
    *,
    window: float | None = 60.0,
    bucket: float = 1.0,
    by: str | None = "op",
    collection: str | None = None,
    ax: Axes | None = None,
    figsize: tuple[float, float] = DEFAULT_SIZE,
    dpi: int = DEFAULT_DPI,
) -> Figure:
    """Changes per second over time, from the partitions' change streams, stacked by op or collection.

    Args:
        store: the store whose change streams to read.
        window: seconds of history before the newest change (None: everything still retained).
        bucket: width of one bar in seconds.
        by: ``"op"``, ``"collection"`` or None (one total).
        collection: only changes of this collection.
        ax: draw into this axes instead of a new figure.
        figsize: size of a new figure in inches.
        dpi: pixels per inch of a new figure.

    Raises:
        ValidationError: a bad ``bucket``, ``window`` or ``by``.

    Example:
        >>> _ = agents.put("a1", Agent(name="planner"))
        >>> plot_change_rate(store, window=30).axes[0].get_title()  # a figure: .savefig("rate.svg")
        "changes per second in 'default'"
    """
    if not (isinstance(bucket, int | float) and bucket > 0 and math.isfinite(bucket)):
        raise ValidationError(f"bucket must be a positive number of seconds, not {bucket!r}")
    if window is not None and not (isinstance(window, int | float) and window > 0):
        raise ValidationError(f"window must be a positive number of seconds or None, not {window!r}")
    if by not in ("op", "collection", None):
        raise ValidationError(f"by must be 'op', 'collection' or None, not {by!r}")
    records = change_times(store, window_s=window, collection=collection)
    ax = _axes(ax, figsize, dpi)
    title = f"changes per second in {store.namespace!r}" + (f", {collection}" if collection else "")
    ax.set_title(title)
    ax.set_xlabel("seconds")
    ax.set_ylabel("changes / s")
    if not records:
        ax.text(0.5, 0.5, "no changes recorded", ha="center", va="center", transform=ax.transAxes, color="#888")
        return ax.figure  # type: ignore[return-value]
    start = records[0][0]
    width_ms = bucket * 1000
    n = int((records[-1][0] - start) // width_ms) + 1
    series: dict[str, list[float]] = {}
    for ms, coll, op in records:
        key = op if by == "op" else coll if by == "collection" else "changes"
        series.setdefault(key, [0.0] * n)[int((ms - start) // width_ms)] += 1 / bucket
    xs = [i * bucket for i in range(n)]
    bottom = [0.0] * n
    for key in sorted(series):
        ax.bar(xs, series[key], width=bucket * 0.9, bottom=bottom, align="edge", label=key)
        bottom = [b + h for b, h in zip(bottom, series[key], strict=True)]
    ax.set_xlabel(f"seconds since {format_ms(start)} UTC")
    if by is not None:
        ax.legend(loc="upper right", fontsize="small")
    return ax.figure  # type: ignore[return-value]


# -- dependency graph ---------------------------------------------------------------------------------
def _derived_closure(values: Iterable[Any]) -> list[Any]:
    """The derived values and every parent they read, each once, in discovery order."""
    out: list[Any] = []
    seen: set[int] = set()
    todo = list(values)
    while todo:
        d = todo.pop(0)
        if id(d) in seen:
            continue
        seen.add(id(d))
        out.append(d)
        todo.extend(getattr(d, "parents", ()) or ())
    return out


def _source_label(collection: str, entity_id: Any) -> str:
    return f"{collection}/{entity_id}" if entity_id not in (None, "*") else f"{collection} (all)"


def graph_layout(
    values: Iterable[Any], *, max_ids: int = 5
) -> tuple[dict[str, tuple[int, str, str]], list[tuple[str, str]]]:
    """Nodes and edges of the dependency graph, with a layer for each node.

    Sources (collection, id) sit in layer 0; a collection with more than ``max_ids`` ids read shows as
    one node. A derived value sits one layer right of everything it reads.

    Returns:
        nodes: key -> (layer, kind "source"/"derived", label); edges: (from key, to key).
    """
    derived = _derived_closure(values)
    ids_of: dict[str, set[Any]] = {}
    for d in derived:
        for coll, entity_id in getattr(d, "sources", ()) or ():
            ids_of.setdefault(str(coll), set()).add(entity_id)
    collapsed = {c for c, ids in ids_of.items() if len(ids) > max_ids}

    def source_key(coll: str, entity_id: Any) -> str:
        return f"s:{coll}" if coll in collapsed else f"s:{coll}/{entity_id}"

    nodes: dict[str, tuple[int, str, str]] = {}
    for coll, ids in ids_of.items():
        if coll in collapsed:
            nodes[source_key(coll, None)] = (0, "source", f"{coll} ({len(ids)} ids)")
        else:
            for entity_id in ids:
                nodes[source_key(coll, entity_id)] = (0, "source", _source_label(coll, entity_id))
    edges: set[tuple[str, str]] = set()
    layer: dict[int, int] = {}

    def depth(d: Any, trail: frozenset[int] = frozenset()) -> int:
        if id(d) in layer:
            return layer[id(d)]
        if id(d) in trail:  # a cycle would be a bug upstream; do not recurse forever
            return 1
        parents = getattr(d, "parents", ()) or ()
        layer[id(d)] = 1 + max((depth(p, trail | {id(d)}) for p in parents), default=0)
        return layer[id(d)]

    for d in derived:
        key = f"d:{id(d)}"
        value = getattr(d, "value", None)
        label = f"{clip(str(getattr(d, 'name', '') or 'derived'), 24)}\n= {short(value, 24)}"
        nodes[key] = (depth(d), "derived", label)
        for coll, entity_id in getattr(d, "sources", ()) or ():
            edges.add((source_key(str(coll), entity_id), key))
        for p in getattr(d, "parents", ()) or ():
            edges.add((f"d:{id(p)}", key))
    return nodes, sorted(edges)


def dependency_graph(
    source: Any,
    *,
    max_ids: int = 5,
    ax: Axes | None = None,
    figsize: tuple[float, float] = (8.0, 5.0),
    dpi: int = DEFAULT_DPI,
) -> Figure:
    """Draw derived values, the derived values they read, and the entities they read.

    Args:
        source: a store (its live derived values) or an iterable of derived values (objects with
            ``.name``, ``.value``, ``.sources`` = {(collection, id)} and ``.parents``).
        max_ids: a collection with more ids read than this shows as one node.
        ax: draw into this axes instead of a new figure.
        figsize: size of a new figure in inches.
        dpi: pixels per inch of a new figure.

    Example:
        >>> double = store.derived(lambda: 2 * agents.count(), name="double")
        >>> dependency_graph(store).axes[0].get_title()  # also store.graph()
        'dependency graph: 1 derived values'
    """
    is_store = hasattr(source, "keyspace")
    values: Sequence[Any] = list(getattr(source, "derived_values", lambda: [])()) if is_store else list(source)
    nodes, edges = graph_layout(values, max_ids=max_ids)
    ax = _axes(ax, figsize, dpi)
    ax.set_axis_off()
    ax.set_title(f"dependency graph: {sum(1 for n in nodes.values() if n[1] == 'derived')} derived values")
    if not nodes:
        ax.text(0.5, 0.5, "no derived values yet", ha="center", va="center", transform=ax.transAxes, color="#888")
        return ax.figure  # type: ignore[return-value]
    layers: dict[int, list[str]] = {}
    for key, (lay, _kind, _label) in sorted(nodes.items(), key=lambda kv: (kv[1][0], kv[1][2])):
        layers.setdefault(lay, []).append(key)
    depth = max(layers) or 1
    pos: dict[str, tuple[float, float]] = {}
    preds: dict[str, list[str]] = {}
    for a, b in edges:
        preds.setdefault(b, []).append(a)
    for lay in sorted(layers):
        keys = layers[lay]
        if lay > 0:  # order by the mean height of what each node reads: fewer crossing arrows
            keys.sort(
                key=lambda k: -sum(pos[p][1] for p in preds.get(k, []) if p in pos) / max(1, len(preds.get(k, [])))
            )
        for i, key in enumerate(keys):
            pos[key] = (0.08 + 0.84 * lay / depth, 1 - (i + 1) / (len(keys) + 1))
    for a, b in edges:
        if a in pos and b in pos:
            ax.annotate(
                "",
                xy=pos[b],
                xytext=pos[a],
                xycoords="axes fraction",
                arrowprops={"arrowstyle": "-|>", "color": "#777", "shrinkA": 18, "shrinkB": 22, "lw": 1},
            )
    colors = {"source": "#dde8f6", "derived": "#fbe3c4"}
    for key, (x, y) in pos.items():
        _lay, kind, label = nodes[key]
        ax.text(
            x,
            y,
            label,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round,pad=0.4", "fc": colors[kind], "ec": "#888"},
        )
    return ax.figure  # type: ignore[return-value]
