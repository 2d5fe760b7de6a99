"""tests/contract/test_batches.py, run on the asyncio front (see conftest.py here)."""

from tests.contract.test_batches import *  # noqa: F403
