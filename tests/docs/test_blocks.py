"""The README harness (tests/docs/blocks.py): which fences run, in which namespace, and what it cleans up."""

from __future__ import annotations

import os
import textwrap
import tomllib
from pathlib import Path

import fakeredis
import pytest
from sybil import Document
from sybil.example import SybilFailure
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

import rxstate
from rxstate import Store
from tests.docs.blocks import markdown_sybil

ROOT = Path(__file__).resolve().parents[2]
SHOWN_ONLY = {"bash", "text", "toml", "json"}  # languages the README may show without running


def fenced(*sources: str, language: str = "python") -> str:
    """Markdown with one fenced block per source."""
    return "".join(f"```{language}\n{source}\n```\n\n" for source in sources)


def run(tmp_path: Path, markdown: str) -> dict[str, object]:
    """Evaluate every example of ``markdown`` as pytest would; returns the document's final namespace."""
    path = tmp_path / "doc.md"
    path.write_text(textwrap.dedent(markdown))
    sybil = markdown_sybil(tmp_path, "*.md")
    document = sybil.parse(path)
    assert sybil.setup is not None and sybil.teardown is not None
    sybil.setup(document.namespace)
    try:
        for example in document.examples():
            example.evaluate()
        return dict(document.namespace)
    finally:
        sybil.teardown(document.namespace)


def readme_fences() -> list[str]:
    """The language of every fenced block of the README, in order."""
    document = Document((ROOT / "README.md").read_text(), "README.md")
    return [region.lexemes["language"] for region in FencedCodeBlockLexer(language=r"[^\n]*")(document)]


def test_plain_pytest_collects_every_python_block_of_the_readme():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "README.md" in options["testpaths"]
    document = markdown_sybil(ROOT, "README.md").parse(ROOT / "README.md")
    # one example per code block, one per ">>>" of a doctest block
    assert len(list(document.examples())) >= readme_fences().count("python") > 0


def test_every_readme_fence_runs_or_is_a_shown_only_language():
    # A ```py, ```sh or unlabelled fence would silently not run, or not be known as shell.
    languages = readme_fences()
    unknown = sorted(set(languages) - {"python", *SHOWN_ONLY})
    assert "python" in languages and not unknown, (
        f"README fences {unknown}: write python (run as a test) or one of {sorted(SHOWN_ONLY)} (shell commands: bash)"
    )


def test_a_fresh_block_sees_nothing_of_the_blocks_before_it(tmp_path):
    with pytest.raises(NameError, match="'x'"):
        run(tmp_path, fenced("x = 1", "y = x + 1"))


def test_a_continuing_block_runs_on_from_the_ones_before_it(tmp_path):
    markdown = fenced("x = 1", "# continuing (x)\ny = x + 1", ">>> # continuing (y)\n>>> y * 10\n20")
    namespace = run(tmp_path, markdown + fenced("this is not python", language="bash"))
    assert namespace["x"] == 1 and namespace["y"] == 2


def test_a_doctest_block_fails_on_other_output(tmp_path):
    with pytest.raises(SybilFailure, match=r"Expected:\s+3\s+Got:\s+2"):
        run(tmp_path, fenced(">>> 1 + 1\n3"))


SEEN: list[Store] = []  # stores the blocks of the test below open, for it to look at


def closed(store: Store) -> bool:
    return store._closed.is_set()


def test_stores_of_a_run_are_closed_when_the_next_fresh_block_starts_and_at_the_end(tmp_path):
    SEEN.clear()
    with rxstate.connect(fakeredis.FakeRedis(), cache=False) as outside:  # not the blocks': left open
        run(
            tmp_path,
            """
            ```python
            import fakeredis, rxstate
            from tests.docs.test_blocks import SEEN
            SEEN.append(rxstate.connect(fakeredis.FakeRedis(), cache=False))  # no name in the namespace
            store = rxstate.connect(fakeredis.FakeRedis(), cache=False)
            SEEN.append(store)
            ```

            ```python
            import fakeredis, rxstate
            from tests.docs.test_blocks import SEEN, closed
            assert [closed(s) for s in SEEN] == [True, True]
            SEEN.append(rxstate.connect(fakeredis.FakeRedis(), cache=False))
            assert not closed(SEEN[-1])
            ```
            """,
        )
        assert len(SEEN) == 3 and all(closed(s) for s in SEEN)
        assert not closed(outside)


def test_redis_url_is_set_aside_while_the_blocks_run(tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # the blocks must not reach a developer's server
    namespace = run(tmp_path, fenced("import os\nurl = os.environ.get('REDIS_URL')"))
    assert namespace["url"] is None
    assert os.environ["REDIS_URL"] == "redis://127.0.0.1:1/0"
