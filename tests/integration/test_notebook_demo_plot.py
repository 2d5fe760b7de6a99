"""The newcomer's picture command runs the demo on an embedded server and writes a PNG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_notebook_plots import png_size

pytest.importorskip("matplotlib")


def test_demo_plot_command_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "demo.png"
    done = subprocess.run(
        [sys.executable, "-m", "rxstate.cli", "demo-plot", str(out), "--tasks", "12"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
    )
    assert done.returncode == 0, done.stderr
    assert png_size(out.read_bytes()) == (1200, 450)
