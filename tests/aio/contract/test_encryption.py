"""tests/contract/test_encryption.py, run on the asyncio front (see conftest.py here)."""

from tests.contract.test_encryption import *  # noqa: F403
