"""The insider scenario's oracles (faultsuite/insider_oracle.py) on hand-made cases: each says
no where it must, so that the scenario's invariants can fail."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from faultsuite.insider_oracle import (
    REVOKED,
    SUSPENDED,
    Card,
    Hours,
    Member,
    Rights,
    Timeline,
    allowed_alarm_kinds,
    card_hash,
    compare_store,
)

PARIS = ZoneInfo("Europe/Paris")
HOURS = Hours(PARIS, time(9), time(18))
TUESDAY_10 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)  # 10:00 in Paris
TUESDAY_1814 = datetime(2026, 11, 3, 17, 14, tzinfo=UTC)  # 18:14 in Paris


def rights() -> Rights:
    r = Rights(HOURS)
    r.office_member("ana", Member("subscriber"))
    r.office_card("h-ana", Card("ana"))
    r.office_member("oli", Member("occasional"))
    r.office_card("h-oli", Card("oli"))
    r.office_member("sam", Member("subscriber", SUSPENDED))
    r.office_card("h-sam", Card("sam"))
    return r


def test_the_card_hash_is_the_keyed_hash_of_the_upper_case_number():
    from accessd.credentials import CredentialHasher

    key = bytes.fromhex("22" * 32)
    assert card_hash(key, "0a1b2c3d4e") == CredentialHasher(key)("0A1B2C3D4E")


def test_what_a_door_may_grant():
    r = rights()
    view = r.view("front")
    assert r.may_grant(view, "h-ana", TUESDAY_1814)  # a subscriber: any hour
    assert r.may_grant(view, "h-oli", TUESDAY_10)
    assert not r.may_grant(view, "h-oli", TUESDAY_1814)  # occasional, after closing
    assert not r.may_grant(view, "h-sam", TUESDAY_10)  # suspended
    assert not r.may_grant(view, "h-unknown", TUESDAY_10)
    r.office_member("ana", Member("subscriber", valid_until=date(2026, 11, 2)))
    assert not r.may_grant(r.view("front"), "h-ana", TUESDAY_10)  # expired the day before
    r.office_member("ana", Member("subscriber", valid_from=date(2026, 11, 4)))
    assert not r.may_grant(r.view("front"), "h-ana", TUESDAY_10)  # not yet valid


def test_a_host_enrolment_counts_at_its_door_only_until_the_office_approves():
    r = rights()
    r.host_enrol("front", "m-new", Member("subscriber"), "h-new")
    assert r.may_grant(r.view("front"), "h-new", TUESDAY_10)
    assert not r.may_grant(r.view("back"), "h-new", TUESDAY_10)
    r.approve("front", "m-new")
    assert r.may_grant(r.view("back"), "h-new", TUESDAY_10)


def test_revocations_are_final_where_they_were_made_and_at_the_office():
    r = rights()
    r.host_revoke("front", "ana")
    assert not r.may_grant(r.view("front"), "h-ana", TUESDAY_10)
    assert r.may_grant(r.view("back"), "h-ana", TUESDAY_10)
    r.office_revoke("h-oli")
    r.office_card("h-oli", Card("oli"))  # a later members file names the card active
    assert r.office.cards["h-oli"].status == REVOKED
    assert not r.may_grant(r.view("back"), "h-oli", TUESDAY_10)


def test_a_grant_is_judged_by_the_state_in_force_when_it_was_made():
    r = rights()
    t = Timeline(r)
    t0 = TUESDAY_10
    t.commit(["front"], t0, t0 + timedelta(seconds=1))
    assert t.allowed("front", "h-ana", t0 + timedelta(seconds=5))
    assert not t.allowed("front", "h-ana", t0 - timedelta(seconds=1))  # before any rules
    r.host_revoke("front", "ana")
    t.commit(["front"], t0 + timedelta(seconds=10), t0 + timedelta(seconds=12))
    assert t.allowed("front", "h-ana", t0 + timedelta(seconds=11))  # on its way to the door
    assert not t.allowed("front", "h-ana", t0 + timedelta(seconds=13))  # known there since
    assert not t.allowed("back", "h-ana", t0 + timedelta(seconds=13))  # never committed


def test_the_store_must_be_the_journal_and_nothing_else():
    journal = {1: "a", 2: "b", 3: "c"}
    assert compare_store(journal, dict(journal), {}, {}) == []
    assert compare_store(journal, {1: "a", 2: "b"}, {}, {})  # one lost
    assert compare_store(journal, {1: "a", 2: "x", 3: "c"}, {}, {})  # one forged
    assert compare_store(journal, {**journal, 4: "x"}, {}, {})  # one more
    assert compare_store(journal, dict(journal), {}, {2: "b"})  # a conflict for nothing


def test_a_stolen_key_s_events_are_kept_and_the_door_s_own_is_a_conflict():
    journal = {1: "a", 2: "b", 3: "c"}
    forged = {3: "f3", 4: "f4"}
    stored = {1: "a", 2: "b", 3: "f3", 4: "f4"}
    assert compare_store(journal, stored, forged, {3: "c"}) == []
    assert compare_store(journal, stored, forged, {})  # the door's #3 vanished silently
    assert compare_store(journal, {**stored, 3: "c"}, forged, {3: "c"})  # forged one lost
    # the door's #3 came first: the forged one is the conflict
    assert compare_store(journal, {**stored, 3: "c"}, forged, {3: "f3"}) == []
    assert compare_store(journal, stored, {**forged, 5: "f5"}, {3: "c"})  # #5 never stored
    # the door renumbered past the stolen numbers instead: no conflict needed
    assert compare_store({1: "a", 2: "b", 5: "c"}, {**stored, 5: "c"}, forged, {}) == []


def test_renumbering_alarms_only_after_a_stolen_key():
    assert allowed_alarm_kinds(False) == frozenset()
    assert "journal_replaced" in allowed_alarm_kinds(True)
