"""`accessd central ...`: keys, members file, publish, report and entries, run as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from accessd.central.cli import main
from accessd.central.members import MembersFileError, read_members
from accessd.central.report import visits
from accessd.central.store import open_store
from accessd.credentials import CredentialHasher
from accessd.protocol.signing import PublicKeys
from accessd.schedule import Schedule

SITE_KEY = "11" * 32


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["central", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def office(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    code, out, _ = run(capsys, "keygen", "--out", str(tmp_path / "keys"))
    assert code == 0 and "key id" in out
    key_file = tmp_path / "site.key"
    key_file.write_text(SITE_KEY + "\n")
    key_file.chmod(0o600)
    db = tmp_path / "central.db"
    code, _, _ = run(capsys, "site", "--store", str(db), "--site", "s1", "--name", "Morez",
                     "--timezone", "Europe/Paris", "--key-file", str(key_file),
                     "--opens", "09:00", "--closes", "18:00", "--days", "mon,tue,wed,thu,fri")
    assert code == 0
    return {"db": db, "key": tmp_path / "keys" / "office.key",
            "pub": tmp_path / "keys" / "office.pub"}


def test_keygen_refuses_to_overwrite_and_keeps_the_key_private(tmp_path, capsys, office):
    assert office["key"].stat().st_mode & 0o077 == 0
    PublicKeys.load(office["pub"])
    code, _, err = run(capsys, "keygen", "--out", str(office["key"].parent))
    assert code == 1 and "refusing to overwrite" in err


def test_publish_from_a_csv_hashes_cards_with_the_site_key(tmp_path, capsys, office):
    csv_file = tmp_path / "members.csv"
    csv_file.write_text(
        "id,name,plan,status,valid_from,valid_until,card,credential_hash,card_status\n"
        "a,Alice,subscriber,active,,,04:A2:2B:1C,,\n"
        "a,,,,,,0A0B0C0D,,revoked\n"
        "b,Bob,occasional,active,2026-01-01,2026-12-31,,"
        + "ef" * 32 + ",\n")
    code, out, err = run(capsys, "publish", "--store", str(office["db"]), "--site", "s1",
                         "--members", str(csv_file), "--key", str(office["key"]), "--no-send")
    assert code == 0, err
    assert "version 1" in out and "2 members, 3 cards" in err
    store = open_store(office["db"])
    doc = json.loads(store.latest_snapshot("s1"))
    store.close()
    payload = PublicKeys.load(office["pub"]).verify(doc)
    door_hash = CredentialHasher(bytes.fromhex(SITE_KEY))("04A22B1C")  # what the door computes
    by_hash = {c["hash"]: c for c in payload["credentials"]}
    assert by_hash[door_hash]["member_id"] == "a"
    assert by_hash[CredentialHasher(bytes.fromhex(SITE_KEY))("0A0B0C0D")]["status"] == "revoked"
    assert "04A22B1C" not in json.dumps(doc)  # the raw number never leaves the office
    assert payload["schedule"]["opens"] == "09:00"
    # again with --delta: nothing changed, the delta is empty
    code, out, _ = run(capsys, "publish", "--store", str(office["db"]), "--site", "s1",
                       "--key", str(office["key"]), "--delta", "--no-send")
    assert code == 0 and "version 2" in out and "0 changes, delta too" in out


@pytest.mark.parametrize(("text", "message"), [
    ("id,name,plan\na,Alice,vip\n", "row 2: plan"),
    ("id,name,plan,valid_from\na,Alice,subscriber,31/12/2026\n", "row 2: valid_from"),
    ("id,name,plan,card\na,Alice,subscriber,XYZ\n", "row 2: card"),
    ("id,name,plan,card\na,A,subscriber,01020304\nb,B,subscriber,01020304\n", "also given"),
    ("id,name,plan,colour\na,A,subscriber,red\n", "unknown column"),
])
def test_members_file_errors_name_the_row_and_column(tmp_path, text, message):
    f = tmp_path / "m.csv"
    f.write_text(text)
    with pytest.raises(MembersFileError, match=message):
        read_members(f, CredentialHasher(bytes.fromhex(SITE_KEY)))


def test_members_file_in_json(tmp_path):
    f = tmp_path / "m.json"
    f.write_text(json.dumps({"members": [
        {"id": "a", "name": "Alice", "plan": "subscriber", "card": ["01020304", "05060708"]}]}))
    members, creds = read_members(f, CredentialHasher(bytes.fromhex(SITE_KEY)))
    assert len(members) == 1 and len(creds) == 2


def _event(seq, ts, member, reason="opening_hours", plan="occasional", door="d1"):
    return {"v": 1, "site": "s1", "door": door, "seq": seq, "id": f"{door}{seq}", "ts": ts,
            "type": "access.granted", "result": "granted", "reason": reason,
            "member_id": member, "member_name": member.title(), "plan": plan,
            "clock_trusted": True, "detail": {}}


def test_report_counts_visits_and_closes_those_without_exit(tmp_path, capsys, office):
    store = open_store(office["db"])
    store.store_events([
        # Nov 2 (CET, UTC+1): Zoé 09:30-12:00 with an exit card tap
        _event(1, "2026-11-02T08:30:00.000Z", "zoe"),
        _event(2, "2026-11-02T11:00:00.000Z", "zoe", reason="exit"),
        # Nov 3: Zoé enters 14:00, badges again at 15:00, never badges out -> 18:00
        _event(3, "2026-11-03T13:00:00.000Z", "zoe"),
        _event(4, "2026-11-03T14:00:00.000Z", "zoe", door="d2"),
        # Nov 3: Max 10:00-11:15; a subscriber is not billed by the hour
        _event(5, "2026-11-03T09:00:00.000Z", "max"),
        _event(6, "2026-11-03T10:15:00.000Z", "max", reason="exit"),
        _event(7, "2026-11-03T09:00:00.000Z", "sam", reason="subscriber", plan="subscriber"),
        # Oct 31, another month
        _event(8, "2026-10-31T09:00:00.000Z", "zoe"),
    ])
    store.close()
    code, out, _ = run(capsys, "report", "--store", str(office["db"]), "--site", "s1",
                       "--month", "2026-11", "--csv")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == ("site,month,member_id,member_name,visits,hours,"
                        "visits_closed_at_closing_time,visits_without_end,booked_hours,billing,"
                        "billed_hours")
    assert lines[1:] == ["s1,2026-11,max,Max,1,1.25,0,0,0.0,measured,1.25",
                         "s1,2026-11,zoe,Zoe,2,6.5,1,0,0.0,measured,6.5"]
    code, out, _ = run(capsys, "report", "--store", str(office["db"]), "--site", "s1",
                       "--month", "2026-11", "--visits")
    assert "closed at closing time" in out and out.count("\n") == 3


def test_a_visit_without_exit_closes_at_that_days_closing_time():
    from datetime import date, time
    from zoneinfo import ZoneInfo

    sched = Schedule(ZoneInfo("Europe/Paris"), time(9), time(18), frozenset({"mon"}),
                     frozenset({date(2026, 12, 25)}))
    out = visits([_event(1, "2026-11-02T16:00:00.000Z", "zoe"),
                  _event(2, "2026-11-03T08:00:00.000Z", "zoe"),
                  _event(3, "2026-11-03T09:00:00.000Z", "zoe", reason="exit")], sched)
    assert [(v.closed_by, round(v.hours, 2)) for v in out] == [("closing_time", 1.0),
                                                               ("exit", 1.0)]


def test_entries_lists_recent_decisions(tmp_path, capsys, office):
    store = open_store(office["db"])
    store.store_events([_event(1, "2026-11-02T08:30:00.000Z", "zoe"),
                        {**_event(2, "2026-11-02T08:31:00.000Z", "eve"), "type":
                         "access.denied", "result": "denied", "reason": "unknown_credential",
                         "member_id": None, "member_name": None, "credential": "0a1b2c3d4e5f"}])
    store.close()
    code, out, _ = run(capsys, "entries", "--store", str(office["db"]), "--site", "s1",
                       "--since", "2026-11-01")
    assert code == 0
    lines = out.splitlines()
    assert "unknown_credential" in lines[0] and "card 0a1b2c3d4e5f" in lines[0]
    assert lines[1].startswith("2026-11-02 09:30:00") and "Zoe" in lines[1]
    code, out, _ = run(capsys, "entries", "--store", str(office["db"]), "--site", "s1",
                       "--json", "--limit", "1")
    assert json.loads(out)["seq"] == 2


def door_event(seq: int, type_: str, member: dict, card: str | None = None) -> dict:
    detail: dict = {"member": member, "operator": "host"}
    if card:
        detail["credential_hash"] = card
    return {"v": 1, "site": "s1", "door": "front", "seq": seq, "id": f"e{seq}",
            "ts": "2026-11-02T10:00:00.000Z", "type": type_, "member_id": member["id"],
            "clock_trusted": True, "detail": detail}


def test_pending_approve_and_reject_door_proposals(tmp_path, capsys, office):
    db = str(office["db"])
    store = open_store(office["db"])
    store.import_members("s1", [{"id": "a", "name": "Alice", "plan": "occasional",
                                 "status": "active"}], [])
    store.store_events([
        door_event(1, "member.enrolled", {"id": "m-1", "name": "Zoé", "plan": "subscriber",
                                          "status": "active"}, "ab" * 32),
        door_event(2, "member.updated", {"id": "a", "name": "Alice", "plan": "subscriber",
                                         "status": "active"})])
    store.close()
    code, out, err = run(capsys, "pending", "--store", db, "--site", "s1")
    assert code == 0, err
    assert "a new member" in out and "a new card" in out
    assert "plan occasional -> subscriber" in out
    assert "3 pending proposal(s) at s1; door enrolments: approve" in err
    code, out, _ = run(capsys, "pending", "--store", db, "--site", "s1", "--json")
    ids = {(p["kind"], p["member_id"]): p["id"] for p in map(json.loads, out.splitlines())}
    # a card whose member is not accepted yet cannot be approved alone
    code, _, err = run(capsys, "approve", "--store", db, "--site", "s1",
                       str(ids[("card", "m-1")]))
    assert code == 1 and "approve its enrolment first" in err
    code, _, err = run(capsys, "approve", "--store", db, "--site", "s1",
                       str(ids[("member", "m-1")]), str(ids[("card", "m-1")]), "--by", "olivia")
    assert code == 0 and "2 approved" in err
    code, _, err = run(capsys, "reject", "--store", db, str(ids[("member", "a")]),
                       "--note", "not paid")
    assert code == 0 and "1 rejected" in err
    code, out, _ = run(capsys, "pending", "--store", db, "--site", "s1", "--state", "all")
    assert "approved by olivia" in out and "not paid" in out
    code, _, err = run(capsys, "reject", "--store", db, str(ids[("member", "a")]))
    assert code == 1 and "no pending proposal" in err
    code, _, err = run(capsys, "approve", "--store", db, "--site", "s1")
    assert code == 1 and "--all" in err
    store = open_store(office["db"])
    members = {m["id"]: m for m in store.rules("s1")[0]}
    store.close()
    assert members["a"]["plan"] == "occasional" and members["m-1"]["plan"] == "subscriber"


def test_site_sets_the_door_enrolment_policy(capsys, office):
    db = str(office["db"])
    code, out, _ = run(capsys, "site", "--store", db, "--site", "s1", "--door-enrolments",
                       "auto-restricted", "--door-enrolment-days", "14")
    assert code == 0
    assert json.loads(out)["door_enrolments"] == {"door_enrolments": "auto-restricted",
                                                  "days": 14}
    code, _, err = run(capsys, "site", "--store", db, "--site", "s1",
                       "--door-enrolment-days", "0")
    assert code == 1 and "from 1 to 366" in err


def test_revoke_at_the_office_is_for_good(capsys, office):
    db = str(office["db"])
    store = open_store(office["db"])
    store.import_members("s1", [{"id": "a", "name": "Alice", "plan": "occasional",
                                 "status": "active"}], [])
    store.close()
    code, out, _ = run(capsys, "revoke", "--store", db, "--site", "s1", "--member", "a")
    assert code == 0 and "for good" in out
    code, out, _ = run(capsys, "revoke", "--store", db, "--site", "s1", "--member", "a")
    assert code == 0 and "already revoked" in out
    code, _, err = run(capsys, "revoke", "--store", db, "--site", "s1", "--member", "zz")
    assert code == 1 and "no member 'zz'" in err
