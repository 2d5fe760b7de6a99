"""tests/contract/test_writer.py, run on the asyncio front (see conftest.py here)."""

from tests.contract.test_writer import *  # noqa: F403
