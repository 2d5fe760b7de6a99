"""Live views: a notebook widget that shows the latest value of an observable or a derived value.

Needs ``ipywidgets`` (the ``notebook`` extra). Updates are throttled: at most ``max_rate`` renders per
second; a burst renders its first value at once and its last one when the interval ends (latest wins),
so the browser is never flooded and the final state is always shown.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import reactivex
from reactivex.abc import DisposableBase, SchedulerBase
from reactivex.scheduler import TimeoutScheduler

from rxstate.core.errors import ValidationError

from ._html import esc, value_html

__all__ = ["LiveView", "Throttle", "live"]

INSTALL_HINT = (
    "live views need ipywidgets; install the notebook extra: pip install 'rxstate[notebook]' "
    "(or: pip install ipywidgets)"
)
_NOTHING: Any = object()


def _widgets() -> Any:
    try:
        import ipywidgets  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ImportError(INSTALL_HINT, name="ipywidgets") from exc
    return ipywidgets


class Throttle:
    """Calls ``emit`` with the latest pushed value at most once per ``interval`` seconds (latest wins).

    The first value of a quiet period is emitted at once; values pushed within the interval after an
    emission replace each other, and the last one is emitted when the interval ends.

    Example:
        >>> from reactivex.testing import TestScheduler
        >>> clock = TestScheduler()  # virtual time
        >>> t = Throttle(print, interval=0.1, scheduler=clock)
        >>> for i in range(1000):
        ...     t.push(i)
        0
        >>> clock.advance_by(0.1)
        999
    """

    def __init__(self, emit: Callable[[Any], None], *, interval: float, scheduler: SchedulerBase | None = None) -> None:
        self._emit = emit
        self._interval = timedelta(seconds=interval)
        self._scheduler = scheduler or TimeoutScheduler()
        self._lock = threading.Lock()
        self._pending: Any = _NOTHING
        self._last: datetime | None = None
        self._timer: DisposableBase | None = None
        self._closed = False

    def push(self, value: Any) -> None:
        """Offer a new value; it is emitted now, or at the end of the current interval unless replaced."""
        with self._lock:
            if self._closed:
                return
            now = self._scheduler.now
            if self._timer is None and (self._last is None or now - self._last >= self._interval):
                self._last = now
                emit_now = True
            else:
                self._pending = value
                emit_now = False
                if self._timer is None:
                    assert self._last is not None
                    self._timer = self._scheduler.schedule_relative(self._last + self._interval - now, self._fire)
        if emit_now:
            self._emit(value)

    def _fire(self, _scheduler: Any = None, _state: Any = None) -> None:
        with self._lock:
            value, self._pending = self._pending, _NOTHING
            self._timer = None
            if self._closed or value is _NOTHING:
                return
            self._last = self._scheduler.now
        self._emit(value)

    def flush(self) -> None:
        """Emit a waiting value now."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.dispose()
        self._fire()

    def dispose(self) -> None:
        """Drop any waiting value and stop."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
            self._pending = _NOTHING
        if timer is not None:
            timer.dispose()


class LiveView:
    """A widget showing the latest value of a source, updated in place.

    Attributes:
        widget: the ``ipywidgets.HTML`` shown in the notebook.
        value: the last value rendered.
        renders: how many times the widget was redrawn.
        done: whether the source completed (or failed).
        error: the source's error, if it failed.
    """

    def __init__(
        self,
        source: Any,
        *,
        max_rate: float = 10.0,
        render: Callable[[Any], str] | None = None,
        title: str | None = None,
        scheduler: SchedulerBase | None = None,
    ) -> None:
        widgets = _widgets()
        if not (isinstance(max_rate, int | float) and max_rate > 0):
            raise ValidationError(f"max_rate must be a positive number of updates per second, not {max_rate!r}")
        self.widget = widgets.HTML()
        self.value: Any = None
        self.renders = 0
        self.done = False
        self.error: BaseException | None = None
        self._render = render or value_html
        self._title = f'<div class="rxs-meta">{esc(title)}</div>' if title else ""
        self._throttle = Throttle(self._show, interval=1.0 / max_rate, scheduler=scheduler)
        self._subscription: Any = None
        if isinstance(source, reactivex.Observable):
            self._subscription = source.subscribe(
                on_next=self._throttle.push, on_error=self._failed, on_completed=self._completed
            )
        elif hasattr(source, "subscribe") and hasattr(source, "value"):
            self._throttle.push(source.value)
            self._subscription = source.subscribe(self._throttle.push)
        else:
            raise ValidationError(
                f"live() takes a reactivex.Observable or a derived value (with .value and .subscribe), "
                f"not {type(source).__name__}"
            )

    def _show(self, value: Any) -> None:
        self.value = value
        self.renders += 1
        self.widget.value = self._title + self._render(value)

    def _completed(self) -> None:
        self._throttle.flush()
        self.done = True

    def _failed(self, error: BaseException) -> None:
        self._throttle.flush()
        self.done = True
        self.error = error
        self.widget.value += f'<div class="rxs-meta">source failed: {esc(repr(error))}</div>'

    def close(self) -> None:
        """Stop following the source (the widget keeps its last content).

        Example:
            >>> view = rxstate.notebook.live(rx.never())
            >>> view.close()
            >>> view
            <LiveView live, 0 renders>
        """
        self._throttle.dispose()
        subscription, self._subscription = self._subscription, None
        if subscription is not None and hasattr(subscription, "dispose"):
            subscription.dispose()

    def __repr__(self) -> str:
        state = "done" if self.done else "live"
        return f"<LiveView {state}, {self.renders} renders>"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)  # type: ignore[no-untyped-call]


def live(
    source: Any,
    *,
    max_rate: float = 10.0,
    render: Callable[[Any], str] | None = None,
    title: str | None = None,
    scheduler: SchedulerBase | None = None,
) -> LiveView:
    """Show a value that updates in place: an observable's latest item, or a derived value.

    Models, versioned values and lists of them show as tables, change records as a change list,
    anything else as its short text; secrets stay redacted and all text is escaped.

    Args:
        source: a ``reactivex.Observable``, or a derived value (``.value`` and ``.subscribe(fn)``).
        max_rate: at most this many redraws per second; in a burst the latest value wins.
        render: a function from a value to HTML, instead of the default one (escape user data!).
        title: a caption above the value.
        scheduler: the reactivex scheduler timing the throttle (default: timer threads).

    Raises:
        ImportError: ipywidgets is not installed (the message says what to install).
        ValidationError: ``source`` is neither an observable nor a derived value.

    Example:
        >>> from reactivex.testing import TestScheduler
        >>> clock = TestScheduler()
        >>> view = rxstate.notebook.live(rx.of(1, 2, 3), scheduler=clock)  # e.g. agents.watch("a1")
        >>> clock.advance_by(1)
        >>> view  # the last expression of a cell shows the widget
        <LiveView done, 2 renders>
        >>> view.widget.value.endswith("<pre>3</pre></div>")  # the latest value won
        True
    """
    return LiveView(source, max_rate=max_rate, render=render, title=title, scheduler=scheduler)
