"""Typed state models: schema versions, upcasters, and classified (secret) fields."""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, ClassVar, Self, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, model_validator

from rxstate.core import display
from rxstate.core.errors import SchemaError
from rxstate.core.redaction import classify, model_repr_args

__all__ = ["CLASSIFICATIONS", "ENCRYPTED_CLASSIFICATIONS", "Model", "Secret", "classified", "upcaster"]

T = TypeVar("T")
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_UPCAST_MARK = "__rxstate_upcast_from__"
CLASSIFICATIONS = ("public", "internal", "confidential", "secret")
"""The classification levels a field may declare (``Field(json_schema_extra={"classification": ...})``)."""
ENCRYPTED_CLASSIFICATIONS = frozenset({"confidential", "secret"})
"""Levels whose fields are secret: redacted everywhere and encrypted at rest when the store has keys."""


class Secret(pydantic.Secret[T]):
    """A classified value: redacted in every ``repr``, ``str`` and log line.

    Read the clear value with ``.get_secret_value()``; the store keeps the real value.

    Example:
        >>> class Agent(Model):
        ...     api_key: Secret[str] | None = None
        >>> Agent(api_key="sk-1")
        Agent(api_key=Secret('**********'))
    """

    def _display(self) -> str:
        return "**********"


def upcaster(from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Mark a function that migrates stored data of ``from_version`` to ``from_version + 1``.

    The function takes and returns a plain dict of field values, and runs on every read of older
    data (and on migrations). Chains of upcasters bring data up any number of versions.

    Example:
        >>> class Agent(Model):
        ...     __version__ = 2
        ...     name: str
        ...     @upcaster(1)
        ...     def _from_v1(data: dict) -> dict:
        ...         return {"name": data.pop("title"), **data}
    """
    if not isinstance(from_version, int) or from_version < 1:
        raise SchemaError(f"upcaster version must be a positive integer, not {from_version!r}", name="upcaster")

    def mark(fn: Upcaster) -> Upcaster:
        inner = fn.__func__ if isinstance(fn, staticmethod) else fn
        setattr(inner, _UPCAST_MARK, from_version)
        return staticmethod(inner)  # type: ignore[return-value,unused-ignore]

    return mark


def classified(level: str, *, searchable: bool = False, **field: Any) -> Any:
    """A field classified ``level``: ``confidential`` and ``secret`` fields are treated like ``Secret`` ones.

    They are redacted in every repr, error and log line and, on a store opened with ``keys=``, encrypted
    at rest. ``searchable=True`` encrypts deterministically (equal values give equal ciphertexts), so the
    field can be indexed; that reveals which entities share a value. Other arguments go to
    ``pydantic.Field``; this is ``Field(json_schema_extra={"classification": level})``.

    Example:
        >>> class Person(Model):
        ...     name: str
        ...     ssn: str = classified("secret")
        ...     email: str = classified("confidential", searchable=True, default="")
        >>> Person(name="ada", ssn="078-05-1120")
        Person(name='ada', ssn=**********, email=**********)
    """
    if level not in CLASSIFICATIONS:
        raise SchemaError(f"classification must be one of {CLASSIFICATIONS}, not {level!r}")
    extra = dict(field.pop("json_schema_extra", None) or {})
    extra.update(classification=level, searchable=searchable)
    return pydantic.Field(json_schema_extra=extra, **field)


def _classification(model: str, name: str, info: Any) -> tuple[bool, bool]:
    """Whether a field is classified secret by its ``json_schema_extra``, and whether it is searchable."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    level = extra.get("classification", "public")
    if level not in CLASSIFICATIONS:
        raise SchemaError(f"{model}.{name}: classification must be one of {CLASSIFICATIONS}, not {level!r}")
    return level in ENCRYPTED_CLASSIFICATIONS, bool(extra.get("searchable", False))


def _secret_inner_type(annotation: Any) -> Any | None:
    """The ``T`` of a ``Secret[T]`` annotation (also inside ``Optional``/unions), else None."""
    origin = typing.get_origin(annotation)
    if isinstance(origin, type) and issubclass(origin, pydantic.Secret):
        return typing.get_args(annotation)[0]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in typing.get_args(annotation):
            inner = _secret_inner_type(arg)
            if inner is not None:
                return inner
    return None


def _check_subject(cls: type[Model]) -> None:
    """Refuse a ``__subject__`` that names no field, or that comes with searchable secret fields."""
    subject = cls.__dict__.get("__subject__", getattr(cls, "__subject__", None))
    if subject is None:
        return
    if not isinstance(subject, str) or (subject != "id" and subject not in cls.model_fields):
        raise SchemaError(
            f"{cls.__name__}.__subject__ must be 'id' or one of its fields {sorted(cls.model_fields)}, not {subject!r}",
            name=cls.__name__,
        )
    if cls.__rxstate_searchable__:
        raise SchemaError(
            f"{cls.__name__}: searchable fields {sorted(cls.__rxstate_searchable__)} cannot belong to a data "
            "subject: their index must find equal values under one key, and a subject's values are "
            "sealed under the subject's own key (so that erasing the subject makes them unreadable)",
            name=cls.__name__,
        )


class _FieldsSet(set[str]):
    """A model's set of explicitly set fields, marked with the id of the field dict validation produced."""

    __slots__ = ("owner",)

    def __init__(self, names: set[str], owner: int) -> None:
        super().__init__(names)
        self.owner = owner

    def __reduce__(self) -> tuple[type[set[str]], tuple[list[str]]]:
        return set, (list(self),)  # a copy is a plain set: copies of a model count as unvalidated


class Model(BaseModel):
    """Base class of stored state: a frozen pydantic v2 model with a schema version.

    Instances are immutable snapshots; change state through the store, never by mutating a model, so a
    cache can hand out the same instance safely.

    Example:
        >>> class Agent(Model):
        ...     __version__ = 1
        ...     name: str
        ...     load: int = 0
        >>> Agent(name="planner").load
        0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    __version__: ClassVar[int] = 1
    __rxstate_upcasters__: ClassVar[dict[int, Upcaster]] = {}
    __rxstate_secrets__: ClassVar[dict[str, Any]] = {}
    """Secret fields (``Secret[T]`` or classified confidential/secret) -> the type of their clear value."""
    __rxstate_searchable__: ClassVar[frozenset[str]] = frozenset()
    """Secret fields declared ``searchable``: encrypted deterministically, so they can be indexed."""
    __subject__: ClassVar[str | None] = None
    """Whose personal data an entity holds: the name of the field naming the data subject, or ``"id"``
    (the entity id is the subject). Secret fields of such entities are encrypted under the subject's own
    data key, and ``rxstate.admin.erase`` erases a subject (see ``rxstate.admin.erasure``)."""

    @model_validator(mode="after")
    def _mark_validated(self) -> Self:
        # Remember which field dict validation saw, in the fields-set (which equality ignores):
        # ``model_copy`` and ``model_construct`` make instances without validating them, each with a dict
        # of its own, so ``is_validated`` tells them apart at the cost of one attribute read.
        object.__setattr__(self, "__pydantic_fields_set__", _FieldsSet(self.__pydantic_fields_set__, id(self.__dict__)))
        return self

    def is_validated(self) -> bool:
        """Whether this instance came out of validation (not ``model_copy``/``model_construct``/a copy).

        Example:
            >>> class Agent(Model):
            ...     name: str
            >>> a = Agent(name="x")
            >>> a.is_validated(), a.model_copy(update={"name": 1}).is_validated()
            (True, False)
        """
        marked = self.__pydantic_fields_set__
        return isinstance(marked, _FieldsSet) and marked.owner == id(self.__dict__)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        version = cls.__dict__.get("__version__", getattr(cls, "__version__", 1))
        if not isinstance(version, int) or version < 1:
            raise SchemaError(
                f"{cls.__name__}.__version__ must be a positive integer, not {version!r}", name=cls.__name__
            )
        upcasters: dict[int, Upcaster] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                fn = value.__func__ if isinstance(value, staticmethod) else value
                step = getattr(fn, _UPCAST_MARK, None)
                if step is not None:
                    upcasters[step] = fn
        for step in upcasters:
            if step >= version:
                raise SchemaError(
                    f"{cls.__name__}: upcaster({step}) migrates to v{step + 1}, beyond __version__ = {version}",
                    name=cls.__name__,
                )
        cls.__rxstate_upcasters__ = upcasters
        secrets: dict[str, Any] = {}
        searchable: set[str] = set()
        for name, info in cls.model_fields.items():
            inner = _secret_inner_type(info.annotation)
            level_secret, wants_search = _classification(cls.__name__, name, info)
            if inner is None and not level_secret:
                if wants_search:
                    raise SchemaError(f"{cls.__name__}.{name}: only a secret or classified field can be searchable")
                continue
            secrets[name] = inner if inner is not None else info.annotation
            if wants_search:
                searchable.add(name)
        cls.__rxstate_secrets__ = secrets
        cls.__rxstate_searchable__ = frozenset(searchable)
        _check_subject(cls)
        classify(cls.__rxstate_secrets__)

    # -- display (short, redacted reprs; HTML in notebooks) ----------------------------------------
    def __repr_args__(self) -> Any:
        return model_repr_args(self)

    def _repr_html_(self) -> str:
        return display.html(self)

    @classmethod
    def upcast(cls, data: dict[str, Any], from_version: int) -> dict[str, Any]:
        """Bring a dict of stored field values from ``from_version`` to the current version.

        Raises:
            SchemaError: the data is newer than this code, or an upcaster in the chain is missing.
        """
        if from_version > cls.__version__:
            raise SchemaError(
                f"stored {cls.__name__} has schema v{from_version}, newer than this code's "
                f"v{cls.__version__}: upgrade the code rather than drop fields",
                name=cls.__name__,
            )
        for step in range(from_version, cls.__version__):
            fn = cls.__rxstate_upcasters__.get(step)
            if fn is None:
                raise SchemaError(f"{cls.__name__} has no upcaster from v{step} to v{step + 1}", name=cls.__name__)
            data = fn(dict(data))
        return data
