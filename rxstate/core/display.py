"""Rich (HTML) display of rxstate objects, through a registry that the notebook layer fills.

The core's types define ``_repr_html_`` as ``display.html(self)``; which HTML that is belongs to the
notebook layer (``rxstate.notebook`` registers its renderers when imported, and ``import rxstate`` imports
it when IPython is running). Without a renderer the HTML is the escaped plain ``repr``, which is already
redacted. So the core never imports the layer that draws it.
"""

from __future__ import annotations

import html as _html
from collections.abc import Callable
from typing import Any

__all__ = ["html", "register"]

Renderer = Callable[[Any], str]
_RENDERERS: dict[type, Renderer] = {}


def register(cls: type, renderer: Renderer) -> None:
    """Render instances of ``cls`` (and its subclasses) with ``renderer`` in notebooks.

    Example:
        >>> class Point: ...
        >>> register(Point, lambda p: "<b>point</b>")
        >>> html(Point())
        '<b>point</b>'
    """
    _RENDERERS[cls] = renderer


def html(obj: Any) -> str:
    """The HTML of ``obj``: its registered renderer's, else its escaped ``repr``.

    Example:
        >>> html(3)
        '<pre>3</pre>'
    """
    for klass in type(obj).__mro__:
        renderer = _RENDERERS.get(klass)
        if renderer is not None:
            return renderer(obj)
    return f"<pre>{_html.escape(repr(obj))}</pre>"
