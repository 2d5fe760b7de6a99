"""A counterexample drawn: lanes per process, the linearization numbered, the stuck operation marked."""

from __future__ import annotations

from rxstate.testing import checkers, timeline
from rxstate.testing.linearizability import History, Op


def _stale_read():
    h = History()
    h.invoke("write", "x", 1, process="p1").ok()
    h.invoke("write", "x", 2, process="p2").ok()
    h.invoke("read", "x", process="p3").ok(1)  # after the write of 2 completed
    h.invoke("write", "x", "<script>", process="p4").info()
    return checkers.registers().check(h)


def test_the_text_form_names_the_linearization_and_the_stuck_operation():
    verdict = _stale_read()
    report = verdict.text(width=60)
    lanes = [line for line in report.splitlines() if line.startswith(("p1 ", "p2 ", "p3 ", "p4 "))]
    assert len(lanes) == 4 and all(len(line) == len(lanes[0]) for line in lanes)
    assert "#" in lanes[0] + lanes[1] and "!" in lanes[2] and "?" in lanes[3]
    assert "linearized (#), in order:" in report and "bad (!): p3: read(x) -> 1 [ok]" in report


def test_the_html_page_numbers_the_linearization_and_escapes_values(tmp_path):
    verdict = _stale_read()
    page = verdict._repr_html_()
    assert "1. write" in page and "2. write" in page
    assert "rx-op ok bad" in page and "rx-op info" in page
    assert "&lt;script&gt;" in page
    assert "'<script>'" not in page
    path = verdict.save_html(tmp_path / "x.html")
    assert path.read_text() == verdict.html()


def test_long_histories_show_a_window_around_the_first_bad_operation():
    ops = [Op(f"p{i % 3}", "x", "write", i, None, "ok", i * 10, i * 10 + 5) for i in range(1000)]
    bad = ops[700]
    page = timeline.html(["many"], ops, bad=[bad])
    assert f"{timeline.MAX_OPS} of 1000 operations shown" in page
    assert "write(x) 700" in page and "write(x) 100 " not in page
