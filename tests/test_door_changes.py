"""Door-originated changes stay at that door until the office accepts them (issue #8, item 1).

Two doors of one site, a real office store, real signed documents: what the host enrols at
door A works at A at once, reaches B only after the office approves it, and nothing a door
(or a stolen door login) sends makes a member more privileged than the office set.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from rights_helpers import SITE, Office

from accessd import admin
from accessd.decision import Plan, Reason, Status
from accessd.errors import OfficeOwnedError
from accessd.events import format_ts, utcnow

DAY = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)  # 10:00 in Paris, a Tuesday
EVENING = datetime(2026, 11, 3, 17, 14, tzinfo=UTC)  # 18:14 in Paris: after closing

ANA, OLI, SAM = "0A00000001", "0A00000002", "0A00000003"
NEW, EXTRA, EVIL = "0B00000001", "0B00000002", "0B00000003"


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    o = Office(tmp_path)
    o.import_members([
        {"id": "ana", "plan": "subscriber", "card": ANA},
        {"id": "oli", "plan": "occasional", "card": OLI},
        {"id": "sam", "plan": "subscriber", "status": "suspended", "card": SAM}])
    o.publish_to_all()
    yield o
    o.close()


def forged(office: Office, door: str, seq: int, type_: str, member: dict | None = None,
           card: str | None = None) -> dict:
    """What a stolen door login can publish: a well-formed event of that door."""
    detail: dict = {"operator": "mallory"}
    if member is not None:
        detail["member"] = {"valid_from": None, "valid_until": None, "origin": "site",
                            "updated_at": format_ts(utcnow()), **member}
    if card is not None:
        detail["credential_hash"] = office.hasher(card)
    return {"v": 1, "seq": seq, "id": f"forged-{seq}", "site": SITE, "door": door,
            "type": type_, "ts": format_ts(utcnow()), "clock_trusted": True,
            "member_id": member["id"] if member else None, "detail": detail}


def test_a_host_enrolment_works_at_its_door_and_reaches_the_other_after_approval(office):
    a, b = office.doors["a"], office.doors["b"]
    m = admin.enroll(a.site, name="Newcomer", plan=Plan.SUBSCRIBER, uid=NEW)
    assert a.opens(NEW, DAY) and not b.opens(NEW, DAY)
    office.deliver("a")
    pending = office.store.proposals(SITE)
    assert [(p["door"], p["member_id"], p["state"]) for p in pending] == [
        ("a", m.id, "pending"), ("a", m.id, "pending")]  # the member, and the card
    office.publish_to_all()  # a routine publish: still pending
    assert a.opens(NEW, DAY), "the door keeps its own enrolment while the office decides"
    assert not b.opens(NEW, DAY), "another door never sees a change the office did not accept"
    assert m.id not in {r["id"] for r in office.store.rules(SITE)[0]}

    done = office.store.approve(SITE, None, by="olivia")  # --all
    assert {p["state"] for p in done} == {"approved"}
    office.publish_to_all()
    assert a.opens(NEW, DAY) and b.opens(NEW, DAY)
    assert b.rules.member(m.id).origin == "central"  # the office's row now, at both doors
    assert a.rules.member(m.id).origin == "central"


def test_a_rejected_enrolment_is_removed_at_its_door(office):
    a, b = office.doors["a"], office.doors["b"]
    admin.enroll(a.site, name="Newcomer", plan=Plan.OCCASIONAL, uid=NEW)
    office.deliver("a")
    ids = [p["id"] for p in office.store.proposals(SITE)]
    office.store.reject(SITE, ids, by="olivia")
    assert {p["state"] for p in office.store.proposals(SITE, state="all")} == {"rejected"}
    office.publish_to_all()
    assert a.decide(NEW, DAY).reason is Reason.UNKNOWN_CREDENTIAL
    assert not b.opens(NEW, DAY)


def test_an_extra_card_on_an_office_member_waits_for_the_office(office):
    a, b = office.doors["a"], office.doors["b"]
    admin.enroll(a.site, name="Ana", plan=Plan.SUBSCRIBER, uid=EXTRA, member_id="ana")
    assert a.opens(EXTRA, DAY) and not b.opens(EXTRA, DAY)
    office.deliver("a")
    office.publish_to_all()
    assert a.opens(EXTRA, DAY) and not b.opens(EXTRA, DAY)
    [p] = office.store.proposals(SITE)
    assert (p["kind"], p["member_id"], p["credential_hash"]) == ("card", "ana",
                                                                 office.hasher(EXTRA))
    office.store.approve(SITE, [p["id"]], by="olivia")
    office.publish_to_all()
    assert b.opens(EXTRA, DAY)


def test_the_host_cannot_raise_an_office_member_at_the_door(office):
    a = office.doors["a"]
    # an office suspension is lifted only by the office: the door asks, and waits
    out = admin.set_status(a.site, "sam", Status.ACTIVE)
    assert out.change == "proposed" and out.member.status is Status.SUSPENDED
    assert not a.opens(SAM, DAY)
    # the plan and the dates of an office member are the office's
    with pytest.raises(OfficeOwnedError, match="office"):
        admin.enroll(a.site, name="Oli", plan=Plan.SUBSCRIBER, uid=EXTRA, member_id="oli")
    assert a.rules.lookup(office.hasher(EXTRA)) is None
    office.deliver("a")
    office.publish_to_all()
    assert not a.opens(SAM, DAY) and not office.doors["b"].opens(SAM, DAY)
    [p] = office.store.proposals(SITE)
    assert (p["kind"], p["member_id"], p["proposed"]["status"]) == ("member", "sam", "active")
    office.store.approve(SITE, [p["id"]], by="olivia")  # the office agrees
    office.publish_to_all()
    assert a.opens(SAM, DAY) and office.doors["b"].opens(SAM, DAY)


def test_a_stolen_door_login_grants_nothing_at_the_other_door(office):
    a, b = office.doors["a"], office.doors["b"]
    seq = a.journal.last_seq
    office.store.store_events([
        # a new member
        forged(office, "a", seq + 1, "member.enrolled",
               {"id": "m-evil", "name": "Mallory", "plan": "subscriber", "status": "active"},
               EVIL),
        # a suspended member made active again
        forged(office, "a", seq + 2, "member.updated",
               {"id": "sam", "name": "sam", "plan": "subscriber", "status": "active"}),
        # an extra card on a real member
        forged(office, "a", seq + 3, "member.enrolled",
               {"id": "ana", "name": "ana", "plan": "subscriber", "status": "active"}, EXTRA),
        # an occasional member raised to subscriber
        forged(office, "a", seq + 4, "member.updated",
               {"id": "oli", "name": "oli", "plan": "subscriber", "status": "active",
                "valid_until": "2099-12-31"}),
    ])
    office.store.advance(SITE, "a")
    office.publish_to_all()  # the office's next routine publish
    for door in (a, b):
        assert not door.opens(EVIL, DAY)
        assert door.decide(SAM, DAY).reason is Reason.MEMBER_SUSPENDED
        assert not door.opens(EXTRA, DAY)
        assert door.decide(OLI, EVENING).reason is Reason.OUTSIDE_OPENING_HOURS
        assert door.opens(ANA, DAY) and door.opens(OLI, DAY)  # nothing else changed
    rows = {m["id"]: m for m in office.store.rules(SITE)[0]}
    assert set(rows) == {"ana", "oli", "sam"}
    assert rows["sam"]["status"] == "suspended" and rows["oli"]["plan"] == "occasional"
    assert rows["oli"]["valid_until"] is None
    assert len(office.store.proposals(SITE)) == 5  # all of it waits for an operator


def test_restrictions_from_a_door_apply_at_once_and_revocations_wait(office):
    a, b = office.doors["a"], office.doors["b"]
    admin.set_status(a.site, "ana", Status.SUSPENDED)
    admin.revoke_card(a.site, uid=OLI)
    office.deliver("a")
    rows = {m["id"]: m for m in office.store.rules(SITE)[0]}
    cards = {c["member_id"]: c for c in office.store.rules(SITE)[1]}
    assert rows["ana"]["status"] == "suspended"
    assert cards["oli"]["status"] == "suspended"  # revoked for good only on approval
    [p] = office.store.proposals(SITE)
    assert (p["kind"], p["proposed"]["status"]) == ("card", "revoked")
    office.publish_to_all()
    assert b.decide(ANA, DAY).reason is Reason.MEMBER_SUSPENDED
    assert b.decide(OLI, DAY).reason is Reason.MEMBER_SUSPENDED
    assert a.decide(OLI, DAY).reason is Reason.CREDENTIAL_REVOKED  # terminal at its door
    office.store.approve(SITE, [p["id"]], by="olivia")
    office.publish_to_all()
    assert b.decide(OLI, DAY).reason is Reason.CREDENTIAL_REVOKED


def test_a_door_change_carries_the_offices_receive_time(office):
    a = office.doors["a"]
    before = format_ts(utcnow())
    admin.enroll(a.site, name="Newcomer", plan=Plan.OCCASIONAL, uid=NEW)
    seq = a.journal.last_seq
    office.store.store_events([forged(office, "a", seq + 1, "member.enrolled",
                                      {"id": "m-x", "name": "X", "plan": "occasional",
                                       "status": "active",
                                       "updated_at": "2099-01-01T00:00:00.000Z"}, EVIL)])
    office.deliver("a")
    after = format_ts(utcnow())
    for p in office.store.proposals(SITE):
        assert before <= p["received_at"] <= after


def test_auto_restricted_policy_admits_new_members_as_occasional_for_a_while(office):
    a, b = office.doors["a"], office.doors["b"]
    office.store.set_door_policy(SITE, "auto-restricted", days=30)
    m = admin.enroll(a.site, name="Walk-in", plan=Plan.SUBSCRIBER, uid=NEW)
    admin.enroll(a.site, name="Ana", plan=Plan.SUBSCRIBER, uid=EXTRA, member_id="ana")
    admin.set_status(a.site, "sam", Status.ACTIVE)
    office.deliver("a")
    office.publish_to_all()
    row = b.rules.member(m.id)
    assert row.plan is Plan.OCCASIONAL and row.valid_until is not None
    tz = ZoneInfo((office.store.site(SITE) or {}).get("timezone") or "UTC")
    assert (row.valid_until - datetime.now(tz).date()).days <= 30  # the site's date, not UTC's
    assert b.opens(NEW, DAY) and not b.opens(NEW, EVENING)
    assert a.opens(NEW, EVENING), "its own door keeps what the host enrolled"
    assert not b.opens(EXTRA, DAY) and not b.opens(SAM, DAY)  # office members: approval
    states = sorted((p["kind"], p["state"]) for p in office.store.proposals(SITE, state="all"))
    assert states == [("card", "approved"), ("card", "pending"), ("member", "pending"),
                      ("member", "pending")]
