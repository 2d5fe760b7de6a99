"""How a scope's value of a key combines with what it inherits: entries, merge policies, resolution.

Pure functions over a scope chain (the root first, the scope itself last), each scope given as its
path and its entries. A key resolves from the root down: each scope that sets it combines its entry
with the value inherited so far by the entry's merge policy (``replace``, the default; ``merge``, a
deep merge of dicts; ``append``, the inherited list followed by its own), and a ``final`` entry ends
the walk, so no scope below it changes the key.

Example:
    >>> chain = [("org", {"tags": Entry(["a"])}), ("org/t", {"tags": Entry(["b"], merge="append")})]
    >>> resolve_key(chain, "tags")
    ['a', 'b']
    >>> explain_key(chain, "tags").source
    'org/t'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rxstate.core.errors import ValidationError

__all__ = [
    "MERGES",
    "Chain",
    "Entry",
    "Explanation",
    "deep_merge",
    "explain_key",
    "final_above",
    "resolve_all",
    "resolve_key",
]

Merge = Literal["replace", "merge", "append"]
MERGES: tuple[str, ...] = ("replace", "merge", "append")
_MISSING: Any = object()


@dataclass(frozen=True)
class Entry:
    """A key's value as one scope sets it: the value, its merge policy and whether it is final.

    Example:
        >>> Entry.from_json(Entry({"a": 1}, merge="merge").to_json())
        Entry(value={'a': 1}, merge='merge', final=False)
    """

    value: Any
    merge: str = "replace"
    final: bool = False

    def __post_init__(self) -> None:
        if self.merge not in MERGES:
            raise ValidationError(f"merge must be one of {MERGES}, not {self.merge!r}", field="merge")
        if not isinstance(self.final, bool):
            raise ValidationError(f"final must be True or False, not {self.final!r}", field="final")
        if self.merge == "merge" and not isinstance(self.value, dict):
            raise ValidationError(f"merge='merge' needs a dict value, not {type(self.value).__name__}", field="merge")
        if self.merge == "append" and not isinstance(self.value, list):
            raise ValidationError(f"merge='append' needs a list value, not {type(self.value).__name__}", field="merge")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": self.value}
        if self.merge != "replace":
            out["m"] = self.merge
        if self.final:
            out["f"] = True
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Entry:
        return cls(raw["v"], raw.get("m", "replace"), bool(raw.get("f", False)))


Chain = Sequence[tuple[str, Mapping[str, Entry]]]
"""A scope chain: (path, entries) of each scope, the root first."""


def deep_merge(base: Any, over: Any) -> Any:
    """``over`` merged onto ``base``: dicts key by key, recursively; anything else ``over`` wins.

    Example:
        >>> deep_merge({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}, "b": 4})
        {'a': {'x': 1, 'y': 3}, 'b': 4}
    """
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if k in out else v
    return out


def _combine(inherited: Any, entry: Entry) -> Any:
    if inherited is _MISSING or entry.merge == "replace":
        return entry.value
    if entry.merge == "merge":
        return deep_merge(inherited, entry.value) if isinstance(inherited, dict) else entry.value
    return [*inherited, *entry.value] if isinstance(inherited, list) else list(entry.value)


@dataclass(frozen=True)
class Explanation:
    """Where a key's effective value comes from.

    Attributes:
        key: the key.
        found: whether any scope of the chain sets it.
        value: the effective value (None when not found).
        source: the nearest scope whose entry took part (None when not found).
        overrides: the scopes above ``source`` that also set the key, nearest first: their values
            were replaced, or merged under ``source`` 's (see ``merge``).
        contributors: every scope whose entry took part, root first (one, unless entries merge or append).
        merge: the merge policy of the source's entry.
        final_at: the scope whose final entry fixed the value (None: no final entry).
    """

    key: str
    found: bool
    value: Any = None
    source: str | None = None
    overrides: tuple[str, ...] = ()
    contributors: tuple[str, ...] = ()
    merge: str = "replace"
    final_at: str | None = None

    def __str__(self) -> str:
        if not self.found:
            return f"{self.key}: set by no scope"
        parts = [f"{self.key} = {self.value!r} from {self.source}"]
        if self.overrides:
            verb = {"replace": "overriding", "merge": "merged onto", "append": "appended to"}[self.merge]
            parts.append(f"{verb} {', '.join(self.overrides)}")
        if self.final_at:
            parts.append(f"final at {self.final_at}")
        return "; ".join(parts)


def explain_key(chain: Chain, key: str) -> Explanation:
    """The ``Explanation`` of ``key`` in ``chain`` (see the module docstring)."""
    value: Any = _MISSING
    contributors: list[str] = []
    setters: list[str] = []
    merge, final_at = "replace", None
    for path, entries in chain:
        entry = entries.get(key)
        if entry is None:
            continue
        setters.append(path)
        if entry.merge == "replace" or value is _MISSING:
            contributors = []
        value = _combine(value, entry)
        contributors.append(path)
        merge = entry.merge
        if entry.final:
            final_at = path
            break
    if value is _MISSING:
        return Explanation(key, False)
    source = contributors[-1]
    overrides = tuple(reversed(setters[: setters.index(source)]))
    return Explanation(key, True, value, source, overrides, tuple(contributors), merge, final_at)


def resolve_key(chain: Chain, key: str, default: Any = None) -> Any:
    """The effective value of ``key`` (``default`` when no scope sets it)."""
    found = explain_key(chain, key)
    return found.value if found.found else default


def resolve_all(chain: Chain) -> dict[str, Any]:
    """The merged view: every key some scope of the chain sets, with its effective value.

    Example:
        >>> resolve_all([("a", {"x": Entry(1), "y": Entry(2, final=True)}), ("a/b", {"x": Entry(3), "y": Entry(4)})])
        {'x': 3, 'y': 2}
    """
    keys = dict.fromkeys(k for _path, entries in chain for k in entries)
    return {k: explain_key(chain, k).value for k in keys}


def final_above(chain: Chain, key: str) -> str | None:
    """The nearest strict ancestor (every scope of ``chain`` but the last) holding ``key`` as final."""
    for path, entries in chain[:-1]:
        entry = entries.get(key)
        if entry is not None and entry.final:
            return path
    return None
