"""Live views: throttling in virtual time, observables and derived values, the missing-ipywidgets error."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import reactivex
from reactivex.disposable import Disposable
from reactivex.subject import Subject
from reactivex.testing import TestScheduler

import rxstate
import rxstate.notebook as rxnb
from tests.models import Agent

pytest.importorskip("ipywidgets")


def at(scheduler: TestScheduler, seconds: float) -> None:
    scheduler.advance_to(scheduler.to_datetime(0) + timedelta(seconds=seconds))


class FakeDerived:
    """A derived value as the reactive layer provides it: .value, .subscribe(fn) -> disposable."""

    def __init__(self, value: Any, name: str = "busy") -> None:
        self.value = value
        self.name = name
        self.sources: set[tuple[str, str]] = set()
        self.parents: list[Any] = []
        self._subscribers: list[Callable[[Any], None]] = []

    def subscribe(self, fn: Callable[[Any], None]) -> Disposable:
        self._subscribers.append(fn)
        return Disposable(lambda: self._subscribers.remove(fn))

    def set(self, value: Any) -> None:
        self.value = value
        for fn in list(self._subscribers):
            fn(value)


def test_throttle_emits_first_at_once_and_latest_at_interval_end() -> None:
    scheduler = TestScheduler()
    seen: list[tuple[float, Any]] = []
    throttle = rxnb.Throttle(
        lambda v: seen.append(((scheduler.now - scheduler.to_datetime(0)).total_seconds(), v)),
        interval=0.1,
        scheduler=scheduler,
    )
    for i in range(1000):  # a burst at t=0
        throttle.push(i)
    assert seen == [(0.0, 0)]
    at(scheduler, 0.1)
    assert seen == [(0.0, 0), (0.1, 999)]  # latest wins, nothing in between
    at(scheduler, 0.5)
    throttle.push("quiet")  # after a quiet period: shown at once
    assert seen[-1] == (0.5, "quiet")
    throttle.push("x")
    throttle.push("y")
    throttle.flush()
    assert seen[-1] == (0.5, "y")
    throttle.push("z")
    throttle.dispose()
    at(scheduler, 2.0)
    assert seen[-1] == (0.5, "y")  # disposed: a waiting value is dropped


def test_live_observable_renders_throttled_and_escaped() -> None:
    scheduler = TestScheduler()
    subject: Subject[Any] = Subject()
    view = rxnb.live(subject, max_rate=5, scheduler=scheduler, title="<agents>")
    for i in range(100):
        subject.on_next([Agent(name=f"<b>{i}</b>", api_key="sk-live", load=i)])
    assert view.renders == 1 and view.value[0].load == 0
    at(scheduler, 0.2)
    assert view.renders == 2 and view.value[0].load == 99
    html = view.widget.value
    assert "&lt;b&gt;99&lt;/b&gt;" in html and "<b>99</b>" not in html
    assert "sk-live" not in html and "&lt;agents&gt;" in html
    subject.on_next("late")
    subject.on_completed()  # completion flushes the waiting value
    assert view.done and view.value == "late" and view.renders == 3
    view.close()


def test_live_shows_source_errors() -> None:
    view = rxnb.live(reactivex.throw(RuntimeError("<boom>")))
    assert view.done and isinstance(view.error, RuntimeError)
    assert "&lt;boom&gt;" in view.widget.value


def test_live_derived_value_updates_and_closes() -> None:
    scheduler = TestScheduler()
    busy = FakeDerived(0)
    view = rxnb.live(busy, max_rate=10, scheduler=scheduler)
    assert view.value == 0 and "<pre>0</pre>" in view.widget.value
    at(scheduler, 1.0)
    busy.set(3)
    assert view.value == 3
    view.close()
    assert busy._subscribers == []
    at(scheduler, 2.0)
    busy.set(4)
    assert view.value == 3 and "LiveView" in repr(view)


def test_live_rejects_other_sources_and_bad_rates() -> None:
    with pytest.raises(rxstate.ValidationError, match="Observable or a derived value"):
        rxnb.live(42)
    with pytest.raises(rxstate.ValidationError, match="max_rate"):
        rxnb.live(reactivex.empty(), max_rate=0)


def test_live_without_ipywidgets_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # makes `import ipywidgets` fail
    with pytest.raises(ImportError, match=r"pip install 'rxstate\[notebook\]'"):
        rxnb.live(reactivex.empty())
