"""A process that never loaded a collection's model still redacts its secret fields in changes.

The collection's secret field names are stored with its schema, so the change feed and the notebook
views of another process mark them secret whatever models that process knows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import rxstate
from tests.helpers import wait_for

SECRET = "sk-live-feed-9f8e7d6c5b4a"


class Vault(rxstate.Model):
    name: str
    token: rxstate.Secret[str] | None = None
    size: int = 0


READER = textwrap.dedent(
    """
    import logging, sys, threading
    import rxstate
    import rxstate.notebook
    from rxstate.core.redaction import change_line, known_secret_names

    url, namespace, secret = sys.argv[1:4]
    logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(name)s %(message)s")
    log = logging.getLogger("rxstate.reader")
    print("KNOWN", sorted(known_secret_names()))
    store = rxstate.connect(url, namespace=namespace, actor="reader")
    got, done = [], threading.Event()

    def on_change(c):
        got.append(c)
        if len(got) >= 3:
            done.set()

    sub = store.changes(since="0", collection="vaults").subscribe(on_change)
    assert done.wait(20), got
    sub.dispose()
    for c in got:
        print(repr(c))
        print(str(c))
        print(change_line(c))
        print(dict(c.fields))
        print(c._repr_html_())
        log.debug("change %r with fields %r", c, dict(c.fields))
    recent = rxstate.notebook.recent_changes(store, collection="vaults")
    print(repr(recent))
    print(recent._repr_html_())
    for r in recent:
        print(repr(r), dict(r.fields))
    tokens = [c.fields["token"] for c in got if "token" in c.fields]
    clear = [t.get_secret_value() if hasattr(t, "get_secret_value") else None for t in tokens]
    print("CLEAR", clear == [secret, secret + "-2"])
    print("SIZE", [c.fields["size"] for c in got if "size" in c.fields])
    store.close()
    """
)


def test_reader_without_the_model_redacts_secret_fields(rx_redis_backend):
    writer = rx_redis_backend.store(actor="writer")
    vaults = writer.collection("vaults", Vault)
    vaults.put("v1", Vault(name="a", token=SECRET, size=1))
    vaults.update("v1", token=SECRET + "-2")
    vaults.update("v1", size=2)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this checkout's rxstate
    out = subprocess.run(
        [sys.executable, "-c", READER, rx_redis_backend.server.url, rx_redis_backend.namespace, SECRET],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "KNOWN []" in out.stdout  # no model classifies "token" in the reader
    assert SECRET not in out.stdout
    assert SECRET not in out.stderr
    assert "CLEAR True" in out.stdout  # code that asks for the value still gets it
    assert "SIZE [1, 2]" in out.stdout  # plain fields stay plain values


def test_watchers_of_a_collection_with_secrets_still_rebuild_values(rx_redis_backend):
    writer = rx_redis_backend.store(actor="writer")
    reader = rx_redis_backend.store(actor="reader")
    vaults = writer.collection("vaults", Vault)
    r_vaults = reader.collection("vaults", Vault)
    seen: list[Vault | None] = []
    ready = threading.Event()
    sub = r_vaults.watch("v1").subscribe(lambda c: (seen.append(c.value), ready.set()))
    try:
        assert ready.wait(10)
        vaults.put("v1", Vault(name="a", token=SECRET, size=1))
        vaults.update("v1", token=SECRET + "-2")
        vaults.update("v1", size=2)
        assert wait_for(lambda: len(seen) >= 4 and seen[-1] is not None and seen[-1].size == 2)
    finally:
        sub.dispose()
    last = seen[-1]
    assert last is not None and last.token is not None
    assert last.token.get_secret_value() == SECRET + "-2"
    assert SECRET not in repr(seen)
