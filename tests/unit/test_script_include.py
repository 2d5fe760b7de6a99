"""``-- @include name`` lines in Lua scripts, resolved by the script loader."""

from __future__ import annotations

import fakeredis
import pytest

from rxstate.core import scripts
from rxstate.core.scripts import ScriptLibrary
from rxstate.errors import RxStateError


@pytest.fixture
def lua_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(scripts, "script_dir", lambda: tmp_path)
    monkeypatch.setattr(ScriptLibrary, "_cache", {})
    return tmp_path


def test_include_runs_the_other_script_as_a_function(lua_dir):
    (lua_dir / "double.lua").write_text("return {KEYS[1], tonumber(ARGV[1]) * 2}\n")
    (lua_dir / "outer.lua").write_text(
        "-- @include double\nlocal r = double({KEYS[2]}, {ARGV[2]})\nreturn {KEYS[1], r[1], r[2]}\n"
    )
    script = ScriptLibrary().get("outer")
    assert "local function double(KEYS, ARGV)" in script.source
    assert script(fakeredis.FakeRedis(), ["k1", "k2"], ["1", "21"]) == [b"k1", b"k2", 42]


def test_include_cycles_and_missing_scripts_are_refused(lua_dir):
    (lua_dir / "a.lua").write_text("-- @include b\nreturn 1\n")
    (lua_dir / "b.lua").write_text("-- @include a\nreturn 2\n")
    (lua_dir / "c.lua").write_text("-- @include nowhere\nreturn 3\n")
    with pytest.raises(RxStateError, match="cycle"):
        ScriptLibrary().get("a")
    with pytest.raises(RxStateError, match="nowhere"):
        ScriptLibrary().get("c")
