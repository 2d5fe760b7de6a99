"""What the store accepts, it can read back: every write validates the resulting entity before it runs."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

import rxstate
from rxstate.errors import ValidationError
from tests.helpers import dump_all
from tests.models import Agent


class Checked(rxstate.Model):
    low: int = 0
    high: int = 10
    step: int = pydantic.Field(0, multiple_of=5)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> Checked:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


@pytest.fixture
def agents(rx_store: Any) -> Any:
    return rx_store.collection("agents", Agent, indexes=["status"])


@pytest.fixture
def checked(rx_store: Any) -> Any:
    coll = rx_store.collection("checked", Checked)
    coll.put("c1", Checked())
    return coll


def _unchanged(store: Any, attempt: Any) -> None:
    before = dump_all(store.client)
    with pytest.raises(ValidationError):
        attempt()
    assert dump_all(store.client) == before


@pytest.mark.parametrize("bad", [True, 1.0, "1", -1])
def test_expected_version_must_be_a_non_negative_int_everywhere(rx_store: Any, agents: Any, bad: Any) -> None:
    agents.put("a1", Agent(name="x"))
    _unchanged(rx_store, lambda: agents.put("a1", Agent(name="y"), expected_version=bad))
    _unchanged(rx_store, lambda: agents.update("a1", status="busy", expected_version=bad))
    _unchanged(rx_store, lambda: agents.incr("a1", "load", 1, expected_version=bad))
    _unchanged(rx_store, lambda: agents.delete("a1", expected_version=bad))


def test_unvalidated_instances_are_refused_by_every_put(rx_store: Any, agents: Any) -> None:
    wrong = Agent(name="x").model_copy(update={"load": "lots"})
    unbuilt = Agent.model_construct(status="busy")  # no name
    for bad in (wrong, unbuilt):
        _unchanged(rx_store, lambda bad=bad: agents.put("a1", bad))
        _unchanged(rx_store, lambda bad=bad: agents.create("a1", bad))
        results = agents.put_many({"a1": bad})
        assert isinstance(results[0], ValidationError)

        def in_transaction(bad: Any = bad) -> None:
            with rx_store.transaction() as tx:
                tx.put(agents, "a1", bad)

        _unchanged(rx_store, in_transaction)

        def in_batch(bad: Any = bad) -> None:
            with rx_store.batch(atomic=True) as batch:
                batch.put(agents, "a1", bad)

        _unchanged(rx_store, in_batch)
    assert agents.ids() == []


def test_an_accepted_model_copy_is_stored_validated(agents: Any) -> None:
    loose = Agent(name="x").model_copy(update={"load": "7"})  # lax mode coerces "7" on validation
    agents.put("a1", loose)
    assert agents.get("a1").load == 7
    assert agents.get("a1", consistent=True).load == 7


def test_partial_updates_run_the_model_validators_before_writing(rx_store: Any, checked: Any) -> None:
    _unchanged(rx_store, lambda: checked.update("c1", low=11))
    assert checked.get_versioned("c1").version == 1
    assert checked.update("c1", low=3).value.low == 3
    assert checked.get("c1", consistent=True).low == 3


def test_partial_writes_that_need_the_whole_entity_are_refused_where_it_is_not_read(
    rx_store: Any, checked: Any
) -> None:
    def in_transaction() -> None:
        with rx_store.transaction() as tx:
            tx.update(checked, "c1", low=11)

    _unchanged(rx_store, in_transaction)
    _unchanged(rx_store, lambda: checked.incr("c1", "low", 20))


def test_incr_keeps_multiple_of(rx_store: Any) -> None:
    class Steps(rxstate.Model):
        n: int = pydantic.Field(0, multiple_of=5)

    coll = rx_store.collection("steps", Steps)
    coll.put("s", Steps())
    _unchanged(rx_store, lambda: coll.incr("s", "n", 3))
    assert coll.incr("s", "n", 10) == 10


def test_only_instances_that_came_out_of_validation_skip_the_second_check() -> None:
    import copy
    import pickle

    agent = Agent(name="x")
    assert agent.is_validated() and Agent.model_validate({"name": "y"}).is_validated()
    assert not agent.model_copy(update={"load": "lots"}).is_validated()
    assert not Agent.model_construct(name="z").is_validated()
    assert not copy.deepcopy(agent).is_validated() and not pickle.loads(pickle.dumps(agent)).is_validated()
    assert pickle.loads(pickle.dumps(agent)) == agent == Agent(name="x")
