"""Property: after random sets, unsets and finals at random depths, every resolution equals a plain model's."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rxstate

PATHS = ["r", "r/a", "r/b", "r/a/x", "r/a/y", "r/a/x/t"]
KEYS = ["k1", "k2", "k3"]


class TreeModel:
    """The tree as plain dicts: path -> key -> (value, final, merge)."""

    def __init__(self) -> None:
        self.own: dict[str, dict[str, tuple[Any, bool, str]]] = {p: {} for p in PATHS}

    def chain(self, path: str) -> list[str]:
        parts = path.split("/")
        return ["/".join(parts[: i + 1]) for i in range(len(parts))]

    def final_above(self, path: str, key: str) -> bool:
        return any(self.own[p].get(key, (None, False, ""))[1] for p in self.chain(path)[:-1])

    def resolve(self, path: str, key: str) -> Any:
        value = None
        for p in self.chain(path):
            if key in self.own[p]:
                own, final, merge = self.own[p][key]
                if merge == "append" and isinstance(value, list):
                    value = value + own
                elif merge == "merge" and isinstance(value, dict):
                    value = {**value, **own}  # values are flat dicts: a deep merge is this
                else:
                    value = own
                if final:
                    return value
        return value


ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["set", "unset"]),
        st.sampled_from(PATHS),
        st.sampled_from(KEYS),
        st.integers(0, 9),
        st.booleans(),
        st.sampled_from(["replace", "replace", "merge", "append"]),
    ),
    max_size=25,
)


def _shaped(value: int, merge: str) -> Any:
    """A value the merge policy takes: a list to append, a dict to merge, else the number."""
    return {"append": [value], "merge": {f"f{value % 3}": value}}.get(merge, value)


def _run(store: rxstate.Store, ops: list[tuple[str, str, str, int, bool, str]]) -> None:
    model = TreeModel()
    for kind, path, key, number, final, merge in ops:
        value = _shaped(number, merge)
        scope = store.scope(path)
        if kind == "unset":
            assert scope.unset(key) is (key in model.own[path])
            model.own[path].pop(key, None)
        elif model.final_above(path, key):
            with pytest.raises(rxstate.errors.FinalValueError):
                scope.set(key, value, final=final, merge=merge)
        else:
            scope.set(key, value, final=final, merge=merge)
            model.own[path][key] = (value, final, merge)
    for path in PATHS:
        resolved = store.scope(path).resolve()
        for key in KEYS:
            assert store.scope(path).get(key) == model.resolve(path, key), (path, key)
            assert resolved.get(key) == model.resolve(path, key)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_strategy)
def test_resolution_matches_the_model_on_fakeredis(ops):
    import fakeredis

    with rxstate.connect(fakeredis.FakeRedis(), cache=False) as store:
        _run(store, ops)


@pytest.mark.slow
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_strategy)
def test_resolution_matches_the_model_on_a_real_server(rx_redis_backend, ops):
    import uuid

    store = rx_redis_backend.store(namespace=f"prop-{uuid.uuid4().hex[:8]}", cache=False)
    _run(store, ops)
