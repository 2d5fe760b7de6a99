"""tests/contract/test_constraints.py, run on the asyncio front (see conftest.py here)."""

from tests.contract.test_constraints import *  # noqa: F403
