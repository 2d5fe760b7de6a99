"""tests/contract/test_transactions.py, run on the asyncio front (see conftest.py here)."""

from tests.contract.test_transactions import *  # noqa: F403
