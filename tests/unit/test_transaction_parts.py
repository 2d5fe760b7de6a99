"""Pieces of the transaction machinery that need no server: error mapping, payload encoding."""

from __future__ import annotations

from redis.exceptions import ResponseError

from rxstate import errors
from rxstate.core.scripts import translate_error
from rxstate.core.writes import WriteOp
from rxstate.store.twophase import _dump, _for_resolve, _load


def test_conflict_with_several_stale_keys_lists_them_all():
    exc = translate_error(ResponseError("RXCONFLICT rx:{n:1}:a:x 3 4 rx:{n:2}:a:y 0 1"))
    assert type(exc) is errors.ConflictError
    assert exc.key == ["rx:{n:1}:a:x", "rx:{n:2}:a:y"] and exc.expected == [3, 0] and exc.actual == [4, 1]
    assert "rx:{n:1}:a:x (expected 3, found 4)" in str(exc) and "rx:{n:2}:a:y" in str(exc)


def test_intent_and_aborted_prefixes_map_to_conflicts():
    pending = translate_error(ResponseError("RXINTENT rx:{n:1}:a:x abc@3"))
    assert isinstance(pending, errors.TransactionPending) and isinstance(pending, errors.ConflictError)
    assert (pending.key, pending.owner) == ("rx:{n:1}:a:x", "abc@3")
    aborted = translate_error(ResponseError("RXTXABORTED rx:{n:3}:_tx:abc"))
    assert type(aborted) is errors.ConflictError and aborted.key == "rx:{n:3}:_tx:abc"


def test_payload_round_trips_binary_values_and_drops_version_checks():
    ops = [
        WriteOp(
            kind="create",
            collection="agents",
            id="a1",
            partition=4,
            expected=0,
            schema_version=2,
            ttl="5000",
            sets=[("notes", b"\x00z\xff\x80binary"), ("name", '"é"'.encode())],
            incrs=[("load", 2, "0", "100")],
            indexes=("status",),
        ),
        WriteOp(kind="check", collection="agents", id="a2", partition=4, expected=7),
    ]
    loaded = _load(_dump([_for_resolve(op) for op in ops]).encode(), 4)
    assert loaded[0].kind == "put" and loaded[0].expected is None and loaded[0].ttl == "5000"
    assert list(loaded[0].sets) == list(ops[0].sets) and list(loaded[0].incrs) == list(ops[0].incrs)
    assert loaded[0].indexes == ("status",) and loaded[0].schema_version == 2
    assert (loaded[1].kind, loaded[1].id, loaded[1].expected) == ("check", "a2", None)


def test_payload_carries_every_section_of_a_write_op():
    """A prepared write keeps every field of its op, so a new stage of the write path is never dropped."""
    import dataclasses

    op = WriteOp(
        kind="update",
        collection="agents",
        id="a 1",
        partition=3,
        expected=4,
        schema_version=2,
        ttl="900",
        want_full=True,
        sets=[("notes", b"\xff\x00")],
        incrs=[("load", 1, "", "10")],
        indexes=("status", "team"),
        fence=("printer", 7, 123456),
        constraint_keys=("rx:{n:3}:_idx:agents:team",),
        constraint_args=(1, "u", "unique:team", "team", 1),
    )
    (loaded,) = _load(_dump([op]), 3)
    for f in dataclasses.fields(WriteOp):
        got, want = getattr(loaded, f.name), getattr(op, f.name)
        norm = (
            (lambda v: tuple(tuple(x) if isinstance(x, list | tuple) else x for x in v))
            if isinstance(want, list | tuple)
            else (lambda v: v)
        )
        assert norm(got) == norm(want), f.name
