"""tests/contract/test_locks.py, run on the asyncio front (see conftest.py here)."""

from tests.contract.test_locks import *  # noqa: F403
