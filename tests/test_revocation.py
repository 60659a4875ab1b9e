"""Revocation is terminal (issue #8, item 6): no command, document or event brings it back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rights_helpers import SITE, Office

from accessd import admin
from accessd.decision import Plan, Reason, Status
from accessd.errors import RevokedError
from accessd.events import format_ts, utcnow
from accessd.protocol.codec import encode
from accessd.protocol.rules import make_delta, make_snapshot
from accessd.rights import Change, stricter, transition

DAY = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
ANA, BEN, NEW = "0A00000001", "0A00000002", "0B00000001"


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    o = Office(tmp_path)
    o.import_members([{"id": "ana", "plan": "subscriber", "card": ANA},
                      {"id": "ben", "plan": "subscriber", "card": BEN}])
    o.publish_to_all()
    yield o
    o.close()


# -- the table --------------------------------------------------------------------------------
@pytest.mark.parametrize(("current", "wanted", "change"), [
    ("active", "suspended", Change.CHANGED), ("active", "revoked", Change.CHANGED),
    ("suspended", "active", Change.CHANGED), ("suspended", "revoked", Change.CHANGED),
    ("active", "active", Change.UNCHANGED), ("suspended", "suspended", Change.UNCHANGED),
    ("revoked", "revoked", Change.UNCHANGED),
    ("revoked", "active", Change.REFUSED), ("revoked", "suspended", Change.REFUSED),
])
def test_the_transition_table(current, wanted, change):
    verdict = transition(Status(current), Status(wanted))
    assert verdict.change is change and verdict.why
    assert stricter(Status(current), Status(wanted)) is max(
        Status(current), Status(wanted), key=["active", "suspended", "revoked"].index)


# -- at the door ------------------------------------------------------------------------------
def test_revoke_then_suspend_then_resume_keeps_the_member_out(office):
    a = office.doors["a"]
    admin.set_status(a.site, "ana", Status.REVOKED)
    with pytest.raises(RevokedError, match="revoked"):
        admin.set_status(a.site, "ana", Status.SUSPENDED)
    with pytest.raises(RevokedError, match="revoked"):
        admin.set_status(a.site, "ana", Status.ACTIVE)
    assert a.decide(ANA, DAY).reason is Reason.MEMBER_REVOKED
    assert admin.set_status(a.site, "ana", Status.REVOKED).change == "unchanged"


def test_suspending_twice_is_a_no_op_that_says_so(office):
    a = office.doors["a"]
    first = admin.set_status(a.site, "ben", Status.SUSPENDED)
    last = a.journal.last_seq
    again = admin.set_status(a.site, "ben", Status.SUSPENDED)
    assert (first.change, again.change) == ("changed", "unchanged")
    assert "already suspended" in again.message
    assert a.journal.last_seq == last  # no new event


def test_a_revoked_card_cannot_be_enrolled_again(office):
    a = office.doors["a"]
    admin.revoke_card(a.site, uid=ANA)
    with pytest.raises(RevokedError, match="new card"):
        admin.enroll(a.site, name="Ana", plan=Plan.SUBSCRIBER, uid=ANA)
    with pytest.raises(RevokedError, match="new card"):
        admin.enroll(a.site, name="Ana", plan=Plan.SUBSCRIBER, uid=ANA, member_id="ana")
    assert admin.revoke_card(a.site, uid=ANA).change == "unchanged"
    # a revoked member gets no new card either
    admin.set_status(a.site, "ben", Status.REVOKED)
    with pytest.raises(RevokedError, match="revoked"):
        admin.enroll(a.site, name="Ben", plan=Plan.SUBSCRIBER, uid=NEW, member_id="ben")


def crafted(office: Office, version: int, *, kind: str = "snapshot", **rows) -> bytes:
    """A document signed with the office's key that says 'active' for revoked rows."""
    members = rows.get("members", [{"id": "ana", "name": "ana", "plan": "subscriber",
                                    "status": "active"},
                                   {"id": "ben", "name": "ben", "plan": "subscriber",
                                    "status": "active"}])
    creds = rows.get("credentials", [
        {"hash": office.hasher(ANA), "member_id": "ana", "status": "active"},
        {"hash": office.hasher(BEN), "member_id": "ben", "status": "active"}])
    if kind == "snapshot":
        return encode(make_snapshot(office.key, site=SITE, version=version, members=members,
                                    credentials=creds))
    return encode(make_delta(office.key, site=SITE, version=version,
                             base_version=version - 1, members=members, credentials=creds))


@pytest.mark.parametrize("kind", ["snapshot", "delta"])
def test_a_signed_document_cannot_undo_a_revocation_at_the_door(office, kind):
    a = office.doors["a"]
    admin.set_status(a.site, "ana", Status.REVOKED)
    admin.revoke_card(a.site, uid=BEN)
    version = a.rules.version + 1
    out = a.applier.handle(crafted(office, version, kind=kind), kind)
    assert out.applied, out
    assert out.detail["refused_unrevoke"] == {"members": ["ana"],
                                              "credentials": [office.hasher(BEN)[:12]]}
    assert a.decide(ANA, DAY).reason is Reason.MEMBER_REVOKED
    assert a.decide(BEN, DAY).reason is Reason.CREDENTIAL_REVOKED


def test_a_revocation_survives_removal_and_return_of_the_row(office):
    """A document drops the revoked card; a later one brings it back as active."""
    a = office.doors["a"]
    admin.revoke_card(a.site, uid=BEN)
    v = a.rules.version
    assert a.applier.handle(crafted(office, v + 1, credentials=[
        {"hash": office.hasher(ANA), "member_id": "ana", "status": "active"}]),
        "snapshot").applied
    assert a.rules.lookup(office.hasher(BEN)) is None
    out = a.applier.handle(crafted(office, v + 2), "snapshot")
    assert out.detail["refused_unrevoke"]["credentials"] == [office.hasher(BEN)[:12]]
    assert a.decide(BEN, DAY).reason is Reason.CREDENTIAL_REVOKED
    with pytest.raises(RevokedError):
        admin.enroll(a.site, name="Ben again", plan=Plan.SUBSCRIBER, uid=BEN)


def test_an_office_revocation_is_terminal_at_the_doors(office):
    office.store.revoke(SITE, member_id="ana")
    office.publish_to_all()
    a = office.doors["a"]
    assert a.decide(ANA, DAY).reason is Reason.MEMBER_REVOKED
    out = a.applier.handle(crafted(office, a.rules.version + 1), "snapshot")
    assert out.detail["refused_unrevoke"]["members"] == ["ana"]
    assert a.decide(ANA, DAY).reason is Reason.MEMBER_REVOKED


# -- at the office ----------------------------------------------------------------------------
def rows(office: Office) -> tuple[dict, dict]:
    members, creds = office.store.rules(SITE)
    return {m["id"]: m for m in members}, {c["hash"]: c for c in creds}


def test_an_import_cannot_undo_an_office_revocation(office):
    office.store.revoke(SITE, member_id="ana")
    office.store.revoke(SITE, credential_hash=office.hasher(BEN))
    counts = office.import_members([{"id": "ana", "plan": "subscriber", "card": ANA},
                                    {"id": "ben", "plan": "subscriber", "card": BEN}])
    members, creds = rows(office)
    assert members["ana"]["status"] == "revoked"
    assert creds[office.hasher(BEN)]["status"] == "revoked"
    assert counts["kept_revoked"] == 2
    # dropped from the file, then listed again: still revoked
    office.import_members([{"id": "other", "plan": "occasional"}])
    assert "ana" not in rows(office)[0]
    office.import_members([{"id": "ana", "plan": "subscriber"},
                           {"id": "cid", "plan": "subscriber", "card": BEN}])
    members, creds = rows(office)
    assert members["ana"]["status"] == "revoked"
    assert creds[office.hasher(BEN)]["status"] == "revoked"
    # and a second revocation changes nothing
    assert office.store.revoke(SITE, member_id="ana") is Change.UNCHANGED


def test_door_events_cannot_undo_an_office_revocation(office):
    office.store.revoke(SITE, member_id="ana")
    office.store.revoke(SITE, credential_hash=office.hasher(BEN))
    a = office.doors["a"]
    stamp = format_ts(utcnow())
    seq = a.journal.last_seq
    office.store.store_events([
        {"v": 1, "seq": seq + 1, "id": "x1", "site": SITE, "door": "a",
         "type": "member.updated", "ts": stamp, "clock_trusted": True, "member_id": "ana",
         "detail": {"member": {"id": "ana", "name": "ana", "plan": "subscriber",
                               "status": "active"}}},
        {"v": 1, "seq": seq + 2, "id": "x2", "site": SITE, "door": "a",
         "type": "member.enrolled", "ts": stamp, "clock_trusted": True, "member_id": "ben",
         "detail": {"member": {"id": "ben", "name": "ben", "plan": "subscriber",
                               "status": "active"},
                    "credential_hash": office.hasher(BEN)}}])
    for p in office.store.proposals(SITE, state="all"):
        assert p["state"] == "rejected" and "revoked" in p["note"]
    assert office.store.approve(SITE, None, by="olivia") == []
    members, creds = rows(office)
    assert members["ana"]["status"] == "revoked"
    assert creds[office.hasher(BEN)]["status"] == "revoked"


def test_the_host_commands_say_what_they_did(tmp_path, capsys):
    """`accessd revoke`, `suspend`, `resume` through the real CLI."""
    from conftest import write_config

    from accessd.cli.main import main

    config = str(write_config(tmp_path))

    def cli(*argv: str) -> tuple[int, str, str]:
        code = main(["--config", config, *argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = cli("enroll", "--name", "Ana", "--plan", "subscriber", "--card", ANA,
                         "--json")
    assert code == 0, err
    mid = json.loads(out)["id"]
    assert cli("suspend", mid)[1].startswith("suspended")
    code, out, _ = cli("suspend", mid)
    assert code == 0 and "already suspended: nothing changed" in out
    assert cli("revoke", mid)[1].startswith("revoked member")
    code, _, err = cli("resume", mid)
    assert code == 1 and "revoked for good" in err
    code, _, err = cli("suspend", mid)
    assert code == 1 and "revoked for good" in err
    code, out, _ = cli("revoke", mid)
    assert code == 0 and "already revoked" in out
    code, _, err = cli("enroll", "--name", "Ana", "--plan", "subscriber", "--card", BEN,
                       "--member", mid)
    assert code == 1 and "revoked for good" in err
    cli("enroll", "--name", "Ben", "--plan", "subscriber", "--card", BEN)
    assert cli("revoke", "--card", BEN)[1].startswith("revoked one card")
    code, _, err = cli("enroll", "--name", "Ben", "--plan", "subscriber", "--card", BEN)
    assert code == 1 and "enrol a new card" in err
