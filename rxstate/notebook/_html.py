"""HTML of state values for notebooks: models, versioned values, tables, change lists, timelines.

Every piece of user data goes through ``html.escape`` (a ``<script>`` value shows as text) and
through the secret rules of ``_text`` (classified values never appear in clear). Only the standard
library is used, so the core's ``_repr_html_`` methods can call in here cheaply.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rxstate.core.model import Model
from rxstate.core.redaction import (
    REDACTED,
    clip,
    event_data,
    format_ms,
    is_secret,
    known_secret_names,
    model_fields,
    short,
)
from rxstate.core.versioned import Versioned

__all__ = [
    "changes_html",
    "derived_html",
    "event_data",
    "looks_like_change",
    "looks_like_event",
    "model_html",
    "rows_html",
    "timeline_html",
    "value_html",
    "versioned_html",
    "why_html",
]

_STYLE = (
    "<style>"
    ".rxs{font-family:var(--jp-content-font-family,system-ui,sans-serif);font-size:13px}"
    ".rxs table{border-collapse:collapse;margin:2px 0}"
    ".rxs th,.rxs td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}"
    ".rxs th{background:#f3f3f3;font-weight:600}"
    ".rxs .rxs-meta{color:#666;font-size:12px}"
    ".rxs .rxs-secret{color:#999;font-style:italic}"
    ".rxs .rxs-op{font-weight:600}"
    ".rxs ol.rxs-tl{list-style:none;border-left:3px solid #8ab;margin:4px 0 4px 6px;padding-left:12px}"
    ".rxs ol.rxs-tl li{margin:0 0 6px 0}"
    "</style>"
)
_SECRET = f'<span class="rxs-secret" title="classified: redacted">{REDACTED}</span>'


def esc(value: Any) -> str:
    """Escaped text of a string (or of ``str(value)``)."""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def cell(name: str, value: Any, secrets: Iterable[str] = ()) -> str:
    """The escaped, redacted, clipped text of one field value."""
    if value is not None and is_secret(name, value, secrets):
        return _SECRET
    if isinstance(value, str):  # shown without quotes
        return esc(clip(value, note=f"{len(value)} chars"))
    return esc(short(value))


def _wrap(body: str) -> str:
    return f'{_STYLE}<div class="rxs">{body}</div>'


def _fields_table(model: Model) -> str:
    secrets = type(model).__rxstate_secrets__
    rows = "".join(
        f"<tr><th>{esc(name)}</th><td>{cell(name, value, secrets)}</td></tr>" for name, value in model_fields(model)
    )
    return f"<table>{rows}</table>"


def model_html(model: Model) -> str:
    """HTML of one model: its class, schema version and fields (secrets redacted).

    Example:
        >>> "&lt;script&gt;" in model_html(Agent(name="<script>"))
        True
    """
    head = f'<div class="rxs-meta">{esc(type(model).__name__)} (schema v{type(model).__version__})</div>'
    return _wrap(head + _fields_table(model))


def _meta_line(v: Versioned[Any]) -> str:
    return (
        f'<div class="rxs-meta"><b>{esc(v.id)}</b> · version {v.version} · schema v{v.schema_version} · '
        f"by {esc(v.actor)} · {esc(format_ms(v.timestamp_ms))} UTC · offset {esc(v.offset)}</div>"
    )


def versioned_html(v: Versioned[Any]) -> str:
    """HTML of a stored value with its version, writer, time and change offset.

    Example:
        >>> page = versioned_html(agents.put("a1", Agent(name="planner")))
        >>> "version 1" in page and "<td>planner</td>" in page
        True
    """
    value = v.value
    body = _fields_table(value) if isinstance(value, Model) else f"<pre>{esc(short(value, 400))}</pre>"
    return _wrap(_meta_line(v) + body)


def rows_html(
    rows: Sequence[Versioned[Any] | Model],
    model: type[Model] | None,
    *,
    fields: Sequence[str] | None = None,
    caption: str = "",
) -> str:
    """A table of entities: id, version, actor and time columns, then one column per field.

    Args:
        rows: versioned values (or bare models) to show, in order.
        model: their model class (taken from the first row when None).
        fields: the fields to show (default: every field the model shows in its repr).
        caption: text above the table (escaped).
    """
    if model is None and rows:
        first = rows[0]
        model = type(first.value if isinstance(first, Versioned) else first)
    names = list(fields) if fields is not None else _shown_fields(model)
    secrets = model.__rxstate_secrets__ if model is not None and issubclass(model, Model) else {}
    meta_cols = any(isinstance(r, Versioned) for r in rows)
    head = ("<th>id</th><th>version</th><th>actor</th><th>updated (UTC)</th>" if meta_cols else "") + "".join(
        f"<th>{esc(n)}</th>" for n in names
    )
    body = []
    for row in rows:
        value = row.value if isinstance(row, Versioned) else row
        meta = (
            f"<td>{esc(row.id)}</td><td>{row.version}</td><td>{esc(row.actor)}</td>"
            f"<td>{esc(format_ms(row.timestamp_ms))}</td>"
            if isinstance(row, Versioned)
            else ("<td></td>" * 4 if meta_cols else "")
        )
        cells = "".join(f"<td>{cell(n, getattr(value, n, None), secrets)}</td>" for n in names)
        body.append(f"<tr>{meta}{cells}</tr>")
    cap = f'<div class="rxs-meta">{esc(caption)}</div>' if caption else ""
    return _wrap(f"{cap}<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _shown_fields(model: type[Model] | None) -> list[str]:
    if model is None or not issubclass(model, Model):
        return []
    return [n for n, info in model.model_fields.items() if info.repr]


def _data_cells(data: Mapping[str, Any], secrets: Iterable[str]) -> str:
    return "<br>".join(f"<b>{esc(k)}</b>={cell(k, v, secrets)}" for k, v in data.items())


def changes_html(
    changes: Sequence[Any], *, secrets_of: Mapping[str, Iterable[str]] | None = None, caption: str = ""
) -> str:
    """A table of change records (``rxstate.Change`` or ``ChangeRecord``: collection, id, op, version,
    fields, actor, timestamp_ms, offset, and txid when part of a transaction).

    Args:
        changes: the changes, in the order to show.
        secrets_of: secret field names by collection; fields of other collections are redacted when
            any loaded model classifies their name as secret.
        caption: text above the table (escaped).
    """
    fallback = known_secret_names()
    known = secrets_of or {}
    with_tx = any(getattr(ch, "txid", "") for ch in changes)
    rows = []
    for ch in changes:
        secrets = set(known.get(getattr(ch, "collection", ""), ())) | fallback
        txid = getattr(ch, "txid", "") or ""
        tx = f'<td title="{esc(txid)}">{esc(txid[:8])}</td>' if with_tx else ""
        rows.append(
            f"<tr><td>{esc(getattr(ch, 'offset', ''))}</td><td>{esc(format_ms(getattr(ch, 'timestamp_ms', None)))}</td>"
            f"<td>{esc(getattr(ch, 'collection', ''))}</td><td>{esc(getattr(ch, 'id', ''))}</td>"
            f'<td class="rxs-op">{esc(getattr(ch, "op", ""))}</td><td>{esc(getattr(ch, "version", ""))}</td>'
            f"<td>{esc(getattr(ch, 'actor', ''))}</td>{tx}"
            f"<td>{_data_cells(getattr(ch, 'fields', None) or {}, secrets)}</td></tr>"
        )
    titles = ["offset", "time (UTC)", "collection", "id", "op", "version", "actor"]
    titles += ["transaction"] if with_tx else []
    head = "".join(f"<th>{h}</th>" for h in (*titles, "fields"))
    cap = f'<div class="rxs-meta">{esc(caption)}</div>' if caption else ""
    return _wrap(f"{cap}<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def timeline_html(events: Sequence[Any], *, secrets: Iterable[str] | None = None, caption: str = "") -> str:
    """A vertical timeline of events (``RecordedEvent``s, or objects with type, version, actor,
    timestamp_ms, causation_id and a ``data`` mapping).

    Args:
        events: the history, oldest first.
        secrets: data keys classified secret, besides the secret fields of each event's own model
            (default: every name any loaded model classifies).
        caption: text above the timeline (escaped).
    """
    items = []
    for ev in events:
        data, names = event_data(ev, secrets)
        cause = getattr(ev, "causation_id", None)
        because = f" · caused by {esc(cause)}" if cause else ""
        aggregate = getattr(ev, "aggregate_id", None)
        where = f"{esc(getattr(ev, 'collection', ''))}/{esc(aggregate)} " if aggregate is not None else ""
        items.append(
            f'<li><div class="rxs-meta">{where}v{esc(getattr(ev, "version", ""))} · '
            f"{esc(format_ms(getattr(ev, 'timestamp_ms', None)))} UTC · "
            f"by {esc(getattr(ev, 'actor', ''))}{because}</div>"
            f'<div><span class="rxs-op">{esc(getattr(ev, "type", ""))}</span> '
            f"{_data_cells(data, names)}</div></li>"
        )
    cap = f'<div class="rxs-meta">{esc(caption)}</div>' if caption else ""
    return _wrap(f'{cap}<ol class="rxs-tl">{"".join(items)}</ol>')


def why_html(why: Any) -> str:
    """HTML of ``EventCollection.why``: the field's value, then each event that changed it with its causes.

    Example:
        >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
        >>> page = why_html(orders.why("o1", "status"))
        >>> page.count("<tr><td>v"), "placed → paid" in page
        (2, True)
    """
    secrets = known_secret_names()
    name = str(why.field)
    rows = []
    for change in why.changes:
        ev = change.event
        causes = " ← ".join(
            esc(c) if isinstance(c, str) else esc(f"{c.collection}/{c.aggregate_id} v{c.version} {c.type}")
            for c in change.causes
        )
        rows.append(
            f"<tr><td>v{esc(ev.version)}</td><td>{esc(format_ms(ev.timestamp_ms))}</td>"
            f'<td class="rxs-op">{esc(ev.type)}</td><td>{esc(ev.actor)}</td>'
            f"<td>{cell(name, change.before, secrets)} → {cell(name, change.after, secrets)}</td>"
            f"<td>{causes or '—'}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("event", "time (UTC)", "type", "actor", "change", "caused by"))
    meta = (
        f'<div class="rxs-meta"><b>{esc(name)}</b> = {cell(name, why.value, secrets)} '
        f"({esc(why.collection)}/{esc(why.aggregate_id)}): {len(why.changes)} change(s)</div>"
    )
    return _wrap(f"{meta}<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


_SOURCES_SHOWN = 12


def derived_html(derived: Any) -> str:
    """HTML of a derived value: its name, current value (or error), sources and parents.

    Example:
        >>> page = derived_html(store.derived(lambda: agents.count(), name="agents"))
        >>> "<pre>0</pre>" in page and "agents (ids)" in page
        True
    """
    try:
        shown = value_html(derived.value)
    except Exception as exc:  # the last computation failed: show the error, not the traceback
        shown = f'<pre class="rxs-secret">{esc(type(exc).__name__)}: {esc(clip(str(exc), 200))}</pre>'
    read = sorted(getattr(derived, "sources", ()), key=lambda s: (s[1] != "*", s))
    sources = ", ".join(esc(f"{c}/{i}" if i != "*" else f"{c} (ids)") for c, i in read[:_SOURCES_SHOWN])
    if len(read) > _SOURCES_SHOWN:
        sources += f" … ({len(read)} in all)"
    parents = ", ".join(esc(p.name) for p in sorted(getattr(derived, "parents", ()), key=lambda p: str(p.name)))
    head = (
        f'<div class="rxs-meta">derived <b>{esc(derived.name)}</b> · computed '
        f"{esc(getattr(derived, 'computations', '?'))} time(s)</div>"
    )
    rows = f"<tr><th>sources</th><td>{sources or '—'}</td></tr><tr><th>parents</th><td>{parents or '—'}</td></tr>"
    return _wrap(f"{head}{shown}<table>{rows}</table>")


def looks_like_change(obj: Any) -> bool:
    """Whether ``obj`` has the attributes of a change record (``rxstate.Change``, ``ChangeRecord``)."""
    return all(hasattr(obj, a) for a in ("collection", "op", "offset", "fields"))


def looks_like_event(obj: Any) -> bool:
    """Whether ``obj`` has the attributes of an event (``RecordedEvent``, or one with a ``data`` mapping)."""
    return hasattr(obj, "type") and hasattr(obj, "causation_id") and (hasattr(obj, "event") or hasattr(obj, "data"))


def value_html(value: Any) -> str:
    """HTML of any value a view may show: a model, a versioned value, a list of them, changes, events.

    A mapping shows as a key/value table (keys any loaded model classifies as secret are redacted);
    anything else shows as its short, escaped ``repr``.

    Example:
        >>> "<pre>3</pre>" in value_html(3)
        True
    """
    if isinstance(value, Versioned):
        return versioned_html(value)
    if isinstance(value, Model):
        return model_html(value)
    if isinstance(value, Mapping) and value and all(isinstance(v, Model | Versioned) for v in value.values()):
        value = list(value.values())
    if isinstance(value, list | tuple) and value:
        if all(isinstance(v, Versioned | Model) for v in value):
            return rows_html(value, None, caption=f"{len(value)} entities")
        if all(looks_like_change(v) for v in value):
            return changes_html(value, caption=f"{len(value)} changes")
        if all(looks_like_event(v) for v in value):
            return timeline_html(value, caption=f"{len(value)} events")
    if isinstance(value, Mapping) and value and all(isinstance(k, str) for k in value):
        secrets = known_secret_names()  # an unknown shape: hide any name a model classifies
        rows = "".join(f"<tr><th>{esc(k)}</th><td>{cell(k, v, secrets)}</td></tr>" for k, v in value.items())
        return _wrap(f"<table>{rows}</table>")
    if looks_like_change(value):
        return changes_html([value])
    if looks_like_event(value):
        return timeline_html([value])
    return _wrap(f"<pre>{esc(short(value, 400))}</pre>")
