"""tests/contract/test_collection.py, run on the asyncio front (see conftest.py here)."""

from tests.contract.test_collection import *  # noqa: F403
