"""The package passes ``mypy --strict`` (as configured in pyproject.toml), and its entry points type precisely."""

from __future__ import annotations

import pathlib

from mypy import api

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _mypy(*args: str) -> tuple[str, int]:
    out, err, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), *args])
    return out + err, status


def test_the_package_is_mypy_strict_clean():
    report, status = _mypy()  # the packages of [tool.mypy]
    assert status == 0, report


def test_public_entry_points_give_precise_types():
    report, status = _mypy(str(ROOT / "tests" / "typing" / "public_api.py"))
    assert status == 0, report


def test_the_type_check_sees_an_imprecise_type(tmp_path: pathlib.Path):
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "from typing import Any, assert_type\n"
        "import rxstate\n"
        "def f(store: rxstate.Store) -> None:\n"
        "    assert_type(store.changes(), Any)\n"
    )
    report, status = _mypy(str(wrong))
    assert status == 1 and "[assert-type]" in report
