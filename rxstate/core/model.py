"""Typed state models: schema versions, upcasters, and classified (secret) fields."""

from __future__ import annotations

import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar, Protocol, Self, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, model_validator

from rxstate.core import display
from rxstate.core.errors import SchemaError
from rxstate.core.redaction import NOT_LOADED, classify, model_repr_args

__all__ = [
    "CLASSIFICATIONS",
    "ENCRYPTED_CLASSIFICATIONS",
    "NOT_LOADED",
    "FieldLoader",
    "Model",
    "Secret",
    "classified",
    "defer_lazy",
    "lazy",
    "load_lazy",
    "unloaded_lazy",
    "upcaster",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
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


def classified(level: str, *, searchable: bool = False, lazy: bool = False, **field: Any) -> Any:
    """A field classified ``level``: ``confidential`` and ``secret`` fields are treated like ``Secret`` ones.

    They are redacted in every repr, error and log line and, on a store opened with ``keys=``, encrypted
    at rest. ``searchable=True`` encrypts deterministically (equal values give equal ciphertexts), so the
    field can be indexed; that reveals which entities share a value. ``lazy=True`` makes it a lazy
    field too (see ``lazy``). Other arguments go to ``pydantic.Field``; this is
    ``Field(json_schema_extra={"classification": level})``.

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
    if lazy:
        extra["lazy"] = True
    return pydantic.Field(json_schema_extra=extra, **field)


def lazy(**field: Any) -> Any:
    """A lazy field: whole-entity reads (``get``, ``get_many``, ``where``, ...) leave it on the server.

    The model they return loads it on first attribute access, with one ``HMGET`` of just that field,
    read at the version the model was read at. If the entity has changed since, the access raises
    ``LazyFieldStale`` (a ``ConflictError``) rather than mix two versions: read the entity again. A
    ``put`` of such a model loads its lazy fields first (so nothing stored is lost); an ``update`` by
    function writes only what changed and leaves them unread; ``repr`` shows them as not loaded.
    The local cache keeps the model as read (its size counted without the lazy fields); a field loaded
    on a cached model stays loaded in it, and a write by this store on top of it keeps it loadable.

    A lazy field needs a default (``default=`` or ``default_factory=``); it cannot be indexed or be
    the partition key. Arguments go to ``pydantic.Field``; this is
    ``Field(json_schema_extra={"lazy": True})``. ``classified(..., lazy=True)`` makes a classified
    field lazy.

    Example:
        >>> class Doc(Model):
        ...     title: str
        ...     body: str = lazy(default="")
        >>> Doc(title="t", body="long text").body
        'long text'
    """
    extra = dict(field.pop("json_schema_extra", None) or {})
    extra["lazy"] = True
    return pydantic.Field(json_schema_extra=extra, **field)


class FieldLoader(Protocol):
    """Reads the lazy fields of one stored entity at one version (the store provides it).

    Attributes:
        key: the entity key.
        version: the version of the entity the model was read at.
    """

    key: str
    version: int

    def load(self, names: Collection[str]) -> Mapping[str, Any]:
        """The decoded values of ``names`` at ``version`` (raises ``LazyFieldStale`` if it moved on)."""
        ...

    def at(self, version: int) -> FieldLoader:
        """The same loader for a later version of the entity whose lazy fields are unchanged."""
        ...


def _is_lazy(info: Any) -> bool:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return bool(extra.get("lazy", False))


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


class _LazyFieldsSet(_FieldsSet):
    """The fields-set of a model read without its lazy fields: it also holds their loader.

    Equality and hashing of models ignore the fields-set, so the loader travels with the model at no
    cost to its other uses; a lazy field is absent from the model's ``__dict__`` until loaded.
    """

    __slots__ = ("loader",)

    def __init__(self, names: set[str], owner: int, loader: FieldLoader) -> None:
        super().__init__(names, owner)
        self.loader = loader


def _loader_of(model: BaseModel) -> FieldLoader | None:
    marked = object.__getattribute__(model, "__pydantic_fields_set__")
    return marked.loader if isinstance(marked, _LazyFieldsSet) else None


def unloaded_lazy(model: BaseModel) -> tuple[FieldLoader | None, list[str]]:
    """The loader of a model read without its lazy fields, and the names of those not loaded yet.

    Example:
        >>> unloaded_lazy(Agent(name="x"))
        (None, [])
    """
    lazy_fields: frozenset[str] = getattr(type(model), "__rxstate_lazy__", frozenset())
    loader = _loader_of(model) if lazy_fields else None
    if loader is None:
        return None, []
    present = model.__dict__
    return loader, [n for n in lazy_fields if n not in present]


def load_lazy(model: BaseModel, names: Collection[str] | None = None) -> None:
    """Load the model's unloaded lazy fields (``names``, else all of them) in one read.

    Raises:
        LazyFieldStale: the entity changed since the model was read.

    Example:
        >>> load_lazy(Agent(name="x"))  # a complete model: nothing to load
    """
    loader, missing = unloaded_lazy(model)
    if loader is None:
        return
    if names is not None:
        missing = [n for n in missing if n in names]
    if missing:
        values = loader.load(missing)
        model.__dict__.update({n: values[n] for n in missing})


def defer_lazy(model: M, names: Collection[str], loader: FieldLoader) -> M:
    """``model`` with its lazy fields ``names`` unloaded, to be read by ``loader`` on first access.

    ``model`` must be fresh (just validated or copied, not shared): this changes it in place.
    """
    present = model.__dict__
    gone = [n for n in names if n in present]
    for n in gone:
        del present[n]
    marked = object.__getattribute__(model, "__pydantic_fields_set__")
    owner = marked.owner if isinstance(marked, _FieldsSet) else 0
    object.__setattr__(model, "__pydantic_fields_set__", _LazyFieldsSet(set(marked) - set(gone), owner, loader))
    return model


def rebind_lazy(model: M, version: int) -> M:
    """A copy of ``model`` whose unloaded lazy fields are read at ``version`` (the model itself if none).

    For a model derived from one read at an earlier version by a write that left the lazy fields as
    they were.
    """
    loader, missing = unloaded_lazy(model)
    if loader is None or not missing or loader.version == version:
        return model
    copied = model.__copy__()
    marked = object.__getattribute__(model, "__pydantic_fields_set__")
    object.__setattr__(copied, "__pydantic_fields_set__", _LazyFieldsSet(set(marked), 0, loader.at(version)))
    return copied


def _install_lazy(cls: Any) -> None:
    """Make the whole-model operations of a class with lazy fields load them first, and copies keep
    them unloaded (a copy reads them through the same loader)."""
    if getattr(cls, "__rxstate_lazy_installed__", False):
        return  # inherited from a base class with lazy fields
    base_copy, base_deepcopy, base_eq, base_hash = cls.__copy__, cls.__deepcopy__, cls.__eq__, cls.__hash__
    base_iter, base_getstate = cls.__iter__, cls.__getstate__
    base_dump, base_dump_json = cls.model_dump, cls.model_dump_json

    def carry(source: BaseModel, copied: Any) -> Any:
        loader = _loader_of(source)
        if loader is not None:
            names = object.__getattribute__(copied, "__pydantic_fields_set__")
            object.__setattr__(copied, "__pydantic_fields_set__", _LazyFieldsSet(set(names), 0, loader))
        return copied

    def __copy__(self: Any) -> Any:
        return carry(self, base_copy(self))

    def __deepcopy__(self: Any, memo: dict[int, Any] | None = None) -> Any:
        return carry(self, base_deepcopy(self, memo))

    def __eq__(self: Any, other: object) -> bool:
        load_lazy(self)
        if isinstance(other, BaseModel):
            load_lazy(other)
        equal: bool = base_eq(self, other)  # or NotImplemented, passed on
        return equal

    def __hash__(self: Any) -> int:
        load_lazy(self)
        value: int = base_hash(self)
        return value

    def __iter__(self: Any) -> Any:
        load_lazy(self)
        return base_iter(self)

    def __getstate__(self: Any) -> Any:
        load_lazy(self)
        return base_getstate(self)

    def model_dump(self: Any, *args: Any, **kwargs: Any) -> Any:
        load_lazy(self)
        return base_dump(self, *args, **kwargs)

    def model_dump_json(self: Any, *args: Any, **kwargs: Any) -> Any:
        load_lazy(self)
        return base_dump_json(self, *args, **kwargs)

    for fn in (__copy__, __deepcopy__, __eq__, __hash__, __iter__, __getstate__, model_dump, model_dump_json):
        setattr(cls, fn.__name__, fn)
    cls.__rxstate_lazy_installed__ = True


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
    __rxstate_lazy__: ClassVar[frozenset[str]] = frozenset()
    """Lazy fields (``rxstate.lazy``): left out of whole-entity reads, loaded on first access."""

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
        lazy_fields = frozenset(n for n, info in cls.model_fields.items() if _is_lazy(info))
        for name in lazy_fields:
            if cls.model_fields[name].is_required():
                raise SchemaError(
                    f"{cls.__name__}.{name}: a lazy field needs a default (lazy(default=...))",
                    name=cls.__name__,
                    field=name,
                )
        cls.__rxstate_lazy__ = lazy_fields
        if lazy_fields:
            _install_lazy(cls)

    if not typing.TYPE_CHECKING:  # a type checker sees only the declared fields

        def __getattr__(self, name: str) -> Any:
            if name in type(self).__rxstate_lazy__ and _loader_of(self) is not None:
                load_lazy(self, (name,))
                return self.__dict__[name]
            return super().__getattr__(name)

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
