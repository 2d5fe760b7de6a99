"""The layering holds: the import-linter contracts in pyproject.toml (layers, no cycles in a layer) pass."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("import-linter is not installed (it is in the test extra)")
    done = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_kernel_imports_no_upper_layer_at_run_time() -> None:
    """Importing the store kernel loads neither the feed, reactive, events nor notebook layers."""
    code = (
        "import sys, importlib; sys.modules['rxstate'] = type(sys)('rxstate'); sys.modules['rxstate'].__path__ = "
        f"[{str(ROOT / 'rxstate')!r}]; importlib.import_module('rxstate.store.store'); "
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('rxstate.')}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    loaded = set(eval(done.stdout))  # a printed list of names
    assert loaded <= {"core", "cache", "server", "store"}, loaded
