"""The core contract suite (tests/contract), run unchanged on the asyncio front, in a pytest process of its own.

``tests/aio/contract`` runs every test of ``tests/contract`` inside a bridged greenlet with stores opened by
``rxstate.aio.connect`` on asyncio clients (see its conftest). It runs in a child process because its
per-test event loops leave the session unfit for pytest-asyncio's runners.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(marks: str) -> None:
    env = {**os.environ, "RXSTATE_AIO_CONTRACT": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/aio/contract", "-m", marks]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1], result.stdout[-2000:]


def test_the_contract_suite_passes_on_the_asyncio_front() -> None:
    _run("not slow and not cluster")


@pytest.mark.cluster
def test_the_contract_suite_passes_on_the_asyncio_front_on_a_cluster() -> None:
    _run("cluster")
