"""tests/contract/test_cache_coherence.py, run on the asyncio front (see conftest.py here)."""

from tests.contract.test_cache_coherence import *  # noqa: F403
