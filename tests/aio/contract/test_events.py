"""tests/contract/test_events.py, run on the asyncio front (see conftest.py here)."""

from tests.contract.test_events import *  # noqa: F403
