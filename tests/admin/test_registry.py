"""The schema registry's compatibility rules (fakeredis: the rules are pure, the storage plain hashes)."""

from __future__ import annotations

import pytest

import rxstate
from rxstate.admin.registry import SchemaRegistry
from tests.helpers import dump_all


class V1(rxstate.Model):
    __rxstate_name__ = "Doc"
    title: str
    size: int = 0


class V2Added(rxstate.Model):
    __rxstate_name__ = "Doc"
    __version__ = 2
    title: str
    size: int = 0
    owner: str = "nobody"  # optional: old data reads fine


class V2Required(rxstate.Model):
    __rxstate_name__ = "Doc"
    __version__ = 2
    title: str
    owner: str  # required: old data has none


class V2Upcast(rxstate.Model):
    __rxstate_name__ = "Doc"
    __version__ = 2
    title: str
    owner: str

    @rxstate.upcaster(1)
    def _from_v1(data: dict) -> dict:
        return {**data, "owner": "nobody"}


class V2Retyped(rxstate.Model):
    __rxstate_name__ = "Doc"
    __version__ = 2
    title: str
    size: str = "0"


@pytest.fixture
def registry(rx_fake_store):
    reg = SchemaRegistry(rx_fake_store.client, rx_fake_store.namespace)
    reg.register("docs", V1)
    return reg


def test_backward_accepts_optional_fields_and_upcasters_and_refuses_the_rest(registry, rx_fake_store):
    assert registry.check("docs", V2Added) == []
    assert registry.check("docs", V2Upcast) == []
    assert registry.check("docs", V2Required) == ["field 'owner' is required but old data has none"]
    assert registry.check("docs", V2Retyped)[0].startswith("field 'size' changes type")
    before = dump_all(rx_fake_store.client)
    with pytest.raises(rxstate.SchemaError) as caught:
        registry.register("docs", V2Required)
    assert caught.value.name == "docs" and "backward-compatible" in str(caught.value)
    assert dump_all(rx_fake_store.client) == before
    assert registry.register("docs", V2Added) == 2 and sorted(registry.versions("docs")) == [1, 2]


def test_forward_and_full_protect_old_readers(registry):
    assert registry.check("docs", V2Added, compatibility="forward") == [
        "field 'owner' is new: old readers refuse unknown fields"
    ]
    assert "field 'size' changes type" in registry.check("docs", V2Retyped, compatibility="full")[0]
    assert registry.check("docs", V2Upcast, compatibility="full") == [
        "field 'owner' is new: old readers refuse unknown fields"
    ]
    assert registry.check("docs", V1, compatibility="full") == []  # the same version, the same schema
    assert registry.check("docs", V2Added, compatibility="none") == []
    with pytest.raises(rxstate.ValidationError):
        registry.check("docs", V2Added, compatibility="sideways")


def test_an_older_or_changed_version_is_refused(registry):
    class V1Changed(rxstate.Model):
        __rxstate_name__ = "Doc"
        title: str
        pages: int = 1

    assert registry.check("docs", V1Changed) == ["v1 is registered with another schema: bump __version__"]
    with pytest.raises(rxstate.SchemaError):
        registry.register("docs", V2Added, compatibility="full")
    assert registry.compatibility("docs") == "backward"  # a refused registration sets nothing
    registry.register("docs", V2Added, compatibility="none")
    assert registry.compatibility("docs") == "none"
    assert registry.check("docs", V1) == ["version 1 is older than the registered v2"]
