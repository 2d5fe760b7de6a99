"""The public surface: exported names, the error tree, scripts shipped with the package."""

from __future__ import annotations

import inspect

import rxstate
from rxstate import errors
from rxstate.core.scripts import ScriptLibrary, script_dir, translate_error


def test_all_is_sorted_and_complete():
    assert rxstate.__all__ == sorted(rxstate.__all__, key=str.lower) or rxstate.__all__ == sorted(rxstate.__all__)
    for name in rxstate.__all__:
        assert hasattr(rxstate, name), name
    public_errors = {n for n, v in vars(errors).items() if inspect.isclass(v) and issubclass(v, errors.RxStateError)}
    assert set(errors.__all__) == public_errors


def test_error_tree():
    assert issubclass(errors.NotFound, KeyError)
    assert issubclass(errors.ValidationError, ValueError)
    assert issubclass(errors.AlreadyExists, errors.ConflictError)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.RxStateError)
        assert name in errors.__doc__


def test_every_public_function_has_a_docstring():
    for name in rxstate.__all__:
        obj = getattr(rxstate, name)
        if callable(obj):
            assert obj.__doc__, name


def test_server_error_prefixes_map_to_typed_errors():
    from redis.exceptions import ResponseError

    exc = translate_error(ResponseError("RXCONFLICT rx:{a:1}:agents:x 3 4"))
    assert isinstance(exc, errors.ConflictError) and (exc.key, exc.expected, exc.actual) == ("rx:{a:1}:agents:x", 3, 4)
    other = ResponseError("WRONGTYPE Operation against a key")
    assert translate_error(other) is other


def test_every_script_has_a_header():
    for path in script_dir().glob("*.lua"):
        head = path.read_text()[:1500]
        assert "KEYS" in head and "ARGV" in head and "Returns" in head, path.name
        assert ScriptLibrary().get(path.stem).sha
