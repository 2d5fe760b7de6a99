"""Delegation on the org chart (real server): links, their depth limit, expiry, audit, mid-chain revocation."""

from __future__ import annotations

import pytest

import rxstate
from tests.helpers import dump_all, wait_for
from tests.scopes.conftest import TEAM, Org


def test_a_delegated_key_may_be_written_and_revoking_a_mid_chain_link_revokes_below(org: Org):
    ann, a7, a8, cal = (org.connect(n) for n in ("ann", "a7", "a8", "cal"))
    with pytest.raises(rxstate.PermissionDenied):
        a7.scope(TEAM).set("budget", 1)
    first = ann.scope(TEAM).delegate("a7", ["budget", "deadline"], ttl=60)
    assert (first.grantor, first.grantee, first.depth, first.parent) == ("ann", "a7", 1, "")
    a7.scope(TEAM).set("budget", 100)
    a7.scope(f"{TEAM}/a8").set("budget", 5)  # a link covers the scopes below its scope
    with pytest.raises(rxstate.PermissionDenied):
        a7.scope(TEAM).set("model", "x")  # not delegated
    second = a7.scope(TEAM).delegate("a8", ["budget"], ttl=60)
    third = a8.scope(TEAM).delegate("cal", ["budget"], ttl=60)
    assert (second.parent, second.depth, third.parent, third.depth) == (first.id, 2, second.id, 3)
    cal.scope(TEAM).set("budget", 7)
    decision = org.admin.explain("cal", "write", "budget", scope=TEAM)
    assert decision.allowed and decision.links == (third.id, second.id, first.id)

    before = dump_all(org.server.client())
    with pytest.raises(rxstate.errors.DelegationError) as deep:
        cal.scope(TEAM).delegate("dan", ["budget"], ttl=60)  # a fourth link: deeper than the limit of 3
    assert (deep.value.depth, deep.value.limit, deep.value.link) == (4, 3, third.id)
    with pytest.raises(rxstate.errors.DelegationError):
        a8.scope(TEAM).delegate("dan", ["model"], ttl=60)  # a8 holds no authority over model
    with pytest.raises(rxstate.errors.DelegationError):
        cal.scope(TEAM).revoke(first)  # below the link: may not revoke it
    assert dump_all(org.server.client()) == before

    revoked = a7.scope(TEAM).revoke(second)  # the middle link, by its grantor
    assert revoked.revoked
    with pytest.raises(rxstate.PermissionDenied):
        cal.scope(TEAM).set("budget", 8)  # made through the revoked link: revoked too
    with pytest.raises(rxstate.PermissionDenied):
        a8.scope(TEAM).set("budget", 8)
    a7.scope(TEAM).set("budget", 9)  # the link above it still holds
    assert org.admin.scope(TEAM).get("budget") == 9
    assert not org.admin.explain("cal", "write", "budget", scope=TEAM).allowed
    listed = {d.id: d.revoked for d in org.admin.scope(TEAM).delegations()}
    assert listed == {first.id: False, second.id: True, third.id: False}


def test_each_link_and_its_revocation_is_an_audited_write(org: Org):
    ann = org.connect("ann")
    link = ann.scope(TEAM).delegate("a7", ["budget"], ttl=60)
    ann.scope(TEAM).revoke(link)
    entries = [e for e in org.admin.audit.query() if e.collection == "scope_links" and e.entity_id == link.id]
    assert [(e.principal, e.action) for e in entries] == [("ann", "create"), ("ann", "update")]
    assert org.admin.audit.verify().ok


def test_a_link_expires_with_its_time_limit(org: Org):
    ann, a7 = org.connect("ann"), org.connect("a7")
    ann.scope(TEAM).delegate("a7", ["budget"], ttl=0.3)
    a7.scope(TEAM).set("budget", 1)

    def refused() -> bool:
        try:
            a7.scope(TEAM).set("budget", 2)
        except rxstate.PermissionDenied:
            return True
        return False

    assert wait_for(refused, timeout=5)
    assert org.admin.scope(TEAM).get("budget") in (1, 2)


def test_a_revocation_between_the_check_and_the_write_refuses_the_write(org: Org):
    ann, a7 = org.connect("ann"), org.connect("a7")
    link = ann.scope(TEAM).delegate("a7", ["budget"], ttl=60)
    writer = a7.writer
    send = writer.mutate
    revoked: list[str] = []

    def revoke_first(ops, **kw):
        if not revoked:  # the write is judged and built: the grantor revokes before it arrives
            revoked.append(ann.scope(TEAM).revoke(link).id)
        return send(ops, **kw)

    writer.mutate = revoke_first  # type: ignore[method-assign]
    before = org.admin.scope(TEAM).entries()
    with pytest.raises(rxstate.PermissionDenied):
        a7.scope(TEAM).set("budget", 1)
    assert revoked == [link.id] and org.admin.scope(TEAM).entries() == before
