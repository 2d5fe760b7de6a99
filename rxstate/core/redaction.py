"""Short, redacted text of state values: the plain reprs and the cells of every HTML view.

Redaction is a security property, so it lives in the core: every ``__repr__``, error message and log
line of rxstate goes through it, whether or not the notebook layer is loaded.

Secret rules, applied everywhere a value is shown:

- a ``pydantic.Secret`` value (``rxstate.Secret``) shows only as ``REDACTED``;
- a field a model classifies as secret (``Model.__rxstate_secrets__``) is redacted whatever it holds;
- in data whose model is unknown (a change record's fields, an event's data), a key that any loaded
  ``rxstate.Model`` classifies as secret is redacted too: when unsure, hide.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sized
from datetime import UTC, datetime
from typing import Any

import pydantic

__all__ = [
    "NOT_LOADED",
    "REDACTED",
    "change_line",
    "clip",
    "error_reason",
    "event_data",
    "format_ms",
    "known_secret_names",
    "model_fields",
    "redact_mapping",
    "short",
    "classify",
]

REDACTED = "**********"
FIELD_LIMIT = 60

# Field names classified secret by any loaded model (``Model`` subclasses register themselves), so that
# data whose model is unknown here is redacted by name.
_CLASSIFIED: set[str] = set()


def classify(names: Iterable[str]) -> None:
    """Record field names that a model classifies as secret (called for every ``Model`` subclass).

    Example:
        >>> classify(["api_key"]); "api_key" in known_secret_names()
        True
    """
    _CLASSIFIED.update(names)


def clip(text: str, limit: int = FIELD_LIMIT, *, note: str = "") -> str:
    """``text`` cut to about ``limit`` characters, with an ellipsis (and ``note``) when cut.

    Example:
        >>> clip("abcdefghij", 5)
        'abcd…'
    """
    if len(text) <= limit:
        return text
    return text[: max(1, limit - 1)] + "…" + (f" ({note})" if note else "")


def _size_note(value: Any) -> str:
    if isinstance(value, str | bytes):
        return f"{len(value)} chars" if isinstance(value, str) else f"{len(value)} bytes"
    if isinstance(value, Sized) and not isinstance(value, pydantic.BaseModel):
        return f"{len(value)} items"
    return ""


def short(value: Any, limit: int = FIELD_LIMIT) -> str:
    """The ``repr`` of a value, redacted if secret and clipped to about ``limit`` characters.

    Example:
        >>> short(list(range(100)), 20)
        '[0, 1, 2, 3, 4, 5, … (100 items)'
    """
    if isinstance(value, pydantic.Secret | pydantic.SecretStr | pydantic.SecretBytes):
        return REDACTED
    if isinstance(value, pydantic.BaseModel):
        return clip(repr(value), limit * 4)  # already clipped field by field
    return clip(repr(value), limit, note=_size_note(value))


class _Shown:
    """A stand-in whose ``repr`` is the short form of a value (for pydantic's ``__repr_args__``)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


NOT_LOADED = _Shown("<not loaded>")
"""What a display shows for a lazy field not loaded yet (showing it does not load it)."""


def model_repr_args(model: pydantic.BaseModel) -> Iterator[tuple[str | None, Any]]:
    """``__repr_args__`` of a model with secret fields redacted and long values clipped."""
    secrets = getattr(type(model), "__rxstate_secrets__", {})
    for name, value in model_fields(model):
        if value is NOT_LOADED:
            yield name, value
        elif name in secrets and value is not None and not isinstance(value, pydantic.Secret):
            yield name, _Shown(REDACTED)
        elif isinstance(value, pydantic.Secret):
            yield name, value  # its own repr is redacted
        else:
            yield name, _Shown(short(value))


def model_fields(model: pydantic.BaseModel) -> Iterator[tuple[str, Any]]:
    """(name, value) of the fields a model shows in its repr (``Field(repr=False)`` ones left out); a lazy
    field not loaded yet is ``NOT_LOADED``."""
    lazy = getattr(type(model), "__rxstate_lazy__", ())
    present = model.__dict__
    for name, info in type(model).model_fields.items():
        if info.repr:
            yield name, NOT_LOADED if name in lazy and name not in present else getattr(model, name, None)


def known_secret_names() -> frozenset[str]:
    """Names of every field that some loaded ``rxstate.Model`` subclass classifies as secret."""
    return frozenset(_CLASSIFIED)


def is_secret(name: str, value: Any, secrets: Iterable[str]) -> bool:
    """Whether a (name, value) pair must be redacted under ``secrets`` (classified field names)."""
    return name in secrets or isinstance(value, pydantic.Secret | pydantic.SecretStr | pydantic.SecretBytes)


def redact_mapping(data: Mapping[str, Any], secrets: Iterable[str] | None = None) -> dict[str, Any]:
    """A copy of ``data`` where every secret value is wrapped in ``rxstate.Secret`` (so it never prints).

    Args:
        data: field or event data.
        secrets: names classified secret; None uses every name any loaded model classifies.

    Example:
        >>> redact_mapping({"api_key": "sk-1", "name": "x"}, {"api_key"})
        {'api_key': Secret('**********'), 'name': 'x'}
    """
    names = known_secret_names() if secrets is None else frozenset(secrets)
    return {
        key: value if isinstance(value, pydantic.Secret) or not is_secret(key, value, names) else pydantic.Secret(value)
        for key, value in data.items()
    }


def event_data(event: Any, secrets: Iterable[str] | None = None) -> tuple[Mapping[str, Any], frozenset[str]]:
    """The payload of an event and the names to redact in it.

    A ``RecordedEvent`` whose payload decoded to a model gives that model's fields (``Secret`` values
    stay wrapped) and the model's secret fields; a plain payload (its collection not open here, or an
    object with a ``data`` mapping) gives ``secrets``, or by default every name a loaded model classifies.
    """
    names = frozenset(known_secret_names() if secrets is None else secrets)
    payload = getattr(event, "event", None)
    if isinstance(payload, pydantic.BaseModel):
        return dict(model_fields(payload)), names | frozenset(getattr(type(payload), "__rxstate_secrets__", {}))
    if isinstance(payload, Mapping):
        return payload, names
    data = getattr(event, "data", None)
    if callable(data):
        data = data()
    return (data if isinstance(data, Mapping) else {}), names


def format_ms(timestamp_ms: int | float | None) -> str:
    """A server timestamp in milliseconds as UTC text with milliseconds.

    Example:
        >>> format_ms(0)
        '1970-01-01 00:00:00.000'
    """
    if timestamp_ms is None:
        return ""
    moment = datetime.fromtimestamp(float(timestamp_ms) / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def change_line(change: Any, secrets: Iterable[str] | None = None) -> str:
    """One line of text for a change record (any object with the change attributes), secrets redacted.

    Example:
        >>> from types import SimpleNamespace
        >>> record = SimpleNamespace(offset="1795966411234-0", collection="agents", id="a1", op="create",
        ...                          version=1, actor="pid:7", timestamp_ms=1795966326123,
        ...                          fields={"name": "x", "api_key": "sk-1"})
        >>> change_line(record, {"api_key"})
        "1795966411234-0 agents/a1 create v1 by pid:7 at 2026-11-29 15:32:06.123: name='x', api_key=**********"
    """
    fields = redact_mapping(getattr(change, "fields", None) or {}, secrets)
    changed = ", ".join(f"{k}={short(v, 30)}" for k, v in fields.items())
    return (
        f"{getattr(change, 'offset', '')} {getattr(change, 'collection', '')}/{getattr(change, 'id', '')} "
        f"{getattr(change, 'op', '')} v{getattr(change, 'version', '')} by {getattr(change, 'actor', '')} "
        f"at {format_ms(getattr(change, 'timestamp_ms', None))}{': ' + changed if changed else ''}"
    )


def error_reason(exc: pydantic.ValidationError, secrets: Iterable[str] = (), *, within: str | None = None) -> str:
    """Field path and reason of the first error of a pydantic ``ValidationError``, secrets left out.

    The input is shown (short) only where it cannot hold a secret: never for a path through a field
    named in ``secrets`` or classified by a loaded model, never for a ``missing`` field (its input is the
    whole enclosing data), and a mapping input shows with its secret keys redacted.

    Args:
        exc: the pydantic error.
        secrets: field names classified secret (besides those of every loaded model).
        within: the field whose value was validated, when ``exc`` comes from validating one field
            (it counts for secrecy; the text names only the path inside it).

    Example:
        >>> try:
        ...     pydantic.TypeAdapter(int).validate_python("x")
        ... except pydantic.ValidationError as exc:
        ...     error_reason(exc)
        "Input should be a valid integer, unable to parse string as an integer (input 'x')"
    """
    errors = exc.errors(include_url=False)
    if not errors:
        return "invalid"
    err = errors[0]
    names = known_secret_names() | frozenset(secrets)
    loc = tuple(err.get("loc", ()))
    path = loc if within is None else (within, *loc)
    where = ".".join(str(p) for p in loc)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    text = f"{where + ': ' if where else ''}{err.get('msg', 'invalid')}{more}"
    value = err.get("input")
    if err.get("type") == "missing" or any(isinstance(p, str) and p in names for p in path):
        return text
    if isinstance(value, Mapping):
        value = redact_mapping(value, names)
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return text  # a list or model may hold secrets the path does not name
    return f"{text} (input {short(value)})"
