"""Field markers that declare which CRDT a replicated model's field is, and the join of CRDT states.

A field of a model replicated by ``rxstate.sync`` merges by its declared type: ``lww()`` (the default:
last writer wins by hybrid logical clock, replica id breaking ties), ``counter()`` (a PN-counter),
``orset()`` (an add-wins observed-remove set) or ``mvreg()`` (a multi-value register whose concurrent
writes surface as siblings). The merge itself runs in Lua (``lua/crdt.lua``) inside the write and sync
scripts; ``join`` runs that same code, for checks and measurements.

No CRDT library runs inside a Redis script, so the types are written here by hand (delta-state CRDTs
with dot kernels and causal contexts, after Almeida, Shoker and Baquero).

Example:
    >>> import rxstate
    >>> class Doc(rxstate.Model):
    ...     title: str = rxstate.crdt.lww(default="")
    ...     views: int = rxstate.crdt.counter()
    ...     tags: list[str] = rxstate.crdt.orset()
    >>> field_types(Doc)
    {'title': 'lww', 'views': 'counter', 'tags': 'orset'}
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from rxstate.core.errors import SyncError
from rxstate.core.model import Model
from rxstate.core.scripts import ScriptLibrary

__all__ = ["TYPES", "canonical", "counter", "field_types", "join", "load_state", "lww", "mvreg", "orset"]

TYPES = ("lww", "counter", "orset", "mvreg")
_KEY = "x-rxstate-crdt"


def _marker(kind: str, **kwargs: Any) -> Any:
    return Field(json_schema_extra={_KEY: kind}, **kwargs)


def lww(default: Any = None) -> Any:
    """A last-writer-wins field (the default for undeclared fields).

    Example:
        >>> lww(default="").json_schema_extra
        {'x-rxstate-crdt': 'lww'}
    """
    return _marker("lww", default=default)


def counter() -> Any:
    """A PN-counter field (an int): changed by ``incr``, concurrent increments all count.

    Example:
        >>> counter().default
        0
    """
    return _marker("counter", default=0)


def orset() -> Any:
    """An add-wins observed-remove set field (a list, kept sorted by each element's JSON text).

    Example:
        >>> orset().default_factory()
        []
    """
    return _marker("orset", default_factory=list)


def mvreg(default: Any = None) -> Any:
    """A multi-value register field: concurrent writes are kept as siblings for a resolver to choose from.

    Example:
        >>> mvreg().json_schema_extra
        {'x-rxstate-crdt': 'mvreg'}
    """
    return _marker("mvreg", default=default)


def field_types(model: type[Model]) -> dict[str, str]:
    """The CRDT type of each field of ``model`` (``"lww"`` where none is declared).

    Example:
        >>> import rxstate
        >>> class Note(rxstate.Model):
        ...     text: str = ""
        >>> field_types(Note)
        {'text': 'lww'}
    """
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        kind = extra.get(_KEY, "lww") if isinstance(extra, dict) else "lww"
        out[name] = str(kind)
    return out


def _objects(value: Any) -> Any:
    if isinstance(value, list):  # states hold no arrays: some Lua cjson builds encode an empty table as []
        if value:
            raise SyncError(f"a CRDT state holds an array: {value!r}")
        return {}
    if isinstance(value, dict):
        return {k: _objects(v) for k, v in value.items()}
    return value


def load_state(text: str | bytes) -> Any:
    """A state (or a state hash's ``{"k": type, "s": state}``) from the JSON a script wrote.

    Example:
        >>> load_state('{"p": [], "n": {"a.1": 2}}')
        {'p': {}, 'n': {'a.1': 2}}
    """
    return _objects(json.loads(text))


def canonical(state: Any) -> str:
    """A state's JSON text with sorted keys, so equal states compare equal as text.

    Example:
        >>> canonical({"p": {"b": 1, "a": 2}, "n": {}})
        '{"n":{},"p":{"a":2,"b":1}}'
    """
    if isinstance(state, (bytes, str)):
        state = load_state(state)
    return json.dumps(_objects(state), sort_keys=True, separators=(",", ":"))


def join(client: Any, kind: str, *states: Any) -> dict[str, Any]:
    """Join CRDT states of type ``kind`` left to right with the server's own merge (``lua/crdt_join.lua``).

    Raises:
        SyncError: ``kind`` is not a CRDT type.

    Example:
        >>> import fakeredis
        >>> canonical(join(fakeredis.FakeRedis(), "counter", {"p": {"a.1": 2}, "n": {}}, {"p": {"b.1": 3}, "n": {}}))
        '{"n":{},"p":{"a.1":2,"b.1":3}}'
    """
    if kind not in TYPES:
        raise SyncError(f"{kind!r} is not a CRDT type (one of {', '.join(TYPES)})", key=kind)
    if not states:
        raise SyncError("join needs at least one state", key=kind)
    texts = [s if isinstance(s, (str, bytes)) else json.dumps(s) for s in states]
    reply = ScriptLibrary().get("crdt_join")(client, [], [kind, *texts])
    result: dict[str, Any] = load_state(reply)
    return result
