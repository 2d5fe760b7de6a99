"""Run the ```python blocks of markdown files (the README) as tests, with Sybil.

A block starts afresh, like a new interpreter, unless its first line is a comment beginning
``# continuing`` (``>>> # continuing`` in a ``>>>`` block): then it runs in the namespace of the blocks
before it. Why not Sybil's default of one namespace per document: a reader copies one block, or one
section, not the whole README, so a block that silently needs names from three sections up is broken
for them; with this rule such a block fails here (``NameError``), and a continuation says so in the
text the reader sees. The stores opened by a run of blocks are closed when the next fresh block
starts, as the exit of that interpreter would close them.

Blocks starting with ``>>>`` are doctests (their output is compared); other blocks assert what they
claim. ``<!-- skip: next -->`` before a block skips it (Sybil's skip directive). Only ```python fences
run; ```bash and the others are shown, not run.
"""

from __future__ import annotations

import doctest
import gc
import os
import re
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sybil import Document, Example, Region, Sybil
from sybil.evaluators.doctest import DocTestEvaluator
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.abstract.doctest import DocTestStringParser
from sybil.parsers.markdown import CodeBlockParser, SkipParser

from rxstate import Store

__all__ = ["CONTINUES", "markdown_sybil", "python_blocks"]

CONTINUES = re.compile(r"(>>>)?\s*#\s*continuing\b", re.IGNORECASE)
"""How the first line of a block that continues the blocks before it begins."""

_SESSION = "__readme_session__"  # the one namespace entry a fresh block keeps
_DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _open_stores() -> set[Store]:
    return {obj for obj in gc.get_objects() if isinstance(obj, Store)}


class _Session:
    """The blocks of one document: the environment they run in and the stores of the current run."""

    def __init__(self) -> None:
        # Blocks call rxstate.connect() as a reader does, and get an embedded server. A REDIS_URL in the
        # developer's environment would point them at that server instead, and they would write to it.
        self._redis_url = os.environ.pop("REDIS_URL", None)
        self._before: weakref.WeakSet[Store] = weakref.WeakSet(_open_stores())  # no test's store kept alive

    def end_run(self) -> None:
        """Close every store opened since the run began (the namespace may no longer name them all)."""
        for store in _open_stores():
            if store not in self._before:
                store.close()
        self._before = weakref.WeakSet(_open_stores())

    def end(self) -> None:
        self.end_run()
        if self._redis_url is not None:
            os.environ["REDIS_URL"] = self._redis_url


def _fresh(evaluator: Callable[[Example], Any]) -> Callable[[Example], Any]:
    """``evaluator`` run after the previous run's end, in an emptied namespace."""

    def evaluate(example: Example) -> Any:
        __tracebackhide__ = True
        session = example.namespace[_SESSION]
        session.end_run()
        example.namespace.clear()
        example.namespace[_SESSION] = session
        return evaluator(example)

    return evaluate


def python_blocks(document: Document) -> Iterable[Region]:
    """Sybil parser: each ```python block (doctests if it starts with ``>>>``), fresh unless continuing."""
    code = CodeBlockParser("python", PythonEvaluator())
    doctests = DocTestStringParser(DocTestEvaluator(_DOCTEST_FLAGS))
    for block in code(document):
        source = block.parsed
        regions = [block]
        if source.startswith(">>>"):
            regions = list(doctests(source, document.path))
            for region in regions:
                region.adjust(block, source)
        if not CONTINUES.match(source):
            regions[0].evaluator = _fresh(regions[0].evaluator)
        yield from regions


def _setup(namespace: dict[str, Any]) -> None:
    namespace[_SESSION] = _Session()


def _teardown(namespace: dict[str, Any]) -> None:
    namespace.pop(_SESSION).end()


def markdown_sybil(root: Path, *patterns: str) -> Sybil:
    """A Sybil for the Python blocks of the markdown files under ``root`` matching ``patterns``."""
    return Sybil(
        parsers=[python_blocks, SkipParser()],
        path=str(root),
        patterns=list(patterns),
        setup=_setup,
        teardown=_teardown,
    )
