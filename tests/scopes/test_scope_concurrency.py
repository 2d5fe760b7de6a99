"""Concurrent writers at different levels of one tree (real server): no write is lost, finals hold."""

from __future__ import annotations

import threading
import uuid

import rxstate


def test_concurrent_writers_at_different_levels_lose_nothing(rx_server):
    namespace = f"conc-{uuid.uuid4().hex[:8]}"
    paths = ["org", "org/t", "org/t/a", "org/t/a/task"]
    stores = [rxstate.connect(rx_server.client(), namespace=namespace, cache=False) for _ in paths]
    errors: list[BaseException] = []

    def writer(store: rxstate.Store, path: str) -> None:
        try:
            scope = store.scope(path)
            for i in range(15):
                scope.set(f"n{i % 3}", f"{path}:{i}")
                scope.set("log", [f"{path}:{i}"], merge="append") if path != "org" else scope.set("log", [])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s, p)) for s, p in zip(stores, paths, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    leaf = stores[0].scope("org/t/a/task")
    assert leaf.get("n0") == "org/t/a/task:12" and stores[0].scope("org/t").get("n2") == "org/t:14"
    assert leaf.get("log") == ["org/t:14", "org/t/a:14", "org/t/a/task:14"]
    assert [stores[0].scope(p).entries()["n1"].value for p in paths] == [f"{p}:13" for p in paths]
    for s in stores:
        s.close()


def test_a_final_set_concurrently_with_overrides_below_wins(rx_server):
    namespace = f"conc-{uuid.uuid4().hex[:8]}"
    a, b = (rxstate.connect(rx_server.client(), namespace=namespace, cache=False) for _ in range(2))
    refused: list[int] = []
    done = threading.Event()

    def override() -> None:
        i = 0
        while not done.is_set() and i < 200:
            try:
                b.scope("org/t/a").set("mode", f"own-{i}")
            except rxstate.errors.FinalValueError:
                refused.append(i)
                return
            i += 1

    t = threading.Thread(target=override)
    t.start()
    a.scope("org").set("mode", "locked", final=True)
    t.join(timeout=30)
    done.set()
    assert refused, "an override after the final value must be refused"
    assert b.scope("org/t/a").get("mode") == "locked"
    a.close()
    b.close()
