"""The built wheel and sdist carry every Lua script; an installed wheel finds them."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.name for p in (ROOT / "lua").glob("*.lua"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-d", str(out)], cwd=ROOT, check=True, capture_output=True
    )
    return out


def test_wheel_contains_every_script_and_marker(dist):
    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert SCRIPTS and all(f"rxstate/lua/{s}" in names for s in SCRIPTS)
    assert "rxstate/py.typed" in names


def test_sdist_contains_every_script(dist):
    sdist = next(dist.glob("*.tar.gz"))
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert all(any(n.endswith(f"/lua/{s}") for n in names) for s in SCRIPTS)


def test_installed_wheel_finds_its_scripts(dist, tmp_path):
    wheel = next(dist.glob("*.whl"))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True
    )
    code = "import rxstate.core.scripts as s; print(s.script_dir())"
    found = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert found == str(target / "rxstate" / "lua")


def test_source_tree_finds_its_scripts():
    from rxstate.core.scripts import script_dir

    assert sorted(p.name for p in script_dir().glob("*.lua")) == SCRIPTS


def test_sdist_carries_the_doctest_names_and_the_wheel_does_not(dist):
    """The docstring examples run from an unpacked sdist too; the wheel ships no test setup."""
    with tarfile.open(next(dist.glob("*.tar.gz"))) as archive:
        assert any(n.endswith("/conftest.py") and n.count("/") == 1 for n in archive.getnames())
    with zipfile.ZipFile(next(dist.glob("*.whl"))) as archive:
        assert not any(n.endswith("conftest.py") for n in archive.namelist())
