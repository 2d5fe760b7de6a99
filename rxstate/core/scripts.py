"""Lua scripts shipped as package data, run by EVALSHA with a NOSCRIPT fallback.

Scripts live as ``.lua`` files in the top-level ``lua/`` folder (mapped into the wheel as
``rxstate/lua``). Server error replies that start with an ``RX...`` prefix map to typed errors in one
table, so a script's refusal surfaces as ``ConflictError``, ``NotFound`` and so on.

A script may reuse another one whole with a line ``-- @include <name>``: at load time that line becomes
``local function <name>(KEYS, ARGV) <source of name.lua> end``, so the including script calls the
other as a function with its own KEYS and ARGV (an error reply comes back as a table with ``err``).
This keeps one copy of shared logic (``append.lua`` writes projected state through ``mutate.lua``) while
each script stays one atomic call. A line ``-- @library <name>`` takes in the definitions of
``<name>.lua`` as they are (its local functions become the including script's own): the stages of the
write path live once in ``write_path.lua`` and serve ``mutate.lua``, ``txn.lua`` and ``reap.lua``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import redis
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from rxstate.core import errors

__all__ = ["Script", "ScriptLibrary", "register_error", "script_dir", "translate_error"]

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # rxstate/
_INCLUDE = re.compile(r"^-- @(include|library) ([A-Za-z_][A-Za-z0-9_]*)[ \t]*$", re.MULTILINE)


def script_dir() -> Path:
    """Where the ``.lua`` files are: inside the installed package, else the source tree's ``lua/``."""
    for candidate in (_PACKAGE_DIR / "lua", _PACKAGE_DIR.parent / "lua"):
        if (candidate / "mutate.lua").is_file():
            return candidate
    raise errors.RxStateError(f"rxstate's Lua scripts are missing (looked in {_PACKAGE_DIR / 'lua'})")


def _is_int(token: str) -> bool:
    return token.lstrip("-").isdigit()


def _stale_triples(d: list[str]) -> list[tuple[str, int, int]]:
    """Split ``key expected actual ...`` where a key may hold spaces (ids may): each triple ends with two
    integers followed by the end or by the next key, which starts with ``rx:{``."""
    triples: list[tuple[str, int, int]] = []
    start = 0
    for i in range(start + 2, len(d)):
        end = i + 1 == len(d) or d[i + 1].startswith("rx:{")
        if i - 2 >= start and end and _is_int(d[i - 1]) and _is_int(d[i]):
            triples.append((" ".join(d[start : i - 1]), int(d[i - 1]), int(d[i])))
            start = i + 1
    return triples


def _conflict(d: list[str]) -> errors.RxStateError:
    triples = _stale_triples(d)
    if len(triples) > 1:  # a transaction: every stale key, as lists
        keys, expected, actual = [t[0] for t in triples], [t[1] for t in triples], [t[2] for t in triples]
        stale = ", ".join(f"{k} (expected {e}, found {a})" for k, e, a in triples)
        return errors.ConflictError(f"stale: {stale}", key=keys, expected=expected, actual=actual)
    key = " ".join(d[:-2])
    return errors.ConflictError(
        f"{key}: expected version {d[-2]}, found {d[-1]}", key=key, expected=int(d[-2]), actual=int(d[-1])
    )


def _exists(d: list[str]) -> errors.RxStateError:
    key = " ".join(d[:-1])
    return errors.AlreadyExists(f"{key} already exists (version {d[-1]})", key=key, expected=0, actual=int(d[-1]))


def _parts(d: list[str]) -> list[str]:
    """The fields of an error reply whose keys (and lock names) end with the byte 0x1F: they may hold spaces."""
    return " ".join(d).split("\x1f")


def _integrity(d: list[str]) -> errors.RxStateError:
    key, rest = _parts(d)
    constraint, _, detail = rest.partition(" ")
    return errors.IntegrityError(
        f"constraint {constraint!r} violated on {key}: {detail}".rstrip(": "), constraint=constraint, key=key
    )


def _fenced(d: list[str]) -> errors.RxStateError:
    """``RXFENCED <key>^<lock>^<token> expired|<newer token>`` (^: the byte 0x1F)."""
    key, lock, lease = _parts(d)
    token, newer = lease.split(" ")
    why = "has expired" if newer == "expired" else f"is older than lease {newer}, which already wrote here"
    return errors.LockError(
        f"write to {key} refused: lease {token} of lock {lock!r} {why}",
        name=lock,
        token=int(token),
        key=key,
        newer_token=None if newer == "expired" else int(newer),
    )


_ERRORS: dict[str, Callable[[list[str]], errors.RxStateError]] = {
    "RXCONFLICT": _conflict,
    "RXEXISTS": _exists,
    "RXNOTFOUND": lambda d: errors.NotFound(f"{' '.join(d)} does not exist", key=" ".join(d)),
    "RXNOTINT": lambda d: errors.ValidationError(
        f"{' '.join(d[:-1])} field {d[-1]!r} does not hold an integer", field=d[-1]
    ),
    "RXRANGE": lambda d: errors.ValidationError(
        f"{' '.join(d[:-1])} field {d[-1]!r} would leave the exact integer range (2^53)", field=d[-1]
    ),
    "RXINTEGRITY": _integrity,
    "RXINTENT": lambda d: errors.TransactionPending(
        f"{' '.join(d[:-1])} is locked by transaction {d[-1]}", key=" ".join(d[:-1]), owner=d[-1]
    ),
    "RXTXABORTED": lambda d: errors.ConflictError(
        f"transaction aborted by a concurrent reader before it prepared ({d[0]})", key=d[0]
    ),
    "RXLOCK": lambda d: errors.LockError(" ".join(d)),
    "RXFENCED": _fenced,
    "RXABANDONED": lambda d: errors.ConflictError(
        f"write {d[0]} was given up after its outcome was unknown; it did not take effect", key=d[0]
    ),
    "RXSTALE": lambda d: errors.ConflictError(
        f"{d[0]}: expected {d[1]}, found {d[2]} (another runner moved it)", key=d[0], expected=d[1], actual=d[2]
    ),
}


def register_error(prefix: str, make: Callable[[list[str]], errors.RxStateError]) -> None:
    """Map the script error prefix ``prefix`` to the error ``make(details)`` (for the stages of upper layers).

    Example:
        >>> register_error("RXDEMO", lambda d: errors.RxStateError(" ".join(d)))
        >>> translate_error(ResponseError("RXDEMO one two"))
        RxStateError('one two')
    """
    if not prefix.startswith("RX"):
        raise errors.ValidationError(f"script error prefixes start with RX, not {prefix!r}")
    _ERRORS[prefix] = make


def translate_error(exc: BaseException) -> BaseException:
    """Map a server error reply with an ``RX...`` prefix to its rxstate error (and an ACL refusal to
    ``PermissionDenied``); others pass through."""
    if isinstance(exc, NoPermissionError):  # the server checked a script's declared keys before running it
        return errors.PermissionDenied(f"the server's ACL refused the write: {exc}", reason=str(exc))
    if isinstance(exc, ResponseError):
        message = str(exc)
        # Lua error replies may arrive prefixed by the script location on some servers.
        start = message.find("RX")
        if start >= 0:
            head, *details = message[start:].split(" ")
            factory = _ERRORS.get(head)
            if factory is not None:
                return factory(details)
    return exc


class Script:
    """One Lua script: its SHA computed once, EVALSHA first, SCRIPT LOAD on NOSCRIPT.

    Example:
        >>> lock = ScriptLibrary().get("lock")
        >>> client, keys = fakeredis.FakeRedis(), ["lock", "lock:seq", "lock:readers"]
        >>> lock(client, keys, ["acquire", "x", "me", 1000, "0"])[0]  # granted: fencing token 1
        1
        >>> lock(client, keys, ["release", "x", "someone else", 1000, "0", "1"])
        Traceback (most recent call last):
        ...
        rxstate.core.errors.LockError: ...
    """

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the script; server refusals raise their typed rxstate error."""
        try:
            try:
                return client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                client.script_load(self.source)
                return client.evalsha(self.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            raise translate_error(exc) from None


class ScriptLibrary:
    """All scripts of the package, loaded once per process."""

    _cache: ClassVar[dict[str, Script]] = {}

    def get(self, name: str) -> Script:
        """The script ``name`` (a ``.lua`` file), with its includes resolved."""
        script = self._cache.get(name)
        if script is None:
            script = self._cache[name] = Script(name, self._source(name, ()))
        return script

    def once(self, name: str) -> Script:
        """The script ``name`` wrapped by ``once.lua``: KEYS and ARGV gain a write record key and its
        lifetime in front, and a call repeated with the same record takes effect once."""
        key = f"{name}@once"
        script = self._cache.get(key)
        if script is None:
            body = self._source(name, ())
            source = f"local function body(KEYS, ARGV)\n{body}\nend\n{self._source('once', (name,))}"
            script = self._cache[key] = Script(key, source)
        return script

    def _source(self, name: str, including: tuple[str, ...], in_scope: set[str] | None = None) -> str:
        """A script's text with its ``-- @include`` and ``-- @library`` lines resolved (recursively,
        refusing cycles). A library already taken in earlier in the same or an enclosing scope is not
        taken in again: its definitions are in scope already (an included script's function sees them)."""
        if name in including:
            raise errors.RxStateError(f"Lua include cycle: {' -> '.join((*including, name))}")
        path = script_dir() / f"{name}.lua"
        if not path.is_file():
            raise errors.RxStateError(f"no Lua script named {name!r} in {path.parent}")
        scope = set() if in_scope is None else in_scope

        def expand(match: re.Match[str]) -> str:
            how, inner = match.group(1), match.group(2)
            if how == "library":
                if inner in scope:
                    return f"-- (library {inner} is in scope already)"
                scope.add(inner)
                return self._source(inner, (*including, name), scope)
            body = self._source(inner, (*including, name), set(scope))  # its own libraries stay inside it
            return f"local function {inner}(KEYS, ARGV)\n{body}\nend"

        return _INCLUDE.sub(expand, path.read_text())

    def run_batch(self, client: Any, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run many script calls in one pipelined round trip (each call atomic on its own).

        Returns each call's result, or its typed error in place. A NOSCRIPT reply (the server lost
        its script cache) means that call did not run: the script is loaded and those calls alone
        run again.
        """
        results = self._pipeline(client, calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            for script in {calls[i][0].name: calls[i][0] for i in missing}.values():
                client.script_load(script.source)
            for i, result in zip(missing, self._pipeline(client, [calls[i] for i in missing]), strict=True):
                results[i] = result
        return [translate_error(r) if isinstance(r, BaseException) else r for r in results]

    @staticmethod
    def _pipeline(client: Any, calls: Sequence[ScriptCall]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for script, keys, args in calls:
            # execute_command: cluster pipelines refuse the evalsha() helper but route EVALSHA by its keys
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]


ScriptCall = tuple[Script, Sequence[Any], Sequence[Any]]


def is_cluster(client: Any) -> bool:
    """Whether a client talks to a Redis Cluster."""
    return isinstance(client, redis.cluster.RedisCluster)
