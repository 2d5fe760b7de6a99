"""Queries on indexed fields: equality, ranges, ``any_of``, ordering and pages, served from the indexes.

``agents.where(load=rxstate.gt(2), status="busy").order_by("load", desc=True).limit(10)`` reads like
the question it asks: conditions are keyword arguments on the field they test (a plain value means
equality, ``gt``/``ge``/``lt``/``le``/``between`` a range, ``any_of`` membership), and ordering and
paging are methods of the result, so a query is built up the way one would say it. It keeps the
existing ``where(status="busy")`` working unchanged, and every condition is a plain value, so a typo
in a field name or a bound of the wrong type fails at once with ``ValidationError`` naming the field.
Operators spelled into names (``load__gt=2``) would hide field names and typos in strings; operator
overloading on field proxies (``F.load > 2``) would need a second way to name fields. (``any_of`` is
not ``one_of``, which names the integrity constraint.) A ``Query`` is a lazy sequence: it runs when
first read (``len``, iteration, indexing, ``==``) and keeps its results; ``count()`` and ``ids()``
answer from the indexes alone, without reading any entity.

How a query is served. A secondary index is a zset per partition, score 0, members
``<value as JSON>\\0<id>`` in lexicographic order. The query reads, in one pipelined round trip over
every partition, the index members that can match each condition, decodes their values and keeps
those that do match; it intersects the conditions' id sets, orders and pages the survivors, and only
then fetches the entities of the page (checking each against the conditions again, since an entity
may have changed after its index entry was read). No entity outside the page is read.

* Equality and ``any_of``: one exact lexicographic range per value — only matching members are read.
* String ranges: JSON text sorts like the string it encodes, except around escaped characters
  (``"``, ``\\``, control characters) and the closing quote; ``string_cover`` gives a few
  ``ZRANGEBYLEX`` ranges that are sure to hold every match, usually little more than the matches.
* Number ranges: JSON numbers do not sort by value as text (``"10" < "9"``), and the members'
  encoding is the write script's, so the query reads the field's whole index (only its
  non-negative or negative half when a bound allows) and compares decoded values: it costs
  O(entities in the index) member reads and decodes, but no entity reads.
* ``order_by`` a field needs that field's values: from its range condition when it has one, else
  from its whole index. ``None`` values sort last either way; ties are broken by id.
* ``count()`` reaps expired entities first, like ``Collection.count``; with no concurrent writes it
  equals ``len(query)`` without ``limit``/``offset``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from rxstate.core import display
from rxstate.core.errors import ValidationError
from rxstate.core.model import Model
from rxstate.core.tracking import track, track_members
from rxstate.core.versioned import Versioned
from rxstate.store.conditions import (
    NO_MATCH,
    WHOLE_INDEX,
    AnyOf,
    Kind,
    Range,
    kind_of,
    lex_bounds,
    number_cover,
    order_decoder,
    range_decoder,
    string_cover,
    value_kind,
)
from rxstate.store.twophase import settle_listed

if TYPE_CHECKING:
    from rxstate.store.collection_reads import CollectionReads as Collection

__all__ = ["Query", "read_partitions"]

M = TypeVar("M", bound=Model)
Command = tuple[str, Callable[[int], str], tuple[Any, ...]]


def read_partitions(coll: Collection[Any], commands: Sequence[Command]) -> list[list[Any]]:
    """Run ``commands`` (name, partition -> key, arguments) on every partition in one pipeline, after
    settling the transactions holding intents there; ``out[p][n]`` is command ``n``'s reply in ``p``.
    A store reading from replicas sends the pipeline to one (``rxstate.store.replica_reads``)."""
    coll._authorize("read", whole=True)  # ids, counts and index scans read the collection as a whole
    store = coll._store
    ks = store.keyspace
    width = len(commands) + 1
    replies: list[Any] = []

    def queue(pipe: Any) -> None:
        for p in range(ks.partitions):
            for name, key_of, args in commands:
                pipe.execute_command(name, key_of(p), *args)
            pipe.hgetall(ks.tx_index(p))  # transactions with intents here: see twophase

    router = store.replica_reads
    for _attempt in range(3):
        if router is None:
            pipe = store.client.pipeline(transaction=False)
            queue(pipe)
            replies = pipe.execute()
        else:
            replies = router.execute([ks.tx_index(p) for p in range(ks.partitions)], queue)
        intents = replies[width - 1 :: width]
        if not any(intents) or not settle_listed(store, intents):
            break
    return [replies[p * width : p * width + width - 1] for p in range(ks.partitions)]


# -- the query ---------------------------------------------------------------------------------------
Pair = tuple[str, int]  # (id, partition)


@dataclass(frozen=True, slots=True)
class _Plan:
    conditions: tuple[tuple[str, Any], ...]
    order: str | None = None
    desc: bool = False
    skip: int = 0
    take: int | None = None


class Query(Generic[M]):
    """Entities of a collection matching conditions on indexed fields, ordered and paged.

    Build one with ``collection.where(...)`` (or ``collection.order_by``/``all``), refine it with
    ``order_by``, ``limit`` and ``offset`` (each returns a new query), and read it like a list. It runs
    when first read and keeps its results.

    Example:
        >>> busiest = agents.where(status="busy").order_by("load", desc=True).limit(3)  # doctest: +SKIP
        >>> [a.name for a in busiest], agents.where(load=rxstate.gt(2)).count()  # doctest: +SKIP
        (['coder', 'planner'], 2)
    """

    def __init__(self, coll: Collection[M], conditions: Mapping[str, Any], plan: _Plan | None = None) -> None:
        self._coll = coll
        if plan is None:
            plan = _Plan(tuple(conditions.items()))
            for field, cond in plan.conditions:
                self._check(field, cond)
        self._plan = plan
        # What the result depends on, recorded now: a query built inside a derived value counts as read.
        track_members(coll.name, [f for f, _c in plan.conditions] + ([plan.order] if plan.order else []))

    def _replan(self, **changes: Any) -> Query[M]:
        p = self._plan
        fields = {"conditions": p.conditions, "order": p.order, "desc": p.desc, "skip": p.skip, "take": p.take}
        return Query(self._coll, {}, _Plan(**{**fields, **changes}))

    # -- validation ----------------------------------------------------------------------------------
    def _field_kind(self, field: str, what: str) -> Kind:
        coll = self._coll
        if field not in coll.indexes:
            raise ValidationError(
                f"{coll.name}.{field} has no index (declared: {', '.join(coll.indexes) or 'none'})", field=field
            )
        kind = kind_of(coll.model.model_fields[field].annotation)
        if kind is None:
            raise ValidationError(
                f"{coll.model.__name__}.{field} holds neither numbers nor strings: it cannot be {what}", field=field
            )
        return kind

    def _check(self, field: str, cond: Any) -> None:
        coll = self._coll
        if isinstance(cond, Range):
            if field in coll.model.__rxstate_secrets__:
                raise ValidationError(
                    f"{coll.name}.{field} is encrypted at rest: only equality can be searched on it", field=field
                )
            kind = self._field_kind(field, "compared with a range")
            for bound in (cond.low, cond.high):
                if bound is not None and value_kind(bound) != kind:
                    raise ValidationError(
                        f"{coll.model.__name__}.{field} holds {kind}s: a range bound of {bound!r} does not compare",
                        field=field,
                    )
            return
        if field not in coll.indexes:
            self._field_kind(field, "queried")  # raises: no index
        _encoded(coll, field, cond)  # each value must fit the field: the clearest error

    # -- refining ------------------------------------------------------------------------------------
    def order_by(self, field: str, *, desc: bool = False) -> Query[M]:
        """This query ordered by an indexed number or string field (or ``"id"``), ``None`` values last.

        Raises:
            ValidationError: the field has no index, or its values do not order.

        Example:
            >>> agents.where(status="busy").order_by("load", desc=True)  # doctest: +SKIP
        """
        if not isinstance(desc, bool):
            raise ValidationError(f"desc must be True or False, not {desc!r}", field="desc")
        if field != "id":
            self._field_kind(field, "ordered by")
        return self._replan(order=None if field == "id" else field, desc=desc)

    def limit(self, n: int | None) -> Query[M]:
        """At most ``n`` entities (None: no limit).

        Example:
            >>> agents.where(status="busy").limit(10)  # doctest: +SKIP
        """
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValidationError(f"limit must be a non-negative int or None, not {n!r}", field="limit")
        return self._replan(take=n)

    def offset(self, n: int) -> Query[M]:
        """Skip the first ``n`` entities (of the ordered result).

        Example:
            >>> agents.order_by("load").offset(20).limit(10)  # doctest: +SKIP
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValidationError(f"offset must be a non-negative int, not {n!r}", field="offset")
        return self._replan(skip=n)

    # -- reading the indexes ---------------------------------------------------------------------------
    def _commands(self, field: str, cond: Any) -> list[tuple[Command, Callable[[bytes], Any] | None]]:
        """Index reads for one condition, each with the decoder-and-test of its members' values (None:
        every member read matches)."""
        coll = self._coll
        key_of = self._index_key(field)
        if isinstance(cond, Range):
            if field in coll.model.__rxstate_secrets__:
                raise ValidationError(
                    f"{coll.name}.{field} is encrypted at rest: only equality can be searched on it", field=field
                )
            kind = self._field_kind(field, "compared with a range")
            cover = number_cover(cond) if kind == "number" else string_cover(cond.low, cond.high)
            return [(("ZRANGEBYLEX", key_of, lex_bounds(lo, hi)), range_decoder(cond, kind)) for lo, hi in cover]
        # a searchable secret field's index holds its ciphertexts: one term per data key in use
        exact = dict.fromkeys(t for v in _encoded(coll, field, cond) for t in coll._codec.index_terms(field, v))
        return [(("ZRANGEBYLEX", key_of, (b"[" + v + b"\x00", b"(" + v + b"\x01")), None) for v in exact]

    def _index_key(self, field: str) -> Callable[[int], str]:
        name, ks = self._coll.name, self._coll._ks
        return lambda p: ks.index(name, field, p)

    @cached_property
    def _candidates(self) -> tuple[list[Pair], dict[Pair, Any]]:
        """Matching (id, partition) pairs by the indexes, and the order field's value of each."""
        coll, plan = self._coll, self._plan
        reads: list[tuple[int, Command, Callable[[bytes], Any] | None]] = []
        for n, (field, cond) in enumerate(plan.conditions):
            reads += [(n, cmd, test) for cmd, test in self._commands(field, cond)]
        order_cond = next((c for f, c in plan.conditions if f == plan.order and isinstance(c, Range)), None)
        ordering = plan.order is not None and order_cond is None
        if ordering:
            assert plan.order is not None
            kind = self._field_kind(plan.order, "ordered by")
            reads.append((-1, ("ZRANGEBYLEX", self._index_key(plan.order), WHOLE_INDEX), order_decoder(kind)))
        if not plan.conditions:
            ks = coll._ks
            reads.append((-2, ("SMEMBERS", lambda p: ks.ids(coll.name, p), ()), None))
        replies = read_partitions(coll, [cmd for _n, cmd, _t in reads])
        found: dict[int, dict[Pair, Any]] = {}
        for p, per_command in enumerate(replies):
            for (n, _cmd, test), members in zip(reads, per_command, strict=True):
                into = found.setdefault(n, {})
                for member in members:
                    if n == -2:
                        into[(member.decode(), p)] = None
                        continue
                    raw, _sep, entity_id = member.rpartition(b"\x00")  # ids hold no NUL; a ciphertext may
                    if test is None:
                        into[(entity_id.decode(), p)] = None
                        continue
                    value = test(raw)
                    if value is not NO_MATCH:
                        into[(entity_id.decode(), p)] = value
        sets = [found.get(n, {}) for n in range(len(plan.conditions))] or [found.get(-2, {})]
        sets.sort(key=len)
        matched = set(sets[0]).intersection(*sets[1:])
        if plan.order is None:
            values: dict[Pair, Any] = {}
        elif ordering:
            values = found.get(-1, {})
        else:
            values = found.get(next(n for n, (f, _c) in enumerate(plan.conditions) if f == plan.order), {})
        return sorted(matched), values

    def _ordered(self) -> list[Pair]:
        pairs, values = self._candidates
        plan = self._plan
        if plan.order is not None:
            present = [pr for pr in pairs if values.get(pr) is not None]
            absent = [pr for pr in pairs if values.get(pr) is None]
            present.sort(key=values.__getitem__, reverse=plan.desc)  # stable: ties stay ordered by id
            pairs = present + absent
        elif plan.desc:
            pairs = pairs[::-1]
        stop = None if plan.take is None else plan.skip + plan.take
        return pairs[plan.skip : stop]

    # -- results -------------------------------------------------------------------------------------
    def matches(self, value: M) -> bool:
        """Whether an entity's value meets every condition (what the indexes selected it by)."""
        for field, cond in self._plan.conditions:
            current = getattr(value, field)
            if isinstance(cond, Range):
                if not cond.test(current):
                    return False
            elif current not in self._wanted[field]:
                return False
        return True

    @cached_property
    def _wanted(self) -> dict[str, list[Any]]:
        """Equality and ``any_of`` values as the model reads them back (validated, coerced)."""
        coll = self._coll
        return {
            field: [coll._codec.decode_value(field, raw) for raw in _encoded(coll, field, cond)]
            for field, cond in self._plan.conditions
            if not isinstance(cond, Range)
        }

    @cached_property
    def _results(self) -> list[Versioned[M]]:
        page = self._ordered()
        name = self._coll.name
        for entity_id, _p in page:
            track(name, entity_id)
        # Checked again on the fetched value: it may have changed between the index read and the fetch.
        return [v for v in self._coll._fetch_routed(page) if self.matches(v.value)]

    def versioned(self) -> list[Versioned[M]]:
        """The results with their versions and metadata.

        Example:
            >>> [v.version for v in agents.where(status="busy").versioned()]  # doctest: +SKIP
            [3, 1]
        """
        return list(self._results)

    def ids(self) -> list[str]:
        """The ids the indexes select, ordered and paged, without reading any entity.

        Example:
            >>> agents.where(load=rxstate.ge(5)).order_by("load").ids()  # doctest: +SKIP
            ['a2', 'a7']
        """
        return [entity_id for entity_id, _p in self._ordered()]

    def count(self) -> int:
        """How many entities match the conditions (ignoring ``limit``/``offset``), from the indexes
        alone; expired entities are reaped first.

        Example:
            >>> agents.where(load=rxstate.gt(2)).count()  # doctest: +SKIP
            4
        """
        self._coll.reap()
        unordered: Query[M] = self._replan(order=None, desc=False, skip=0, take=None)  # and read afresh
        return len(unordered._candidates[0])

    def first(self) -> M | None:
        """The first result, or None.

        Example:
            >>> agents.order_by("load", desc=True).first()  # doctest: +SKIP
        """
        results = self.limit(1)._results if self._plan.take is None else self._results[:1]
        return results[0].value if results else None

    def __len__(self) -> int:
        return len(self._results)

    @overload
    def __getitem__(self, index: int) -> M: ...
    @overload
    def __getitem__(self, index: slice) -> list[M]: ...

    def __getitem__(self, index: int | slice) -> M | list[M]:
        if isinstance(index, slice):
            return [v.value for v in self._results[index]]
        return self._results[index].value

    def __iter__(self) -> Iterator[M]:
        return (v.value for v in self._results)

    def __contains__(self, value: object) -> bool:
        return any(v.value == value for v in self._results)

    def __bool__(self) -> bool:
        return bool(self._results)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Query):
            return list(self) == list(other)
        if isinstance(other, list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def _repr_html_(self) -> str:
        return display.html(self)

    def __repr__(self) -> str:
        plan = self._plan
        parts = [f"{f}={c!r}" for f, c in plan.conditions]
        if plan.order:
            parts.append(f"order_by={plan.order!r}{' desc' if plan.desc else ''}")
        if plan.skip:
            parts.append(f"offset={plan.skip}")
        if plan.take is not None:
            parts.append(f"limit={plan.take}")
        return f"<Query {self._coll.name} {' '.join(parts) or 'all'}>"


def _encoded(coll: Collection[Any], field: str, cond: Any) -> list[bytes]:
    """The stored form of an equality or ``any_of`` condition's values (validated against the field)."""
    values = cond.values if isinstance(cond, AnyOf) else (cond,)
    return [coll._codec.encode_fields({field: v})[0][1] for v in values]
