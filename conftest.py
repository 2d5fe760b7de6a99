"""Collects the README's Python blocks as tests (plain ``pytest`` lists README.md in ``testpaths``).

The rules (a block starts afresh unless its first line says ``# continuing``) are in tests/docs/blocks.py.
"""

from pathlib import Path

from tests.docs.blocks import markdown_sybil

pytest_collect_file = markdown_sybil(Path(__file__).parent, "README.md").pytest()
