"""Displayable views: a paged table of a collection, a change list, an event timeline."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rxstate.core.errors import ValidationError
from rxstate.core.redaction import change_line, format_ms, known_secret_names, redact_mapping, short

from ._html import changes_html, event_data, rows_html, timeline_html

if TYPE_CHECKING:
    from rxstate.store.collection import Collection
    from rxstate.store.store import Store

__all__ = ["ChangeList", "Table", "Timeline"]

DEFAULT_PAGE_SIZE = 20


class Table:
    """One page of a collection, ordered by id: id, version, actor, time, then the fields.

    Secret fields show redacted. Fetches only the rows of its page.

    Example:
        >>> _ = agents.put_many({f"a{i:02}": Agent(name=f"agent {i}") for i in range(42)})
        >>> Table(agents, page=2, page_size=10)
        <Table agents: rows 11-20 of 42, page 2/5>
        a10  v1  pid:...
        ...
    """

    def __init__(
        self,
        collection: Collection[Any],
        *,
        page: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
        fields: Sequence[str] | None = None,
    ) -> None:
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValidationError(f"page_size must be a positive int, not {page_size!r}")
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise ValidationError(f"page must be a positive int, not {page!r}")
        for name in fields or ():
            if name not in collection.model.model_fields:
                raise ValidationError(f"{collection.model.__name__} has no field {name!r}", field=name)
        routed = collection._routed_ids()
        self.collection = collection
        self.total = len(routed)
        self.page_size = page_size
        self.pages = max(1, math.ceil(self.total / page_size))
        self.page = min(page, self.pages)
        self.fields = list(fields) if fields is not None else None
        self.first = (self.page - 1) * page_size
        self.rows = collection._fetch_routed(routed[self.first : self.first + page_size])

    def _range(self) -> str:
        if not self.rows:
            return f"no rows (of {self.total})"
        return f"rows {self.first + 1}-{self.first + len(self.rows)} of {self.total}, page {self.page}/{self.pages}"

    def __repr__(self) -> str:
        lines = [f"<Table {self.collection.name}: {self._range()}>"]
        for v in self.rows[:10]:
            lines.append(f"  {v.id}  v{v.version}  {v.actor}  {format_ms(v.timestamp_ms)}  {short(v.value, 80)}")
        if len(self.rows) > 10:
            lines.append(f"  … {len(self.rows) - 10} more on this page")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        more = f" — next: table({self.collection.name}, page={self.page + 1})" if self.page < self.pages else ""
        caption = f"{self.collection.name} ({self.collection.model.__name__}): {self._range()}{more}"
        return rows_html(self.rows, self.collection.model, fields=self.fields, caption=caption)


class ChangeList(list[Any]):
    """A list of change records that displays as a table (classified field values redacted).

    Example:
        >>> from rxstate.notebook._changes import read_changes
        >>> _ = agents.put("a1", Agent(name="planner"))
        >>> ChangeList(read_changes(store), store=store)
        <ChangeList of 1>
        1...-0 agents/a1 create v1 by pid:... at 20...: name='planner', status='idle', load=0, skills=[]
    """

    def __init__(self, changes: Iterable[Any] = (), *, store: Store | None = None) -> None:
        super().__init__(changes)
        self.store = store

    def __repr__(self) -> str:
        secrets = None
        if self.store is not None:
            from ._changes import secrets_by_collection

            secrets = set().union(*secrets_by_collection(self.store).values(), known_secret_names())
        lines = [f"<ChangeList of {len(self)}>", *(f"  {change_line(ch, secrets)}" for ch in self[-20:])]
        if len(self) > 20:
            lines.insert(1, f"  … {len(self) - 20} earlier")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        secrets_of = None
        if self.store is not None:
            from ._changes import secrets_by_collection

            secrets_of = secrets_by_collection(self.store)
        return changes_html(list(self), secrets_of=secrets_of, caption=f"{len(self)} changes")


class Timeline(list[Any]):
    """An event history that displays as a timeline (classified data redacted).

    Example:
        >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
        >>> Timeline(orders.history("o1"))
        <Timeline of 2 events>
        v1 20... Placed by pid:...: {'sku': 'apple', 'qty': 1}
        v2 20... Paid by pid:...: {'amount_cents': 250}
    """

    def __init__(self, events: Iterable[Any] = (), *, secrets: Iterable[str] | None = None) -> None:
        super().__init__(events)
        self.secrets = None if secrets is None else frozenset(secrets)

    def __repr__(self) -> str:
        lines = [f"<Timeline of {len(self)} events>"]
        for ev in self[-20:]:
            data, secrets = event_data(ev, self.secrets)
            lines.append(
                f"  v{getattr(ev, 'version', '?')} {format_ms(getattr(ev, 'timestamp_ms', None))} "
                f"{getattr(ev, 'type', '?')} by {getattr(ev, 'actor', '?')}: "
                f"{short(redact_mapping(data, secrets), 120)}"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return timeline_html(list(self), secrets=self.secrets, caption=f"{len(self)} events")
