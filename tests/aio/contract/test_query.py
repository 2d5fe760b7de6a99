"""tests/contract/test_query.py, run on the asyncio front (see conftest.py here)."""

from tests.contract.test_query import *  # noqa: F403
