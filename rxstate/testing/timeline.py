"""Drawing a history: one lane per process, operations as bars over time, as HTML or plain text.

The HTML is one self-contained page (inline CSS, no script): bars are positioned by invocation and
completion time, ``info`` operations (outcome unknown) run on to the end of the window, the operations of
the linearization found so far are green and numbered in their order, and the ones that cannot fit (or
that an anomaly names) are red. Hover a bar for the operation. The text form is the same picture in
characters, for CI logs. Written by hand: no plotting library draws interval timelines as a page without
a browser-side runtime.

Example:
    >>> from rxstate.testing.linearizability import Op
    >>> ops = [Op("p1", "x", "write", 1, None, "ok", 0, 10), Op("p2", "x", "read", None, 2, "ok", 5, 20)]
    >>> print(text(["a summary"], ops, bad=[ops[1]], width=40))  # doctest: +NORMALIZE_WHITESPACE
    a summary
    p1 |[==================]....................|
    p2 |.........[!!!!!!!!!!!!!!!!!!!!!!!!!!!!!]|
    bad (!): p2: read(x) -> 2 [ok]
"""

from __future__ import annotations

import html as _html
from collections.abc import Sequence

from .linearizability import Op

__all__ = ["MAX_OPS", "html", "text"]

MAX_OPS = 300
"""At most this many operations are drawn: those around the highlighted ones."""


def _window(ops: Sequence[Op], bad: set[int], linearized: set[int]) -> list[Op]:
    """The operations to draw: all of them, or ``MAX_OPS`` around the first bad one (else the last
    linearized one)."""
    ordered = sorted(ops, key=lambda o: o.invoke_ns)
    if len(ordered) <= MAX_OPS:
        return ordered
    where = [i for i, op in enumerate(ordered) if id(op) in bad][:1]
    where = where or [i for i, op in enumerate(ordered) if id(op) in linearized][-1:] or [len(ordered) - 1]
    centre = where[0]
    start = max(0, min(centre - MAX_OPS // 2, len(ordered) - MAX_OPS))
    return ordered[start : start + MAX_OPS]


def _span(ops: Sequence[Op]) -> tuple[int, int]:
    start = min(op.invoke_ns for op in ops)
    end = max(max(op.complete_ns or op.invoke_ns for op in ops), start + 1)
    return start, end


def text(
    summary: Sequence[str],
    ops: Sequence[Op],
    *,
    linearized: Sequence[Op] = (),
    bad: Sequence[Op] = (),
    width: int = 100,
) -> str:
    """The history as lines of characters: ``#`` linearized, ``!`` cannot fit, ``=`` others, ``?`` unknown.

    Example:
        >>> text(["nothing"], [])
        'nothing'
    """
    lines = list(summary)
    if not ops:
        return "\n".join(lines)
    bad_ids, lin_ids = {id(o) for o in bad}, {id(o) for o in linearized}
    shown = _window(ops, bad_ids, lin_ids)
    start, end = _span(shown)
    scale = (width - 1) / (end - start)
    lanes: dict[str, list[str]] = {}
    for op in shown:
        lane = lanes.setdefault(op.process, ["."] * width)
        a = int((op.invoke_ns - start) * scale)
        b = width - 1 if op.complete_ns is None else max(a + 1, int((op.complete_ns - start) * scale))
        fill = "!" if id(op) in bad_ids else "#" if id(op) in lin_ids else "?" if op.status == "info" else "="
        for x in range(a, min(b + 1, width)):
            lane[x] = fill
        if b - a >= 2:  # room for the ends too
            lane[a] = "["
            if op.complete_ns is not None and b < width:
                lane[b] = "]"
    pad = max(len(p) for p in lanes)
    lines += [f"{p.ljust(pad)} |{''.join(cells)}|" for p, cells in sorted(lanes.items())]
    if linearized:
        lines.append("linearized (#), in order:")
        lines += [f"  {n}. {op}" for n, op in enumerate(linearized[-12:], start=max(1, len(linearized) - 11))]
    if bad:
        lines.append("bad (!): " + "\n         ".join(str(op) for op in bad[:12]))
    return "\n".join(lines)


_CSS = """
body{font:13px system-ui,sans-serif;margin:12px}
.rx-tl{position:relative;border-left:1px solid #999;margin:8px 0 8px 90px}
.rx-lane{position:relative;height:22px;border-bottom:1px dashed #ddd}
.rx-lane>span.name{position:absolute;left:-88px;width:84px;text-align:right;color:#333;top:3px;overflow:hidden}
.rx-op{position:absolute;top:3px;height:15px;border-radius:3px;background:#9db4d3;font-size:10px;
 color:#fff;overflow:hidden;white-space:nowrap;box-sizing:border-box;padding-left:2px}
.rx-op.fail{background:#ccc}
.rx-op.info{background:repeating-linear-gradient(45deg,#e8a33d,#e8a33d 4px,#f3c77e 4px,#f3c77e 8px)}
.rx-op.lin{background:#3c9d5d}
.rx-op.bad{background:#d33;border:2px solid #800}
pre.rx-sum{background:#f6f6f6;padding:6px;white-space:pre-wrap}
.rx-key span{display:inline-block;width:12px;height:10px;margin:0 4px 0 10px;border-radius:2px}
"""


def html(
    summary: Sequence[str],
    ops: Sequence[Op],
    *,
    linearized: Sequence[Op] = (),
    bad: Sequence[Op] = (),
    title: str = "rxstate history",
) -> str:
    """A standalone HTML page of the history (see the module docstring).

    Example:
        >>> page = html(["ok"], [Op("p1", "x", "write", 1, None, "ok", 0, 10)])
        >>> page.startswith("<!DOCTYPE html>") and "class='rx-op ok'" in page
        True
    """
    esc = _html.escape
    order = {id(op): n for n, op in enumerate(linearized, start=1)}
    bad_ids = {id(op) for op in bad}
    shown = _window(ops, bad_ids, set(order))
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{_CSS}</style>"
        f"</head><body><div class='rx-history'><pre class='rx-sum'>{esc(chr(10).join(summary))}</pre>"
    ]
    parts.append(
        "<div class='rx-key'><span style='background:#3c9d5d'></span>linearized (numbered)"
        "<span style='background:#d33'></span>cannot fit / anomaly"
        "<span style='background:#e8a33d'></span>outcome unknown"
        "<span style='background:#9db4d3'></span>ok<span style='background:#ccc'></span>failed</div>"
    )
    if shown:
        start, end = _span(shown)
        width = end - start
        lanes: dict[str, list[str]] = {}
        for op in shown:
            left = 100.0 * (op.invoke_ns - start) / width
            right = 100.0 if op.complete_ns is None else 100.0 * (op.complete_ns - start) / width
            classes = ["rx-op", op.status]
            label = op.f
            if id(op) in bad_ids:
                classes.append("bad")
            elif id(op) in order:
                classes.append("lin")
                label = f"{order[id(op)]}. {op.f}"
            bar = (
                f"<div class='{' '.join(classes)}' style='left:{left:.3f}%;width:{max(right - left, 0.4):.3f}%'"
                f" title='{esc(str(op), quote=True)}'>{esc(label)}</div>"
            )
            lanes.setdefault(op.process, []).append(bar)
        parts.append("<div class='rx-tl'>")
        for process, bars in sorted(lanes.items()):
            parts.append(f"<div class='rx-lane'><span class='name'>{esc(process)}</span>{''.join(bars)}</div>")
        parts.append("</div>")
        if len(shown) < len(ops):
            parts.append(f"<p>{len(shown)} of {len(ops)} operations shown (those around the highlighted ones).</p>")
    parts.append("</div></body></html>")
    return "".join(parts)
