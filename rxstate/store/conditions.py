"""Query conditions and how they map onto index members: ranges, ``any_of``, field kinds, lex ranges.

Pure: nothing here talks to a server. An index member is ``<value as JSON>\\0<id>`` (see
``rxstate.store.query`` for how a query uses these).
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "NO_MATCH",
    "WHOLE_INDEX",
    "AnyOf",
    "Kind",
    "Range",
    "any_of",
    "between",
    "ge",
    "gt",
    "kind_of",
    "le",
    "lex_bounds",
    "lt",
    "number_cover",
    "order_decoder",
    "range_decoder",
    "string_cover",
    "value_kind",
]

Kind = Literal["number", "string"]
NO_MATCH: Any = object()
"""What a member decoder returns for a member that does not match."""
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_PREFIX_CAP = 64  # characters of a string bound turned into index ranges (longer bounds: the rest is filtered)
WHOLE_INDEX = (b"-", b"+")
"""``ZRANGEBYLEX`` bounds of a whole index."""


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


def number_cover(cond: Range) -> list[tuple[bytes, bytes]]:
    """The index ranges that can hold numbers in ``cond``: the non-negative half (members start with a
    digit), the negative half (``-``), or all."""
    low, high = cond.low, cond.high
    if low is not None and (low > 0 or (low == 0 and not cond.low_inclusive)):
        if high is not None and high < 0:
            return []
        return [(b"0", b":")]
    if high is not None and (high < 0 or (high == 0 and not cond.high_inclusive)):
        return [(b"-", b".")]
    return [WHOLE_INDEX]


def lex_bounds(start: bytes, stop: bytes) -> tuple[bytes, bytes]:
    """``ZRANGEBYLEX`` bounds of the half-open ``[start, stop)`` (or the whole index)."""
    if (start, stop) == WHOLE_INDEX:
        return WHOLE_INDEX
    return b"[" + start, b"(" + stop


# -- field kinds -------------------------------------------------------------------------------------
def kind_of(annotation: Any) -> Kind | None:
    """``"number"``, ``"string"`` or None: how a field's values can be ordered."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        kinds = {kind_of(a) for a in typing.get_args(annotation) if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if origin is Literal:
        kinds = {value_kind(v) for v in typing.get_args(annotation)}
        return kinds.pop() if len(kinds) == 1 else None
    if annotation in (int, float):
        return "number"
    if annotation is str:
        return "string"
    return None


def value_kind(value: Any) -> Kind | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return "number" if math.isfinite(value) else None
    return "string" if isinstance(value, str) else None


def order_decoder(kind: Kind) -> Callable[[bytes], Any]:
    """Decoder of an order field's members: the value, or None when it is not of the field's kind."""

    parse = _parser(kind)

    def decode(raw: bytes) -> Any:
        value = parse(raw)
        return value if value_kind(value) == kind else None

    return decode


def range_decoder(cond: Range, kind: Kind) -> Callable[[bytes], Any]:
    """Decoder-and-test of a range condition's members: the value when it is in range, else ``NO_MATCH``."""

    parse = _parser(kind)

    def test(raw: bytes) -> Any:
        value = parse(raw)
        return value if value_kind(value) == kind and cond.test(value) else NO_MATCH

    return test


_decode_json = json.JSONDecoder().decode


def _number(raw: bytes) -> Any:
    """A member's number (``int``/``float`` parse stored JSON numbers exactly and fast); ``NO_MATCH`` otherwise."""
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        return NO_MATCH


def _text(raw: bytes) -> Any:
    """A member's JSON value from its text; ``NO_MATCH`` for text that is not JSON (a foreign write)."""
    try:
        return _decode_json(raw.decode())
    except ValueError:
        return NO_MATCH


def _parser(kind: Kind) -> Callable[[bytes], Any]:
    return _number if kind == "number" else _text
