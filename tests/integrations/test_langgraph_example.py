"""The LangGraph example runs end to end on a real server: interrupted, resumed by two other processes,
watched and inspected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langgraph_agents.py"


@pytest.mark.slow
def test_example_resumes_from_other_processes(rx_server) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--url", rx_server.url], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "[other process] resumed launch-plan with 'add the hiring plan': published=False" in out
    assert "[other process] resumed launch-plan with 'approve': published=True" in out
    assert "published=True after 1 revision(s)" in out
    assert "parent chain of the published state: steps [6, 5, 4, 3, 2, 1, 0, -1]" in out
    assert "watched 8 checkpoints arrive" in out
