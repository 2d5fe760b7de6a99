"""Queries on indexed fields: equality, ranges, ``any_of``, ordering and pages, served from the indexes.

``agents.where(load=rxstate.gt(2), status="busy").order_by("load", desc=True).limit(10)`` reads like
the question it asks: conditions are keyword arguments on the field they test (a plain value means
equality, ``gt``/``ge``/``lt``/``le``/``between`` a range, ``any_of`` membership), and ordering and
paging are methods of the result, so a query is built up the way one would say it. A ``Query`` is a
lazy sequence: it runs when first read (``len``, iteration, indexing, ``==``) and keeps its results;
``count()`` and ``ids()`` answer from the indexes alone, without reading any entity.

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

import json
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from rxstate.core.errors import ValidationError
from rxstate.core.model import Model
from rxstate.core.tracking import track, track_members
from rxstate.core.versioned import Versioned
from rxstate.store.twophase import settle_listed

if TYPE_CHECKING:
    from rxstate.store.collection import Collection

__all__ = ["AnyOf", "Query", "Range", "any_of", "between", "ge", "gt", "le", "lt", "read_partitions", "string_cover"]

M = TypeVar("M", bound=Model)
Kind = Literal["number", "string"]
Command = tuple[str, Callable[[int], str], tuple[Any, ...]]
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_PREFIX_CAP = 64  # characters of a string bound turned into index ranges (longer bounds: the rest is filtered)
_WHOLE = (b"-", b"+")


# -- conditions -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Range:
    """A range condition on a number or string field; build one with ``gt``, ``ge``, ``lt``, ``le``,
    ``between``, and combine two with ``&``.

    Example:
        >>> (ge(2) & lt(5)).test(4), between(1, 3).test(3), gt("m").test("a")
        (True, True, False)
    """

    low: Any = None
    high: Any = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def test(self, value: Any) -> bool:
        """Whether ``value`` lies in the range (``None`` never does)."""
        if value is None:
            return False
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        return self.high is None or value < self.high or (value == self.high and self.high_inclusive)

    def __and__(self, other: Range) -> Range:
        if not isinstance(other, Range):
            return NotImplemented
        low, low_inc = self.low, self.low_inclusive
        if other.low is not None and (low is None or other.low > low or (other.low == low and not other.low_inclusive)):
            low, low_inc = other.low, other.low_inclusive
        high, high_inc = self.high, self.high_inclusive
        if other.high is not None and (
            high is None or other.high < high or (other.high == high and not other.high_inclusive)
        ):
            high, high_inc = other.high, other.high_inclusive
        return Range(low, high, low_inc, high_inc)

    def __repr__(self) -> str:
        low = "" if self.low is None else f"{'[' if self.low_inclusive else '('}{self.low!r}"
        high = "" if self.high is None else f"{self.high!r}{']' if self.high_inclusive else ')'}"
        return f"Range({low}, {high})"


@dataclass(frozen=True, slots=True)
class AnyOf:
    """The condition that a field equals one of ``values``; build one with ``any_of``."""

    values: tuple[Any, ...]


def gt(value: Any) -> Range:
    """Greater than ``value``: ``agents.where(load=rxstate.gt(2))``.

    Example:
        >>> gt(2).test(3), gt(2).test(2)
        (True, False)
    """
    return Range(low=value, low_inclusive=False)


def ge(value: Any) -> Range:
    """Greater than or equal to ``value``.

    Example:
        >>> ge(2).test(2)
        True
    """
    return Range(low=value)


def lt(value: Any) -> Range:
    """Less than ``value``.

    Example:
        >>> lt("b").test("a")
        True
    """
    return Range(high=value, high_inclusive=False)


def le(value: Any) -> Range:
    """Less than or equal to ``value``.

    Example:
        >>> le(2).test(2.5)
        False
    """
    return Range(high=value)


def between(low: Any, high: Any) -> Range:
    """From ``low`` to ``high``, both included: ``agents.where(load=rxstate.between(2, 5))``.

    Example:
        >>> between(2, 5).test(5), between(2, 5).test(6)
        (True, False)
    """
    return Range(low=low, high=high)


def any_of(*values: Any) -> AnyOf:
    """Equal to one of ``values`` (SQL's ``IN``): ``agents.where(status=rxstate.any_of("idle", "busy"))``.

    Example:
        >>> any_of("idle", "busy").values
        ('idle', 'busy')
    """
    return AnyOf(tuple(values))


# -- index ranges ---------------------------------------------------------------------------------------
def _escaped(ch: str) -> bool:
    return ch < " " or ch in '"\\'


def _body(text: str) -> bytes:
    """The bytes of ``text`` inside its JSON quotes, as the codec stores them."""
    return _dumps(text)[1:-1].encode()


def _prefix(text: str, cap: int) -> str:
    """``text`` up to its first JSON-escaped character, at most ``cap`` characters."""
    for i, ch in enumerate(text[:cap]):
        if _escaped(ch):
            return text[:i]
    return text[:cap]


def string_cover(low: str | None, high: str | None) -> list[tuple[bytes, bytes]]:
    """Half-open byte ranges ``[start, stop)`` of index members that hold every string ``s`` with
    ``low <= s <= high`` (a bound of None is open), for JSON-encoded members ``"<s>"\\0<id>``.

    Escaped characters encode as ``\\`` followed by a letter, which sorts after some characters that
    are smaller than them; the closing quote sorts after a space and ``!``. Each such place in the
    upper bound adds one narrow range. The ranges may also hold non-matching members: callers filter.

    Example:
        >>> string_cover("b", "d")
        [(b'"b', b'"d\\xff')]
        >>> len(string_cover("A", "B"))  # strings starting with an escape sort after "B": one more range
        2
    """
    start = b'"' + _body(_prefix(low, len(low))) if low is not None else b'"'
    if high is None:
        ranges = [(start, b'"\xff')]
    else:
        top = _prefix(high, _PREFIX_CAP)
        ranges = [(start, b'"' + _body(top) + b"\xff")]
        for i, ch in enumerate(top):
            head = b'"' + _body(top[:i])
            if ch.encode()[0] < 0x5C:  # an escaped character here sorts after ``ch``
                ranges.append((head + b"\\", head + b"\\\xff"))
            if ch in " !":  # the string that ends here sorts after ``ch``
                ranges.append((head + b'"\x00', head + b'"\x01'))
    out: list[tuple[bytes, bytes]] = []
    for lo, hi in ranges:
        lo = max(lo, start)
        if lo < hi and (lo, hi) not in out:
            out.append((lo, hi))
    return out


def _number_cover(cond: Range) -> list[tuple[bytes, bytes]]:
    """The index ranges that can hold numbers in ``cond``: the non-negative half (members start with a
    digit), the negative half (``-``), or all."""
    low, high = cond.low, cond.high
    if low is not None and (low > 0 or (low == 0 and not cond.low_inclusive)):
        if high is not None and high < 0:
            return []
        return [(b"0", b":")]
    if high is not None and (high < 0 or (high == 0 and not cond.high_inclusive)):
        return [(b"-", b".")]
    return [_WHOLE]


def _lex(start: bytes, stop: bytes) -> tuple[bytes, bytes]:
    """``ZRANGEBYLEX`` bounds of the half-open ``[start, stop)`` (or the whole index)."""
    if (start, stop) == _WHOLE:
        return _WHOLE
    return b"[" + start, b"(" + stop


def read_partitions(coll: Collection[Any], commands: Sequence[Command]) -> list[list[Any]]:
    """Run ``commands`` (name, partition -> key, arguments) on every partition in one pipeline, after
    settling the transactions holding intents there; ``out[p][n]`` is command ``n``'s reply in ``p``."""
    store = coll._store
    ks = store.keyspace
    width = len(commands) + 1
    replies: list[Any] = []
    for _attempt in range(3):
        pipe = store.client.pipeline(transaction=False)
        for p in range(ks.partitions):
            for name, key_of, args in commands:
                pipe.execute_command(name, key_of(p), *args)
            pipe.hgetall(ks.tx_index(p))  # transactions with intents here: see twophase
        replies = pipe.execute()
        intents = replies[width - 1 :: width]
        if not any(intents) or not settle_listed(store, intents):
            break
    return [replies[p * width : p * width + width - 1] for p in range(ks.partitions)]


# -- field kinds -------------------------------------------------------------------------------------
def _kind_of(annotation: Any) -> Kind | None:
    """``"number"``, ``"string"`` or None: how a field's values can be ordered."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        kinds = {_kind_of(a) for a in typing.get_args(annotation) if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if origin is Literal:
        kinds = {_value_kind(v) for v in typing.get_args(annotation)}
        return kinds.pop() if len(kinds) == 1 else None
    if annotation in (int, float):
        return "number"
    if annotation is str:
        return "string"
    return None


def _value_kind(value: Any) -> Kind | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return "number" if math.isfinite(value) else None
    return "string" if isinstance(value, str) else None


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
        kind = _kind_of(coll.model.model_fields[field].annotation)
        if kind is None:
            raise ValidationError(
                f"{coll.model.__name__}.{field} holds neither numbers nor strings: it cannot be {what}", field=field
            )
        return kind

    def _check(self, field: str, cond: Any) -> None:
        coll = self._coll
        if isinstance(cond, Range):
            kind = self._field_kind(field, "compared with a range")
            for bound in (cond.low, cond.high):
                if bound is not None and _value_kind(bound) != kind:
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
            kind = self._field_kind(field, "compared with a range")
            cover = _number_cover(cond) if kind == "number" else string_cover(cond.low, cond.high)
            return [(("ZRANGEBYLEX", key_of, _lex(lo, hi)), _ranged(cond, kind)) for lo, hi in cover]
        exact = dict.fromkeys(_encoded(coll, field, cond))
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
            reads.append((-1, ("ZRANGEBYLEX", self._index_key(plan.order), _WHOLE), _orderable(kind)))
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
                    raw, _sep, entity_id = member.partition(b"\x00")
                    if test is None:
                        into[(entity_id.decode(), p)] = None
                        continue
                    value = test(raw)
                    if value is not _NO:
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


_NO: Any = object()


def _encoded(coll: Collection[Any], field: str, cond: Any) -> list[bytes]:
    """The stored form of an equality or ``any_of`` condition's values (validated against the field)."""
    values = cond.values if isinstance(cond, AnyOf) else (cond,)
    return [coll._codec.encode_fields({field: v})[0][1] for v in values]


def _orderable(kind: Kind) -> Callable[[bytes], Any]:
    """Decoder of an order field's members: the value, or None when it is not of the field's kind."""

    parse = _parser(kind)

    def decode(raw: bytes) -> Any:
        value = parse(raw)
        return value if _value_kind(value) == kind else None

    return decode


def _ranged(cond: Range, kind: Kind) -> Callable[[bytes], Any]:
    """Decoder-and-test of a range condition's members: the value when it is in range, else ``_NO``."""

    parse = _parser(kind)

    def test(raw: bytes) -> Any:
        value = parse(raw)
        return value if _value_kind(value) == kind and cond.test(value) else _NO

    return test


_decode_json = json.JSONDecoder().decode


def _number(raw: bytes) -> Any:
    """A member's number (``int``/``float`` parse stored JSON numbers exactly and fast); ``_NO`` otherwise."""
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        return _NO


def _text(raw: bytes) -> Any:
    """A member's JSON value from its text; ``_NO`` for text that is not JSON (a foreign write)."""
    try:
        return _decode_json(raw.decode())
    except ValueError:
        return _NO


def _parser(kind: Kind) -> Callable[[bytes], Any]:
    return _number if kind == "number" else _text
