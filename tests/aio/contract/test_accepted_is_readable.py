"""tests/contract/test_accepted_is_readable.py, run on the asyncio front (see conftest.py here)."""

from tests.contract.test_accepted_is_readable import *  # noqa: F403
