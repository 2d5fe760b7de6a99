"""The error tree: drawn as the classes are, all exported, and each error carrying what a user acts on."""

from __future__ import annotations

import inspect
import re

import pytest

import rxstate
from rxstate import errors
from rxstate.feed.delivery import DeliveryMetrics, Mailbox
from tests.event_models import ORDER_EVENTS, Order
from tests.helpers import dump_all, wait_for
from tests.models import Agent, Task

_NODE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z]\w*)(?: \((?P<bases>[\w, ]+)\))?")


def _drawn_tree() -> dict[str, tuple[str | None, set[str]]]:
    """``{class name: (drawn parent, builtin bases named in parentheses)}`` from the module docstring."""
    drawing = errors.__doc__.split("```")[1]
    parents: dict[int, str] = {}
    tree: dict[str, tuple[str | None, set[str]]] = {}
    for line in drawing.strip("\n").splitlines():
        match = _NODE.match(line)
        assert match, f"cannot read the drawn line {line!r}"
        depth = len(match["indent"])
        parent = max((d for d in parents if d < depth), default=None)
        name = match["name"]
        assert name not in tree, f"{name} is drawn twice"
        tree[name] = (
            parents[parent] if parent is not None else None,
            set((match["bases"] or "").replace(" ", "").split(",")) - {""},
        )
        parents = {d: n for d, n in parents.items() if d < depth} | {depth: name}
    return tree


def _error_classes() -> dict[str, type[BaseException]]:
    return {
        name: cls for name, cls in vars(errors).items() if inspect.isclass(cls) and issubclass(cls, errors.RxStateError)
    }


def test_the_drawn_tree_is_the_class_hierarchy():
    tree = _drawn_tree()
    classes = _error_classes()
    assert set(tree) == set(classes)
    for name, (parent, builtins) in tree.items():
        cls = classes[name]
        ours = [b.__name__ for b in cls.__bases__ if issubclass(b, errors.RxStateError)]
        others = {b.__name__ for b in cls.__bases__ if not issubclass(b, errors.RxStateError)}
        if cls is errors.RxStateError:
            assert parent is None
            continue
        assert ours == [parent], f"{name} is drawn under {parent}, but subclasses {ours}"
        assert others == builtins, f"{name} is drawn with builtin bases {builtins}, but has {others}"


def test_the_tree_reader_sees_a_wrong_drawing(monkeypatch: pytest.MonkeyPatch):
    wrong = errors.__doc__.replace(" │    ├── AlreadyExists", " ├── AlreadyExists")
    monkeypatch.setattr(errors, "__doc__", wrong)
    assert _drawn_tree()["AlreadyExists"][0] == "RxStateError"  # not ConflictError: the test above would fail


def test_every_error_class_is_exported():
    for name, cls in _error_classes().items():
        assert name in errors.__all__, name
        assert name in rxstate.__all__ and getattr(rxstate, name) is cls, name


def test_no_error_class_is_a_stub():
    """Every error class is raised somewhere in the package (the quota error by the tenant stage of
    ``rxstate.tenancy``; the permission error by the policy checks of ``rxstate.security`` and by the
    server's ACL refusals)."""
    import pathlib

    source = "\n".join(
        p.read_text() for p in pathlib.Path(rxstate.__file__).parent.rglob("*.py") if p.name != "errors.py"
    )
    for name in _error_classes():
        if name == "RxStateError":
            continue
        assert re.search(rf"\b{name}\(", source), f"nothing raises {name}"
    stage = pathlib.Path(rxstate.__file__).parent / "tenancy" / "stage.py"
    assert re.search(r"\bQuotaExceeded\(", stage.read_text())
    policy = pathlib.Path(rxstate.__file__).parent / "security" / "guard.py"
    assert re.search(r"\bPermissionDenied\(", policy.read_text())


# -- context attributes -------------------------------------------------------------------------------


def test_a_refused_fenced_write_names_the_lock_lease_key_and_newer_lease(rx_fake_store):
    tasks = rx_fake_store.collection("tasks", Task)
    tasks.put("t1", Task(title="print"))
    old = rx_fake_store.lock("printer", ttl=0.05).acquire()  # paused past its lease, then wakes up
    with rx_fake_store.lock("printer", timeout=5) as new:
        tasks.update("t1", owner="a1", fence=new)
    before = dump_all(rx_fake_store.client)
    with pytest.raises(errors.LockError) as caught:
        tasks.update("t1", owner="a2", fence=old)
    exc = caught.value
    assert (exc.name, exc.token, exc.newer_token) == ("printer", old.token, new.token)
    assert exc.key == tasks.key("t1")
    assert dump_all(rx_fake_store.client) == before


def _server_ms(store: rxstate.Store) -> int:
    seconds, micros = store.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_a_fenced_write_of_an_expired_lease_has_no_newer_token(rx_fake_store):
    tasks = rx_fake_store.collection("tasks", Task)
    tasks.put("t1", Task(title="print"))
    lease = rx_fake_store.lock("printer", ttl=0.05).acquire()
    assert wait_for(lambda: _server_ms(rx_fake_store) > lease.deadline_ms)
    with pytest.raises(errors.LockError) as caught:
        tasks.update("t1", owner="a1", fence=lease)
    assert (caught.value.name, caught.value.token, caught.value.newer_token) == ("printer", lease.token, None)
    assert caught.value.key == tasks.key("t1")


def test_lock_errors_of_the_lock_itself_name_it(rx_fake_store):
    lease = rx_fake_store.lock("printer").acquire()
    with pytest.raises(errors.LockError) as held:
        rx_fake_store.lock("printer").acquire(blocking=False)
    assert (held.value.name, held.value.token) == ("printer", None)
    lease.release()
    with pytest.raises(errors.LockError) as released:
        lease.release()
    assert (released.value.name, released.value.token) == ("printer", lease.token)


def test_schema_errors_name_the_collection_and_field(rx_fake_store):
    with pytest.raises(errors.SchemaError) as caught:
        rx_fake_store.collection("agents", Agent, constraints=[rxstate.bounds("name", 0, 10)])
    assert (caught.value.name, caught.value.field) == ("agents", "name")
    with pytest.raises(errors.SchemaError) as caught:
        rx_fake_store.events("orders", state=Order, events=ORDER_EVENTS, reducer="not callable")  # type: ignore[arg-type]
    assert caught.value.name == "orders"


def test_cluster_errors_name_the_collection(rx_fake_store, monkeypatch: pytest.MonkeyPatch):
    # A unique constraint on a cluster needs the field as partition key; the check runs when the
    # collection opens, before any command reaches a server, so a store that believes it is on a
    # cluster shows it.
    monkeypatch.setattr(rx_fake_store, "is_cluster", True)
    with pytest.raises(errors.ClusterError) as caught:
        rx_fake_store.collection("agents", Agent, constraints=[rxstate.unique("name")])
    assert caught.value.name == "agents"


def test_a_buffer_overflow_names_the_limit():
    failures: list[Exception] = []
    box: Mailbox[int] = Mailbox(
        lambda batch: None, on_error=failures.append, metrics=DeliveryMetrics(), max_items=2, overflow="error"
    )
    box.paused = True  # nothing drains: the buffer fills
    for n in range(4):
        box.offer((n,))
    assert wait_for(lambda: failures)
    assert isinstance(failures[0], errors.BufferOverflow) and failures[0].limit == 2


def test_schema_errors_of_collections_name_the_collection_and_field(rx_fake_store):
    from tests.models import Agent, Task

    with pytest.raises(rxstate.SchemaError) as info:
        rx_fake_store.collection("agents", Agent, indexes=["nope"])
    assert (info.value.name, info.value.field) == ("agents", "nope")
    rx_fake_store.collection("agents", Agent)
    with pytest.raises(rxstate.SchemaError) as info:
        rx_fake_store.collection("agents", Task)
    assert info.value.name == "agents"
    with pytest.raises(rxstate.SchemaError) as info:
        rxstate.connect(rx_fake_store.client, namespace=rx_fake_store.namespace, partitions=3)
    assert (info.value.name, info.value.field) == (rx_fake_store.namespace, "partitions")
